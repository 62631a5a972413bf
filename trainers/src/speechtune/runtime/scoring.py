"""Scoring is the runtime's job, the same for every engine, during validation (engines hand
their hypotheses over) and after training: normalise references and hypotheses with
spec.data.normalization, then WER/CER with jiwer, overall and per language, and BLEU with
sacrebleu on translation rows."""

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
    bleu: float | None = None  # translation pairs only (0..1, sacrebleu's corpus BLEU / 100)


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
    """{"all": Score, "<lang>": Score, ..., "<src>-><tgt>": Score with BLEU, ...}."""
    hypotheses = list(hypotheses)
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
    scores.update(translation_scores(hypotheses, normalizer))
    return scores


def translation_scores(hypotheses: Iterable[base.Hypothesis], normalizer: Callable[[str], str]) -> dict[str, Score]:
    """{"en->de": Score with BLEU, ...} for rows whose speech and transcript languages
    differ: WER says little about a translation, BLEU is the field's measure."""
    raw: dict[str, list[base.Hypothesis]] = {}
    for hyp in hypotheses:
        if hyp.source_language and hyp.language and hyp.source_language != hyp.language:
            raw.setdefault(f"{hyp.source_language}->{hyp.language}", []).append(hyp)
    if not raw:
        return {}
    # Only Canary translates; sacrebleu comes with the nemo extra that runs it.
    import sacrebleu

    out = {}
    for pair, rows in sorted(raw.items()):
        plain = score([(normalizer(h.reference), normalizer(h.hypothesis)) for h in rows])
        bleu = sacrebleu.corpus_bleu([h.hypothesis for h in rows], [[h.reference for h in rows]]).score / 100
        out[pair] = dataclasses.replace(plain, bleu=float(bleu))
    return out


def validation(hypotheses: Sequence[base.Hypothesis], normalizer: Callable[[str], str], *,
               val_loss: float | None) -> base.Validation:
    """One validation pass's scores, as the checkpoint store ranks them: WER/CER of the
    transcription rows, BLEU (as translation_scores) of the translation rows."""
    rows = list(hypotheses)
    transcribed = score([(normalizer(h.reference), normalizer(h.hypothesis)) for h in rows if not _translates(h)])
    translated = translation_scores(rows, normalizer)
    bleu = (sum(s.bleu or 0.0 for s in translated.values()) / len(translated)) if translated else None
    return base.Validation(val_loss=val_loss, wer=transcribed.wer if transcribed.utterances else None,
                           cer=transcribed.cer if transcribed.utterances else None, bleu=bleu)


def _translates(hyp: base.Hypothesis) -> bool:
    return bool(hyp.source_language and hyp.language and hyp.source_language != hyp.language)


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
