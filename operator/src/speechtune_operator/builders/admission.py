"""What the operator refuses to run for a FinetuneJob, whatever the CRD's schema accepts.

`spec.image` is a privilege: a trainer pod runs whatever the image holds, with the job's data
and output volumes and, when configured, the Hugging Face token. So an image must be one of
the engine images or come from a registry/prefix the operator's settings allow (the chart's
values); anything else fails the job before any child exists. PriorityClasses named
`system-*` belong to the cluster's own components (they preempt everything else), so a job
may not claim one unless the operator's settings allow it.

Messages name the field and the rule, never repeat the value the user wrote.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from speechtune_operator import settings as settings_mod

SYSTEM_PRIORITY_PREFIX = "system-"
_BOUNDARIES = "/:@"  # what may follow a prefix inside an image reference


@dataclasses.dataclass(frozen=True)
class Refusal:
    reason: str  # the Event's reason, CamelCase
    message: str  # one line naming the field


def refusal(spec: Mapping[str, Any], settings: settings_mod.Settings) -> Refusal | None:
    image = spec.get("image")
    if image and settings.refuse_unlisted_images and not image_allowed(str(image), settings):
        allowed = ", ".join(settings.allowed_image_prefixes) or "none besides the engine images"
        return Refusal("ImageNotAllowed", "spec.image: not an engine image and not under an allowed "
                                          f"registry prefix ({allowed}); ask the cluster's admin")
    priority = str((spec.get("resources") or {}).get("priorityClassName") or "")
    if priority.startswith(SYSTEM_PRIORITY_PREFIX) and settings.forbid_system_priority_classes:
        return Refusal("PriorityClassNotAllowed", "spec.resources.priorityClassName: system-* priority "
                                                  "classes are reserved for the cluster's own components")
    return None


def image_allowed(image: str, settings: settings_mod.Settings) -> bool:
    """An engine image, or one under an allowed prefix (at a path, tag or digest boundary,
    so that prefix `ghcr.io/speechtune` does not admit `ghcr.io/speechtune-evil/x`)."""
    if image in engine_images(settings):
        return True
    return any(_under(image, prefix) for prefix in settings.allowed_image_prefixes)


def engine_images(settings: settings_mod.Settings) -> frozenset[str]:
    return frozenset(settings.image_for(engine) for engine in settings_mod.ENGINES)


def _under(image: str, prefix: str) -> bool:
    if not prefix or not image.startswith(prefix):
        return False
    if image == prefix:
        return True
    return prefix[-1] in _BOUNDARIES or image[len(prefix)] in _BOUNDARIES
