"""The scrape timer: the master pod's /metrics into status.progress and status.metrics."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from speechtune_operator import settings as settings_mod
from speechtune_operator import names
from speechtune_operator.builders import progress
from speechtune_operator.client import api, fetching, pods

logger = logging.getLogger(__name__)


def scrape(body: kopf.Body, patch: kopf.Patch, *, settings: settings_mod.Settings,
           clients: api.Clients) -> None:
    url = scrape_url(body, settings=settings, clients=clients)
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


def scrape_url(body: kopf.Body, *, settings: settings_mod.Settings, clients: api.Clients) -> str | None:
    meta = body["metadata"]
    annotated = (meta.get("annotations") or {}).get(names.ANNOTATION_METRICS_URL)
    if annotated:
        return str(annotated)
    values: dict[str, Any] = {"port": settings.trainer_metrics_port, "name": meta["name"],
                              "namespace": meta["namespace"]}
    if "{pod_ip}" in settings.scrape_url:
        pod = pods.get(clients, meta["namespace"], names.master_pod_name(meta["name"]))
        pod_ip = ((pod or {}).get("status") or {}).get("podIP")
        if not pod_ip:
            return None
        values["pod_ip"] = pod_ip
    return settings.scrape_url.format(**values)
