"""Scoring is the runtime's job, the same for every engine: normalise references and
hypotheses with spec.data.normalization, then WER/CER with jiwer, overall and per language."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Iterable, Sequence

import jiwer

from speechtune.engines import base


@dataclasses.dataclass(frozen=True)
class Score:
    wer: float
    cer: float
    utterances: int
    words: int  # reference words


def score(pairs: Sequence[tuple[str, str]]) -> Score:
    """WER/CER over (reference, hypothesis) pairs that are already normalised; empty
    references are skipped (jiwer cannot score them and WER is undefined there)."""
    kept = [(r, h) for r, h in pairs if r.strip()]
    if not kept:
        return Score(wer=float("nan"), cer=float("nan"), utterances=0, words=0)
    refs = [r for r, _ in kept]
    hyps = [h for _, h in kept]
    return Score(wer=float(jiwer.wer(refs, hyps)), cer=float(jiwer.cer(refs, hyps)),
                 utterances=len(kept), words=sum(len(r.split()) for r in refs))


def score_hypotheses(hypotheses: Iterable[base.Hypothesis], normalizer: Callable[[str], str]
                     ) -> dict[str, Score]:
    """{"all": Score, "<lang>": Score, ...}."""
    by_language: dict[str, list[tuple[str, str]]] = {}
    everything: list[tuple[str, str]] = []
    for hyp in hypotheses:
        pair = (normalizer(hyp.reference), normalizer(hyp.hypothesis))
        everything.append(pair)
        by_language.setdefault(hyp.language or "unknown", []).append(pair)
    scores = {"all": score(everything)}
    if len(by_language) > 1:
        scores.update({lang: score(pairs) for lang, pairs in sorted(by_language.items())})
    elif by_language:
        scores[next(iter(by_language))] = scores["all"]
    return scores


def write_decode_jsonl(path: Path, hypotheses: Iterable[base.Hypothesis], normalizer: Callable[[str], str]) -> None:
    """One line per utterance: id, hyp (raw), ref (raw), and their normalised forms."""
    with path.open("w", encoding="utf-8") as out:
        for h in hypotheses:
            out.write(json.dumps({
                "id": h.utt_id, "hyp": h.hypothesis, "ref": h.reference, "language": h.language,
                "hyp_norm": normalizer(h.hypothesis), "ref_norm": normalizer(h.reference),
                "duration": h.duration,
            }, ensure_ascii=False) + "\n")


def as_dict(scores: dict[str, Score]) -> dict[str, dict[str, float | int]]:
    return {name: dataclasses.asdict(s) for name, s in scores.items()}
