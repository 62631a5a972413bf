"""The validating admission webhook on the real apiserver: the operator serves it over TLS
(its own certificate, as the chart's Secret gives it), a ValidatingWebhookConfiguration with
failurePolicy Fail points the apiserver at it, and each engine rule a job breaks is refused
by `kubectl apply` itself, the message naming the field. Scoped to this module's namespace."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any, Iterator

import kubernetes
import pytest
import yaml

import ftj_cluster
from ftj_cluster import wait_for

pytestmark = pytest.mark.cluster


def self_signed(folder: Path) -> Path:
    """tls.crt/tls.key for 127.0.0.1, where the apiserver calls the out-of-cluster operator."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", "tls.key", "-out", "tls.crt", "-days", "1", "-subj", "/CN=speechtune-webhook",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-addext", "extendedKeyUsage=serverAuth"],
                   cwd=folder, check=True, capture_output=True, timeout=60)
    return folder


def configuration(name: str, namespace: str, port: int, ca: bytes) -> dict[str, Any]:
    """The chart's webhook (templates/webhook.yaml), reached by URL instead of a Service."""
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [{
                "name": "engine-rules.speechtune.dev", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                "failurePolicy": "Fail", "matchPolicy": "Equivalent", "timeoutSeconds": 10,
                "rules": [{"apiGroups": ["speechtune.dev"], "apiVersions": ["v1alpha1"], "resources": ["finetunejobs"],
                           "operations": ["CREATE"], "scope": "Namespaced"}],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "clientConfig": {"url": f"https://127.0.0.1:{port}/engine-rules",
                                 "caBundle": base64.b64encode(ca).decode()}}]}


@pytest.fixture(scope="module")
def webhook(cluster: Any, namespace: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    certs = self_signed(tmp_path_factory.mktemp("webhook-tls"))
    port = ftj_cluster.free_port()
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    env = {"SPEECHTUNE_ADMISSION_PORT": str(port), "SPEECHTUNE_ADMISSION_ADDR": "127.0.0.1",
           "SPEECHTUNE_ADMISSION_CERT_DIR": str(certs)}
    name = f"speechtune-{namespace}"
    with ftj_cluster.running_operator(kubeconfig=cluster.kubeconfig, namespace=namespace, log=log, extra_env=env):
        cluster.kubectl("apply", "-f", "-",
                        input=json.dumps(configuration(name, namespace, port, (certs / "tls.crt").read_bytes())))
        try:
            # The apiserver picks a new webhook configuration up within a second or so.
            custom = ftj_cluster.api_clients(cluster.kubeconfig)[1]
            wait_for(lambda: "engine-rules" in (create(custom, namespace, changed("canary", "training.peft.method",
                                                                                  "lora")) or ""),
                     timeout=60, what="the webhook to take effect")
            yield port
        finally:
            cluster.kubectl("delete", "validatingwebhookconfiguration", name, check=False)


def create(custom: kubernetes.client.CustomObjectsApi, namespace: str, body: dict[str, Any]) -> str | None:
    """None when created (dry run), else the apiserver's refusal."""
    try:
        custom.create_namespaced_custom_object(ftj_cluster.GROUP, ftj_cluster.VERSION, namespace, ftj_cluster.PLURAL,
                                               body, dry_run="All")
    except kubernetes.client.ApiException as error:
        return str(json.loads(error.body)["message"])
    return None


def changed(example: str, path: str, value: Any) -> dict[str, Any]:
    body = ftj_cluster.example(example)
    node = body["spec"]
    *parents, leaf = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return body


# Rules only the engines know: the CRD's schema and CEL rules accept these jobs.
# (example, spec path, value, field the refusal names, words it holds)
ENGINE_RULES = {
    "LoRA on nemo-canary": ("canary", "training.peft.method", "lora", "spec.training.peft.method",
                            "not supported by nemo-canary"),
    "unknown NeMo override": ("canary", "training.overrides", {"modle.optim.lr": 1}, "spec.training.overrides",
                              "unknown NeMo config key"),
    "NeMo prompt format": ("canary", "training.overrides", {"model.prompt_format": "whisper"},
                           "spec.training.overrides['model.prompt_format']", "supported"),
    "unknown speechbrain override": ("speechbrain-atc0", "training.overrides", {"nope": 1},
                                     "spec.training.overrides.nope", "unknown key for speechbrain-ctc"),
    "speechbrain d_model vs nhead": ("speechbrain-atc0", "training.overrides", {"d_model": 100, "nhead": 3},
                                     "spec.training.overrides.d_model", "divisible"),
    "unknown hf-ctc override": ("mms-banglish-lora", "training.overrides", {"nope": 1},
                                "spec.training.overrides.nope", "not an hf-ctc setting"),
    "hf-ctc loader option": ("mms-banglish-lora", "training.overrides", {"modelConfig": {"trust_remote_code": True}},
                             "spec.training.overrides.modelConfig.trust_remote_code", "not settable"),
    "model path outside the volumes": ("speechbrain-atc0", "model", {"path": "/etc/passwd"}, "spec.model.path",
                                       "outside the mounted volumes"),
    "capability outside the allow-list": ("canary", "pod.addCapabilities", ["SYS_ADMIN"], "spec.pod.addCapabilities",
                                          "allow-list"),
}


@pytest.mark.parametrize("case", sorted(ENGINE_RULES))
def test_kubectl_apply_refuses_an_engine_rule_naming_the_field(api: Any, namespace: str, webhook: int,
                                                              case: str) -> None:
    example, path, value, field, words = ENGINE_RULES[case]
    message = create(api[1], namespace, changed(example, path, value))
    assert message is not None, f"{case}: admitted"
    assert 'admission webhook "engine-rules.speechtune.dev" denied the request' in message, message
    assert f"{field}: " in message and words in message, message


def test_valid_jobs_are_admitted(api: Any, namespace: str, webhook: int) -> None:
    for name in sorted(ftj_cluster.EXAMPLES):
        assert create(api[1], namespace, ftj_cluster.example(name)) is None, name


def test_kubectl_names_the_field_too(cluster: Any, namespace: str, webhook: int) -> None:
    body = changed("canary", "training.peft.method", "lora")
    done = cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(body),
                           check=False)
    assert done.returncode != 0
    assert "spec.training.peft.method: 'lora' is not supported by nemo-canary" in done.stderr


def test_with_the_operator_down_nothing_is_admitted(api: Any, cluster: Any, namespace: str, webhook: int,
                                                    tmp_path: Path) -> None:
    # failurePolicy Fail: no webhook answer, no job (a job the checks never saw never runs).
    name = f"speechtune-{namespace}-down"
    closed = ftj_cluster.free_port()
    certs = self_signed(tmp_path)
    cluster.kubectl("apply", "-f", "-", input=json.dumps(configuration(name, namespace, closed,
                                                                        (certs / "tls.crt").read_bytes())))
    try:
        message = wait_for(lambda: create(api[1], namespace, ftj_cluster.example("speechbrain-atc0")),
                           what="the second webhook to take effect")
        assert "failed calling webhook" in message, message
    finally:
        cluster.kubectl("delete", "validatingwebhookconfiguration", name, check=False)
