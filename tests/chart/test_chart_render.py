"""`helm lint` and `helm template` with default and full values: what the chart renders."""

from __future__ import annotations

import base64
import collections
import dataclasses
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from chart_render import CHART, FULL_VALUES, KUBE_VERSION, ROOT, by_kind, one, run_helm, template

# No running cluster needed, but helm comes from the control plane's Go build (minutes on a
# fresh machine), so these run with the cluster tier, not in `make test-unit`.
pytestmark = pytest.mark.cluster

# Least privilege, as a table: (apiGroup, resource) -> the verbs the chart grants, derived
# from what the operator's code and kopf call. Anything else (secrets, nodes, wildcards, a
# verb more) fails the test; the cluster test checks that this much is also enough.
EXPECTED_RULES: dict[tuple[str, str], set[str]] = {
    ("speechtune.dev", "finetunejobs"): {"get", "list", "watch", "patch"},
    ("speechtune.dev", "finetunejobs/status"): {"get", "patch"},
    ("kubeflow.org", "pytorchjobs"): {"get", "list", "watch", "create", "patch"},
    ("", "pods"): {"get", "list", "watch"},
    ("batch", "jobs"): {"get", "list", "watch", "create"},  # the model initializer (modelInitializer.enabled)
    ("", "persistentvolumeclaims"): {"get"},
    # Kueue's Workloads: read for phase Queued, patched only for spec.active (runPolicy.suspend).
    ("kueue.x-k8s.io", "workloads"): {"get", "list", "watch", "patch"},
    ("", "events"): {"create"},
    ("networking.k8s.io", "networkpolicies"): {"get", "create"},  # each job's (networkPolicy.enabled)
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    ("", "namespaces"): {"list", "watch"},
}


@pytest.fixture(scope="module")
def default_objects(helm: Path) -> list[dict[str, Any]]:
    return template(helm)


@pytest.fixture(scope="module")
def full_objects(helm: Path) -> list[dict[str, Any]]:
    return template(helm, "--values", str(FULL_VALUES), release="asr", namespace="ml-platform")


def granted(objects: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    table: dict[tuple[str, str], set[str]] = collections.defaultdict(set)
    for role in by_kind(objects, "ClusterRole") + by_kind(objects, "Role"):
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    table[(group, resource)] |= set(rule["verbs"])
    return dict(table)


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (only,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return only


@pytest.mark.parametrize("values", [None, FULL_VALUES], ids=["default", "full"])
def test_helm_lint(helm: Path, values: Path | None) -> None:
    extra = ["--values", str(values)] if values else []
    done = run_helm(helm, "lint", "--strict", str(CHART), *extra)
    assert "0 chart(s) failed" in done.stdout


def test_default_render_has_exactly_the_expected_objects(default_objects: list[dict[str, Any]]) -> None:
    kinds = collections.Counter(obj["kind"] for obj in default_objects)
    assert kinds == {"CustomResourceDefinition": 1, "ServiceAccount": 1, "ClusterRole": 2,
                     "ClusterRoleBinding": 2, "Service": 2, "Deployment": 1, "ConfigMap": 2, "Secret": 1,
                     "ValidatingWebhookConfiguration": 1, "NetworkPolicy": 1}
    namespaced = [o for o in default_objects if o["kind"] not in {"CustomResourceDefinition", "ClusterRole",
                                                                   "ClusterRoleBinding",
                                                                   "ValidatingWebhookConfiguration"}]
    assert {o["metadata"]["namespace"] for o in namespaced} == {"speechtune-system"}


def test_rendered_crd_is_the_source_of_truth(default_objects: list[dict[str, Any]]) -> None:
    crd = one(default_objects, "CustomResourceDefinition")
    assert crd == yaml.safe_load((ROOT / "crds" / "finetunejob.yaml").read_text())


def test_operator_deployment_is_single_recreate_and_restricted(default_objects: list[dict[str, Any]]) -> None:
    deployment = one(default_objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["serviceAccountName"] == one(default_objects, "ServiceAccount")["metadata"]["name"]
    main = container(default_objects)
    security = main["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["runAsNonRoot"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(main["resources"][kind])
    assert main["image"] == "ghcr.io/speechtune/speechtune-operator:" + yaml.safe_load(
        (CHART / "Chart.yaml").read_text())["appVersion"]


def test_liveness_probes_kopfs_health_endpoint(default_objects: list[dict[str, Any]]) -> None:
    main = container(default_objects)
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    probe = main["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    assert any(arg == f"--liveness=http://0.0.0.0:{ports[probe['port']]}/healthz" for arg in main["args"])


def metrics_service(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The operator's metrics Service (the other one fronts the admission webhook)."""
    (service,) = [s for s in by_kind(objects, "Service") if s["metadata"]["name"].endswith("-metrics")]
    return service


def test_metrics_service_reaches_the_operator(default_objects: list[dict[str, Any]]) -> None:
    service = metrics_service(default_objects)
    pod_labels = one(default_objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["name"] == "metrics"
    assert port["targetPort"] in {p["name"] for p in container(default_objects)["ports"]}


@pytest.mark.parametrize("which", ["default", "full"])
def test_rbac_is_enumerated_and_least_privilege(which: str, default_objects: list[dict[str, Any]],
                                                full_objects: list[dict[str, Any]]) -> None:
    objects = default_objects if which == "default" else full_objects
    for role in by_kind(objects, "ClusterRole") + by_kind(objects, "Role"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], f"{role['metadata']['name']}: wildcard in {field}"
            assert "resourceNames" not in rule or rule["resourceNames"]
    table = granted(objects)
    assert not any(resource in {"secrets", "nodes"} for _, resource in table)
    assert table == EXPECTED_RULES


def test_bindings_point_at_the_charts_service_account(full_objects: list[dict[str, Any]]) -> None:
    account = one(full_objects, "ServiceAccount")["metadata"]
    for binding in by_kind(full_objects, "ClusterRoleBinding") + by_kind(full_objects, "RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["name"],
                                        "namespace": account["namespace"]}]
        assert binding["roleRef"]["name"] in {r["metadata"]["name"] for r in by_kind(full_objects, "ClusterRole")}


def test_watch_namespaces_bind_per_namespace(full_objects: list[dict[str, Any]]) -> None:
    watched = yaml.safe_load(FULL_VALUES.read_text())["operator"]["watchNamespaces"]
    role_bindings = by_kind(full_objects, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in role_bindings) == sorted(watched)
    # Only the read-only discovery role stays cluster-wide.
    (cluster_binding,) = by_kind(full_objects, "ClusterRoleBinding")
    role = next(r for r in by_kind(full_objects, "ClusterRole")
                if r["metadata"]["name"] == cluster_binding["roleRef"]["name"])
    assert {verb for rule in role["rules"] for verb in rule["verbs"]} <= {"get", "list", "watch"}
    args = container(full_objects)["args"]
    for namespace in watched:
        assert f"--namespace={namespace}" in args


def test_full_values_monitors(full_objects: list[dict[str, Any]]) -> None:
    values = yaml.safe_load(FULL_VALUES.read_text())
    service_monitor = one(full_objects, "ServiceMonitor")
    pod_monitor = one(full_objects, "PodMonitor")
    for monitor in (service_monitor, pod_monitor):
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == values["metrics"]["prometheusRelease"]
        assert monitor["metadata"]["labels"]["example.com/scraped-by"] == "team-prometheus"
    assert pod_monitor["spec"]["selector"] == {
        "matchExpressions": [{"key": "speechtune.dev/finetunejob", "operator": "Exists"}],
        "matchLabels": {"training.kubeflow.org/replica-type": "master", "training.kubeflow.org/replica-index": "0"}}
    (endpoint,) = pod_monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics"
    assert pod_monitor["spec"]["namespaceSelector"] == {"matchNames": values["operator"]["watchNamespaces"]}
    service = metrics_service(full_objects)
    assert service_monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service_monitor["spec"]["endpoints"][0]["port"] == "metrics"


def test_release_label_can_be_dropped(helm: Path) -> None:
    objects = template(helm, "--set", "metrics.podMonitor.enabled=true", "--set", "metrics.prometheusRelease=")
    assert "release" not in one(objects, "PodMonitor")["metadata"]["labels"]
    assert one(objects, "PodMonitor")["spec"]["namespaceSelector"] == {"any": True}


def test_full_values_images_and_settings(full_objects: list[dict[str, Any]]) -> None:
    values = yaml.safe_load(FULL_VALUES.read_text())
    main = container(full_objects)
    image = values["operator"]["image"]
    assert main["image"] == f"{image['repository']}@{image['digest']}"
    env = {e["name"]: e.get("value") for e in main["env"]}
    for engine, setting in values["engines"].items():
        assert env["SPEECHTUNE_IMAGE_" + engine.upper().replace("-", "_")] == setting["image"]
    assert env["SPEECHTUNE_IMAGE_PULL_POLICY"] == values["trainers"]["imagePullPolicy"]
    assert env["SPEECHTUNE_TRAINER_METRICS_PORT"] == str(values["trainers"]["metricsPort"])
    assert env["SPEECHTUNE_HF_TOKEN_SECRET"] == values["trainers"]["hfTokenSecret"]["name"]
    assert env["SPEECHTUNE_ALLOWED_CAPABILITIES"] == "IPC_LOCK,SYS_NICE"
    assert env["SPEECHTUNE_HF_ENDPOINT"] == values["modelInitializer"]["hfEndpoint"]
    assert (env["SPEECHTUNE_INITIALIZER_CPU"], env["SPEECHTUNE_INITIALIZER_MEMORY"]) == ("500m", "1Gi")
    assert env["TZ"] == "UTC"
    pod = one(full_objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["tolerations"] == values["operator"]["tolerations"]


@pytest.mark.parametrize("which", ["default", "full"])
def test_dashboards_ship_as_labelled_configmaps(which: str, default_objects: list[dict[str, Any]],
                                                full_objects: list[dict[str, Any]]) -> None:
    objects = default_objects if which == "default" else full_objects
    shipped = {p.name: p.read_text() for p in (CHART / "dashboards").glob("*.json")}
    maps = by_kind(objects, "ConfigMap")
    assert len(maps) == len(shipped)
    rendered = {}
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["annotations"]["grafana_folder"]
        rendered.update(config_map["data"])
    assert {name: json.loads(text) for name, text in rendered.items()} == {
        name: json.loads(text) for name, text in shipped.items()}


def test_dashboards_can_be_switched_off(helm: Path) -> None:
    assert not by_kind(template(helm, "--set", "dashboards.enabled=false"), "ConfigMap")


@pytest.mark.parametrize(("setting", "field"), [
    ("engines.hf-ctc.image=ghcr.io/speechtune/speechtune-hf:latest", "hf-ctc"),
    ("operator.metricsPort=0", "metricsPort"),
    ("operator.replicas=2", "replicas"),
])
def test_helm_enforces_the_values_schema(helm: Path, setting: str, field: str) -> None:
    done = run_helm(helm, "template", "x", str(CHART), "--kube-version", KUBE_VERSION, "--set", setting,
                    check=False)
    assert done.returncode != 0
    assert field in done.stderr


def test_packaged_chart_carries_the_crd(helm: Path, tmp_path: Path) -> None:
    run_helm(helm, "package", str(CHART), "--destination", str(tmp_path))
    (package,) = tmp_path.glob("speechtune-*.tgz")
    with tarfile.open(package) as archive:
        names = archive.getnames()
        member = archive.extractfile("speechtune/crds/finetunejob.yaml")
        assert member is not None
        assert member.read() == (ROOT / "crds" / "finetunejob.yaml").read_bytes()
    assert not [n for n in names if n.startswith("speechtune/ci/")]
    assert "speechtune/values.schema.json" in names


def test_deployment_sets_only_settings_the_operator_reads(full_objects: list[dict[str, Any]]) -> None:
    """Every SPEECHTUNE_* variable of the Deployment is a setting of the operator (no silent typos)."""
    from speechtune_operator import settings  # noqa: PLC0415  (the operator's venv package)

    known = {field.metadata["env"] for field in dataclasses.fields(settings.Settings)}
    chart = {e["name"] for e in container(full_objects)["env"] if e["name"].startswith("SPEECHTUNE_")}
    assert chart <= known, f"unknown to the operator: {sorted(chart - known)}"
    assert {"SPEECHTUNE_IMAGE_NEMO_CANARY", "SPEECHTUNE_IMAGE_SPEECHBRAIN_CTC", "SPEECHTUNE_IMAGE_HF_CTC",
            "SPEECHTUNE_OPERATOR_METRICS_PORT"} <= chart


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector (matchLabels + matchExpressions) applied to a pod's labels."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        if not {"Exists": key in labels, "DoesNotExist": key not in labels,
                "In": labels.get(key) in values, "NotIn": labels.get(key) not in values}[operator]:
            return False
    return True


def test_podmonitor_selects_the_trainer_pods_the_operator_makes(full_objects: list[dict[str, Any]]) -> None:
    """Chart values -> operator settings -> PyTorchJob pod -> the chart's PodMonitor scrapes it."""
    from speechtune_operator import settings  # noqa: PLC0415  (the operator's venv package)
    from speechtune_operator.builders import pytorchjob  # noqa: PLC0415

    env = {e["name"]: e["value"] for e in container(full_objects)["env"] if "value" in e}
    job = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text())
    job["metadata"].update(namespace="speechtune-team-a", uid="0000")
    built = pytorchjob.build_pytorchjob(job, settings.from_env(env))
    master = built["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
    (trainer,) = master["spec"]["containers"]
    pod_monitor = one(full_objects, "PodMonitor")["spec"]
    # The training-operator adds its labels to the pods: only rank 0's (the one serving /metrics)
    # is selected, so no worker shows up as a down target.
    from speechtune_operator.builders import backends  # noqa: PLC0415

    rank0 = {**master["metadata"]["labels"], **backends.PYTORCHJOB.rank0_labels}
    worker = {**rank0, "training.kubeflow.org/replica-type": "worker"}
    assert selects(pod_monitor["selector"], rank0)
    assert not selects(pod_monitor["selector"], worker)
    assert job["metadata"]["namespace"] in pod_monitor["namespaceSelector"]["matchNames"]
    values = yaml.safe_load(FULL_VALUES.read_text())
    ports = {p["name"]: p["containerPort"] for p in trainer["ports"]}
    assert ports[pod_monitor["podMetricsEndpoints"][0]["port"]] == values["trainers"]["metricsPort"]
    assert trainer["image"] == values["engines"][job["spec"]["engine"]]["image"]
    assert trainer["imagePullPolicy"] == values["trainers"]["imagePullPolicy"]


def test_trainjob_backend_ships_a_runtime_per_engine_and_trainjob_rbac(helm: Path) -> None:
    """backend=trainjob: one ClusterTrainingRuntime per engine (the name the operator's
    TrainJobs reference), the engine's image and our command in container `node`, and RBAC
    on trainjobs instead of pytorchjobs (nothing else changes)."""
    from speechtune_operator import names, settings  # noqa: PLC0415  (the operator's venv package)

    objects = template(helm, "--set", "backend=trainjob")
    expected = {**{k: v for k, v in EXPECTED_RULES.items() if k != ("kubeflow.org", "pytorchjobs")},
                ("trainer.kubeflow.org", "trainjobs"): {"get", "list", "watch", "create", "patch"}}
    assert granted(objects) == expected
    assert {e["name"]: e.get("value") for e in container(objects)["env"]}["SPEECHTUNE_BACKEND"] == "trainjob"
    runtimes = {r["metadata"]["name"]: r for r in by_kind(objects, "ClusterTrainingRuntime")}
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(runtimes) == {names.training_runtime_name(engine) for engine in settings.ENGINES}
    for engine in settings.ENGINES:
        runtime = runtimes[names.training_runtime_name(engine)]["spec"]
        assert "torch" in runtime["mlPolicy"]
        [node] = runtime["template"]["spec"]["replicatedJobs"]
        assert node["name"] == "node"
        assert node["template"]["metadata"]["labels"]["trainer.kubeflow.org/trainjob-ancestor-step"] == "trainer"
        pod = node["template"]["spec"]["template"]["spec"]
        [trainer] = pod["containers"]
        assert trainer["name"] == "node" and trainer["image"] == values["engines"][engine]["image"]
        assert trainer["command"] == ["speechtune", "train", "--job", "/etc/speechtune/job.yaml"]
        assert {p["name"]: p["containerPort"] for p in trainer["ports"]} == {"metrics": values["trainers"]["metricsPort"]}
        assert trainer["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["automountServiceAccountToken"] is False and pod["securityContext"]["runAsNonRoot"] is True
    assert not by_kind(template(helm), "ClusterTrainingRuntime")  # the default backend ships none


def test_webhook_is_scoped_to_finetunejob_creations_and_fails_closed(default_objects: list[dict[str, Any]]) -> None:
    from speechtune_operator.handlers import registration  # noqa: PLC0415  (the operator's venv package)

    [hook] = one(default_objects, "ValidatingWebhookConfiguration")["webhooks"]
    assert hook["failurePolicy"] == "Fail" and hook["sideEffects"] == "None"
    assert hook["rules"] == [{"apiGroups": ["speechtune.dev"], "apiVersions": ["v1alpha1"],
                              "resources": ["finetunejobs"], "operations": ["CREATE"], "scope": "Namespaced"}]
    service = hook["clientConfig"]["service"]
    assert service["path"] == f"/{registration.ADMISSION_ID}" and service["port"] == 443
    webhook_service = next(s for s in default_objects if s["kind"] == "Service"
                           and s["metadata"]["name"] == service["name"])
    assert webhook_service["spec"]["ports"][0]["targetPort"] == "webhook"
    deployment = container(default_objects)
    assert {"name": "webhook", "containerPort": 9443, "protocol": "TCP"} in deployment["ports"]
    env = {e["name"]: e.get("value") for e in deployment["env"]}
    assert env["SPEECHTUNE_ADMISSION_PORT"] == "9443"
    # TLS: the Secret's CA is the webhook's caBundle, and its certificate names the Service.
    secret = one(default_objects, "Secret")
    assert secret["type"] == "kubernetes.io/tls"
    assert secret["data"]["ca.crt"] == hook["clientConfig"]["caBundle"]
    certificate = base64.b64decode(secret["data"]["tls.crt"])
    done = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName"], input=certificate,
                          capture_output=True, check=True, timeout=30)
    assert f"DNS:{service['name']}.speechtune-system.svc".encode() in done.stdout
    mounts = {m["name"]: m for m in deployment["volumeMounts"]}
    assert mounts["webhook-tls"]["mountPath"] == env["SPEECHTUNE_ADMISSION_CERT_DIR"]


def test_webhook_with_cert_manager_and_watched_namespaces(helm: Path) -> None:
    objects = template(helm, "--set", "webhook.certManager.enabled=true", "--set",
                       "operator.watchNamespaces={team-a,team-b}")
    assert "Secret" not in {o["kind"] for o in objects}
    certificate = one(objects, "Certificate")
    assert certificate["spec"]["secretName"].endswith("-webhook-tls")
    configuration = one(objects, "ValidatingWebhookConfiguration")
    assert configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"speechtune-system/{certificate['metadata']['name']}")
    [hook] = configuration["webhooks"]
    assert "caBundle" not in hook["clientConfig"]
    assert hook["namespaceSelector"] == {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]}]}


def test_webhook_can_be_switched_off(helm: Path) -> None:
    objects = template(helm, "--set", "webhook.enabled=false")
    assert "ValidatingWebhookConfiguration" not in {o["kind"] for o in objects}
    assert "SPEECHTUNE_ADMISSION_PORT" not in {e["name"] for e in container(objects)["env"]}


def test_trainjob_podmonitor_selects_node_zero_only(helm: Path) -> None:
    from speechtune_operator.builders import backends  # noqa: PLC0415

    selector = one(template(helm, "--set", "backend=trainjob", "--set", "metrics.podMonitor.enabled=true"),
                   "PodMonitor")["spec"]["selector"]
    rank0 = {"speechtune.dev/finetunejob": "x", **backends.TRAINJOB.rank0_labels}
    assert selects(selector, rank0)
    assert not selects(selector, {**rank0, "batch.kubernetes.io/job-completion-index": "1"})
