"""Preflight: find every problem in manifests before a run spends GPU hours on them.

Most failed fine-tuning runs die of bad data, and some loaders (lhotse) drop unreadable
audio silently. Preflight reads audio *headers* only (cached per file, see audio_header)
so 100k rows take seconds, and reports every problem with its file and line.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import math
import os
import unicodedata
from pathlib import Path
from typing import Any, Collection, Iterable, Mapping, Protocol, Sequence

from speechtune.data import audio_header, manifest

_HISTOGRAM_EDGES = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 40.0)


@dataclasses.dataclass(frozen=True)
class Problem:
    file: Path
    line: int  # 0: the file as a whole
    field: str | None
    message: str
    fatal: bool = True

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        field = f" {self.field}:" if self.field else ""
        return f"{'error' if self.fatal else 'warning'}: {where}:{field} {self.message}"


class EngineNeeds(Protocol):
    """What an engine's data loader requires of every row: each engine's registry row
    declares it (speechtune.engines.base.DataNeeds); the data layer only reads it."""

    @property
    def sample_rate(self) -> int: ...

    @property
    def channels(self) -> int: ...

    @property
    def fields(self) -> tuple[str, ...]: ...


@dataclasses.dataclass(frozen=True)
class AnyEngine:
    """No engine named (`speechtune data check` without --engine): 16 kHz mono."""

    sample_rate: int = 16000
    channels: int = 1
    fields: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Limits:
    tokenizer_chars: frozenset[str] | None = None  # None: no tokenizer check
    languages: frozenset[str] | None = None  # None: any language
    needs: EngineNeeds = AnyEngine()
    duration_tolerance: float = 0.1  # seconds between the manifest and the audio header
    # CTC must emit one label per frame at most (a 10 ms hop subsampled 4x gives 25 frames
    # per second), so denser transcripts cannot be learnt.
    max_chars_per_second: float = 25.0
    max_duration: float = 40.0  # longer utterances are reported (not fatal): memory spikes
    root: Path | None = None  # the data volume audio must stay on (None: anywhere, `data check`)
    absolute_audio_paths: bool = False  # spec.data.absoluteAudioPaths: a shared filesystem


@dataclasses.dataclass(frozen=True)
class Summary:
    utterances: int
    seconds: float
    languages: Mapping[str, int]  # "en", or "en->de" for translation rows
    histogram: Sequence[tuple[str, int]]  # duration bucket label -> utterances

    @property
    def hours(self) -> float:
        return self.seconds / 3600.0


@dataclasses.dataclass(frozen=True)
class Report:
    problems: Sequence[Problem]
    summary: Summary

    @property
    def fatal(self) -> list[Problem]:
        return [p for p in self.problems if p.fatal]

    @property
    def ok(self) -> bool:
        return not self.fatal

    def raise_if_fatal(self) -> None:
        if self.fatal:
            raise PreflightError(self)

    def format(self, *, max_problems: int = 50) -> str:
        lines = [str(p) for p in self.problems[:max_problems]]
        if len(self.problems) > max_problems:
            lines.append(f"... and {len(self.problems) - max_problems} more problems")
        lines += format_summary(self.summary)
        lines.append(f"{len(self.fatal)} fatal problems, {len(self.problems) - len(self.fatal)} warnings")
        return "\n".join(lines)


class PreflightError(ValueError):
    def __init__(self, report: Report) -> None:
        shown = "\n".join(str(p) for p in report.fatal[:20])
        more = len(report.fatal) - 20
        super().__init__(f"manifest preflight failed:\n{shown}" + (f"\n... and {more} more" if more > 0 else ""))
        self.report = report


def format_summary(summary: Summary) -> list[str]:
    lines = [f"{summary.utterances} utterances, {summary.hours:.2f} hours ({summary.seconds:.1f} s)"]
    lines += [f"  {label:>10}: {count}" for label, count in summary.histogram if count]
    lines += [f"  {lang}: {count}" for lang, count in sorted(summary.languages.items())]
    return lines


def preflight(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    tokenizer_chars: Collection[str] | None = None,
    languages: Collection[str] | None = None,
    needs: EngineNeeds | None = None,
    duration_tolerance: float = 0.1,
    max_chars_per_second: float = 25.0,
    max_duration: float = 40.0,
    root: str | os.PathLike[str] | None = None,
    absolute_audio_paths: bool = False,
) -> Report:
    """Checks every row of every manifest in `paths`; never raises for bad data."""
    limits = Limits(
        tokenizer_chars=frozenset(tokenizer_chars) if tokenizer_chars is not None else None,
        languages=frozenset(languages) if languages is not None else None,
        needs=needs or AnyEngine(),
        duration_tolerance=duration_tolerance,
        max_chars_per_second=max_chars_per_second,
        max_duration=max_duration,
        root=Path(root).absolute() if root is not None else None,
        absolute_audio_paths=absolute_audio_paths,
    )
    files = [Path(p).absolute() for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    audio = audio_header.AudioHeaders()
    problems: list[Problem] = []
    located: list[tuple[Path, manifest.Utterance]] = []
    for file in files:
        file_problems, file_utterances = check_file(file, limits, audio)
        problems += file_problems
        located += [(file, utt) for utt in file_utterances]
    problems += duplicate_ids(located)
    order = {file: index for index, file in enumerate(files)}
    problems.sort(key=lambda p: (order.get(p.file, len(files)), p.line))  # stable: row order kept
    return Report(problems, summarize([utt for _, utt in located]))


def check_file(
    file: Path, limits: Limits, audio: audio_header.AudioHeaders
) -> tuple[list[Problem], list[manifest.Utterance]]:
    try:
        fmt = manifest.detect_format(file)
    except manifest.ManifestError as error:
        return [Problem(file, error.line, None, error.detail)], []
    except OSError as error:
        return [Problem(file, 0, None, f"cannot read: {error.strerror or error}")], []
    problems: list[Problem] = []
    utterances = []
    try:
        for row in manifest.read_rows(file):
            row_problems, utt = check_row(row, fmt, file, limits, audio)
            problems += row_problems
            if utt is not None:
                utterances.append(utt)
    except manifest.ManifestError as error:  # the file cannot be read on (bad bytes, CSV limits)
        problems.append(Problem(file, error.line, None, error.detail))
    except OSError as error:
        problems.append(Problem(file, 0, None, f"cannot read: {error.strerror or error}"))
    if not utterances and not problems:
        problems.append(Problem(file, 0, None, "no utterances"))
    return problems, utterances


def check_row(
    row: manifest.Row, fmt: manifest.Format, file: Path, limits: Limits, audio: audio_header.AudioHeaders
) -> tuple[list[Problem], manifest.Utterance | None]:
    """Every problem of one row; the utterance when its fields are usable."""
    if row.error is not None:
        return [Problem(file, row.line, None, row.error)], None
    problems = [Problem(file, row.line, field, message) for field, message in field_problems(row.fields, fmt)]
    if problems:
        return problems, None
    if fmt == "hf" and "duration" not in row.fields:
        escape = confinement_problem(str(row.fields["audio_path"]), file, limits)
        if escape:
            return [Problem(file, row.line, "audio_path", escape)], None
        # HF CSVs often carry no durations: take the (cached) header's.
        header = audio.get(manifest.resolve_audio(file, row.fields["audio_path"]))
        if isinstance(header, str):
            return [Problem(file, row.line, "audio_path", header)], None
        row = manifest.Row(row.line, {**row.fields, "duration": header.seconds})
    audio_field = {"nemo": "audio_filepath", "speechbrain": "wav", "hf": "audio_path"}[fmt]
    escape = confinement_problem(str(row.fields[audio_field]), file, limits)
    if escape:
        return [Problem(file, row.line, audio_field, escape)], None
    utt = manifest.to_utterance(row, file, fmt)
    found = [(field, message, fatal) for field, message, fatal in utterance_problems(utt, limits)]
    found += [(audio_field, message, fatal) for message, fatal in audio_problems(utt, limits, audio)]
    return [Problem(file, row.line, f, m, fatal) for f, m, fatal in found], utt


_NUMBER, _TEXT, _PNC = "number", "text", "pnc"
# field -> (kind, required); the text of a CSV row may be an empty cell (reported later).
_FIELDS: dict[str, dict[str, tuple[str, bool]]] = {
    "nemo": {"audio_filepath": ("str", True), "duration": (_NUMBER, True), "text": (_TEXT, True),
             "id": ("str", False), "offset": (_NUMBER, False), "source_lang": ("str", False),
             "target_lang": ("str", False), "pnc": (_PNC, False)},
    "speechbrain": {"wav": ("str", True), "duration": (_NUMBER, True), "offset": (_NUMBER, False),
                    "pnc": (_PNC, False)},
    "hf": {"audio_path": ("str", True), "duration": (_NUMBER, False), "offset": (_NUMBER, False),
           "pnc": (_PNC, False)},
}


def field_problems(fields: Mapping[str, Any], fmt: manifest.Format) -> list[tuple[str, str]]:
    """Missing and wrong-typed fields, as (field, message)."""
    found = []
    if fmt == "speechbrain" and not ({"ID", "id"} & fields.keys()):
        found.append(("ID", "missing"))
    for field, (kind, required) in _FIELDS[fmt].items():
        if field not in fields:
            if required:
                found.append((field, "missing"))
            continue
        message = _type_problem(fields[field], kind)
        if message:
            found.append((field, message))
    return found


def _type_problem(value: Any, kind: str) -> str | None:
    if kind == _PNC:
        if isinstance(value, bool):
            return f'given as a boolean ({str(value).lower()}); NeMo wants the string "yes" or "no"'
        return None if value in ("yes", "no") else f'must be "yes" or "no", got {value!r}'
    if kind == _NUMBER:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            return f"must be a number, got {type(value).__name__}"
        try:
            number = float(value)
        except (ValueError, OverflowError):
            return f"must be a number, got {value!r}"
        return None if math.isfinite(number) else f"must be a finite number, got {value!r}"
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    return "empty" if kind == "str" and not value else None


def confinement_problem(audio_raw: str, file: Path, limits: Limits) -> str | None:
    """Audio must lie on the data volume (limits.root): a manifest is data a user wrote, and
    a path out of the volume would read the image's or the node's files. Absolute paths
    are refused unless the job says its manifests name a shared filesystem."""
    if limits.root is None or limits.absolute_audio_paths:
        return None
    if os.path.isabs(os.path.expanduser(audio_raw)):
        return (f"{audio_raw} is an absolute path; manifests name audio relative to their own folder on the "
                "data volume (spec.data.absoluteAudioPaths: true allows a shared filesystem)")
    resolved = manifest.resolve_audio(file, audio_raw)
    root = os.path.realpath(limits.root)
    for candidate in (os.path.normpath(resolved), os.path.realpath(resolved)):
        if candidate != root and not candidate.startswith(root.rstrip(os.sep) + os.sep):
            return f"{audio_raw} leaves the data volume ({limits.root})"
    return None


def utterance_problems(utt: manifest.Utterance, limits: Limits) -> Iterable[tuple[str, str, bool]]:
    """Problems of the values themselves, as (field, message, fatal)."""
    text = utt.text.strip()
    control = next((c for c in text if unicodedata.category(c) == "Cc" and c != "\t"), None)
    if control is not None:  # NUL, escape codes: no tokenizer should learn them
        yield "text", f"control character U+{ord(control):04X} in the transcript", True
    if not text:
        yield "text", "empty transcript", True
    elif utt.duration > 0 and len(text) > limits.max_chars_per_second * utt.duration:
        yield "text", (
            f"transcript too long for its audio: {len(text)} characters in {utt.duration:.2f} s "
            f"(more than {limits.max_chars_per_second:g} per second)"
        ), True
    if utt.duration <= 0:
        yield "duration", f"must be positive, got {utt.duration:g}", True
    elif utt.duration > limits.max_duration:
        yield "duration", f"{utt.duration:.1f} s is longer than {limits.max_duration:g} s", False
    if limits.tokenizer_chars is not None:
        missing = sorted(set(text) - limits.tokenizer_chars)
        if missing:
            shown = ", ".join(repr(c) for c in missing)
            yield "text", f"characters the tokenizer cannot produce: {shown}", True
    for field in limits.needs.fields:
        if getattr(utt, field) is None:
            yield field, "missing (the engine needs it)", True
    for field in ("source_lang", "target_lang"):
        value = getattr(utt, field)
        if value is not None and limits.languages is not None and value not in limits.languages:
            yield field, f"unknown language {value!r} (allowed: {', '.join(sorted(limits.languages))})", True


def audio_problems(
    utt: manifest.Utterance, limits: Limits, audio: audio_header.AudioHeaders
) -> Iterable[tuple[str, bool]]:
    """Problems of the audio file, from its header only, as (message, fatal)."""
    header = audio.get(utt.audio_filepath)
    if isinstance(header, str):
        yield header, True
        return
    if header.sample_rate != limits.needs.sample_rate:
        yield f"{utt.audio_filepath.name}: {header.sample_rate} Hz, the engine needs {limits.needs.sample_rate} Hz", True
    if header.channels != limits.needs.channels:
        yield f"{utt.audio_filepath.name}: {header.channels} channels, the engine needs {limits.needs.channels}", True
    if utt.offset:  # a segment of a longer file: it only has to fit
        if utt.offset + utt.duration > header.seconds + limits.duration_tolerance:
            yield (
                f"duration {utt.duration:g} s from offset {utt.offset:g} s "
                f"runs past the audio's end ({header.seconds:.3f} s)"
            ), True
    elif abs(utt.duration - header.seconds) > limits.duration_tolerance:
        yield f"duration {utt.duration:g} s disagrees with the audio ({header.seconds:.3f} s)", True


def duplicate_ids(located: Sequence[tuple[Path, manifest.Utterance]]) -> list[Problem]:
    """Ids used twice. Within a file that is fatal; across files (the same clip in train
    and test) it is a warning about leakage, as is a clip reused by rows without ids."""
    first: dict[str, tuple[Path, int]] = {}
    problems = []
    for file, utt in located:
        seen = first.setdefault(utt.id, (file, utt.line))
        if seen == (file, utt.line):
            continue
        same_file = seen[0] == file
        where = f"line {seen[1]}" if same_file else f"{seen[0].name} line {seen[1]}"
        if utt.id == manifest.derived_id(str(utt.audio_filepath), utt.offset):
            # No id field: the same clip twice is normal for multi-task rows (ASR + AST).
            message = f"same audio and offset as {where} (rows without an id field)"
            problems.append(Problem(file, utt.line, "id", message, fatal=False))
        else:
            message = f"duplicate id {utt.id!r} (also on {where})"
            problems.append(Problem(file, utt.line, "id", message, fatal=same_file))
    return problems


def summarize(utterances: Sequence[manifest.Utterance]) -> Summary:
    counts = [0] * (len(_HISTOGRAM_EDGES) + 1)
    languages: collections.Counter[str] = collections.Counter()
    for utt in utterances:
        counts[bisect.bisect_right(_HISTOGRAM_EDGES, utt.duration)] += 1
        source, target = utt.source_lang or "?", utt.target_lang or utt.source_lang or "?"
        languages[source if source == target else f"{source}->{target}"] += 1
    bounds = (0.0, *_HISTOGRAM_EDGES)
    labels = [f"{lo:g}-{hi:g} s" for lo, hi in zip(bounds, _HISTOGRAM_EDGES)] + [f">{_HISTOGRAM_EDGES[-1]:g} s"]
    return Summary(
        utterances=len(utterances),
        seconds=sum(utt.duration for utt in utterances),
        languages=dict(languages),
        histogram=list(zip(labels, counts)),
    )
