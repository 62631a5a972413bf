"""Where kopf keeps its bookkeeping on a FinetuneJob: handler progress (retries only) under
our own annotation keys, nothing on children, and the last-handled configuration read from
the child itself, so that handling a new FinetuneJob writes nothing to it."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, cast

import kopf

from speechtune_operator import names
from speechtune_operator.handlers import jobcache

PREFIX = "speechtune.dev"


class LeanDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's annotation diff-base ("last-handled-configuration"), built from only the parts
    of the body that can be in the essence.

    kopf builds the essence by deep-copying the whole body (metadata with managedFields,
    status with conditions) and then dropping metadata and status, and it does so for every
    watch event of every resource it watches, the children's too: under a burst that copying
    is much of the operator's CPU. The essence is the spec, labels, annotations and the
    handlers' extra fields, so only those are handed to kopf's build. A child (PyTorchJob,
    TrainJob) has only event handlers, which never look at a diff: its essence is empty.
    """

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        if not is_finetunejob(body):
            return cast(kopf.BodyEssence, {})
        fields = list(extra_fields or ())
        return super().build(body=essential_part(body, fields), extra_fields=fields)


def is_finetunejob(body: Mapping[str, Any]) -> bool:
    """A body without a kind (some test doubles) counts as a FinetuneJob: the full path."""
    kind = body.get("kind")
    return kind is None or kind == names.KIND


def essential_part(body: Mapping[str, Any], extra_fields: Iterable[Any]) -> kopf.Body:
    """The body without what kopf's build throws away: status and the metadata besides labels
    and annotations (managedFields, the bulk of it), unless an extra field names them."""
    paths = [_path(field) for field in extra_fields]
    raw = {key: value for key, value in body.items() if key not in ("metadata", "status")}
    if any(path[0] == "status" for path in paths):
        raw["status"] = body.get("status")
    metadata = body.get("metadata") or {}
    if any(path == ("metadata",) for path in paths):
        raw["metadata"] = metadata
    else:
        wanted = {"labels", "annotations"} | {path[1] for path in paths if path[0] == "metadata"}
        raw["metadata"] = {key: value for key, value in metadata.items() if key in wanted}
    return kopf.Body(cast(kopf.RawBody, raw))


def _path(field: Any) -> tuple[str, ...]:
    return tuple(field.split(".")) if isinstance(field, str) else tuple(str(part) for part in field)


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
