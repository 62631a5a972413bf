"""The scrape loop: the rank-0 pod's /metrics into status.progress and status.metrics.

The target comes only from the API's view of the job's own rank-0 pod (its podIP, and its
trainer container's port named `metrics`, which must be the port the operator configured);
see builders/metrics_target.py. A scrape that fails for any reason is logged with a fixed
phrase of ours and tried again on the next tick: no text from the endpoint ever reaches a
log line, an Event or the status.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from speechtune_operator import settings as settings_mod
from speechtune_operator import names
from speechtune_operator.builders import backends, metrics_target, phase, progress
from speechtune_operator.client import api, fetching, finetunejobs, pods
from speechtune_operator.handlers import guarding, jobcache

logger = logging.getLogger(__name__)
SCRAPERS = 4  # scrapes at once: each waits on a trainer's endpoint (up to scrape_timeout)


def scrape(view: jobcache.JobView, *, settings: settings_mod.Settings, clients: api.Clients,
           backend: backends.Backend = backends.PYTORCHJOB) -> dict[str, Any]:
    """The status fields (progress, metrics) that changed since `view`; {} when none or
    when the scrape failed (the next tick tries again)."""
    namespace, name = view.namespace, view.name
    target = find_target(namespace, name, settings=settings, clients=clients, backend=backend)
    if target is None:
        return {}
    try:
        raw = fetching.fetch(target.host, target.port, timeout=settings.scrape_timeout,
                             max_bytes=settings.scrape_max_bytes)
    except fetching.FetchError as error:  # our own phrase; the trainer may not listen yet
        logger.debug("scrape of %s/%s failed: %s", namespace, name, error)
        return {}
    try:
        fields = progress.status_fields(raw.decode("utf-8"), job=name)
    except Exception as error:  # noqa: BLE001 - any text at all may come back; its words stay out
        logger.info("scrape of %s/%s: not a Prometheus text exposition (%s)", namespace, name,
                    type(error).__name__)
        return {}
    return {key: value for key, value in fields.items() if view.status.get(key) != value}


def scrape_and_write(view: jobcache.JobView, *, settings: settings_mod.Settings, clients: api.Clients,
                     cache: jobcache.JobCache, backend: backends.Backend = backends.PYTORCHJOB) -> None:
    try:
        patch = scrape(view, settings=settings, clients=clients, backend=backend)
        if patch and finetunejobs.patch_status(clients, view.namespace, view.name, patch):
            cache.remember_status(view, patch)
    except Exception as error:  # noqa: BLE001 - the next tick tries again; no text of it leaves
        logger.error("scraping the metrics of %s/%s failed: %s at %s", view.namespace, view.name,
                     api.describe_error(error), guarding.where(error))


async def scrape_running_jobs(*, settings: settings_mod.Settings, clients: api.Clients, cache: jobcache.JobCache,
                              backend: backends.Backend = backends.PYTORCHJOB, stop: asyncio.Event) -> None:
    """Every scrape_interval, each Running job once, SCRAPERS at a time.

    One loop instead of kopf's per-object timer: a kopf timer makes kopf keep the latest
    body of every FinetuneJob in memory for as long as it exists (its "live fresh body",
    ~13 KB each, Running or not) and one task per running job; this loop reads the job
    cache the operator keeps anyway.
    """
    limit = asyncio.Semaphore(SCRAPERS)

    async def one(view: jobcache.JobView) -> None:
        async with limit:
            await asyncio.to_thread(scrape_and_write, view, settings=settings, clients=clients, cache=cache,
                                    backend=backend)

    while not stop.is_set():
        running = cache.in_phase(phase.RUNNING)
        if running:
            await asyncio.gather(*(one(view) for view in running))
        try:
            await asyncio.wait_for(stop.wait(), timeout=settings.scrape_interval)
        except TimeoutError:
            pass


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
