"""Preflight finds every kind of bad row, with its file and line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from speechtune import engines
from speechtune.data import check, commands, tokenizer_chars


def _jsonl(path: Path, rows: list[dict[str, Any] | str]) -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row, ensure_ascii=False) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _row(audio: str, duration: float = 1.0, text: str = "hello world", **more: Any) -> dict[str, Any]:
    return {"id": audio.removesuffix(".wav"), "audio_filepath": audio, "duration": duration, "text": text,
            "source_lang": "en", "target_lang": "en", "pnc": "yes", **more}


@pytest.fixture
def crafted(tmp_path: Path, write_wav) -> Path:  # type: ignore[no-untyped-def]
    """A NeMo manifest where line N has exactly the problem named in EXPECTED[N]."""
    for name in ("good", "good2", "dup", "chars", "lang", "boolpnc", "nofield", "empty", "long", "badtype"):
        write_wav(f"{name}.wav")
    write_wav("rate8k.wav", rate=8000)
    write_wav("stereo.wav", channels=2)
    write_wav("short.wav", seconds=0.5)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk")
    truncated = write_wav("truncated.wav").read_bytes()
    (tmp_path / "truncated.wav").write_bytes(truncated[: len(truncated) // 2])
    return _jsonl(tmp_path / "crafted.json", [
        _row("good.wav"),                                                  # 1
        _row("missing.wav"),                                               # 2
        _row("corrupt.wav"),                                               # 3
        _row("rate8k.wav"),                                                # 4
        _row("stereo.wav"),                                                # 5
        _row("short.wav", duration=1.0),                                   # 6
        _row("boolpnc.wav", pnc=True),                                     # 7
        {**_row("dup.wav"), "id": "good"},                                 # 8
        _row("chars.wav", text="hello wörld"),                             # 9
        _row("lang.wav", source_lang="xx"),                                # 10
        {k: v for k, v in _row("nofield.wav").items() if k != "text"},     # 11
        _row("empty.wav", text="   "),                                     # 12
        _row("long.wav", text="x" * 200),                                  # 13
        _row("badtype.wav", duration="one second"),                        # 14
        "{broken json",                                                    # 15
        _row("truncated.wav"),                                             # 16
        _row("good2.wav", offset=0.2, duration=0.8),                       # 17
        _row("good.wav", offset=0.5, duration=1.0, id="seg"),              # 18
    ])


EXPECTED = {
    2: ("audio_filepath", "not found"),
    3: ("audio_filepath", "corrupt"),
    4: ("audio_filepath", "8000 Hz"),
    5: ("audio_filepath", "2 channels"),
    6: ("audio_filepath", "disagrees with the audio (0.500 s)"),
    7: ("pnc", "boolean"),
    8: ("id", "duplicate id 'good'"),
    9: ("text", "'ö'"),
    10: ("source_lang", "unknown language 'xx'"),
    11: ("text", "missing"),
    12: ("text", "empty transcript"),
    13: ("text", "too long"),
    14: ("duration", "must be a number"),
    15: (None, "not valid JSON"),
    16: ("audio_filepath", "truncated"),
    18: ("audio_filepath", "runs past the audio's end"),
}


def test_every_problem_is_found_on_its_line(crafted: Path) -> None:
    chars = frozenset("abcdefghijklmnopqrstuvwxyz ")
    report = check.preflight(crafted, tokenizer_chars=chars, languages=["en", "de"])
    found = {(p.line, p.field): p for p in report.problems}
    for line, (field, words) in EXPECTED.items():
        problem = found.get((line, field))
        assert problem is not None, f"line {line}: no {field} problem in {[str(p) for p in report.problems]}"
        assert words in problem.message and problem.fatal and problem.file == crafted
    # Nothing reported on the good lines (1, and 17 which uses an offset), nothing invented.
    assert {p.line for p in report.problems} == set(EXPECTED)
    assert not report.ok
    with pytest.raises(check.PreflightError, match=f"{crafted}:2"):
        report.raise_if_fatal()


def test_wrong_duration_is_fatal_and_right_one_is_not(tmp_path: Path, write_wav) -> None:  # type: ignore[no-untyped-def]
    write_wav("a.wav", seconds=2.0)
    path = _jsonl(tmp_path / "m.json", [_row("a.wav", duration=2.0), {**_row("a.wav", duration=3.0), "id": "b"}])
    report = check.preflight(path)
    assert [(p.line, p.field) for p in report.problems] == [(2, "audio_filepath")]
    assert "disagrees with the audio (2.000 s)" in report.problems[0].message


def test_summary_counts_hours_languages_and_durations(tmp_path: Path, write_wav) -> None:  # type: ignore[no-untyped-def]
    write_wav("a.wav", seconds=1.5)
    write_wav("b.wav", seconds=3.0)
    path = _jsonl(tmp_path / "m.json", [
        _row("a.wav", duration=1.5), _row("b.wav", duration=3.0, target_lang="de"),
    ])
    report = check.preflight(path, needs=engines.row("nemo-canary").data_needs)
    assert report.ok, report.format()
    assert report.summary.utterances == 2
    assert report.summary.seconds == pytest.approx(4.5)
    assert report.summary.languages == {"en": 1, "en->de": 1}
    assert dict(report.summary.histogram)["1-2 s"] == 1 and dict(report.summary.histogram)["2-5 s"] == 1


def test_canary_needs_languages_on_every_row(tmp_path: Path, write_wav) -> None:  # type: ignore[no-untyped-def]
    write_wav("a.wav")
    path = _jsonl(tmp_path / "m.json", [{"audio_filepath": "a.wav", "duration": 1.0, "text": "hi"}])
    assert check.preflight(path).ok
    report = check.preflight(path, needs=engines.row("nemo-canary").data_needs)
    assert {p.field for p in report.fatal} == {"source_lang", "target_lang"}


def test_speechbrain_csv_problems_carry_csv_line_numbers(tmp_path: Path, write_wav) -> None:  # type: ignore[no-untyped-def]
    write_wav("a.wav")
    path = tmp_path / "train.csv"
    path.write_text("ID,wav,duration,transcript\nu1,a.wav,1.0,HELLO\nu1,a.wav,abc,\n,a.wav,1.0,HI\n")
    problems = {(p.line, p.field, p.message) for p in check.preflight(path).problems}
    assert (3, "duration", "must be a number, got 'abc'") in problems
    assert (4, "ID", "missing") in problems


def test_rows_without_ids_may_reuse_a_clip_across_tasks(tmp_path: Path, write_wav) -> None:  # type: ignore[no-untyped-def]
    write_wav("a.wav")
    asr = {"audio_filepath": "a.wav", "duration": 1.0, "text": "hello", "source_lang": "en", "target_lang": "en"}
    path = _jsonl(tmp_path / "m.json", [asr, {**asr, "text": "hallo", "target_lang": "de"}])
    report = check.preflight(path)
    assert report.ok
    assert [(p.line, p.fatal) for p in report.problems] == [(2, False)]


def test_tokenizer_formats(tmp_path: Path) -> None:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("<unk>\n▁\na\nb\n##c\n")
    assert tokenizer_chars.producible_chars(vocab) == frozenset(" abc")
    wav2vec2 = tmp_path / "vocab.json"
    wav2vec2.write_text(json.dumps({"[PAD]": 0, "|": 1, "আ": 2, "x": 3}))
    assert tokenizer_chars.producible_chars(wav2vec2) == frozenset(" আx")


def test_sentencepiece_model_and_nemo_folder(tmp_path: Path) -> None:
    sentencepiece = pytest.importorskip("sentencepiece")
    text = tmp_path / "text.txt"
    text.write_text("hello world\nhold the door\n" * 20)
    folder = tmp_path / "tokenizer"
    folder.mkdir()
    sentencepiece.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(folder / "tokenizer"), vocab_size=15, model_type="char",
        character_coverage=1.0, minloglevel=2,
    )
    chars = tokenizer_chars.producible_chars(folder)
    assert chars is not None and set("helowrdt ") <= chars and "z" not in chars
    assert tokenizer_chars.producible_chars(folder / "tokenizer.model") == chars


def test_check_command_exit_status(crafted: Path, tmp_path: Path, write_wav, capsys) -> None:  # type: ignore[no-untyped-def]
    import argparse

    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command"), engines.data_needs())
    args = parser.parse_args(["data", "check", str(crafted), "--languages", "en"])
    assert args.func(args) == 1
    out = capsys.readouterr().out
    assert f"{crafted}:4: audio_filepath:" in out and "fatal problems" in out
    write_wav("ok.wav")
    good = _jsonl(tmp_path / "good.json", [_row("ok.wav")])
    args = parser.parse_args(["data", "check", str(good)])
    assert args.func(args) == 0
