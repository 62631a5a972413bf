"""The `nemo-canary` engine (NeMo multitask AED / Canary fine-tuning).

Importing this package is cheap: NeMo, torch and Lightning load inside the engine's methods."""

from speechtune.engines.nemo_canary.engine import NemoCanaryEngine
from speechtune.engines.nemo_canary.preflight import check_spec

__all__ = ["NemoCanaryEngine", "check_spec"]
