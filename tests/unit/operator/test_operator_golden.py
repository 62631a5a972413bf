"""Each shipped example, as stored by the API server, renders the exact child in golden/
(PyTorchJob) and golden/trainjob/ (TrainJob), the job file inside its pod template. Regenerate after an intended change with
SPEECHTUNE_UPDATE_GOLDEN=1 pytest tests/unit/operator, then review the diff."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from speechtune import spec  # the trainer's validator (tests may import both projects)
from typing import Any

from speechtune_operator import names, settings
from speechtune_operator.builders import backends, jobfile, pytorchjob

import ftj_crd as crdtools

GOLDEN = Path(__file__).parent / "golden"


def rendered(example: str, backend: backends.Backend) -> str:
    body = crdtools.stored(example)
    return yaml.safe_dump(backend.build(body, settings.Settings()), sort_keys=False, allow_unicode=True)


def pod_templates(child: dict[str, Any]) -> list[dict[str, Any]]:
    if child["kind"] == "PyTorchJob":
        return [replica["template"] for replica in child["spec"]["pytorchReplicaSpecs"].values()]
    [patch] = child["spec"]["runtimePatches"]
    return [job["template"]["spec"]["template"] for job in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]]


def mounted_job_file(body: dict[str, Any], backend: backends.Backend) -> str:
    """What the kubelet writes to /etc/speechtune/job.yaml in each pod: the annotation its
    downwardAPI volume names, from that pod's template."""
    files = []
    for template in pod_templates(backend.build(body, settings.Settings())):
        [volume] = [v for v in template["spec"]["volumes"] if v["name"] == "job"]
        [item] = volume["downwardAPI"]["items"]
        assert item["path"] == "job.yaml"
        key = item["fieldRef"]["fieldPath"].removeprefix("metadata.annotations['").removesuffix("']")
        files.append(template["metadata"]["annotations"][key])
    assert files and len(set(files)) == 1
    return str(files[0])


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


@pytest.mark.parametrize("backend", [backends.PYTORCHJOB, backends.TRAINJOB], ids=lambda b: b.name)
@pytest.mark.parametrize("example", sorted(crdtools.EXAMPLES))
def test_the_pod_template_carries_the_whole_defaulted_job(example: str, backend: backends.Backend) -> None:
    body = crdtools.stored(example)
    document = yaml.safe_load(mounted_job_file(body, backend))
    assert document["apiVersion"] == "speechtune.dev/v1alpha1"
    assert document["kind"] == "FinetuneJob"
    assert document["metadata"] == {"name": body["metadata"]["name"], "namespace": "research"}
    assert document["spec"] == body["spec"]


@pytest.mark.parametrize("example", sorted(crdtools.EXAMPLES))
def test_the_trainer_accepts_the_job_file_the_operator_mounts(example: str) -> None:
    # The seam between the two projects: the pod's /etc/speechtune/job.yaml must pass the
    # trainer's own validation (the same CRD schema and CEL rules) unchanged.
    body = crdtools.stored(example)
    document = yaml.safe_load(mounted_job_file(body, backends.PYTORCHJOB))
    job = spec.validate(document, source=f"{example} job.yaml")
    assert job.name == body["metadata"]["name"]
    assert dict(job.spec) == body["spec"]


def test_a_job_file_too_large_for_a_pod_annotation_is_refused_naming_its_size() -> None:
    body = crdtools.stored("canary")
    body["spec"]["training"]["overrides"] = {"note": "x" * jobfile.MAX_BYTES}
    with pytest.raises(jobfile.JobFileTooLarge, match=r"^spec: the job file is \d+ KiB; at most 240 KiB fit"):
        pytorchjob.build_pytorchjob(body, settings.Settings())
    body["spec"]["training"]["overrides"] = {"note": "x" * (jobfile.MAX_BYTES - 4096)}
    [template, *_] = pod_templates(pytorchjob.build_pytorchjob(body, settings.Settings()))
    annotations = template["metadata"]["annotations"]
    assert names.ANNOTATION_JOB_FILE in annotations
    assert sum(len(k) + len(v) for k, v in annotations.items()) <= jobfile.ANNOTATIONS_LIMIT - 16 * 1024
