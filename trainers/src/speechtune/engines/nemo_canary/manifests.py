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
    rows: Iterable[Row], *, text_languages: Iterable[str] | None, prompt_tokens: set[str] | None,
    prompt_format: str = "canary2", slot_defaults: Mapping[str, str] | None = None,
) -> list[str]:
    """A target language needs a text tokenizer (aggregate; `text_languages` None: one
    unified tokenizer writes every language); every special token the row's prompt
    needs (languages, task, pnc/itn/timestamp/diarize, emotion) must be in the special
    vocabulary (when known), named when missing. One line per token and file."""
    known = set(text_languages) if text_languages is not None else None
    problems: dict[tuple[Path, str, str], str] = {}
    for row in rows:
        target = row.target_lang
        if target is not None and known is not None and target not in known:
            problems.setdefault(
                (row.path, "target", target),
                f"{row.where}: target_lang {target!r} has no tokenizer (tokenizers: {', '.join(sorted(known))}; "
                f"training.overrides lang_tokenizers.add_languages: [{target}] builds one from the training text)",
            )
        if prompt_tokens is None:
            continue
        for slot, token in prompt_tokens_of(row, prompt_format, slot_defaults or {}):
            if token not in prompt_tokens:
                what = f"language {row.fields.get(slot)!r}" if slot.endswith("_lang") else f"{slot} {row.fields.get(slot, token)!r}"
                problems.setdefault(
                    (row.path, "prompt", token),
                    f"{row.where}: {what} needs the special token {token}, which the model's vocabulary lacks",
                )
    return list(problems.values())


# How NeMo's prompt formatters (nemo/collections/common/prompts/canary.py, canary2.py) map
# manifest values to special tokens; restated here so the check runs before NeMo loads.
_TRUE = {"yes", "Yes", "true", "True", "1"}
_TASKS = {"asr": "<|transcribe|>", "transcribe": "<|transcribe|>", "ast": "<|translate|>",
          "translate": "<|translate|>", "s2t_translation": "<|translate|>"}
_CANARY2_FIXED = ("<|startofcontext|>", "<|startoftranscript|>", "<|endoftext|>")
_CANARY2_FLAGS = {"pnc": "<|pnc|>", "itn": "<|noitn|>", "timestamp": "<|notimestamp|>", "diarize": "<|nodiarize|>"}


def _as_token(value: Any) -> str:
    text = str(value)
    return text if text.startswith("<|") and text.endswith("|>") else f"<|{text}|>"


def _flag(slot: str, value: Any) -> str:
    text = str(value)
    if text in (f"<|{slot}|>", f"<|no{slot}|>"):
        return text
    return f"<|{slot}|>" if text in _TRUE or text == slot or value is True else f"<|no{slot}|>"


def prompt_tokens_of(row: Row, prompt_format: str, defaults: Mapping[str, str]) -> list[tuple[str, str]]:
    """(slot, special token) pairs the prompt of `row` is made of."""
    fields = {**defaults, **row.fields}
    tokens: list[tuple[str, str]] = [("source_lang", _as_token(fields["source_lang"]))] if fields.get("source_lang") else []
    if fields.get("target_lang"):
        tokens.append(("target_lang", _as_token(fields["target_lang"])))
    if prompt_format == "canary":
        tokens += [("prompt", "<|startoftranscript|>"), ("prompt", "<|endoftext|>")]
        slot = "taskname" if fields.get("taskname") else "task"
        if fields.get(slot):
            tokens.append((slot, _TASKS.get(str(fields[slot]), _as_token(fields[slot]))))
        tokens.append(("pnc", _flag("pnc", fields.get("pnc", "yes"))))
        return tokens
    tokens += [("prompt", token) for token in _CANARY2_FIXED]
    for slot, default in _CANARY2_FLAGS.items():
        tokens.append((slot, _flag(slot, fields[slot]) if slot in fields else default))
    tokens.append(("emotion", _as_token(fields.get("emotion") or "emo:undefined")))
    return tokens


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
