"""NeMo JSON-lines manifests as the Canary engine needs them: prompt fields per row,
languages, transcripts, and the checks that must pass before any training step."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from speechtune.data import manifest


@dataclasses.dataclass(frozen=True)
class Row:
    path: Path
    line: int
    fields: Mapping[str, Any]

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def source_lang(self) -> str | None:
        return _str_or_none(self.fields.get("source_lang"))

    @property
    def target_lang(self) -> str | None:
        return _str_or_none(self.fields.get("target_lang"))

    @property
    def text(self) -> str:
        return str(self.fields.get("text") or "")


def _str_or_none(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def read(path: Path) -> list[Row]:
    """Rows of a NeMo JSON-lines manifest; a malformed line raises ValueError naming it."""
    if not path.is_file():
        raise ValueError(f"{path}: manifest not found")
    rows = []
    for raw in manifest.read_rows(path):  # the data toolkit's parser, line numbers included
        if raw.error:
            raise ValueError(f"{path}:{raw.line}: {raw.error}")
        rows.append(Row(path=path, line=raw.line, fields=raw.fields))
    if not rows:
        raise ValueError(f"{path}: manifest is empty")
    return rows


def prompt_problems(rows: Iterable[Row], *, prompt_format: str) -> list[str]:
    """Rows the prompt formatter would reject mid-training: canary2 needs source_lang and
    target_lang on every row; canary (v1) also needs the task (`taskname` or `task`)."""
    problems = []
    for row in rows:
        for field in ("source_lang", "target_lang"):
            if _str_or_none(row.fields.get(field)) is None:
                problems.append(f"{row.where}: missing {field} (required by the {prompt_format} prompt)")
        if prompt_format == "canary" and not (row.fields.get("taskname") or row.fields.get("task")):
            problems.append(f"{row.where}: missing taskname (asr|ast, required by the canary prompt)")
        if "duration" not in row.fields or "audio_filepath" not in row.fields:
            problems.append(f"{row.where}: missing audio_filepath or duration")
    return problems


def language_problems(
    rows: Iterable[Row], *, text_languages: Iterable[str], prompt_tokens: set[str] | None
) -> list[str]:
    """A target language needs its own text tokenizer; a source language needs a `<|xx|>`
    special token (when the special vocabulary is known). One line per language and file."""
    known = set(text_languages)
    problems: dict[tuple[Path, str, str], str] = {}
    for row in rows:
        target, source = row.target_lang, row.source_lang
        if target is not None and target not in known:
            problems.setdefault(
                (row.path, "target", target),
                f"{row.where}: target_lang {target!r} has no tokenizer (tokenizers: {', '.join(sorted(known))})",
            )
        for lang in (source, target):
            if lang is not None and prompt_tokens is not None and f"<|{lang}|>" not in prompt_tokens:
                problems.setdefault(
                    (row.path, "prompt", lang),
                    f"{row.where}: language {lang!r} has no <|{lang}|> token in the special tokenizer",
                )
    return list(problems.values())


def texts_by_target_language(rows: Iterable[Row]) -> dict[str, list[str]]:
    texts: dict[str, list[str]] = {}
    for row in rows:
        if row.target_lang is not None:
            texts.setdefault(row.target_lang, []).append(row.text)
    return texts


def prompt_languages(rows: Iterable[Row]) -> set[str]:
    return {lang for row in rows for lang in (row.source_lang, row.target_lang) if lang is not None}


def missing_slot_tags(rows: Sequence[Row], defaults: Mapping[str, str]) -> dict[str, str]:
    """Prompt-slot defaults (e.g. spec.data.pnc) for a manifest whose rows carry none of
    that field; rows that carry it keep their own value."""
    return {slot: value for slot, value in defaults.items() if not any(slot in row.fields for row in rows)}
