"""The model initializer Job (builders/initializer.py): golden per shipped example that
needs one, and the rules it keeps (CPU only, restricted pod, the hub chosen by the
operator's settings only, the token by reference for allowed images only).
Regenerate the goldens with SPEECHTUNE_UPDATE_GOLDEN=1, then review the diff."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from speechtune import spec as trainer_spec
from speechtune_operator import settings
from speechtune_operator.builders import initializer

import ftj_crd as crdtools

GOLDEN = Path(__file__).parent / "golden" / "initializer"
NEEDING = ("canary", "mms-banglish-lora")  # hub model + model volume


def pod(body: dict[str, Any], config: settings.Settings | None = None) -> dict[str, Any]:
    return dict(initializer.build_job(body, config or settings.Settings())["spec"]["template"]["spec"])


@pytest.mark.parametrize("example", NEEDING)
def test_example_renders_its_golden_initializer_job(example: str) -> None:
    body = crdtools.stored(example)
    assert initializer.needed(body, settings.Settings())
    text = yaml.safe_dump(initializer.build_job(body, settings.Settings()), sort_keys=False, allow_unicode=True)
    golden = GOLDEN / f"{example}.yaml"
    if os.environ.get("SPEECHTUNE_UPDATE_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        golden.write_text(text)
    assert golden.exists(), f"{golden} missing: run with SPEECHTUNE_UPDATE_GOLDEN=1"
    assert text == golden.read_text()


@pytest.mark.parametrize(("change", "reason"), [
    (lambda s: s.pop("model", None), "no model at all"),
    (lambda s: s["model"].pop("volume"), "nowhere to keep it: the trainer downloads"),
    (lambda s: s["model"].update(path="canary.nemo"), "spec.model.path wins over pretrained"),
])
def test_no_initializer_without_a_hub_model_and_a_volume(change: Any, reason: str) -> None:
    body = crdtools.stored("canary")
    change(body["spec"])
    assert not initializer.needed(body, settings.Settings()), reason


def test_no_initializer_for_the_speechbrain_example_or_when_switched_off() -> None:
    assert not initializer.needed(crdtools.stored("speechbrain-atc0"), settings.Settings())
    assert not initializer.needed(crdtools.stored("canary"), settings.Settings(model_initializer=False))


def test_the_job_is_cpu_only_restricted_and_retries_only_what_can_pass() -> None:
    body = crdtools.stored("canary")  # asks for 8 GPUs, rdma/ib and IPC_LOCK for its trainers
    job = initializer.build_job(body, settings.Settings())
    spec = pod(body)
    [container] = spec["containers"]
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"},
                                      "limits": {"cpu": "1", "memory": "2Gi"}}
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["automountServiceAccountToken"] is False
    assert "nodeSelector" not in spec and "tolerations" not in spec  # not pinned to GPU nodes
    assert container["command"][:3] == ["speechtune", "model", "fetch"]
    assert [m["name"] for m in container["volumeMounts"]] == ["job", "models", "tmp", "home"]
    assert job["metadata"]["name"] == "canary-1b-v2-atc-model"
    assert job["metadata"]["labels"]["speechtune.dev/component"] == "model-initializer"
    # The trainer PodMonitor's and the operator's rank-0 selectors never match this pod.
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert not {"training.kubeflow.org/replica-type", "jobset.sigs.k8s.io/replicatedjob-name"} & set(labels)
    # Exit 1 (the spec or the hub said no) fails at once; anything else retries, resuming.
    assert spec["restartPolicy"] == "Never"
    [rule] = job["spec"]["podFailurePolicy"]["rules"]
    assert rule == {"action": "FailJob", "onExitCodes": {"containerName": "fetch", "operator": "In", "values": [1]}}


def test_the_hub_url_is_the_operators_setting_only() -> None:
    body = crdtools.stored("mms-banglish-lora")
    mirror = settings.Settings(hf_endpoint="https://hf-mirror.internal.example")
    env = {e["name"]: e for e in pod(body, mirror)["containers"][0]["env"]}
    assert env["HF_ENDPOINT"] == {"name": "HF_ENDPOINT", "value": "https://hf-mirror.internal.example"}
    assert "HF_HUB_OFFLINE" not in env
    with pytest.raises(ValueError, match="hf_endpoint"):
        settings.Settings(hf_endpoint="file:///etc/passwd")


@pytest.mark.parametrize("name", ["HF_ENDPOINT", "HF_HUB_OFFLINE"])
def test_a_finetunejob_cannot_set_the_hub_or_go_online(name: str) -> None:
    body = crdtools.stored("mms-banglish-lora")
    body["spec"].setdefault("pod", {})["env"] = [{"name": name, "value": "http://evil.example"}]
    with pytest.raises(trainer_spec.SpecError, match=r"spec\.pod\.env\[0\]\.name"):
        trainer_spec.validate(body)


def test_the_jobs_pod_settings_that_a_download_needs_and_no_others() -> None:
    body = crdtools.stored("canary")
    body["spec"]["pod"].update(imagePullSecrets=[{"name": "registry"}], envFrom=[{"secretRef": {"name": "proxy"}}])
    spec = pod(body)
    [container] = spec["containers"]
    assert spec["imagePullSecrets"] == [{"name": "registry"}]
    assert container["envFrom"] == [{"secretRef": {"name": "proxy"}}]
    assert "rdma/ib" not in container["resources"]["limits"]
    assert "add" not in container["securityContext"]["capabilities"]
    # An env var set by the operator wins over spec.pod.envFrom (Kubernetes' precedence).
    assert "HF_ENDPOINT" in {e["name"] for e in container["env"]}


@pytest.mark.parametrize(("conditions", "expected"), [
    ([], initializer.JobState()),
    ([{"type": "Complete", "status": "True"}], initializer.JobState(succeeded=True)),
    ([{"type": "Failed", "status": "True", "reason": "PodFailurePolicy",
       "message": "Container fetch for pod ns/x-model-abc failed with exit code 1 matching FailJob rule at index 0"}],
     initializer.JobState(failed=True, reason="PodFailurePolicy: Container fetch for pod ns/x-model-abc failed with "
                                              "exit code 1 matching FailJob rule at index 0")),
    ([{"type": "Failed", "status": "False"}], initializer.JobState()),
])
def test_job_state_from_its_conditions(conditions: list[dict[str, str]], expected: initializer.JobState) -> None:
    assert initializer.state_of({"status": {"conditions": conditions}}) == expected


def test_the_failure_is_one_line() -> None:
    state = initializer.JobState(failed=True, reason="BackoffLimitExceeded: Job has reached\nthe specified backoff limit")
    line = initializer.failure_message("x-model", state, "pod x-model-abc failed: Error (exit code 75): hub down")
    assert "\n" not in line
    assert line == ("model initializer Job x-model failed: BackoffLimitExceeded: Job has reached the specified "
                    "backoff limit; pod x-model-abc failed: Error (exit code 75): hub down")
