"""spec.py validates job files against the CRD itself: every example loads, defaults are
applied, bad input names its field, CEL rules are enforced."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from speechtune import spec

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def demo() -> dict[str, Any]:
    return yaml.safe_load((REPO / "examples" / "demo.yaml").read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_validates(path: Path) -> None:
    job = spec.load(path)
    assert job.spec["engine"] in ("nemo-canary", "speechbrain-ctc", "hf-ctc")


def test_packaged_crd_is_the_repository_crd() -> None:
    packaged = REPO / "trainers" / "src" / "speechtune" / spec.CRD_RESOURCE
    assert packaged.resolve() == (REPO / "crds" / "finetunejob.yaml").resolve()
    crd = yaml.safe_load((REPO / "crds" / "finetunejob.yaml").read_text())
    assert spec.crd_schema() == crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_defaults_are_applied_recursively() -> None:
    document = demo()
    del document["spec"]["resources"]
    job = spec.validate(document)
    assert job.spec["resources"]["gpusPerNode"] == 0  # resources: default {} then its own defaults
    assert job.spec["training"]["peft"]["method"] == "none"
    assert job.spec["output"]["resume"] is False  # written values win over defaults
    assert job.namespace == "default"


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(document: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        node = document
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value

    return mutate


@pytest.mark.parametrize(("mutate", "field", "words"), [
    (_set("spec.training.learningRat", 0.1), "spec.training", "learningRat"),
    (_set("spec.training.precision", "fp64"), "spec.training.precision", "fp64"),
    (_set("spec.training.maxSteps", 0), "spec.training.maxSteps", "minimum"),
    (_set("spec.engine", "whisper"), "spec.engine", "whisper"),
    (_set("spec.data.train", "../escape.json"), "spec.data.train", "relative"),
    (_set("spec.training.precision", "bf16"), "spec.training.precision", "GPUs"),
    (_set("spec.training.peft.method", "adapters"), "spec.training.peft.method", "hf-ctc"),
    (_set("spec.training.warmupSteps", 5000), "spec.training.warmupSteps", "smaller"),
    (_set("metadata.name", "Demo_Job"), "metadata.name", "does not match"),
])
def test_bad_input_names_the_field(mutate: Callable[[dict[str, Any]], None], field: str, words: str) -> None:
    document = demo()
    mutate(document)
    with pytest.raises(spec.SpecError) as caught:
        spec.validate(document, source="job.yaml")
    assert caught.value.path == field
    assert words in str(caught.value)
    assert str(caught.value).startswith("job.yaml: ")


def test_overrides_keep_unknown_keys_for_the_engine() -> None:
    document = demo()
    document["spec"]["training"]["overrides"] = {"anything": {"nested": 1}}
    assert spec.validate(document).spec["training"]["overrides"] == {"anything": {"nested": 1}}


def test_wrong_kind_and_missing_file() -> None:
    document = demo()
    document["kind"] = "PyTorchJob"
    with pytest.raises(spec.SpecError, match="apiVersion/kind"):
        spec.validate(document)
    with pytest.raises(spec.SpecError, match="no such file"):
        spec.load("/nonexistent/job.yaml")


def test_round_trip_through_to_object() -> None:
    job = spec.validate(demo())
    again = spec.validate(copy.deepcopy(job.to_object()))
    assert again.spec == job.spec
