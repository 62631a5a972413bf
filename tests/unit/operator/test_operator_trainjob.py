"""The trainjob backend: the TrainJob builder and its status reader, behaviour by behaviour
(goldens in golden/trainjob/ pin the whole objects)."""

from __future__ import annotations

from typing import Any

import pytest

import ftj_crd
from speechtune_operator import settings
from speechtune_operator.builders import backends, phase, podtemplate, pytorchjob, trainjob, trainjob_status

SETTINGS = settings.Settings()


def build(example: str = "canary", **spec_changes: Any) -> dict[str, Any]:
    body = ftj_crd.stored(example)
    for dotted, value in spec_changes.items():
        node = body["spec"]
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return trainjob.build_trainjob(body, SETTINGS)


def pod_patch(job: dict[str, Any]) -> dict[str, Any]:
    [patch] = job["spec"]["runtimePatches"]
    [node] = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert node["name"] == "node"
    return dict(node["template"]["spec"]["template"])


@pytest.mark.parametrize("example", sorted(ftj_crd.EXAMPLES))
def test_trainjob_carries_the_same_pod_as_the_pytorchjob(example: str) -> None:
    body = ftj_crd.stored(example)
    master = pytorchjob.build_pytorchjob(body, SETTINGS)["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
    [pj_container] = master["spec"]["containers"]
    job = trainjob.build_trainjob(body, SETTINGS)
    trainer, pod = job["spec"]["trainer"], pod_patch(job)
    [tj_container] = pod["spec"]["containers"]
    assert trainer["image"] == pj_container["image"]
    assert trainer["env"] == pj_container["env"]
    assert trainer["resourcesPerNode"] == pj_container["resources"]
    assert trainer["command"][-4:] == pj_container["command"][-4:]
    assert tj_container["volumeMounts"] == pj_container["volumeMounts"]
    assert tj_container["securityContext"] == pj_container["securityContext"]
    for key in ("volumes", "securityContext", "nodeSelector", "tolerations"):
        assert pod["spec"].get(key) == master["spec"].get(key), key
    assert pod["metadata"] == master["metadata"]


def test_every_multi_process_job_goes_through_torchrun_with_explicit_process_count() -> None:
    # Trainer v2 injects only PET_* (read by torchrun), unlike the v1 operator's WORLD_SIZE/RANK.
    one_gpu_two_nodes = build("mms-banglish-lora", resources__nodes=2, resources__gpusPerNode=1)
    assert one_gpu_two_nodes["spec"]["trainer"]["command"][:2] == podtemplate.TORCHRUN_PREFIX
    assert one_gpu_two_nodes["spec"]["trainer"]["numNodes"] == 2
    assert one_gpu_two_nodes["spec"]["trainer"]["numProcPerNode"] == 1
    single = build("speechbrain-atc0", resources__nodes=1, resources__gpusPerNode=1)
    assert single["spec"]["trainer"]["command"] == podtemplate.TRAIN_COMMAND
    cpu_only = build("speechbrain-atc0", resources__gpusPerNode=0)
    assert cpu_only["spec"]["trainer"]["numProcPerNode"] == 1  # not "auto" (= CPU count)


def test_runtime_is_the_engines_and_suspend_deadline_queue_are_carried() -> None:
    job = build("canary", runPolicy__suspend=True, runPolicy__queueName="team-a")
    assert job["spec"]["runtimeRef"] == {"name": "speechtune-nemo-canary", "apiGroup": "trainer.kubeflow.org",
                                         "kind": "ClusterTrainingRuntime"}
    assert job["spec"]["suspend"] is True
    assert job["spec"]["activeDeadlineSeconds"] == 259200
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert job["metadata"]["name"] == "canary-1b-v2-atc"


@pytest.mark.parametrize(("change", "field"), [
    ({"resources__priorityClassName": "high"}, "spec.resources.priorityClassName"),
    ({"runPolicy__backoffLimit": 7}, "spec.runPolicy.backoffLimit"),
    ({"runPolicy__ttlSecondsAfterFinished": 60}, "spec.runPolicy.ttlSecondsAfterFinished"),
    ({"runPolicy__cleanPodPolicy": "All"}, "spec.runPolicy.cleanPodPolicy"),
])
def test_what_a_trainjob_cannot_carry_is_refused_by_name(change: dict[str, Any], field: str) -> None:
    with pytest.raises(podtemplate.Unsupported, match=field.replace(".", r"\.")):
        build("canary", **change)


def tj(*conditions: tuple[str, str], **node: int) -> dict[str, Any]:
    return {"metadata": {"name": "job"}, "status": {
        "conditions": [{"type": t, "status": s, "reason": t, "message": f"{t} message",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"} for t, s in conditions],
        "jobsStatus": [{"name": "node", "ready": 0, "active": 0, "failed": 0, **node}]}}


@pytest.mark.parametrize(("job", "expected"), [
    (tj(), "Pending"),
    (tj(active=2), "Pending"),
    (tj(active=2, ready=2), "Running"),
    (tj(active=1, failed=1), "Restarting"),
    (tj(("Suspended", "True")), "Suspended"),
    (tj(("Suspended", "False"), ready=1), "Running"),
    (tj(("Complete", "True"), ready=1), "Succeeded"),
    (tj(("Failed", "True"), failed=1), "Failed"),
    (tj(("Suspended", "True"), ("Failed", "True")), "Failed"),
])
def test_trainjob_phase(job: dict[str, Any], expected: str) -> None:
    assert trainjob_status.read_trainjob(job).phase == expected


def test_trainjob_status_names_the_child_and_dates_start_and_end() -> None:
    job = tj(("Complete", "True"))
    job["metadata"]["creationTimestamp"] = "2025-12-31T00:00:00Z"
    desired = phase.desired_status(job, reader=backends.TRAINJOB.read)
    assert desired["trainJob"] == "job" and "pytorchJob" not in desired
    assert desired["completionTime"] == "2026-01-01T00:00:00Z"
    assert desired["startTime"] == "2025-12-31T00:00:00Z"  # created, never suspended
    resumed = tj(("Suspended", "False"), ready=1)
    resumed["status"]["conditions"][0]["lastTransitionTime"] = "2026-01-02T00:00:00Z"
    assert phase.desired_status(resumed, reader=backends.TRAINJOB.read)["startTime"] == "2026-01-02T00:00:00Z"
    assert "startTime" not in phase.desired_status(tj(), reader=backends.TRAINJOB.read)
    assert [c["type"] for c in desired["conditions"]] == ["Complete"]


def test_rank0_pod_of_each_backend() -> None:
    tj_pod = {"metadata": {"labels": {"jobset.sigs.k8s.io/jobset-name": "j",
                                      "jobset.sigs.k8s.io/replicatedjob-name": "node",
                                      "batch.kubernetes.io/job-completion-index": "0"}}}
    worker = {"metadata": {"labels": {**tj_pod["metadata"]["labels"], "batch.kubernetes.io/job-completion-index": "1"}}}
    assert backends.TRAINJOB.is_rank0(tj_pod) and not backends.TRAINJOB.is_rank0(worker)
    assert backends.TRAINJOB.rank0_selector("j") == (
        "jobset.sigs.k8s.io/jobset-name=j,jobset.sigs.k8s.io/replicatedjob-name=node,"
        "batch.kubernetes.io/job-completion-index=0")
    assert backends.PYTORCHJOB.rank0_selector("j").startswith("training.kubeflow.org/job-name=j,")


def test_backend_setting_is_checked() -> None:
    assert backends.for_settings(settings.Settings(backend="trainjob")) is backends.TRAINJOB
    with pytest.raises(ValueError, match="setting backend: unknown backend 'mpijob'"):
        settings.Settings(backend="mpijob")


def test_a_service_account_token_is_carried_as_the_volume_the_kubelet_would_mount() -> None:
    # The runtime fixes automountServiceAccountToken: false; the patch mounts the token itself.
    pod = pod_patch(build("canary", pod={"serviceAccountName": "asr-cloud"}))["spec"]
    assert pod["serviceAccountName"] == "asr-cloud" and "automountServiceAccountToken" not in pod
    [volume] = [v for v in pod["volumes"] if v["name"] == trainjob.TOKEN_VOLUME]
    assert {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}} in volume["projected"]["sources"]
    [mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == trainjob.TOKEN_VOLUME]
    assert mount == {"name": trainjob.TOKEN_VOLUME, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                     "readOnly": True}
    assert "volumes" not in pod_patch(build("canary"))["spec"] or all(
        v["name"] != trainjob.TOKEN_VOLUME for v in pod_patch(build("canary"))["spec"]["volumes"])
