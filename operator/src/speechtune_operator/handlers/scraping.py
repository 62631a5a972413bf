"""The scrape timer: the rank-0 pod's /metrics into status.progress and status.metrics.

The target comes only from the API's view of the job's own rank-0 pod (its podIP, and its
trainer container's port named `metrics`, which must be the port the operator configured);
see builders/metrics_target.py. A scrape that fails for any reason is logged with a fixed
phrase of ours and tried again on the next tick: no text from the endpoint ever reaches a
log line, an Event or the status.
"""

from __future__ import annotations

import logging

import kopf

from speechtune_operator import settings as settings_mod
from speechtune_operator import names
from speechtune_operator.builders import backends, metrics_target, progress
from speechtune_operator.client import api, fetching, pods

logger = logging.getLogger(__name__)


def scrape(body: kopf.Body, patch: kopf.Patch, *, settings: settings_mod.Settings,
           clients: api.Clients, backend: backends.Backend = backends.PYTORCHJOB) -> None:
    meta = body["metadata"]
    namespace, name = str(meta["namespace"]), str(meta["name"])
    target = find_target(namespace, name, settings=settings, clients=clients, backend=backend)
    if target is None:
        return
    try:
        raw = fetching.fetch(target.host, target.port, timeout=settings.scrape_timeout,
                             max_bytes=settings.scrape_max_bytes)
    except fetching.FetchError as error:  # our own phrase; the trainer may not listen yet
        logger.debug("scrape of %s/%s failed: %s", namespace, name, error)
        return
    try:
        fields = progress.status_fields(raw.decode("utf-8"), job=name)
    except Exception as error:  # noqa: BLE001 - any text at all may come back; its words stay out
        logger.info("scrape of %s/%s: not a Prometheus text exposition (%s)", namespace, name,
                    type(error).__name__)
        return
    status = body.get("status") or {}
    for key, value in fields.items():
        if status.get(key) != value:
            patch.status[key] = value


def find_target(namespace: str, job: str, *, settings: settings_mod.Settings, clients: api.Clients,
                backend: backends.Backend = backends.PYTORCHJOB) -> metrics_target.Target | None:
    """Rank 0 by label (a TrainJob's pod names end in a random suffix). A replaced pod may
    linger next to its successor: the Running one with an IP is the one serving."""
    try:
        rank0 = pods.matching(clients, namespace, backend.rank0_selector(names.child_name(job)))
    except Exception as error:  # noqa: BLE001 - the next tick tries again
        logger.debug("scrape of %s/%s: listing its pods failed (%s)", namespace, job,
                     api.describe_error(error))
        return None
    for pod in rank0:
        target = metrics_target.rank0_target(pod, container=backend.container, port=settings.trainer_metrics_port,
                                             host_override=settings.test_scrape_host)
        if target is not None:
            return target
    return None
