"""Fail a FinetuneJob the operator's policy refuses (builders/admission.py) before it has
any child: phase Failed, the reason in status.message, one Warning Event."""

from __future__ import annotations

import kopf

from speechtune_operator import settings as settings_mod
from speechtune_operator.builders import admission, phase


def admit(body: kopf.Body, patch: kopf.Patch, *, settings: settings_mod.Settings) -> bool:
    """True when the job may run; otherwise its status says why and False."""
    status = body.get("status") or {}
    if status.get("phase") not in (None, phase.FAILED):
        return True  # admitted when it was created; a later policy change does not kill it
    refused = admission.refusal(body["spec"], settings)
    if refused is None:
        return True
    if status.get("phase") != phase.FAILED or status.get("message") != refused.message:
        patch.status["phase"] = phase.FAILED
        patch.status["message"] = refused.message
        patch.status["observedGeneration"] = body["metadata"].get("generation")
        kopf.event(body, type="Warning", reason=refused.reason, message=refused.message)
    return False
