"""The scrape timer: the master pod's /metrics into status.progress and status.metrics."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from speechtune_operator import settings as settings_mod
from speechtune_operator import names
from speechtune_operator.builders import backends, progress
from speechtune_operator.client import api, fetching, pods

logger = logging.getLogger(__name__)


def scrape(body: kopf.Body, patch: kopf.Patch, *, settings: settings_mod.Settings,
           clients: api.Clients, backend: backends.Backend = backends.PYTORCHJOB) -> None:
    url = scrape_url(body, settings=settings, clients=clients, backend=backend)
    if url is None:
        return
    try:
        text = fetching.fetch(url, timeout=settings.scrape_timeout)
    except OSError as error:  # the trainer may not listen yet; the next tick tries again
        logger.debug("scrape of %s failed: %s", url, error)
        return
    fields = progress.status_fields(text, job=body["metadata"]["name"])
    status = body.get("status") or {}
    changed = {key: value for key, value in fields.items() if status.get(key) != value}
    for key, value in changed.items():
        patch.status[key] = value


def scrape_url(body: kopf.Body, *, settings: settings_mod.Settings, clients: api.Clients,
               backend: backends.Backend = backends.PYTORCHJOB) -> str | None:
    meta = body["metadata"]
    annotated = (meta.get("annotations") or {}).get(names.ANNOTATION_METRICS_URL)
    if annotated:
        return str(annotated)
    values: dict[str, Any] = {"port": settings.trainer_metrics_port, "name": meta["name"],
                              "namespace": meta["namespace"]}
    if "{pod_ip}" in settings.scrape_url:
        # Rank 0 by label: a TrainJob's pod names end in a random suffix. A replaced pod may
        # linger next to its successor; the one with an IP is the one serving.
        rank0 = pods.matching(clients, meta["namespace"], backend.rank0_selector(names.child_name(meta["name"])))
        pod_ip = next((ip for pod in rank0 if (ip := (pod.get("status") or {}).get("podIP"))), None)
        if not pod_ip:
            return None
        values["pod_ip"] = pod_ip
    return settings.scrape_url.format(**values)
