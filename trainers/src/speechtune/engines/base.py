"""The one engine contract that nemo-canary, speechbrain-ctc and hf-ctc implement.

Everything engine-independent (spec validation, data preflight, run folders, metrics
server, signals, WER scoring, metrics.json, sweep CSV) lives in the runtime; an engine
only turns a validated spec into a trained model. Engines receive plain values and call
back into the runtime through `Reporter`, so they never import the runtime.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

from speechtune.spec import typed


class NonFiniteLoss(RuntimeError):
    """Raised by the reporter when a step's loss is NaN/inf; the engine must stop without
    saving, so the last good checkpoint stays the newest one."""


@dataclasses.dataclass(frozen=True)
class DataPaths:
    """Absolute paths, resolved by the runtime from spec.data and the mounted volumes."""

    root: Path  # the data volume (pod: /data; local: --volume CLAIM=DIR)
    train: Path
    validation: Path
    test: Path | None


@dataclasses.dataclass(frozen=True)
class DataNeeds:
    """What an engine's data loader requires of every manifest row (the registry row's
    data needs; the runtime's preflight checks them before step 1)."""

    sample_rate: int = 16000
    channels: int = 1
    fields: tuple[str, ...] = ()  # Utterance fields that must be set


@dataclasses.dataclass(frozen=True)
class RunContext:
    """What an engine gets from the runtime for one run."""

    name: str  # FinetuneJob name
    namespace: str
    spec: typed.FinetuneSpec  # FinetuneJob .spec, validated and parsed once, CRD defaults applied
    data: DataPaths
    model_dir: Path | None  # the model/cache volume when one is mounted
    run_dir: Path  # <output>/<job>/<run-id>/ ; engine writes only below it
    checkpoint_dir: Path  # run_dir / "checkpoints"
    max_steps: int | None  # spec.training.maxSteps or the --max-steps override; 0: no
    # training follows (`speechtune eval`: prepare loads spec.model.path, then evaluate)
    resume: bool  # spec.output.resume: continue from the newest checkpoint if one exists
    device: str  # "cpu" or "cuda"
    world_size: int  # processes in the job (torchrun); rank 0 reports
    rank: int
    stop: threading.Event  # set on SIGTERM: save a checkpoint and return from train()
    reporter: "Reporter"


@dataclasses.dataclass(frozen=True)
class ModelFacts:
    """What model_card.json says about the trained model; every engine fills all of it."""

    architecture: str
    tokenizer: str
    vocab_size: int
    parameters: int
    trainable_parameters: int


@dataclasses.dataclass(frozen=True)
class TrainResult:
    steps: int  # global optimizer steps done (including resumed ones)
    epochs: float
    train_loss: float | None  # mean of the last logging window
    val_loss: float | None
    best_checkpoint: Path | None
    stopped_early: bool = False  # True when ctx.stop ended training (SIGTERM)
    model: ModelFacts | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # engine details for metrics.json


@dataclasses.dataclass(frozen=True)
class Validation:
    """The runtime's scores of one validation pass (normalised text, jiwer, sacrebleu)."""

    val_loss: float | None
    wer: float | None = None
    cer: float | None = None
    bleu: float | None = None  # translation rows only

    def metrics(self) -> dict[str, float | None]:
        """For the checkpoint store: val_loss, wer, cer, bleu."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Hypothesis:
    utt_id: str
    reference: str  # raw reference text from the manifest (normalised by the runtime)
    hypothesis: str  # raw model output
    language: str | None = None  # the transcript's (target) language
    duration: float | None = None
    source_language: str | None = None  # the speech's language, when it differs: a translation


class Reporter(Protocol):
    """Runtime callbacks; every method is cheap and safe to call from the training loop."""

    def set_max_steps(self, max_steps: int) -> None: ...

    def train_step(
        self,
        *,
        step: int,
        loss: float,
        learning_rate: float | None = None,
        epoch: float | None = None,
        audio_seconds: float = 0.0,  # speech in this step's batch (all ranks)
        samples: int = 0,
        padding_ratio: float | None = None,  # padded frames / total frames of the batch
    ) -> None:
        """Records one optimizer step (call it once the step is applied; the runtime
        times steps itself); raises NonFiniteLoss for a NaN/inf loss."""
        ...

    def validation(
        self, *, step: int, val_loss: float | None, hypotheses: Sequence[Hypothesis] | None = None,
        wer: float | None = None, cer: float | None = None, bleu: float | None = None,
    ) -> Validation:
        """Scores `hypotheses` (the runtime's one normaliser and metrics) and records the
        result; engines that cannot hand hypotheses out (nemo-canary) pass their own
        wer/bleu. The returned scores choose the best checkpoint."""
        ...

    def log(self, message: str) -> None:
        """A line for train_log.txt and the console."""
        ...


class Engine(Protocol):
    """prepare -> train -> evaluate -> export, each called once per run by the runtime."""

    def prepare(self, ctx: RunContext) -> None:
        """Build or load the model, tokenizer and data loaders; restore the newest
        checkpoint when ctx.resume and one exists. No training steps here."""
        ...

    def train(self, ctx: RunContext) -> TrainResult: ...

    def evaluate(self, ctx: RunContext, manifest: Path) -> Sequence[Hypothesis]:
        """Decode every utterance of a NeMo JSON-lines manifest with the current model."""
        ...

    def export(self, ctx: RunContext) -> Path:
        """Write the final model artefact under ctx.run_dir and return its path
        (.nemo, a SpeechBrain checkpoint folder, a HF folder or adapter file)."""
        ...
