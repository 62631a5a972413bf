"""spec.pod: the CRD's rules (through the trainer's validator, which evaluates the same
schema and CEL rules as the API server) and the builder that lays it over the pod."""

from __future__ import annotations

import copy
from typing import Any

import pytest

import ftj_crd
from speechtune import spec as trainer_spec
from speechtune_operator import settings
from speechtune_operator.builders import podsettings, podtemplate, pytorchjob, sharedstorage, trainjob

SETTINGS = settings.Settings()

FULL_POD: dict[str, Any] = {
    "labels": {"team": "asr"},
    "annotations": {"k8s.v1.cni.cncf.io/networks": "ib-net"},
    "env": [
        {"name": "NCCL_IB_HCA", "value": "mlx5"},
        {"name": "WANDB_API_KEY", "valueFrom": {"secretKeyRef": {"name": "wandb", "key": "key"}}},
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "team-hf", "key": "token"}}},
        {"name": "MLFLOW_URI", "valueFrom": {"configMapKeyRef": {"name": "mlflow", "key": "uri"}}},
    ],
    "envFrom": [{"secretRef": {"name": "s3-credentials"}}, {"configMapRef": {"name": "s3"}, "prefix": "S3_"}],
    "imagePullSecrets": [{"name": "registry"}],
    "serviceAccountName": "trainer-irsa",
    "volumes": [{"name": "datasets", "persistentVolumeClaim": {"claimName": "shared", "readOnly": True}},
                {"name": "certs", "secret": {"secretName": "ca"}}],
    "volumeMounts": [{"name": "datasets", "mountPath": "/shared", "readOnly": True},
                     {"name": "certs", "mountPath": "/etc/ssl/custom"}],
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}},
    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                   "whenUnsatisfiable": "DoNotSchedule"}],
    "runtimeClassName": "nvidia",
    "schedulerName": "volcano",
    "extraResources": {"rdma/ib": 1, "nvidia.com/hostdev": "8"},
    "addCapabilities": ["IPC_LOCK"],
}


def body_with(pod: dict[str, Any], example: str = "canary") -> dict[str, Any]:
    body = ftj_crd.stored(example)
    body["spec"]["pod"] = copy.deepcopy(pod)
    return body


def template(job: dict[str, Any], replica: str = "Master") -> dict[str, Any]:
    return job["spec"]["pytorchReplicaSpecs"][replica]["template"]  # type: ignore[no-any-return]


def validate(pod: dict[str, Any]) -> None:
    body = body_with(pod)
    document = {"apiVersion": body["apiVersion"], "kind": body["kind"],
                "metadata": {"name": body["metadata"]["name"]}, "spec": body["spec"]}
    trainer_spec.validate(document, source="job.yaml")


def test_the_full_pod_section_is_valid() -> None:
    validate(FULL_POD)


def test_every_setting_reaches_every_pod() -> None:
    job = pytorchjob.build_pytorchjob(body_with(FULL_POD), SETTINGS)
    assert template(job, "Master") == template(job, "Worker")
    pod = template(job)
    spec = pod["spec"]
    [container] = spec["containers"]
    assert pod["metadata"]["labels"]["team"] == "asr"
    assert pod["metadata"]["labels"]["speechtune.dev/finetunejob"] == "canary-1b-v2-atc"
    annotations = pod["metadata"]["annotations"]
    assert annotations["k8s.v1.cni.cncf.io/networks"] == "ib-net"
    assert annotations["sidecar.istio.io/inject"] == "false"
    env = {item["name"]: item for item in container["env"]}
    assert env["NCCL_IB_HCA"] == {"name": "NCCL_IB_HCA", "value": "mlx5"}
    assert env["WANDB_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "wandb", "key": "key"}
    # The job's own HF token replaces the operator's default secret, once.
    assert [item["name"] for item in container["env"]].count("HF_TOKEN") == 1
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "team-hf"
    assert env["SPEECHTUNE_RUN_ID"]["value"] == ftj_crd.UID
    assert container["envFrom"] == FULL_POD["envFrom"]
    assert spec["imagePullSecrets"] == [{"name": "registry"}]
    assert spec["serviceAccountName"] == "trainer-irsa"
    assert spec["automountServiceAccountToken"] is True
    assert {"name": "datasets", "persistentVolumeClaim": {"claimName": "shared", "readOnly": True}} in spec["volumes"]
    assert {v["name"] for v in spec["volumes"]} >= {"job", "data", "output", "datasets", "certs"}
    assert container["volumeMounts"][-2:] == FULL_POD["volumeMounts"]
    assert spec["affinity"] == FULL_POD["affinity"]
    assert spec["topologySpreadConstraints"] == FULL_POD["topologySpreadConstraints"]
    assert (spec["runtimeClassName"], spec["schedulerName"]) == ("nvidia", "volcano")
    for kind in ("requests", "limits"):
        assert container["resources"][kind]["rdma/ib"] == "1"
        assert container["resources"][kind]["nvidia.com/hostdev"] == "8"
        assert container["resources"][kind]["nvidia.com/gpu"] == "8"
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["IPC_LOCK"]}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_no_pod_section_changes_nothing_and_mounts_no_token() -> None:
    plain = pytorchjob.build_pytorchjob(ftj_crd.stored("speechbrain-atc0"), SETTINGS)
    spec = template(plain)["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in spec
    assert "add" not in spec["containers"][0]["securityContext"]["capabilities"]
    empty = pytorchjob.build_pytorchjob(body_with({}, "speechbrain-atc0"), SETTINGS)
    for job in (plain, empty):  # the job file (in an annotation) differs by the empty pod: {}
        for replica in job["spec"]["pytorchReplicaSpecs"].values():
            del replica["template"]["metadata"]["annotations"]["speechtune.dev/job-file"]
    assert empty == plain


def test_a_capability_outside_the_allow_list_is_refused_naming_the_field() -> None:
    with pytest.raises(podsettings.PodSettingsRefused, match=r"^spec.pod.addCapabilities: SYS_ADMIN not in .*IPC_LOCK"):
        pytorchjob.build_pytorchjob(body_with({"addCapabilities": ["IPC_LOCK", "SYS_ADMIN"]}), SETTINGS)
    none_allowed = settings.Settings(allowed_capabilities=())
    with pytest.raises(podsettings.PodSettingsRefused, match="IPC_LOCK not in .*empty"):
        pytorchjob.build_pytorchjob(body_with({"addCapabilities": ["IPC_LOCK"]}), none_allowed)


def test_allowed_capabilities_come_from_the_environment() -> None:
    parsed = settings.from_env({"SPEECHTUNE_ALLOWED_CAPABILITIES": "IPC_LOCK, SYS_NICE"})
    assert parsed.allowed_capabilities == ("IPC_LOCK", "SYS_NICE")


@pytest.mark.parametrize(("pod", "field", "words"), [
    ({"env": [{"name": "WANDB_API_KEY", "value": "abc"}]}, "spec.pod.env[0].value", "secretKeyRef"),
    ({"env": [{"name": "AWS_SECRET_ACCESS_KEY", "value": "abc"}]}, "spec.pod.env[0].value", "never a literal"),
    ({"env": [{"name": "SPEECHTUNE_RUN_ID", "value": "x"}]}, "spec.pod.env[0].name", "set by the operators"),
    ({"env": [{"name": "MASTER_ADDR", "value": "x"}]}, "spec.pod.env[0].name", "set by the operators"),
    ({"env": [{"name": "A"}]}, "spec.pod.env[0]", "exactly one of value and valueFrom"),
    ({"env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}]}, "spec.pod.env[0].valueFrom", "unknown field"),
    ({"envFrom": [{"prefix": "X_"}]}, "spec.pod.envFrom[0]", "exactly one of secretRef and configMapRef"),
    ({"volumes": [{"name": "host", "hostPath": {"path": "/"}}]}, "spec.pod.volumes[0]", "unknown field"),
    ({"volumes": [{"name": "data", "emptyDir": {}}]}, "spec.pod.volumes[0].name", "operator's"),
    ({"volumes": [{"name": "x", "emptyDir": {}, "secret": {"secretName": "s"}}]}, "spec.pod.volumes[0]", "exactly one of"),
    ({"volumes": [{"name": "x", "emptyDir": {}}], "volumeMounts": [{"name": "x", "mountPath": "/output/x"}]},
     "spec.pod.volumeMounts[0].mountPath", "operator's mounts"),
    ({"volumeMounts": [{"name": "nowhere", "mountPath": "/x"}]}, "spec.pod.volumeMounts", "name a volume"),
    ({"labels": {"speechtune.dev/finetunejob": "other"}}, "spec.pod.labels", "set by the operators"),
    ({"annotations": {"sidecar.istio.io/inject": "true"}}, "spec.pod.annotations", "set by the operator"),
    ({"extraResources": {"memory": "1Gi"}}, "spec.pod.extraResources", "only extended resources"),
    ({"extraResources": {"nvidia.com/gpu": 8}}, "spec.pod.extraResources", "GPU resource"),
    ({"addCapabilities": ["cap_sys_admin"]}, "spec.pod.addCapabilities[0]", "does not match"),
    ({"serviceAccountName": "Not_A_Name"}, "spec.pod.serviceAccountName", "does not match"),
    ({"privileged": True}, "spec.pod", "unknown field"),
])
def test_the_crd_refuses_bad_pod_settings_naming_the_field(pod: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(trainer_spec.SpecError) as caught:
        validate(pod)
    assert caught.value.path == field, caught.value
    assert words in str(caught.value)


def test_the_trainjob_backend_carries_what_its_patch_can_and_names_what_it_cannot() -> None:
    carried = {key: FULL_POD[key] for key in ("labels", "env", "imagePullSecrets", "serviceAccountName", "volumes",
                                              "volumeMounts", "affinity", "extraResources", "addCapabilities")}
    job = trainjob.build_trainjob(body_with(carried), SETTINGS)
    patch = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    pod = patch["template"]["spec"]["template"]
    assert pod["metadata"]["labels"]["team"] == "asr"
    assert pod["spec"]["serviceAccountName"] == "trainer-irsa"
    assert pod["spec"]["affinity"] == FULL_POD["affinity"]
    assert pod["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] == ["IPC_LOCK"]
    assert job["spec"]["trainer"]["resourcesPerNode"]["limits"]["rdma/ib"] == "1"
    for key in ("topologySpreadConstraints", "runtimeClassName", "schedulerName", "envFrom"):
        with pytest.raises(podtemplate.Unsupported, match=rf"^spec.pod.{key}: the trainjob backend"):
            trainjob.build_trainjob(body_with({key: FULL_POD[key]}), SETTINGS)


def test_a_multi_node_job_needs_claims_every_node_can_mount() -> None:
    spec = ftj_crd.stored("canary")["spec"]
    shared = {"asr-data": ["ReadOnlyMany"], "asr-runs": ["ReadWriteMany"], "asr-models": ["ReadWriteMany"]}
    assert sharedstorage.problem(spec, shared) is None
    assert sharedstorage.problem(spec, {**shared, "asr-runs": None}) is None  # not there yet: pods wait
    message = sharedstorage.problem(spec, {**shared, "asr-models": ["ReadWriteOnce"]})
    assert message == ("spec.model.volume.claimName: PersistentVolumeClaim asr-models is ReadWriteOnce, but a job "
                       "on 2 nodes mounts it on each: it needs ReadWriteMany (see docs/multi-node.md)")
    message = sharedstorage.problem(spec, {**shared, "asr-data": ["ReadWriteOnce"]})
    assert message is not None and message.startswith("spec.data.volume.claimName: ")
    assert "ReadOnlyMany or ReadWriteMany" in message
    single = ftj_crd.stored("speechbrain-atc0")["spec"]
    assert sharedstorage.problem(single, {"asr-data": ["ReadWriteOnce"], "asr-runs": ["ReadWriteOnce"]}) is None
