"""The PyTorchJob builder, behaviour by behaviour (goldens pin the whole objects)."""

from __future__ import annotations

import copy
from typing import Any

import ftj_crd
from speechtune_operator import settings
from speechtune_operator.builders import pytorchjob

SETTINGS = settings.Settings()


def build(example: str = "canary", **spec_changes: Any) -> dict[str, Any]:
    body = ftj_crd.stored(example)
    for dotted, value in spec_changes.items():
        node = body["spec"]
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return pytorchjob.build_pytorchjob(body, SETTINGS)


def container(job: dict[str, Any], replica: str = "Master") -> dict[str, Any]:
    [only] = job["spec"]["pytorchReplicaSpecs"][replica]["template"]["spec"]["containers"]
    return only


def pod_spec(job: dict[str, Any], replica: str = "Master") -> dict[str, Any]:
    return job["spec"]["pytorchReplicaSpecs"][replica]["template"]["spec"]


def env(job: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item for item in container(job)["env"]}


def test_two_nodes_make_one_master_and_one_worker_with_equal_pods() -> None:
    job = build("canary")
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1
    assert replicas["Worker"]["replicas"] == 1
    assert replicas["Master"]["template"] == replicas["Worker"]["template"]
    assert replicas["Master"]["template"] is not replicas["Worker"]["template"]


def test_one_node_has_no_workers() -> None:
    assert set(build("speechbrain-atc0")["spec"]["pytorchReplicaSpecs"]) == {"Master"}


def test_several_gpus_per_pod_launch_torchrun_with_nproc_as_a_string() -> None:
    job = build("canary")
    assert container(job)["command"][:2] == ["torchrun", "--no-python"]
    assert container(job)["command"][2:] == ["speechtune", "train", "--job", "/etc/speechtune/job.yaml"]
    assert job["spec"]["nprocPerNode"] == "8"


def test_one_gpu_runs_the_trainer_directly() -> None:
    job = build("mms-banglish-lora")
    assert container(job)["command"] == ["speechtune", "train", "--job", "/etc/speechtune/job.yaml"]
    assert job["spec"]["nprocPerNode"] == "1"


def test_container_is_named_pytorch_with_a_metrics_port() -> None:
    ports = {port["name"]: port["containerPort"] for port in container(build())["ports"]}
    assert container(build())["name"] == "pytorch"
    assert ports["metrics"] == 9400
    assert ports["pytorchjob-port"] == 23456


def test_gpu_limits_use_the_configured_resource_name() -> None:
    job = build("mms-banglish-lora", resources__gpuResource="amd.com/gpu")
    limits = container(job)["resources"]["limits"]
    assert limits["amd.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in limits
    assert container(job)["resources"]["requests"] == limits


def test_cpu_only_job_requests_no_gpu() -> None:
    job = build("speechbrain-atc0", resources__gpusPerNode=0, training__precision="fp32")
    assert set(container(job)["resources"]["limits"]) == {"cpu", "memory"}


def test_image_comes_from_settings_per_engine_unless_the_spec_overrides_it() -> None:
    assert container(build("canary"))["image"] == SETTINGS.image_nemo_canary
    assert container(build("speechbrain-atc0"))["image"] == SETTINGS.image_speechbrain_ctc
    assert container(build("mms-banglish-lora"))["image"] == SETTINGS.image_hf_ctc
    assert container(build("canary", image="registry.local/canary:dev"))["image"] == "registry.local/canary:dev"


def test_volumes_data_read_only_output_writable_models_optional() -> None:
    job = build("canary")
    mounts = {m["name"]: m for m in container(job)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(job)["volumes"]}
    assert mounts["data"] == {"name": "data", "mountPath": "/data", "readOnly": True}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "asr-data", "readOnly": True}
    assert mounts["output"]["mountPath"] == "/output" and not mounts["output"].get("readOnly")
    assert volumes["output"]["persistentVolumeClaim"]["claimName"] == "asr-runs"
    assert mounts["models"]["mountPath"] == "/models"
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == "asr-models"
    assert mounts["job"] == {"name": "job", "mountPath": "/etc/speechtune", "readOnly": True}
    assert volumes["job"]["downwardAPI"]["items"] == [{"path": "job.yaml", "fieldRef": {
        "fieldPath": "metadata.annotations['speechtune.dev/job-file']"}}]


def test_no_model_volume_no_models_mount() -> None:
    body = ftj_crd.stored("canary")
    del body["spec"]["model"]["volume"]
    job = pytorchjob.build_pytorchjob(body, SETTINGS)
    assert "models" not in {m["name"] for m in container(job)["volumeMounts"]}
    assert "HF_HOME" not in env(job)


def test_shm_is_memory_backed_and_sized() -> None:
    volumes = {v["name"]: v for v in pod_spec(build("canary"))["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Gi"}


def test_secrets_only_by_reference_and_run_id_is_the_uid() -> None:
    # No model volume: no model initializer, so the trainer pod downloads and gets the token
    # (with a model volume, the initializer's pod does: test_operator_initializer.py).
    downloading = build(model={"pretrained": "nvidia/canary-1b-v2"})
    variables = env(downloading)
    assert variables["SPEECHTUNE_RUN_ID"]["value"] == ftj_crd.UID
    assert variables["HF_TOKEN"] == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": "speechtune-hf-token", "key": "token", "optional": True}}}
    assert variables["HF_ENDPOINT"] == {"name": "HF_ENDPOINT", "value": "https://huggingface.co"}
    for item in container(downloading)["env"]:
        assert "TOKEN" not in item["name"] or "value" not in item


def test_hf_token_can_be_switched_off() -> None:
    job = pytorchjob.build_pytorchjob(ftj_crd.stored("canary"), settings.Settings(hf_token_secret=""))
    assert "HF_TOKEN" not in {item["name"] for item in container(job)["env"]}


def test_labels_annotations_and_kueue_queue() -> None:
    job = build("canary", runPolicy__queueName="gpu-a100")
    labels = job["metadata"]["labels"]
    assert labels["speechtune.dev/finetunejob"] == "canary-1b-v2-atc"
    assert labels["speechtune.dev/engine"] == "nemo-canary"
    assert labels["kueue.x-k8s.io/queue-name"] == "gpu-a100"
    template = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
    assert template["metadata"]["labels"]["speechtune.dev/finetunejob"] == "canary-1b-v2-atc"
    assert set(template["metadata"]["annotations"]) == {"sidecar.istio.io/inject", "speechtune.dev/job-file"}
    assert template["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    assert "kueue.x-k8s.io/queue-name" not in build("canary")["metadata"]["labels"]


def test_run_policy_maps_every_field() -> None:
    policy = {"suspend": True, "backoffLimit": 5, "activeDeadlineSeconds": 60, "ttlSecondsAfterFinished": 30,
              "cleanPodPolicy": "All", "schedulingPolicy": {"minAvailable": 2, "queue": "q", "priorityClass": "high",
                                                            "scheduleTimeoutSeconds": 10}}
    assert build(runPolicy=copy.deepcopy(policy))["spec"]["runPolicy"] == policy


def test_scheduling_fields_reach_the_pod() -> None:
    job = build("canary", resources__priorityClassName="training-high")
    spec = pod_spec(job)
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-B200"}
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert spec["priorityClassName"] == "training-high"


def test_security_context_is_restrictive() -> None:
    job = build()
    pod = pod_spec(job)["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == SETTINGS.trainer_uid
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    box = container(job)["securityContext"]
    assert box["allowPrivilegeEscalation"] is False and box["readOnlyRootFilesystem"] is True
    # The canary example adds IPC_LOCK (RDMA) through spec.pod; nothing else comes back.
    assert box["capabilities"] == {"drop": ["ALL"], "add": ["IPC_LOCK"]}
    assert pod_spec(job)["automountServiceAccountToken"] is False


def test_building_twice_gives_the_same_object() -> None:
    assert build("canary") == build("canary")
