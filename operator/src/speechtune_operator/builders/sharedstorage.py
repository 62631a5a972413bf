"""Volumes a job of several nodes shares: each pod mounts the same claims, on different nodes.

A ReadWriteOnce claim attaches to one node only; the second node's pod would hang in
ContainerCreating (Multi-Attach error) while the first trains alone until the rendezvous
times out. So a multi-node job needs the output and model claims ReadWriteMany and the data
claim ReadOnlyMany or ReadWriteMany, and is refused up front otherwise.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

WRITABLE_BY_MANY = frozenset({"ReadWriteMany"})
READABLE_BY_MANY = frozenset({"ReadWriteMany", "ReadOnlyMany"})


def claims_to_share(spec: Mapping[str, Any]) -> list[tuple[str, str, frozenset[str]]]:
    """(field, claim name, access modes any of which will do) of every claim the pods mount."""
    claims = [("spec.data.volume.claimName", spec["data"]["volume"]["claimName"], READABLE_BY_MANY),
              ("spec.output.volume.claimName", spec["output"]["volume"]["claimName"], WRITABLE_BY_MANY)]
    model_volume = (spec.get("model") or {}).get("volume")
    if model_volume:
        claims.append(("spec.model.volume.claimName", model_volume["claimName"], WRITABLE_BY_MANY))
    return claims


def problem(spec: Mapping[str, Any], access_modes: Mapping[str, Sequence[str] | None]) -> str | None:
    """A one-line refusal naming the field, or None. `access_modes` maps claim name to the
    claim's spec.accessModes, None for a claim that does not exist (yet): its pods wait."""
    if int((spec.get("resources") or {}).get("nodes", 1)) <= 1:
        return None
    for field, claim, wanted in claims_to_share(spec):
        modes = access_modes.get(claim)
        if modes is not None and not wanted & set(modes):
            return (f"{field}: PersistentVolumeClaim {claim} is {', '.join(modes) or 'without access modes'}, "
                    f"but a job on {spec['resources']['nodes']} nodes mounts it on each: it needs "
                    f"{' or '.join(sorted(wanted))} (see docs/multi-node.md)")
    return None
