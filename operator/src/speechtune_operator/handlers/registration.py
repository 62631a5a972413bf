"""Every kopf handler of the operator, registered in one place; each is a thin wrapper
around one function of a sibling module."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import kopf

from speechtune_operator import settings as settings_mod
from speechtune_operator import telemetry as telemetry_mod
from speechtune_operator import admission, names
from speechtune_operator.builders import backends, phase
from speechtune_operator.client import api
from speechtune_operator.handlers import (admitting, creating, guarding, holding, jobcache, mirroring, queueing,
                                          scraping, suspending)

FINETUNEJOBS = (names.GROUP, names.VERSION, names.PLURAL)
# The webhook's URL path is /<id> (kopf's convention); the chart's webhook configuration uses it.
ADMISSION_ID = "engine-rules"
RETRY_BACKOFF = 2.0  # seconds between retries of a failed handler (kopf's default is 60)
# The longest a child's status waits for creations in flight (handlers/holding.py): a burst of
# 500 makes its children in ~30 s on two shared cores; no status is later than that.
STATUS_HOLD = 30.0


@dataclasses.dataclass(frozen=True)
class Context:
    settings: settings_mod.Settings
    clients: api.Clients
    cache: jobcache.JobCache
    telemetry: telemetry_mod.Telemetry
    backend: backends.Backend = backends.PYTORCHJOB  # the only backend-specific choice
    # The children seen or made; also kopf's record of what is handled (main.kopf_settings).
    children: jobcache.ChildCache = dataclasses.field(
        default_factory=lambda: jobcache.ChildCache(backends.PYTORCHJOB.user_suspended))
    gate: holding.CreationGate = dataclasses.field(default_factory=lambda: holding.CreationGate(STATUS_HOLD))
    # Kueue's Workloads of queued children (runPolicy.queueName).
    workloads: jobcache.WorkloadCache = dataclasses.field(default_factory=jobcache.WorkloadCache)


def register_login(registry: kopf.OperatorRegistry, kubeconfig: str | None = None) -> None:
    """kopf's own connection uses the same credentials as the Kubernetes client, including
    an explicit --kubeconfig (kopf's stock login reads only the default locations)."""
    @kopf.on.login(id="login", registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        config = api.load_configuration(kubeconfig)
        return kopf.ConnectionInfo(
            server=config.host, ca_path=config.ssl_ca_cert, insecure=not config.verify_ssl,
            token=api.bearer_token(config), certificate_path=config.cert_file,
            private_key_path=config.key_file)


def register(registry: kopf.OperatorRegistry, ctx: Context) -> None:
    if ctx.settings.admission_port:
        register_admission(registry, ctx.settings)
    # Async: a dictionary update needs no handler thread, and a burst of creations should
    # not queue 500 of these in the pool ahead of the handlers that call the API.
    @kopf.on.event(*FINETUNEJOBS, id="observe", registry=registry)
    async def observe_finetunejob(body: kopf.Body, type: str | None, **_: Any) -> None:
        ctx.cache.observe(body, deleted=type == "DELETED")
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if type == "DELETED" or (body.get("status") or {}).get("phase") in phase.FINISHED:
            ctx.gate.end(key)
        elif not body.get("status") and ctx.children.get(key[0], names.child_name(key[1])) is None:
            ctx.gate.begin(key)  # new: its child is still to be made

    @kopf.on.resume(*FINETUNEJOBS, id="children", registry=registry, backoff=RETRY_BACKOFF)
    @kopf.on.create(*FINETUNEJOBS, id="children", registry=registry, backoff=RETRY_BACKOFF)
    def reconcile(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        try:
            with ctx.telemetry.reconcile(), guarding.in_our_words("creating the children", delay=RETRY_BACKOFF):
                if admitting.admit(body, patch, settings=ctx.settings):
                    creating.ensure_children(body, settings=ctx.settings, clients=ctx.clients, seen=ctx.children,
                                             backend=ctx.backend)
        finally:  # made, refused or to be retried: either way not holding the others' status
            ctx.gate.end((body["metadata"]["namespace"], body["metadata"]["name"]))

    @kopf.on.update(*FINETUNEJOBS, id="suspend", field="spec.runPolicy.suspend", registry=registry,
                    backoff=RETRY_BACKOFF)
    def suspend(body: kopf.Body, new: Any, patch: kopf.Patch, **_: Any) -> None:
        with guarding.in_our_words("suspending or resuming", delay=RETRY_BACKOFF):
            suspending.apply_suspend(body, bool(new), patch, clients=ctx.clients, seen=ctx.children,
                                     backend=ctx.backend, workloads=ctx.workloads)

    child = ctx.backend.child

    # Async, as observe_finetunejob: every child event updates the cache, but only one with a
    # status (none right after creation) has anything to mirror and takes a handler thread.
    @kopf.on.event(child.group, child.version, child.plural, id="observe-child",
                   labels={names.LABEL_JOB: kopf.PRESENT}, registry=registry)
    async def observe_child(body: kopf.Body, type: str | None, **_: Any) -> None:
        ctx.children.observe(body, deleted=type == "DELETED")
        owner = names.owner_name(body)
        if owner:
            ctx.gate.end((body["metadata"]["namespace"], owner))

    # Children first: a status write (and its Event) waits here, without a thread, while
    # creations are in flight (handlers/holding.py). kopf runs a child's event handlers in order.
    @kopf.on.event(child.group, child.version, child.plural, id="hold-status",
                   labels={names.LABEL_JOB: kopf.PRESENT}, registry=registry,
                   when=lambda body, type, **_: type != "DELETED" and bool(body.get("status")))
    async def hold_status(**_: Any) -> None:
        await ctx.gate.wait()

    @kopf.on.event(child.group, child.version, child.plural, id="mirror-status",
                   labels={names.LABEL_JOB: kopf.PRESENT}, registry=registry,
                   when=lambda body, type, **_: type != "DELETED" and bool(body.get("status")))
    def mirror_status(body: kopf.Body, **_: Any) -> None:
        with ctx.telemetry.reconcile(), guarding.in_our_words("mirroring the status", delay=RETRY_BACKOFF):
            mirroring.sync_from_child(body, clients=ctx.clients, cache=ctx.cache, backend=ctx.backend,
                                      workloads=ctx.workloads)

    workload = names.WORKLOAD

    # Kueue's Workloads (a cluster without Kueue has none: kopf watches nothing then).
    @kopf.on.event(workload.group, workload.version, workload.plural, id="mirror-workload", registry=registry)
    def mirror_workload(body: kopf.Body, type: str | None, **_: Any) -> None:
        child_name = queueing.owner_child(body, ctx.backend.child)
        if child_name is None:
            return
        ctx.workloads.observe(body["metadata"]["namespace"], child_name, dict(body), deleted=type == "DELETED")
        if type == "DELETED":
            return
        with ctx.telemetry.reconcile(), guarding.in_our_words("mirroring the Kueue workload", delay=RETRY_BACKOFF):
            queueing.sync_workload(body, child_name, clients=ctx.clients, cache=ctx.cache, workloads=ctx.workloads,
                                   backend=ctx.backend)

    if ctx.settings.model_initializer:
        register_initializer_watch(registry, ctx)

    # Not a kopf timer: see scraping.scrape_running_jobs.
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    @kopf.on.startup(id="scrape-progress", registry=registry)
    async def start_scraping(**_: Any) -> None:
        stop.clear()
        tasks.append(asyncio.create_task(scraping.scrape_running_jobs(
            settings=ctx.settings, clients=ctx.clients, cache=ctx.cache, backend=ctx.backend, stop=stop)))

    @kopf.on.cleanup(id="scrape-progress", registry=registry)
    async def stop_scraping(**_: Any) -> None:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        tasks.clear()


def register_initializer_watch(registry: kopf.OperatorRegistry, ctx: Context) -> None:
    """A model initializer Job that finishes lets its FinetuneJob go on: the child is
    created then (not on the next FinetuneJob event, which may never come)."""
    @kopf.on.event("batch", "v1", "jobs", id="model-initializer", registry=registry,
                   labels={names.LABEL_COMPONENT: names.COMPONENT_INITIALIZER, names.LABEL_JOB: kopf.PRESENT})
    def initializer_changed(body: kopf.Body, type: str | None, **_: Any) -> None:
        if type == "DELETED":
            return
        with ctx.telemetry.reconcile(), guarding.in_our_words("continuing after the model initializer",
                                                              delay=RETRY_BACKOFF):
            creating.continue_after_initializer(body, settings=ctx.settings, clients=ctx.clients,
                                                seen=ctx.children, backend=ctx.backend)


def register_admission(registry: kopf.OperatorRegistry, settings: settings_mod.Settings) -> None:
    """The validating webhook: a job `speechtune validate` refuses never gets created. Only
    CREATE: after it, only runPolicy.suspend may change (the CRD's own rules)."""
    @kopf.on.validate(*FINETUNEJOBS, id=ADMISSION_ID, operations=["CREATE"], registry=registry)
    def engine_rules(body: kopf.Body, **_: Any) -> None:
        problem = admission.refusal(body, settings)
        if problem:
            raise kopf.AdmissionError(problem, code=422)
