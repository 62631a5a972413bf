"""The model initializer step of a FinetuneJob that needs one (builders/initializer.py):
create (or find) its Job, report phase Initializing while it runs, and say whether the
child may be created now. Called by creating.ensure_children on the FinetuneJob's events
and by the Job watch (registration.py) when the Job finishes."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import kopf

from speechtune_operator import settings as settings_mod
from speechtune_operator import names
from speechtune_operator.builders import initializer, phase
from speechtune_operator.client import api, batchjobs, finetunejobs, pods


@dataclasses.dataclass(frozen=True)
class Outcome:
    ready: bool = False  # the model is on the volume: create the child
    failure: str | None = None  # the Job failed: fail the FinetuneJob with this line


def ensure_model(body: kopf.Body, *, settings: settings_mod.Settings, clients: api.Clients,
                 observed: Mapping[str, Any] | None = None) -> Outcome:
    """`observed`: the Job as its watch event just delivered it (saves the create-or-get)."""
    job = dict(observed) if observed is not None else _create_or_get(body, settings, clients)
    state = initializer.state_of(job)
    if state.succeeded:
        return Outcome(ready=True)
    name = job["metadata"]["name"]
    if state.failed:
        return Outcome(failure=initializer.failure_message(name, state, _pod_failure(clients, job)))
    _report_initializing(body, clients, name)
    return Outcome()


def _create_or_get(body: kopf.Body, settings: settings_mod.Settings, clients: api.Clients) -> dict[str, Any]:
    job = initializer.build_job(body, settings)
    kopf.adopt(job, owner=body)  # deleting the FinetuneJob collects the Job and its pod
    stored, _ = batchjobs.create_or_get(clients, job)
    owners = [ref.get("uid") for ref in stored.get("metadata", {}).get("ownerReferences") or []]
    if body["metadata"]["uid"] not in owners:
        raise kopf.TemporaryError(f"Job {job['metadata']['name']} belongs to an earlier {names.KIND}; "
                                  "waiting for garbage collection", delay=2)
    return stored


def _report_initializing(body: kopf.Body, clients: api.Clients, job_name: str) -> None:
    status = body.get("status") or {}
    if status.get("phase") == phase.INITIALIZING and status.get("initializerJob") == job_name:
        return  # written already: one status write and one Event per job
    model = body["spec"]["model"]
    message = f"downloading {model['pretrained']} to claim {model['volume']['claimName']} (Job {job_name})"
    meta = body["metadata"]
    written = finetunejobs.patch_status(clients, meta["namespace"], meta["name"], {
        "phase": phase.INITIALIZING, "message": message, "initializerJob": job_name,
        "observedGeneration": meta.get("generation")})
    if written:
        kopf.event(body, type="Normal", reason="ModelInitializing", message=message)


def _pod_failure(clients: api.Clients, job: Mapping[str, Any]) -> str | None:
    """The failed pod's own words: the fetch command's line in its termination message."""
    selector = f"batch.kubernetes.io/job-name={job['metadata']['name']}"
    found = phase.first_failure(pods.matching(clients, job["metadata"]["namespace"], selector),
                                initializer.CONTAINER, lambda pod: True)
    return found.describe() if found else None
