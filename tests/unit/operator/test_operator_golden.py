"""Each shipped example, as stored by the API server, renders the exact ConfigMap and
child in golden/ (PyTorchJob) and golden/trainjob/ (TrainJob). Regenerate after an intended change with
SPEECHTUNE_UPDATE_GOLDEN=1 pytest tests/unit/operator, then review the diff."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from speechtune import spec  # the trainer's validator (tests may import both projects)
from speechtune_operator import settings
from speechtune_operator.builders import backends, configmap

import ftj_crd as crdtools

GOLDEN = Path(__file__).parent / "golden"


def rendered(example: str, backend: backends.Backend) -> str:
    body = crdtools.stored(example)
    objects = [configmap.build_configmap(body), backend.build(body, settings.Settings())]
    return yaml.safe_dump_all(objects, sort_keys=False, allow_unicode=True)


@pytest.mark.parametrize("backend", [backends.PYTORCHJOB, backends.TRAINJOB], ids=lambda b: b.name)
@pytest.mark.parametrize("example", sorted(crdtools.EXAMPLES))
def test_example_renders_its_golden_children(example: str, backend: backends.Backend) -> None:
    folder = GOLDEN if backend is backends.PYTORCHJOB else GOLDEN / backend.name
    golden = folder / f"{example}.yaml"
    text = rendered(example, backend)
    if os.environ.get("SPEECHTUNE_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert golden.exists(), f"{golden} missing: run with SPEECHTUNE_UPDATE_GOLDEN=1"
    assert text == golden.read_text()


@pytest.mark.parametrize("example", sorted(crdtools.EXAMPLES))
def test_configmap_carries_the_whole_defaulted_job(example: str) -> None:
    body = crdtools.stored(example)
    document = yaml.safe_load(configmap.build_configmap(body)["data"]["job.yaml"])
    assert document["apiVersion"] == "speechtune.dev/v1alpha1"
    assert document["kind"] == "FinetuneJob"
    assert document["metadata"] == {"name": body["metadata"]["name"], "namespace": "research"}
    assert document["spec"] == body["spec"]


@pytest.mark.parametrize("example", sorted(crdtools.EXAMPLES))
def test_the_trainer_accepts_the_job_file_the_operator_mounts(example: str) -> None:
    # The seam between the two projects: the pod's /etc/speechtune/job.yaml must pass the
    # trainer's own validation (the same CRD schema and CEL rules) unchanged.
    body = crdtools.stored(example)
    document = yaml.safe_load(configmap.build_configmap(body)["data"]["job.yaml"])
    job = spec.validate(document, source=f"{example} job.yaml")
    assert job.name == body["metadata"]["name"]
    assert dict(job.spec) == body["spec"]
