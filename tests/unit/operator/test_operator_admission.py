"""The operator's policy on spec.image and priority classes, and what a refused or merely
tolerated image gets (no Hugging Face token)."""

from __future__ import annotations

from typing import Any

import pytest

import ftj_crd as crdtools
from speechtune_operator import settings
from speechtune_operator.builders import admission, initializer, pytorchjob

ALLOWED = settings.Settings(allowed_image_prefixes=("registry.example.com/asr/", "ghcr.io/acme"))


def spec(**fields: Any) -> dict[str, Any]:
    return {"engine": "hf-ctc", **fields}


@pytest.mark.parametrize("image", [
    settings.Settings().image_hf_ctc,
    settings.Settings().image_nemo_canary,  # any engine's image, whatever the job's engine
    "registry.example.com/asr/mms:2",
    "registry.example.com/asr/team/mms@sha256:" + "0" * 64,
    "ghcr.io/acme/trainer:1",
    "ghcr.io/acme:1",
])
def test_allowed_images(image: str) -> None:
    assert admission.refusal(spec(image=image), ALLOWED) is None


@pytest.mark.parametrize("image", [
    "docker.io/library/ubuntu:24.04",
    "ubuntu",
    "ghcr.io/speechtune/speechtune-hf:latest",  # the engine's repository, not its image
    "ghcr.io/acme-evil/trainer:1",  # a prefix is matched at a boundary
    "registry.example.com/asr",  # the prefix's folder itself is not an image under it
    "registry.example.com/asrx/mms:2",
    "evil.example/registry.example.com/asr/mms:2",
])
def test_refused_images_name_the_field_not_the_value(image: str) -> None:
    refused = admission.refusal(spec(image=image), ALLOWED)
    assert refused is not None and refused.reason == "ImageNotAllowed"
    assert refused.message.startswith("spec.image: ")
    assert image not in refused.message.replace("registry.example.com/asr/,", "")
    assert "registry.example.com/asr/" in refused.message


def test_no_prefixes_allows_only_the_engine_images() -> None:
    refused = admission.refusal(spec(image="ghcr.io/acme/trainer:1"), settings.Settings())
    assert refused is not None and "none besides the engine images" in refused.message
    assert admission.refusal(spec(), settings.Settings()) is None  # no spec.image: the engine's


def test_refusal_can_be_switched_off() -> None:
    assert admission.refusal(spec(image="ubuntu"), settings.Settings(refuse_unlisted_images=False)) is None


@pytest.mark.parametrize(("priority", "refused"), [
    ("system-cluster-critical", True), ("system-node-critical", True), ("system-anything", True),
    ("training-high", False), ("", False), ("my-system-class", False),
])
def test_system_priority_classes(priority: str, refused: bool) -> None:
    found = admission.refusal(spec(resources={"priorityClassName": priority}), settings.Settings())
    assert (found is not None) is refused
    if found:
        assert found.reason == "PriorityClassNotAllowed"
        assert found.message.startswith("spec.resources.priorityClassName: ")
    allowed = settings.Settings(forbid_system_priority_classes=False)
    assert admission.refusal(spec(resources={"priorityClassName": priority}), allowed) is None


def master_pod(body: dict[str, Any], config: settings.Settings) -> dict[str, Any]:
    return dict(pytorchjob.build_pytorchjob(body, config)["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"])


def env_names(pod: dict[str, Any]) -> set[str]:
    return {e["name"] for e in pod["containers"][0]["env"]}


def initializer_pod(body: dict[str, Any], config: settings.Settings) -> dict[str, Any]:
    return dict(initializer.build_job(body, config)["spec"]["template"]["spec"])


@pytest.mark.parametrize(("downloader", "initializes"), [(initializer_pod, True), (master_pod, False)],
                         ids=["model-initializer", "trainer-without-initializer"])
def test_the_token_goes_only_to_allowed_images(downloader: Any, initializes: bool) -> None:
    """The token goes to the pod that downloads: the model initializer's, or the trainer's
    when the initializer is off."""
    body = crdtools.stored("mms-banglish-lora")
    tolerant = settings.Settings(refuse_unlisted_images=False, allowed_image_prefixes=("ghcr.io/acme/",),
                                 model_initializer=initializes)
    assert "HF_TOKEN" in env_names(downloader(body, tolerant))  # the engine image
    body["spec"]["image"] = "ghcr.io/acme/hf:1"
    assert "HF_TOKEN" in env_names(downloader(body, tolerant))
    body["spec"]["image"] = "docker.io/someone/hf:1"
    pod = downloader(body, tolerant)
    assert pod["containers"][0]["image"] == "docker.io/someone/hf:1"
    assert "HF_TOKEN" not in env_names(pod)


def test_trainer_pods_after_the_initializer_are_offline_without_the_token() -> None:
    body = crdtools.stored("mms-banglish-lora")
    env = {e["name"]: e for e in master_pod(body, settings.Settings())["containers"][0]["env"]}
    assert env["HF_HUB_OFFLINE"] == {"name": "HF_HUB_OFFLINE", "value": "1"}
    assert "HF_TOKEN" not in env and "HF_ENDPOINT" not in env


def test_default_priority_class_applies_only_when_the_job_names_none() -> None:
    body = crdtools.stored("mms-banglish-lora")
    body["spec"]["resources"].pop("priorityClassName", None)
    pinned = settings.Settings(default_priority_class="training-batch")
    assert master_pod(body, pinned)["priorityClassName"] == "training-batch"
    assert "priorityClassName" not in master_pod(body, settings.Settings())
    body["spec"]["resources"]["priorityClassName"] = "training-high"
    assert master_pod(body, pinned)["priorityClassName"] == "training-high"


@pytest.mark.parametrize("raw", ["flase", "2", "on"])
def test_boolean_settings_are_strict(raw: str) -> None:
    with pytest.raises(ValueError, match="refuse_unlisted_images"):
        settings.from_env({"SPEECHTUNE_REFUSE_UNLISTED_IMAGES": raw})


def test_the_default_priority_class_does_not_break_the_trainjob_backend() -> None:
    # A TrainJob cannot carry a per-job priority class; the chart's runtime holds the default.
    from speechtune_operator.builders import trainjob  # noqa: PLC0415

    body = crdtools.stored("mms-banglish-lora")
    body["spec"]["resources"].pop("priorityClassName", None)
    built = trainjob.build_trainjob(body, settings.Settings(default_priority_class="training-batch"))
    assert "training-batch" not in str(built)
