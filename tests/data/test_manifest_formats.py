"""Reading and writing NeMo JSON lines, SpeechBrain CSV and Hugging Face CSV."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from speechtune.data import manifest
from speechtune.data.manifest import Utterance


def _utterances(root: Path) -> list[Utterance]:
    return [
        Utterance(id="a-1", audio_filepath=root / "audio" / "a.wav", duration=2.5, text="Hello, world.",
                  source_lang="en", target_lang="en", pnc="yes",
                  extra={"taskname": "asr", "timestamp": "no", "speaker": 3, "tags": ["x", "y"]}),
        Utterance(id="b-2", audio_filepath=Path("/elsewhere/b.flac"), duration=1.25, text="Hallo Welt",
                  source_lang="en", target_lang="de", pnc="no", offset=0.5,
                  extra={"decodercontext": "", "note": "json:not really"}),
        Utterance(id="c", audio_filepath=root / "c.wav", duration=3.0, text="আমার phone number 017 246"),
    ]


@pytest.mark.parametrize("fmt, name", [("nemo", "m.json"), ("speechbrain", "m.csv"), ("hf", "m.csv")])
def test_every_format_round_trips_exactly(tmp_path: Path, fmt: manifest.Format, name: str) -> None:
    original = _utterances(tmp_path)
    written = manifest.write(tmp_path / name, original, fmt)
    assert manifest.detect_format(written) == fmt
    back = manifest.read(written)
    assert back == original
    # Writing what was read gives the same bytes.
    again = manifest.write(tmp_path / f"again-{name}", back, fmt)
    assert again.read_bytes() == written.read_bytes()


@pytest.mark.parametrize("first, second", [("nemo", "speechbrain"), ("speechbrain", "hf"), ("hf", "nemo")])
def test_cross_format_round_trips_keep_every_field(tmp_path: Path, first: str, second: str) -> None:
    suffix = {"nemo": ".json", "speechbrain": ".csv", "hf": ".csv"}
    original = _utterances(tmp_path)
    a = manifest.write(tmp_path / f"a{suffix[first]}", original, first)  # type: ignore[arg-type]
    b = manifest.write(tmp_path / f"b{suffix[second]}", manifest.read(a), second)  # type: ignore[arg-type]
    assert manifest.read(b) == original


def test_relative_paths_resolve_against_the_manifest_folder(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "m.json").write_text(
        json.dumps({"audio_filepath": "clips/x.wav", "duration": 1.0, "text": "x"}) + "\n"
        + json.dumps({"audio_filepath": "/abs/y.wav", "duration": 1.0, "text": "y", "lang": "en"}) + "\n"
    )
    x, y = manifest.read(folder / "m.json")
    assert x.audio_filepath == folder / "clips" / "x.wav"
    assert x.id == "x" and x.offset is None and x.line == 1
    assert y.audio_filepath == Path("/abs/y.wav")
    assert y.extra == {"lang": "en"}


def test_speechbrain_csv_with_lowercase_id_column(tmp_path: Path) -> None:
    # The ATC0 package writes `id, wav, duration, transcript`.
    path = tmp_path / "train.csv"
    path.write_text("id,wav,duration,transcript\nu1,clips/u1.wav,1.5,DELTA SIX FORTY TWO\n")
    (utt,) = manifest.read(path)
    assert (utt.id, utt.duration, utt.text) == ("u1", 1.5, "DELTA SIX FORTY TWO")
    assert utt.audio_filepath == tmp_path / "clips" / "u1.wav"


def test_hf_csv_without_duration_reads_the_audio_header(tmp_path: Path, write_wav) -> None:  # type: ignore[no-untyped-def]
    write_wav("clips/a.wav", seconds=1.5)
    path = tmp_path / "banglish.csv"
    path.write_text("audio_path,sentence\nclips/a.wav,আমি ভাত eat করি\n")
    (utt,) = manifest.read(path)
    assert utt.duration == pytest.approx(1.5)
    assert utt.text == "আমি ভাত eat করি"


@pytest.mark.parametrize(
    "line, field, message",
    [
        ('{"audio_filepath": "a.wav", "text": "x"}', "duration", "missing"),
        ('{"audio_filepath": "a.wav", "duration": "long", "text": "x"}', "duration", "must be a number"),
        ('{"audio_filepath": "a.wav", "duration": 1, "text": "x", "pnc": true}', "pnc", '"yes" or "no"'),
        ('{"audio_filepath": 3, "duration": 1, "text": "x"}', "audio_filepath", "must be a string"),
        ("[1, 2]", None, "JSON object"),
        ("{not json", None, "not valid JSON"),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path: Path, line: str, field: str | None, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"audio_filepath": "ok.wav", "duration": 1, "text": "fine"}\n' + line + "\n")
    with pytest.raises(manifest.ManifestError) as raised:
        manifest.read(path)
    assert (raised.value.line, raised.value.field) == (2, field)
    assert message in str(raised.value) and f"{path}:2" in str(raised.value)


def test_unknown_csv_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("file,words\na.wav,hello\n")
    with pytest.raises(manifest.ManifestError, match="neither SpeechBrain"):
        manifest.read(path)


def test_csv_with_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffID,wav,duration,transcript\nu1,a.wav,1.0,hi\n".encode("utf-8"))
    assert manifest.detect_format(path) == "speechbrain"
    assert manifest.read(path)[0].id == "u1"
