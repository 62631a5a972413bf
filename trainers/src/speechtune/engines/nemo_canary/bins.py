"""`speechtune data bins`: 2D (duration x tokens) bucket bins for lhotse, like NeMo's
scripts/speech_recognition/estimate_duration_bins_2d.py (which the wheel does not ship).

Manifests are read by NeMo's own lhotse reader and every row is measured the way the
training dataloader measures it: the prompt formatter's token count (prompt + transcript)
with the model's aggregate tokenizer. The bins split audio duration into buckets of equal
total duration and each bucket into sub-buckets of equal total tokens, so a batch holds
utterances alike in both input and output length. The output is a YAML block to paste into
`spec.training.overrides`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml


@dataclasses.dataclass(frozen=True)
class Bins:
    """`bucket_duration_bins` as [[max_duration, max_tokens], ...] and, when a batch
    duration was given, one batch size per bin (a duration budget, not an OOM search)."""

    duration_tokens: list[tuple[float, int]]
    batch_sizes: list[int] | None

    def as_overrides(self) -> dict[str, Any]:
        overrides: dict[str, Any] = {
            "model.train_ds.use_bucketing": True,
            "model.train_ds.num_buckets": len(self.duration_tokens),
            "model.train_ds.bucket_duration_bins": [[d, t] for d, t in self.duration_tokens],
        }
        if self.batch_sizes is not None:
            overrides["model.train_ds.bucket_batch_size"] = list(self.batch_sizes)
        return overrides


def estimate_bins_2d(
    durations: Sequence[float], tokens: Sequence[int], *, num_buckets: int, num_subbuckets: int
) -> list[tuple[float, int]]:
    """Pure: duration buckets of equal total duration, each split into token sub-buckets of
    equal total tokens; every bin is (longest duration, most tokens) of its members."""
    if len(durations) != len(tokens) or not durations:
        raise ValueError("need one token count per duration, and at least one utterance")
    if num_buckets < 1 or num_subbuckets < 1:
        raise ValueError("num_buckets and num_subbuckets must be >= 1")
    pairs = sorted(zip(durations, tokens))
    bins: list[tuple[float, int]] = []
    for group in _equal_mass_groups(pairs, [d for d, _ in pairs], num_buckets):
        max_duration = round(max(d for d, _ in group), 3)
        by_tokens = sorted(group, key=lambda pair: pair[1])
        for sub in _equal_mass_groups(by_tokens, [t for _, t in by_tokens], num_subbuckets):
            bins.append((max_duration, int(max(t for _, t in sub))))
    return _dedupe(bins)


def _equal_mass_groups(items: Sequence[Any], masses: Sequence[float], parts: int) -> list[list[Any]]:
    """Splits sorted items into at most `parts` consecutive groups of about equal mass; an
    item opens a new group when more than half of it would overshoot the current one."""
    target = sum(masses) / parts
    groups: list[list[Any]] = [[]]
    acc = 0.0
    for item, mass in zip(items, masses):
        if groups[-1] and acc + mass / 2 > target and len(groups) < parts:
            groups.append([])
            acc = 0.0
        groups[-1].append(item)
        acc += mass
    return [g for g in groups if g]


def _dedupe(bins: Iterable[tuple[float, int]]) -> list[tuple[float, int]]:
    """Sorted and unique: lhotse picks the first bin that fits, so order matters."""
    return sorted(set(bins))


def batch_sizes_for(bins: Sequence[tuple[float, int]], batch_duration: float) -> list[int]:
    return [max(1, math.floor(batch_duration / max(duration, 1e-3))) for duration, _ in bins]


def measure(
    manifests: Sequence[Path],
    tokenizer_dir: Path,
    *,
    prompt_format: str,
    min_duration: float,
    max_duration: float,
    num_examples: int,
) -> tuple[list[float], list[int]]:
    """(duration, prompt+transcript tokens) per utterance, with NeMo's reader and prompt."""
    from nemo.collections.common.data import apply_prompt_format_fn
    from nemo.collections.common.data.lhotse.cutset import read_cutset_from_config
    from nemo.collections.common.prompts.formatter import PromptFormatter
    from omegaconf import OmegaConf

    tokenizer = load_canary_tokenizer(tokenizer_dir)
    prompt = PromptFormatter.resolve(prompt_format)(tokenizer)
    config = OmegaConf.create(
        {
            "input_cfg": [
                {"type": "nemo", "manifest_filepath": str(path), "text_field": "text", "lang_field": "target_lang"}
                for path in manifests
            ],
            "metadata_only": True,  # durations come from the manifest; no audio is read
            "force_finite": True,
            "shuffle": False,
        }
    )
    cuts, _ = read_cutset_from_config(config)
    durations: list[float] = []
    tokens: list[int] = []
    for cut in cuts:
        if not (min_duration <= cut.duration <= max_duration):
            continue
        encoded = apply_prompt_format_fn(cut, prompt)
        durations.append(float(cut.duration))
        tokens.append(int(len(encoded["input_ids"])))
        if 0 < num_examples <= len(durations):
            break
    if not durations:
        raise ValueError(f"no utterance between {min_duration}s and {max_duration}s in {', '.join(map(str, manifests))}")
    return durations, tokens


def tokenizers_of_nemo(model_file: Path, out_dir: Path) -> Path:
    """The tokenizer folders packed in a Canary .nemo (as save_tokenizers writes them)."""
    from nemo.collections.asr.models import EncDecMultiTaskModel

    from speechtune.engines.nemo_canary import tokenizers

    if not model_file.is_file():
        raise ValueError(f"{model_file}: no such .nemo file")
    tokenizers.extract(EncDecMultiTaskModel.restore_from(str(model_file), map_location="cpu"), out_dir)
    return out_dir


def load_canary_tokenizer(tokenizer_dir: Path) -> Any:
    """The Canary tokenizer in a folder as `save_tokenizers` or the nemo-canary engine
    (<run>/nemo/tokenizers) writes it: a unified SentencePiece model with the special
    tokens inside (canary-1b-v2: CanaryBPETokenizer), or per-language folders
    (`spl_tokens`, `en`, ...: CanaryTokenizer)."""
    from nemo.collections.common.tokenizers import CanaryTokenizer, SentencePieceTokenizer
    from nemo.collections.common.tokenizers.canary_tokenizer import CanaryBPETokenizer

    if not tokenizer_dir.is_dir():
        raise ValueError(f"{tokenizer_dir}: not a tokenizer folder (or a .nemo file)")
    if (tokenizer_dir / "tokenizer.model").is_file():
        return CanaryBPETokenizer(str(tokenizer_dir / "tokenizer.model"))
    langs = {p.name: p for p in sorted(tokenizer_dir.iterdir()) if (p / "tokenizer.model").is_file()}
    if "spl_tokens" not in langs:
        raise ValueError(f"{tokenizer_dir}: expected a spl_tokens/ folder next to the per-language tokenizers")
    return CanaryTokenizer({lang: SentencePieceTokenizer(str(p / "tokenizer.model")) for lang, p in langs.items()})


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except ValueError as error:
        print(f"speechtune data bins: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    source = Path(args.tokenizers)
    # NeMo logs to stdout; keep stdout for the YAML so it can be piped into a job file.
    with tempfile.TemporaryDirectory(prefix="speechtune-bins-") as tmp, contextlib.redirect_stdout(sys.stderr):
        tokenizer_dir = tokenizers_of_nemo(source, Path(tmp)) if source.suffix == ".nemo" else source
        durations, tokens = measure(
            [Path(p) for p in args.manifests],
            tokenizer_dir,
            prompt_format=args.prompt_format,
            min_duration=args.min_duration,
            max_duration=args.max_duration,
            num_examples=args.num_examples,
        )
    duration_tokens = estimate_bins_2d(durations, tokens, num_buckets=args.buckets, num_subbuckets=args.sub_buckets)
    bins = Bins(duration_tokens=duration_tokens, batch_sizes=batch_sizes_for(duration_tokens, args.batch_duration))
    print(f"# {len(durations)} utterances, {len(duration_tokens)} bins", file=sys.stderr)
    text = yaml.safe_dump({"overrides": bins.as_overrides()}, sort_keys=False, default_flow_style=None)
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def register(data_subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds `data bins` to the `speechtune data` group."""
    parser = data_subparsers.add_parser(
        "bins",
        help="estimate 2D duration x token bucket bins (nemo-canary) from manifests and tokenizers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("manifests", nargs="+", help="NeMo JSON-lines manifests (rows need source_lang/target_lang)")
    parser.add_argument("--tokenizers", required=True,
                        help="folder holding spl_tokens/ and one folder per language, or a Canary .nemo")
    parser.add_argument("--prompt-format", default="canary2", choices=["canary2", "canary"])
    parser.add_argument("-b", "--buckets", type=int, default=30, help="duration buckets")
    parser.add_argument("-s", "--sub-buckets", type=int, default=2, help="token sub-buckets per duration bucket")
    parser.add_argument("-l", "--min-duration", type=float, default=0.0)
    parser.add_argument("-u", "--max-duration", type=float, default=math.inf)
    parser.add_argument("-n", "--num-examples", type=int, default=-1, help="utterances to measure (-1: all)")
    parser.add_argument("--batch-duration", type=float, required=True,
                        help="seconds of audio per batch; bucket_batch_size = this / bin duration "
                             "(NeMo's 2D bucketing needs one batch size per bin)")
    parser.add_argument("-o", "--output", default=None, help="write the YAML here instead of stdout")
    parser.set_defaults(func=run)
