"""What the validating admission webhook refuses: everything `speechtune train` refuses in
a pod before its first step (what `speechtune validate` refuses, and pod paths).

One implementation, the trainer's own: `speechtune.spec.check` (the CRD's schema and CEL
rules as the trainer reads them, then the engine's torch-free override catalogue and spec
checks, then the pod-path rules). It imports no torch and no engine framework (an import
contract and a test check it), so the operator image carries only the trainers' core. Plus
the operator's own rules: capabilities outside its allow-list (spec.pod.addCapabilities) and
its policy (builders/admission.py: image allow-list, system priority classes).
"""

from __future__ import annotations

from typing import Any, Mapping

import speechtune.spec as trainer_spec

from speechtune_operator import names
from speechtune_operator import settings as settings_mod
from speechtune_operator.builders import admission as policy
from speechtune_operator.builders import podsettings


def refusal(body: Mapping[str, Any], settings: settings_mod.Settings) -> str | None:
    """One line naming the field ("spec.training.peft.method: ..."), or None to admit."""
    meta = body.get("metadata") or {}
    document = {"apiVersion": names.API_VERSION, "kind": names.KIND,
                "metadata": {"name": meta.get("name") or meta.get("generateName") or "unnamed",
                             "namespace": meta.get("namespace") or "default"},
                "spec": body.get("spec")}
    try:
        checked = trainer_spec.check(document, source="FinetuneJob", in_pod=True)
        podsettings.check_pod_settings(checked.job.spec.get("pod") or {}, settings)
    except trainer_spec.SpecError as error:
        return f"{error.path}: {error.detail}"
    except podsettings.PodSettingsRefused as error:
        return str(error)
    # The operator's own policy (image allow-list, system priority classes), refused here too.
    refused = policy.refusal(checked.job.spec, settings)
    return refused.message if refused else None
