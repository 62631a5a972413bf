"""Operator settings: one typed, frozen value, read once at start-up from flags and env.

Every field carries its help text; `from_args` builds an argparse option per field whose
default comes from the environment variable `SPEECHTUNE_<FIELD>` (the Helm chart sets
those), so flags, env and `--help` never disagree.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
from typing import Any, Mapping, Sequence

ENGINES = ("nemo-canary", "speechbrain-ctc", "hf-ctc")
BACKENDS = ("pytorchjob", "trainjob")


def _setting(default: Any, help: str, env: str) -> Any:
    return dataclasses.field(default=default, metadata={"help": help, "env": env})


@dataclasses.dataclass(frozen=True)
class Settings:
    backend: str = _setting(
        "pytorchjob", "What runs a FinetuneJob's pods: pytorchjob (Kubeflow training-operator v1, "
        "PyTorchJob) or trainjob (Kubeflow Trainer v2, TrainJob on the chart's "
        "ClusterTrainingRuntime speechtune-<engine>).", "SPEECHTUNE_BACKEND")
    namespaces: tuple[str, ...] = _setting(
        (), "Namespaces to watch (comma-separated); empty watches every namespace.",
        "SPEECHTUNE_OPERATOR_NAMESPACES")
    image_nemo_canary: str = _setting(
        "ghcr.io/speechtune/speechtune-nemo:0.1.0",
        "Trainer image for engine nemo-canary.", "SPEECHTUNE_IMAGE_NEMO_CANARY")
    image_speechbrain_ctc: str = _setting(
        "ghcr.io/speechtune/speechtune-speechbrain:0.1.0",
        "Trainer image for engine speechbrain-ctc.", "SPEECHTUNE_IMAGE_SPEECHBRAIN_CTC")
    image_hf_ctc: str = _setting(
        "ghcr.io/speechtune/speechtune-hf:0.1.0",
        "Trainer image for engine hf-ctc.", "SPEECHTUNE_IMAGE_HF_CTC")
    allowed_image_prefixes: tuple[str, ...] = _setting(
        (), "Registries/prefixes (comma-separated, e.g. ghcr.io/speechtune/) a FinetuneJob's "
        "spec.image may come from; the engine images are always allowed.",
        "SPEECHTUNE_ALLOWED_IMAGE_PREFIXES")
    refuse_unlisted_images: bool = _setting(
        True, "Fail a FinetuneJob whose spec.image is not allowed. When false it runs, but "
        "without the Hugging Face token.", "SPEECHTUNE_REFUSE_UNLISTED_IMAGES")
    default_priority_class: str = _setting(
        "", "PriorityClass of trainer pods whose job names none; empty: the cluster's default.",
        "SPEECHTUNE_DEFAULT_PRIORITY_CLASS")
    forbid_system_priority_classes: bool = _setting(
        True, "Fail a FinetuneJob asking for a system-* PriorityClass.",
        "SPEECHTUNE_FORBID_SYSTEM_PRIORITY_CLASSES")
    trainer_network_policy: bool = _setting(
        False, "Give every job a NetworkPolicy: its pods accept connections only from pods of "
        "the same job, and on the metrics port from the operator and the Prometheus namespaces.",
        "SPEECHTUNE_TRAINER_NETWORK_POLICY")
    operator_namespace: str = _setting(
        "", "The operator's own namespace (peer of the trainers' metrics port).",
        "SPEECHTUNE_OPERATOR_NAMESPACE")
    operator_pod_labels: tuple[str, ...] = _setting(
        (), "Labels of the operator's pod, key=value (comma-separated), narrowing that peer.",
        "SPEECHTUNE_OPERATOR_POD_LABELS")
    prometheus_namespaces: tuple[str, ...] = _setting(
        (), "Namespaces (comma-separated) whose Prometheus may scrape the trainers' metrics port.",
        "SPEECHTUNE_PROMETHEUS_NAMESPACES")
    image_pull_policy: str = _setting(
        "IfNotPresent", "imagePullPolicy of the trainer containers.",
        "SPEECHTUNE_IMAGE_PULL_POLICY")
    hf_token_secret: str = _setting(
        "speechtune-hf-token",
        "Secret (in the job's namespace) whose key becomes HF_TOKEN in trainer pods, by "
        "secretKeyRef and optional; empty disables.", "SPEECHTUNE_HF_TOKEN_SECRET")
    hf_token_key: str = _setting(
        "token", "Key of the Hugging Face token in that secret.", "SPEECHTUNE_HF_TOKEN_KEY")
    model_initializer: bool = _setting(
        True, "Download a job's spec.model.pretrained once into its model volume with a CPU-only Job "
        "(phase Initializing) before the trainer pods start, which then run with HF_HUB_OFFLINE=1. Off: "
        "the trainer pods download it themselves.", "SPEECHTUNE_MODEL_INITIALIZER")
    hf_endpoint: str = _setting(
        "https://huggingface.co", "The Hugging Face Hub (or a mirror) pods download from: HF_ENDPOINT of "
        "the model initializer and of trainer pods that download. Only this setting chooses it; a "
        "FinetuneJob cannot.", "SPEECHTUNE_HF_ENDPOINT")
    initializer_cpu: str = _setting(
        "1", "CPU request and limit of the model initializer's container.", "SPEECHTUNE_INITIALIZER_CPU")
    initializer_memory: str = _setting(
        "2Gi", "Memory request and limit of the model initializer's container (downloads stream to disk).",
        "SPEECHTUNE_INITIALIZER_MEMORY")
    trainer_uid: int = _setting(
        65532, "Numeric user (and group) the trainer containers run as.",
        "SPEECHTUNE_TRAINER_UID")
    trainer_metrics_port: int = _setting(
        9400, "Port of the trainer's Prometheus endpoint (container port 'metrics').",
        "SPEECHTUNE_TRAINER_METRICS_PORT")
    metrics_port: int = _setting(
        8080, "Port of the operator's own /metrics; 0 disables it.",
        "SPEECHTUNE_OPERATOR_METRICS_PORT")
    scrape_interval: float = _setting(
        15.0, "Seconds between scrapes of a running job's master pod /metrics.",
        "SPEECHTUNE_SCRAPE_INTERVAL")
    scrape_timeout: float = _setting(
        3.0, "Time one scrape may take as a whole (connect, headers and body), in seconds.",
        "SPEECHTUNE_SCRAPE_TIMEOUT")
    scrape_max_bytes: int = _setting(
        4 * 1024 * 1024, "Largest /metrics response read from a trainer pod, in bytes; a larger "
        "one is dropped unparsed.", "SPEECHTUNE_SCRAPE_MAX_BYTES")
    test_scrape_host: str = _setting(
        "", "Tests only: a loopback address scraped instead of the master pod's IP (the port "
        "is still the pod's container port named metrics). The local control plane's pods "
        "have no network; no Kubernetes object can set this.", "SPEECHTUNE_TEST_SCRAPE_HOST")
    allowed_capabilities: tuple[str, ...] = _setting(
        ("IPC_LOCK",), "Linux capabilities a FinetuneJob may add to its trainer container "
        "(spec.pod.addCapabilities, comma-separated); IPC_LOCK lets RDMA pin memory. Empty "
        "allows none.", "SPEECHTUNE_ALLOWED_CAPABILITIES")
    admission_port: int = _setting(
        0, "HTTPS port of the validating admission webhook (the trainer's spec checks at "
        "kubectl apply); 0 disables it.", "SPEECHTUNE_ADMISSION_PORT")
    admission_addr: str = _setting(
        "0.0.0.0", "Address the admission webhook listens on.", "SPEECHTUNE_ADMISSION_ADDR")
    admission_cert_dir: str = _setting(
        "/etc/speechtune/webhook-tls",
        "Folder holding the webhook's tls.crt and tls.key (a kubernetes.io/tls Secret); "
        "re-read when they change (cert-manager renewals).", "SPEECHTUNE_ADMISSION_CERT_DIR")
    workers: int = _setting(
        32, "Threads running the (blocking) handlers, and the API connection pool size. Each "
        "creation waits ~0.1 s on the PyTorchJob admission webhook, so this bounds how many "
        "FinetuneJobs of a burst are reconciled at once; each thread with its connection "
        "costs ~0.5 MiB of memory.",
        "SPEECHTUNE_OPERATOR_WORKERS")

    def __post_init__(self) -> None:
        for field in ("trainer_metrics_port", "workers", "trainer_uid", "scrape_max_bytes"):
            if getattr(self, field) <= 0:
                raise ValueError(f"setting {field} must be > 0, got {getattr(self, field)}")
        if not 0 <= self.admission_port < 65536:
            raise ValueError(f"setting admission_port must be a port number, got {self.admission_port}")
        if not 0 <= self.metrics_port < 65536:
            raise ValueError(f"setting metrics_port must be a port number, got {self.metrics_port}")
        if self.scrape_interval <= 0 or self.scrape_timeout <= 0:
            raise ValueError("settings scrape_interval and scrape_timeout must be > 0")
        if self.backend not in BACKENDS:
            raise ValueError(f"setting backend: unknown backend {self.backend!r} (known: {', '.join(BACKENDS)})")
        if self.test_scrape_host and not _is_loopback(self.test_scrape_host):
            raise ValueError(f"setting test_scrape_host must be a loopback IP address, got "
                             f"{self.test_scrape_host!r}")
        if any("=" not in label or not label.split("=", 1)[0] for label in self.operator_pod_labels):
            raise ValueError(f"setting operator_pod_labels: want key=value items, got {self.operator_pod_labels}")
        if not self.hf_endpoint.startswith(("https://", "http://")) or any(c.isspace() for c in self.hf_endpoint):
            raise ValueError(f"setting hf_endpoint must be an http(s) URL, got {self.hf_endpoint!r}")
        if self.image_pull_policy not in ("Always", "IfNotPresent", "Never"):
            raise ValueError(f"setting image_pull_policy: unknown policy {self.image_pull_policy!r}")

    def image_for(self, engine: str) -> str:
        if engine not in ENGINES:
            raise ValueError(f"spec.engine: unknown engine {engine!r} (known: {', '.join(ENGINES)})")
        return str(getattr(self, "image_" + engine.replace("-", "_")))


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def add_arguments(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    """One option per setting, e.g. --scrape-interval, defaulting to its env variable."""
    for field in dataclasses.fields(Settings):
        option = "--" + field.name.replace("_", "-")
        default = ",".join(field.default) if isinstance(field.default, tuple) else field.default
        help_text = f"{field.metadata['help']} [env {field.metadata['env']}; default {default!r}]"
        parser.add_argument(option, dest=field.name, default=env.get(field.metadata["env"]),
                            help=help_text, metavar=field.name.upper())


def from_namespace(values: Mapping[str, Any]) -> Settings:
    """Settings from parsed options (strings or None); unset ones keep their defaults."""
    kwargs: dict[str, Any] = {}
    for field in dataclasses.fields(Settings):
        raw = values.get(field.name)
        if raw is not None:  # an empty string is a value (e.g. no HF token secret)
            kwargs[field.name] = _convert(field, raw)
    return Settings(**kwargs)


def _convert(field: dataclasses.Field[Any], raw: Any) -> Any:
    default = field.default
    try:
        if isinstance(default, tuple):
            items: Sequence[str] = raw.split(",") if isinstance(raw, str) else raw
            return tuple(item.strip() for item in items if item.strip())
        if isinstance(default, bool):
            word = str(raw).strip().lower()
            if word not in ("1", "true", "yes", "0", "false", "no"):
                raise ValueError(f"not a boolean: {raw!r}")
            return word in ("1", "true", "yes")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError as error:
        raise ValueError(f"setting {field.name} ({field.metadata['env']}): {error}") from None
    return str(raw)


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    environ = os.environ if env is None else env
    return from_namespace({f.name: environ.get(f.metadata["env"]) for f in dataclasses.fields(Settings)})
