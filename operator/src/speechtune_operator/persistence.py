"""Where kopf keeps its bookkeeping on a FinetuneJob: handler progress (retries only) under
our own annotation keys, nothing on children, and the last-handled configuration read from
the child itself, so that handling a new FinetuneJob writes nothing to it."""

from __future__ import annotations

from typing import Any, Iterable, cast

import kopf

from speechtune_operator import names
from speechtune_operator.handlers import jobcache

PREFIX = "speechtune.dev"


class LeanDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's annotation diff-base ("last-handled-configuration"), built from the body
    without metadata.managedFields.

    kopf builds the essence by deep-copying the whole body and then dropping metadata, and
    it does so several times per event; managedFields is most of a FinetuneJob's metadata
    and never part of the essence, so leaving it out first gives the same essence for a
    fraction of the copying.
    """

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        return super().build(body=without_managed_fields(body), extra_fields=extra_fields)


def without_managed_fields(body: kopf.Body) -> kopf.Body:
    metadata = body.get("metadata") or {}
    if "managedFields" not in metadata:
        return body
    raw = dict(body)
    raw["metadata"] = {key: value for key, value in metadata.items() if key != "managedFields"}
    return kopf.Body(cast(kopf.RawBody, raw))


class UnmarkedProgressStorage(kopf.AnnotationsProgressStorage):
    """kopf's annotation progress storage without its "<prefix>/kopf-managed" marker.

    kopf records a handler's outcome and, once all handlers are done, purges the record in
    the same patch: a job whose handler succeeded at once gets no record at all. But the
    marker (for other kopf operators to detect our prefix) is added with the first record
    and never purged: one more write on every new FinetuneJob, for a marker nobody reads.
    Records of handlers being retried are written and removed as before.
    """

    def _store_marker(self, prefix: str, patch: kopf.Patch, body: kopf.Body) -> None:
        pass


def progress_storage() -> kopf.ProgressStorage:
    return UnmarkedProgressStorage(prefix=PREFIX)


class ChildDiffBaseStorage(LeanDiffBaseStorage):
    """The last-handled configuration of a FinetuneJob is what its child shows: none while
    it has no child (kopf runs the creation handlers), else the job's own essence with the
    suspend switch the child has (a difference is an update for the suspend handler).

    kopf's stock diff-base is an annotation it patches onto every FinetuneJob once its
    handlers have run: one API write per job, and one more watch event to process, on the
    path of a burst. Here nothing is stored; the child cache (fed by the children's watch
    and by the handlers' own creates and patches) is the record. A job seen before its
    child's watch event (an operator restart) gets the creation handler again, which finds
    the child (409) instead of making a second one.
    """

    def __init__(self, children: jobcache.ChildCache) -> None:
        super().__init__(prefix=PREFIX, key="last-handled-configuration")
        self._children = children

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        meta = body["metadata"]
        child = self._children.get(meta["namespace"], names.child_name(meta["name"]))
        if child is None or meta.get("uid") not in child.owner_uids:
            return None  # no child of this very FinetuneJob (yet): a creation
        # Without extra fields: those of our handlers (spec.runPolicy.suspend) are in the spec.
        # build() returns a fresh copy, ours to change.
        essence = cast(dict[str, Any], self.build(body=body))
        policy = essence.setdefault("spec", {}).setdefault("runPolicy", {})
        if bool(policy.get("suspend")) != child.suspended:
            policy["suspend"] = child.suspended
        return cast(kopf.BodyEssence, essence)

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        """Nothing to write: the child is the record."""


def diffbase_storage(children: jobcache.ChildCache) -> kopf.DiffBaseStorage:
    return ChildDiffBaseStorage(children)
