"""The admission webhook's checks: the trainer's own (spec.py + the engines' torch-free
checks) plus the operator's capability allow-list, without torch in the process."""

from __future__ import annotations

import copy
import subprocess
import sys
from typing import Any

import pytest

import ftj_crd
from speechtune_operator import admission, settings

SETTINGS = settings.Settings()


def raw(example: str) -> dict[str, Any]:
    """An example as the apiserver hands it to a webhook (defaulted, with metadata)."""
    return copy.deepcopy(ftj_crd.stored(example))


@pytest.mark.parametrize("example", sorted(ftj_crd.EXAMPLES))
def test_every_example_is_admitted(example: str) -> None:
    assert admission.refusal(raw(example), SETTINGS) is None


def with_change(example: str, path: str, value: Any) -> dict[str, Any]:
    body = raw(example)
    node = body["spec"]
    *parents, leaf = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return body


# (example, spec path, value, field the refusal names, words it holds)
REFUSED = {
    "LoRA on nemo-canary": ("canary", "training.peft.method", "lora", "spec.training.peft.method", "nemo-canary"),
    "unknown NeMo override section": ("canary", "training.overrides", {"modle.optim.lr": 1}, "spec.training.overrides",
                                      "unknown NeMo config key"),
    "NeMo prompt format": ("canary", "training.overrides", {"model.prompt_format": "whisper"},
                           "spec.training.overrides['model.prompt_format']", "supported"),
    "unknown speechbrain override": ("speechbrain-atc0", "training.overrides", {"nope": 1},
                                     "spec.training.overrides.nope", "unknown key for speechbrain-ctc"),
    "speechbrain d_model vs nhead": ("speechbrain-atc0", "training.overrides", {"d_model": 100, "nhead": 3},
                                     "spec.training.overrides.d_model", "divisible"),
    "unknown hf-ctc override": ("mms-banglish-lora", "training.overrides", {"nope": 1},
                                "spec.training.overrides.nope", "not an hf-ctc setting"),
    "hf-ctc loader option": ("mms-banglish-lora", "training.overrides", {"modelConfig": {"trust_remote_code": True}},
                             "spec.training.overrides.modelConfig.trust_remote_code", "not settable"),
    "model path outside the volumes": ("speechbrain-atc0", "model", {"path": "/etc/passwd"}, "spec.model.path",
                                       "outside the mounted volumes"),
    "capability outside the allow-list": ("canary", "pod.addCapabilities", ["SYS_ADMIN"],
                                          "spec.pod.addCapabilities", "allow-list"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_engine_rules_are_refused_naming_the_field(case: str) -> None:
    example, path, value, field, words = REFUSED[case]
    message = admission.refusal(with_change(example, path, value), SETTINGS)
    assert message is not None and message.startswith(f"{field}: "), message
    assert words in message and "\n" not in message


def test_the_crd_rules_are_checked_too() -> None:
    body = with_change("speechbrain-atc0", "resources.gpusPerNode", 0)
    body["spec"]["training"]["precision"] = "bf16"
    message = admission.refusal(body, SETTINGS)
    assert message == "spec.training.precision: training.precision bf16/fp16 needs GPUs (resources.gpusPerNode > 0)"


def test_the_checks_import_no_framework() -> None:
    # The operator image has no torch: admitting every example must not need it (the
    # engines' check modules are imported by name at run time, beyond import-linter's view).
    probe = (
        "import sys, copy, ftj_crd\n"
        "from speechtune_operator import admission, settings\n"
        "for name in sorted(ftj_crd.EXAMPLES):\n"
        "    assert admission.refusal(ftj_crd.stored(name), settings.Settings()) is None\n"
        "heavy = {'torch', 'torchaudio', 'nemo', 'speechbrain', 'transformers', 'peft', 'lightning', 'lhotse',"
        " 'numpy', 'soundfile', 'jiwer'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False,
                          cwd=str(ftj_crd.ROOT / "tests" / "unit" / "operator"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
