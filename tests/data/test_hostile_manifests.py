"""Hostile and careless manifests: each problem is one line naming file:line and the field,
never a traceback; audio stays on the data volume unless the job opts into absolute paths."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import pytest

from speechtune.data import check, manifest

ROW = {"id": "a", "audio_filepath": "a.wav", "duration": 1.0, "text": "hello", "source_lang": "en",
       "target_lang": "en"}


def nemo(path: Path, *rows: dict[str, Any] | str | bytes) -> Path:
    lines = [r if isinstance(r, bytes) else (r if isinstance(r, str) else json.dumps(r)).encode() for r in rows]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def csv_file(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def problems(path: Path, root: Path, **options: Any) -> list[str]:
    report = check.preflight([path], root=root, **options)
    lines = [str(p) for p in report.fatal]
    assert all("\n" not in line and "Traceback" not in line for line in lines), lines
    return lines


Case = Callable[[Path], tuple[Path, str]]  # writes a manifest below the volume; (manifest, expected text)

CASES: dict[str, Case] = {
    "absolute audio path": lambda v: (nemo(v / "m.json", ROW, {**ROW, "id": "b", "audio_filepath": "/etc/passwd"}),
                                      "m.json:2: audio_filepath: /etc/passwd is an absolute path"),
    "dot-dot escape": lambda v: (nemo(v / "m.json", {**ROW, "audio_filepath": "../../etc/passwd"}),
                                 "m.json:1: audio_filepath: ../../etc/passwd leaves the data volume"),
    "home escape": lambda v: (nemo(v / "m.json", {**ROW, "audio_filepath": "~/x.wav"}),
                              "m.json:1: audio_filepath: ~/x.wav is an absolute path"),
    "speechbrain csv absolute": lambda v: (csv_file(v / "m.csv", "ID,wav,duration,transcript\na,a.wav,1.0,hi\n"
                                                    "b,/etc/hosts,1.0,hi\n"), "m.csv:3: wav: /etc/hosts is an absolute path"),
    "hf csv escape without duration": lambda v: (csv_file(v / "m.csv", "audio_path,sentence\n../x.wav,hi\n"),
                                                 "m.csv:2: audio_path: ../x.wav leaves the data volume"),
    "NaN duration": lambda v: (nemo(v / "m.json", ROW, '{"audio_filepath": "a.wav", "duration": NaN, "text": "x"}'),
                               "m.json:2: duration: must be a finite number"),
    "Infinity duration": lambda v: (nemo(v / "m.json", '{"audio_filepath": "a.wav", "duration": Infinity, "text": "x"}'),
                                    "m.json:1: duration: must be a finite number"),
    "1e999 duration": lambda v: (nemo(v / "m.json", '{"audio_filepath": "a.wav", "duration": 1e999, "text": "x"}'),
                                 "m.json:1: duration: must be a finite number"),
    "NaN offset": lambda v: (nemo(v / "m.json", {**ROW, "offset": "nan"}), "m.json:1: offset: must be a finite number"),
    "csv inf duration": lambda v: (csv_file(v / "m.csv", "ID,wav,duration,transcript\na,a.wav,inf,hi\n"),
                                   "m.csv:2: duration: must be a finite number"),
    "csv nan duration": lambda v: (csv_file(v / "m.csv", "ID,wav,duration,transcript\na,a.wav,1,hi\nb,a.wav,NaN,x\n"),
                                   "m.csv:3: duration: must be a finite number"),
    "non-UTF-8 JSON line": lambda v: (nemo(v / "m.json", ROW, b'{"audio_filepath": "a.wav", "text": "caf\xe9"}'),
                                      "m.json:2: not UTF-8 (byte 0xe9"),
    "non-UTF-8 CSV row": lambda v: (csv_file(v / "m.csv", b"ID,wav,duration,transcript\na,a.wav,1,hi\nb,b.wav,1,caf\xe9\n"),
                                    "m.csv:3: not UTF-8 (byte 0xe9)"),
    "non-UTF-8 CSV header": lambda v: (csv_file(v / "m.csv", b"ID,w\xffav\n"), "m.csv:1: not UTF-8 (byte 0xff)"),
    "directory as JSON manifest": lambda v: ((v / "m.json").mkdir() or v / "m.json", "m.json: is a directory"),
    "directory as CSV manifest": lambda v: ((v / "m.csv").mkdir() or v / "m.csv", "m.csv: is a directory"),
    "CSV field over the limit": lambda v: (csv_file(v / "m.csv", "ID,wav,duration,transcript\na,a.wav,1,hi\n"
                                                    f"b,b.wav,1,\"{'x' * (manifest.CSV_FIELD_LIMIT + 5)}\"\n"),
                                           "m.csv:3: CSV: field larger than field limit"),
    "CSV NUL byte": lambda v: (csv_file(v / "m.csv", "ID,wav,duration,transcript\na,a.wav,1,h\0i\n"), "m.csv:2: text: control character U+0000"),
    "JSON nested too deeply": lambda v: (nemo(v / "m.json", "[" * 100_000 + "]" * 100_000), "m.json:1: not valid JSON"),
    "JSON duration as list": lambda v: (nemo(v / "m.json", {**ROW, "duration": [1]}), "m.json:1: duration: must be a number"),
    "boolean duration": lambda v: (nemo(v / "m.json", {**ROW, "duration": True}), "m.json:1: duration: must be a number"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", CASES)
def test_hostile_manifest_is_one_line_at_its_line(name: str, tmp_path: Path, write_wav) -> None:  # type: ignore[no-untyped-def]
    volume = tmp_path / "volume"
    volume.mkdir()
    write_wav("volume/a.wav")
    path, expected = CASES[name](volume)
    found = problems(path, volume)
    assert any(expected in line for line in found), found
    assert any(line.startswith(f"error: {volume}/m.") for line in found), found


def test_the_engines_reader_raises_a_manifest_error_not_a_traceback(tmp_path: Path) -> None:
    path = nemo(tmp_path / "m.json", b'{"audio_filepath": "a.wav", "duration": 1, "text": "\xff"}')
    with pytest.raises(manifest.ManifestError, match=r"m.json:1: not UTF-8"):
        manifest.read(path)
    bad = csv_file(tmp_path / "m.csv", "ID,wav,duration,transcript\na,a.wav,nan,hi\n")
    with pytest.raises(manifest.ManifestError, match=r"m.csv:2: duration: must be a finite number"):
        manifest.read(bad)


def test_dot_dot_inside_the_volume_and_opted_in_absolute_paths_are_fine(tmp_path: Path, write_wav) -> None:  # type: ignore[no-untyped-def]
    volume = tmp_path / "volume"
    write_wav("volume/audio/a.wav")
    (volume / "lists").mkdir()
    inside = nemo(volume / "lists" / "m.json", {**ROW, "audio_filepath": "../audio/a.wav"})
    assert problems(inside, volume) == []
    shared = write_wav("shared/a.wav")
    absolute = nemo(volume / "abs.json", {**ROW, "audio_filepath": str(shared)})
    assert "is an absolute path" in problems(absolute, volume)[0]
    assert problems(absolute, volume, absolute_audio_paths=True) == []
    assert check.preflight([absolute]).ok  # `speechtune data check` has no volume to confine to


def test_a_symlink_out_of_the_volume_is_refused(tmp_path: Path, write_wav) -> None:  # type: ignore[no-untyped-def]
    volume = tmp_path / "volume"
    outside = write_wav("outside/a.wav")
    volume.mkdir()
    os.symlink(outside, volume / "a.wav")
    found = problems(nemo(volume / "m.json", ROW), volume)
    assert found and "m.json:1: audio_filepath: a.wav leaves the data volume" in found[0]
