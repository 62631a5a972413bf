"""Read and write the three manifest formats users already have.

- ``nemo``: NeMo JSON lines (``audio_filepath``, ``duration``, ``text``, ``source_lang``,
  ``target_lang``, ``pnc``, optional ``offset`` and ``id``; every other key is kept).
- ``speechbrain``: SpeechBrain CSV (``ID``/``id``, ``wav``, ``duration``, ``transcript``).
- ``hf``: Hugging Face style CSV (``audio_path``, ``sentence``, optional ``duration``).

Relative audio paths resolve against the manifest's folder (as lhotse does); writers store
paths relative to the written manifest's folder when the audio lies below it. Fields a
format does not know are kept in ``Utterance.extra``, so converting between formats and
back gives the same utterances.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Sequence

Format = Literal["nemo", "speechbrain", "hf"]
FORMATS: tuple[Format, ...] = ("nemo", "speechbrain", "hf")

# Columns each format maps onto Utterance fields; anything else goes to `extra`.
_NEMO_KEYS = ("id", "audio_filepath", "duration", "offset", "text", "source_lang", "target_lang", "pnc")
_SB_ID_COLUMNS = ("ID", "id")
_SB_TEXT_COLUMNS = ("transcript", "wrd")
_OPTIONAL_COLUMNS = ("offset", "source_lang", "target_lang", "pnc")


class ManifestError(ValueError):
    """Bad manifest input; the message names the file, the line and the field."""

    def __init__(self, path: Path, line: int, field: str | None, message: str) -> None:
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {field + ': ' if field else ''}{message}")
        self.path = path
        self.line = line
        self.field = field
        self.detail = message


@dataclasses.dataclass(frozen=True)
class Utterance:
    """One manifest row, format-independent."""

    id: str
    audio_filepath: Path  # absolute
    duration: float  # seconds
    text: str
    source_lang: str | None = None
    target_lang: str | None = None
    pnc: str | None = None  # "yes" | "no", as NeMo wants it
    offset: float | None = None  # seconds into the audio file
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)
    # Where the row came from; not part of an utterance's identity.
    line: int = dataclasses.field(default=0, compare=False)


@dataclasses.dataclass(frozen=True)
class Row:
    """A raw manifest row before validation: what preflight inspects field by field."""

    line: int  # 1-based line in the file (CSV: the header is line 1)
    fields: Mapping[str, Any]
    error: str | None = None  # the line could not be parsed into fields at all


def detect_format(path: Path) -> Format:
    """The format of an existing manifest, from its extension and (CSV) its header."""
    suffix = path.suffix.lower()
    if suffix in (".json", ".jsonl"):
        return "nemo"
    if suffix != ".csv":
        raise ManifestError(path, 0, None, "unknown manifest extension (want .json, .jsonl or .csv)")
    if path.is_dir():
        raise ManifestError(path, 0, None, "is a directory, not a manifest")
    with path.open("rb") as f:
        first = f.readline(CSV_FIELD_LIMIT + 1)
    header = next(_csv_lines(path, _decode(path, first, line=1)), (0, []))[1]
    return format_from_header(path, header)


def format_from_header(path: Path, header: Sequence[str]) -> Format:
    columns = set(header)
    if "wav" in columns and columns & set(_SB_ID_COLUMNS):
        return "speechbrain"
    if {"audio_path", "sentence"} <= columns:
        return "hf"
    raise ManifestError(
        path, 1, None,
        f"CSV header {list(header)} is neither SpeechBrain (ID, wav, duration, transcript) "
        "nor Hugging Face (audio_path, sentence)",
    )


def format_for_suffix(path: Path, fmt: Format | None) -> Format:
    """The format to write `path` in: explicit, else .json/.jsonl -> nemo, .csv -> speechbrain."""
    if fmt is not None:
        return fmt
    return "nemo" if path.suffix.lower() in (".json", ".jsonl") else "speechbrain"


def read_rows(path: Path) -> Iterator[Row]:
    """Raw rows with line numbers; a line that cannot be parsed comes with `error` set, so
    preflight can report every bad line rather than stop at the first."""
    if detect_format(path) == "nemo":
        yield from _read_json_rows(path)
    else:
        yield from _read_csv_rows(path)


def _read_json_rows(path: Path) -> Iterator[Row]:
    if path.is_dir():
        raise ManifestError(path, 0, None, "is a directory, not a manifest")
    with path.open("rb") as f:  # bytes: a non-UTF-8 line is that line's problem, not a traceback
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                yield Row(number, {}, f"not UTF-8 (byte 0x{raw[error.start]:02x} at column {error.start + 1})")
                continue
            if not text.strip():
                continue
            try:
                fields = json.loads(text)
            except json.JSONDecodeError as error:
                yield Row(number, {}, f"not valid JSON ({error.msg})")
                continue
            except RecursionError:
                yield Row(number, {}, "not valid JSON (nested too deeply)")
                continue
            if not isinstance(fields, dict):
                yield Row(number, {}, "a manifest line must be a JSON object")
                continue
            yield Row(number, fields)


# The csv module refuses longer fields (its default limit); a transcript is far shorter.
CSV_FIELD_LIMIT = csv.field_size_limit()


def _decode(path: Path, raw: bytes, *, line: int = 1) -> str:
    """UTF-8 (a BOM, as Excel writes, is dropped); else ManifestError at the bad byte's line."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        where = line + raw[: error.start].count(b"\n")
        raise ManifestError(path, where, None, f"not UTF-8 (byte 0x{raw[error.start]:02x})") from None


def _read_csv_rows(path: Path) -> Iterator[Row]:
    if path.is_dir():
        raise ManifestError(path, 0, None, "is a directory, not a manifest")
    lines = _csv_lines(path, _decode(path, path.read_bytes()))
    header = next(lines, None)
    if header is None:
        return
    for number, cells in lines:
        if not any(cells):
            continue
        if len(cells) != len(header[1]):
            yield Row(number, {}, f"{len(cells)} cells for {len(header[1])} header columns")
            continue
        # An empty cell is an absent value: CSV columns are shared by all rows.
        yield Row(number, {k: v for k, v in zip(header[1], cells) if v != ""})


def _csv_lines(path: Path, text: str) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise ManifestError(path, reader.line_num, None, f"CSV: {error}") from None
        yield reader.line_num, cells


def read(path: str | os.PathLike[str]) -> list[Utterance]:
    """All utterances of a manifest; the first bad row raises ManifestError."""
    manifest = Path(path).absolute()
    fmt = detect_format(manifest)
    return [to_utterance(row, manifest, fmt) for row in read_rows(manifest)]


def to_utterance(row: Row, manifest: Path, fmt: Format) -> Utterance:
    """One validated Utterance from a raw row."""
    if row.error is not None:
        raise ManifestError(manifest, row.line, None, row.error)
    if fmt == "nemo":
        return _from_nemo(row, manifest)
    if fmt == "speechbrain":
        return _from_speechbrain(row, manifest)
    return _from_hf(row, manifest)


def _from_nemo(row: Row, manifest: Path) -> Utterance:
    fields = row.fields
    audio_raw = _required_str(row, manifest, "audio_filepath")
    offset = _optional_float(row, manifest, "offset")
    return Utterance(
        id=_optional_str(row, manifest, "id") or derived_id(audio_raw, offset),
        audio_filepath=resolve_audio(manifest, audio_raw),
        duration=_required_float(row, manifest, "duration"),
        text=_required_str(row, manifest, "text", allow_empty=True),
        source_lang=_optional_str(row, manifest, "source_lang"),
        target_lang=_optional_str(row, manifest, "target_lang"),
        pnc=_optional_pnc(row, manifest),
        offset=offset,
        extra={k: v for k, v in fields.items() if k not in _NEMO_KEYS},
        line=row.line,
    )


def _from_speechbrain(row: Row, manifest: Path) -> Utterance:
    id_column = next((c for c in _SB_ID_COLUMNS if c in row.fields), "ID")
    text_column = next((c for c in _SB_TEXT_COLUMNS if c in row.fields), "transcript")
    known = {id_column, text_column, "wav", "duration", *_OPTIONAL_COLUMNS}
    return Utterance(
        id=_required_str(row, manifest, id_column),
        audio_filepath=resolve_audio(manifest, _required_str(row, manifest, "wav")),
        duration=_required_float(row, manifest, "duration"),
        text=row.fields.get(text_column, ""),
        extra=_decoded_extra(row, known),
        line=row.line,
        **_optional_columns(row, manifest),
    )


def _from_hf(row: Row, manifest: Path) -> Utterance:
    audio_raw = _required_str(row, manifest, "audio_path")
    audio = resolve_audio(manifest, audio_raw)
    offset = _optional_float(row, manifest, "offset")
    duration = _optional_float(row, manifest, "duration")
    if duration is None:
        # HF CSVs often carry no duration; the header holds it, no decoding needed.
        duration = audio_duration(audio, manifest, row.line)
    known = {"id", "audio_path", "sentence", "duration", *_OPTIONAL_COLUMNS}
    return Utterance(
        id=_optional_str(row, manifest, "id") or derived_id(audio_raw, offset),
        audio_filepath=audio,
        duration=duration,
        text=row.fields.get("sentence", ""),
        extra=_decoded_extra(row, known),
        line=row.line,
        **{**_optional_columns(row, manifest), "offset": offset},
    )


def derived_id(audio_raw: str, offset: float | None) -> str:
    """The id of a row that has none: the audio file's stem (and offset, for segments)."""
    stem = Path(audio_raw).stem
    return f"{stem}@{offset:g}" if offset else stem


def resolve_audio(manifest: Path, audio_raw: str) -> Path:
    audio = Path(os.path.expanduser(audio_raw))
    return audio if audio.is_absolute() else manifest.parent / audio


def audio_duration(audio: Path, manifest: Path, line: int) -> float:
    import soundfile  # the only reader that needs audio; keep module import cheap

    try:
        info = soundfile.info(str(audio))
    except (OSError, RuntimeError) as error:
        raise ManifestError(manifest, line, "audio_path", f"cannot read {audio}: {error}") from None
    return float(info.frames) / float(info.samplerate)


def _optional_columns(row: Row, manifest: Path) -> dict[str, Any]:
    return {
        "source_lang": _optional_str(row, manifest, "source_lang"),
        "target_lang": _optional_str(row, manifest, "target_lang"),
        "pnc": _optional_pnc(row, manifest),
        "offset": _optional_float(row, manifest, "offset"),
    }


def _decoded_extra(row: Row, known: set[str]) -> dict[str, Any]:
    # CSV cells are strings; the writer JSON-encodes non-string values with a marker prefix
    # so that NeMo -> CSV -> NeMo keeps numbers, lists and booleans exact.
    return {k: _decode_cell(v) for k, v in row.fields.items() if k not in known}


_JSON_CELL = "json:"


def _encode_cell(value: Any) -> str:
    # An empty cell means "absent" (CSV rows share columns), so "" is written as JSON too.
    if isinstance(value, str) and value and not value.startswith(_JSON_CELL):
        return value
    return _JSON_CELL + json.dumps(value, ensure_ascii=False)


def _decode_cell(cell: str) -> Any:
    if cell.startswith(_JSON_CELL):
        try:
            return json.loads(cell[len(_JSON_CELL):])
        except json.JSONDecodeError:
            return cell
    return cell


def _required_str(row: Row, manifest: Path, field: str, *, allow_empty: bool = False) -> str:
    if field not in row.fields:
        raise ManifestError(manifest, row.line, field, "missing")
    value = row.fields[field]
    if not isinstance(value, str):
        raise ManifestError(manifest, row.line, field, f"must be a string, got {type(value).__name__}")
    if not value and not allow_empty:
        raise ManifestError(manifest, row.line, field, "empty")
    return value


def _optional_str(row: Row, manifest: Path, field: str) -> str | None:
    return _required_str(row, manifest, field) if field in row.fields else None


def _required_float(row: Row, manifest: Path, field: str) -> float:
    if field not in row.fields:
        raise ManifestError(manifest, row.line, field, "missing")
    return parse_float(row, manifest, field)


def _optional_float(row: Row, manifest: Path, field: str) -> float | None:
    return parse_float(row, manifest, field) if field in row.fields else None


def parse_float(row: Row, manifest: Path, field: str) -> float:
    value = row.fields[field]
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ManifestError(manifest, row.line, field, f"must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise ManifestError(manifest, row.line, field, f"must be a number, got {value!r}") from None
    if not math.isfinite(number):  # JSON's NaN/Infinity and CSV's "nan"/"inf" parse as floats
        raise ManifestError(manifest, row.line, field, f"must be a finite number, got {value!r}")
    return number


def _optional_pnc(row: Row, manifest: Path) -> str | None:
    if "pnc" not in row.fields:
        return None
    value = row.fields["pnc"]
    # NeMo's prompt formatter wants the strings "yes"/"no"; a JSON boolean silently
    # breaks the Canary prompt, so it is refused rather than coerced.
    if value not in ("yes", "no"):
        raise ManifestError(manifest, row.line, "pnc", f'must be "yes" or "no", got {json.dumps(value)}')
    return str(value)


def write(path: str | os.PathLike[str], utterances: Sequence[Utterance], fmt: Format | None = None) -> Path:
    """Writes `utterances` to `path` (format from `fmt`, else from the extension)."""
    manifest = Path(path).absolute()
    chosen = format_for_suffix(manifest, fmt)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    if chosen == "nemo":
        _write_nemo(manifest, utterances)
    else:
        _write_csv(manifest, utterances, chosen)
    return manifest


def stored_path(manifest: Path, audio: Path) -> str:
    """The audio path as written: relative to the manifest's folder when below it."""
    try:
        return audio.relative_to(manifest.parent).as_posix()
    except ValueError:
        return str(audio)


def nemo_fields(manifest: Path, utt: Utterance) -> dict[str, Any]:
    audio = stored_path(manifest, utt.audio_filepath)
    fields: dict[str, Any] = {}
    if utt.id != derived_id(audio, utt.offset):
        fields["id"] = utt.id
    fields["audio_filepath"] = audio
    fields["duration"] = utt.duration
    if utt.offset is not None:
        fields["offset"] = utt.offset
    fields["text"] = utt.text
    for key in ("source_lang", "target_lang", "pnc"):
        if getattr(utt, key) is not None:
            fields[key] = getattr(utt, key)
    fields.update(utt.extra)
    return fields


def _write_nemo(manifest: Path, utterances: Sequence[Utterance]) -> None:
    with manifest.open("w", encoding="utf-8") as f:
        for utt in utterances:
            f.write(json.dumps(nemo_fields(manifest, utt), ensure_ascii=False) + "\n")


def _csv_cells(manifest: Path, utt: Utterance, fmt: Format) -> dict[str, str]:
    audio = stored_path(manifest, utt.audio_filepath)
    cells: dict[str, str]
    if fmt == "speechbrain":
        cells = {"ID": utt.id, "wav": audio, "duration": repr(utt.duration), "transcript": utt.text}
    else:
        cells = {"audio_path": audio, "sentence": utt.text, "duration": repr(utt.duration)}
        if utt.id != derived_id(audio, utt.offset):
            cells["id"] = utt.id
    for key in _OPTIONAL_COLUMNS:
        value = getattr(utt, key)
        if value is not None:
            cells[key] = repr(value) if isinstance(value, float) else value
    cells.update({k: _encode_cell(v) for k, v in utt.extra.items()})
    return cells


def _write_csv(manifest: Path, utterances: Sequence[Utterance], fmt: Format) -> None:
    rows = [_csv_cells(manifest, utt, fmt) for utt in utterances]
    header: dict[str, None] = dict.fromkeys(
        ("ID", "wav", "duration", "transcript") if fmt == "speechbrain" else ("audio_path", "sentence", "duration")
    )
    for row in rows:
        header.update(dict.fromkeys(row))
    with manifest.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(header), restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
