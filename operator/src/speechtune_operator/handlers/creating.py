"""Create (or find) a FinetuneJob's child (the backend's PyTorchJob or TrainJob, carrying
the job file in its pod template): on creation and on resume."""

from __future__ import annotations

import logging
from typing import Any, Mapping, cast

import kopf

from speechtune_operator import settings as settings_mod
from speechtune_operator import names
from speechtune_operator.builders import (backends, initializer, jobfile, networkpolicy, phase, podsettings,
                                          podtemplate, sharedstorage)
from speechtune_operator.client import api, children, claims, finetunejobs
from speechtune_operator.handlers import initializing, jobcache

logger = logging.getLogger(__name__)


def ensure_children(body: kopf.Body, *, settings: settings_mod.Settings, clients: api.Clients,
                    seen: jobcache.ChildCache, backend: backends.Backend = backends.PYTORCHJOB,
                    model_job: Mapping[str, Any] | None = None) -> None:
    """`model_job`: the model initializer Job as its watch event delivered it, if that is
    what calls."""
    status = body.get("status") or {}
    if status.get("phase") in phase.FINISHED:
        # Its child may be gone (ttlSecondsAfterFinished); recreating it would train again.
        return
    refused = _shared_storage_problem(body, clients)
    if refused:
        _fail(body, clients, refused, reason="VolumesNotShared")
        return
    try:
        child = backend.build(body, settings)
    except jobfile.JobFileTooLarge as error:  # no retry can make it fit: fail the job, say why
        _fail(body, clients, str(error), reason="InvalidSpec")
        return
    except podtemplate.Unsupported as error:
        # The spec is valid, but this cluster's backend cannot run it: say so once, no retry.
        _fail(body, clients, f"backend {backend.name}: {error}", reason="UnsupportedByBackend")
        return
    except podsettings.PodSettingsRefused as error:
        # Valid by the CRD, refused by this operator's settings (e.g. a capability).
        _fail(body, clients, str(error), reason="JobRefused")
        return
    if initializer.needed(body, settings):  # no API call for a job without a hub model to fetch
        outcome = initializing.ensure_model(body, settings=settings, clients=clients, observed=model_job)
        if outcome.failure:
            _fail(body, clients, outcome.failure, reason="ModelInitializationFailed")
        if not outcome.ready:
            return  # the Job's watch calls again when it finishes
    objects = [child]
    if settings.trainer_network_policy:
        objects.append(networkpolicy.build_networkpolicy(body, settings))
    kopf.adopt(objects, owner=body)
    if settings.trainer_network_policy:  # before the child: no trainer pod runs unfenced
        _check_owner(children.create_or_get_networkpolicy(clients, objects[1])[0], body)
    stored_child, created = children.create_or_get_child(clients, backend.child, child)
    _check_owner(stored_child, body)
    # Handled: kopf's diff-base is this cache (persistence.py); the child's watch event
    # that would tell it comes later, after more events of this FinetuneJob.
    seen.observe(stored_child)
    if created:
        kind = backend.child.kind
        kopf.event(body, type="Normal", reason=f"{kind}Created",
                   message=f"created {kind} {stored_child['metadata']['name']}")
    # No status write here: the child's first watch event brings phase, its name and
    # observedGeneration in one patch (mirroring), one write per job fewer under a burst.


def continue_after_initializer(job: Mapping[str, Any], *, settings: settings_mod.Settings, clients: api.Clients,
                               seen: jobcache.ChildCache, backend: backends.Backend = backends.PYTORCHJOB) -> None:
    """The model initializer Job finished: create the child (or fail the FinetuneJob)."""
    if not (state := initializer.state_of(job)).succeeded and not state.failed:
        return
    name, namespace = names.owner_name(job), job["metadata"]["namespace"]
    owner_uids = {str(ref.get("uid")) for ref in job["metadata"].get("ownerReferences") or []}
    child = seen.get(namespace, names.child_name(name)) if name else None
    if child is not None and owner_uids & child.owner_uids:
        return  # went on already (the Job's events replay after an operator restart): no API call
    parent = finetunejobs.get(clients, namespace, name) if name else None
    if parent is None:
        return
    if parent["metadata"]["uid"] not in owner_uids:
        return  # a namesake FinetuneJob's leftover, waiting for garbage collection
    ensure_children(kopf.Body(cast(kopf.RawBody, parent)), settings=settings, clients=clients, seen=seen,
                    backend=backend, model_job=job)


def _shared_storage_problem(body: kopf.Body, clients: api.Clients) -> str | None:
    spec = body["spec"]
    if int(spec.get("resources", {}).get("nodes", 1)) <= 1:
        return None  # no API call for the usual single-node job
    namespace = body["metadata"]["namespace"]
    modes = {claim: claims.access_modes(clients, namespace, claim)
             for _, claim, _ in sharedstorage.claims_to_share(spec)}
    return sharedstorage.problem(spec, modes)


def _fail(body: kopf.Body, clients: api.Clients, message: str, *, reason: str) -> None:
    finetunejobs.patch_status(clients, body["metadata"]["namespace"], body["metadata"]["name"],
                              {"phase": phase.FAILED, "message": message})
    kopf.event(body, type="Warning", reason=reason, message=message)


def _check_owner(child: dict[str, Any], body: kopf.Body) -> None:
    owners = [ref.get("uid") for ref in child.get("metadata", {}).get("ownerReferences") or []]
    if body["metadata"]["uid"] not in owners:
        # A namesake child of a deleted FinetuneJob of the same name, not yet collected.
        kind, name = child.get("kind", "child"), child.get("metadata", {}).get("name")
        raise kopf.TemporaryError(f"{kind} {name} belongs to an earlier {names.KIND}; "
                                  "waiting for garbage collection", delay=2)

