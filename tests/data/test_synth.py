"""The espeak-ng synthesiser: real audio that passes preflight, disjoint splits, seeds."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile

from speechtune import engines
from speechtune.data import check, manifest, normalize, synth


def test_output_passes_preflight_and_durations_match_the_audio(small_synth: dict[str, Path]) -> None:
    assert set(small_synth) == {"train", "valid", "test"}
    assert all(path.name == f"{split}.json" for split, path in small_synth.items())
    report = check.preflight(list(small_synth.values()), needs=engines.row("nemo-canary").data_needs, languages=["en", "de"],
                             duration_tolerance=0.0)
    assert report.problems == [], report.format()
    assert report.summary.utterances == 30
    for path in small_synth.values():
        for utt in manifest.read(path):
            info = soundfile.info(str(utt.audio_filepath))
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert utt.duration == info.frames / info.samplerate
            assert 1.0 < utt.duration < 7.0


def test_audio_paths_are_relative_to_the_output_folder(small_synth: dict[str, Path]) -> None:
    first = small_synth["train"].read_text().splitlines()[0]
    assert '"audio_filepath": "audio/train/' in first


def test_splits_have_disjoint_sentences_and_all_three_tasks(small_synth: dict[str, Path]) -> None:
    by_split = {split: manifest.read(path) for split, path in small_synth.items()}
    assert [len(by_split[s]) for s in ("train", "valid", "test")] == [24, 3, 3]
    texts = {split: {u.text for u in utts} for split, utts in by_split.items()}
    assert not texts["train"] & texts["valid"] and not texts["train"] & texts["test"]
    assert not texts["valid"] & texts["test"]
    for utts in by_split.values():
        tasks = {(u.source_lang, u.target_lang) for u in utts}
        assert tasks == {("en", "en"), ("de", "de"), ("en", "de")}
    translation = next(u for u in by_split["train"] if u.source_lang == "en" and u.target_lang == "de")
    assert translation.extra["taskname"] == "ast" and translation.pnc == "yes"


def test_same_seed_same_data_other_seed_other_data(tmp_path: Path) -> None:
    kwargs = dict(n=6, languages=["en"], domain="atc", noise=True)
    a = synth.synthesize(tmp_path / "a", seed=3, **kwargs)  # type: ignore[arg-type]
    b = synth.synthesize(tmp_path / "b", seed=3, **kwargs)  # type: ignore[arg-type]
    c = synth.synthesize(tmp_path / "c", seed=4, **kwargs)  # type: ignore[arg-type]
    for split in a:
        assert a[split].read_bytes() == b[split].read_bytes()
    for wav in sorted((tmp_path / "a" / "audio").rglob("*.wav")):
        assert wav.read_bytes() == (tmp_path / "b" / wav.relative_to(tmp_path / "a")).read_bytes()
    assert a["train"].read_bytes() != c["train"].read_bytes()


def test_plans_are_mostly_unique_and_varied() -> None:
    items = synth.plan(n=400, languages=["en"], domain="atc", seed=0, translate_to=None, noise=False)
    assert len({item.transcript for item in items}) == 400
    assert len({item.voice.name for item in items}) > 20
    assert len({item.voice.speed for item in items}) > 20
    for item in items[:50]:  # ATC transcripts are already in the ATC0 package's normal form
        assert normalize.atc(item.transcript) == item.transcript


def test_banglish_mixes_scripts_and_digit_strings(tmp_path: Path) -> None:
    paths = synth.synthesize(tmp_path, n=12, languages=["bn"], domain="banglish", seed=1, fmt="hf")
    assert paths["train"].name == "train.csv"
    utts = [u for path in paths.values() for u in manifest.read(path)]
    assert all(u.source_lang == "bn" for u in utts)
    assert any(any("\u0980" <= c <= "\u09ff" for c in u.text) and any(c.isascii() and c.isalpha() for c in u.text)
               for u in utts)
    items = synth.plan(n=200, languages=["bn"], domain="banglish", seed=1, translate_to=None, noise=False)
    phone = next(i for i in items if "phone number" in i.transcript)
    number = phone.transcript.split("number ")[1]
    assert number.replace(" ", "").isdigit() and len(number.replace(" ", "")) == 11
    assert phone.spoken.speech.endswith(" ".join(number.replace(" ", "")))  # read digit by digit
    assert check.preflight(list(paths.values()), languages=["bn"]).ok


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(domain="atc", languages=["de"]), "speaks en"),
        (dict(domain="weather", languages=["en"]), "unknown"),
        (dict(domain="atc", languages=["en"], translate_to="de"), "generic"),
        (dict(domain="generic", languages=["en"], n=2), "at least 3"),
    ],
)
def test_bad_requests_fail_before_any_audio(tmp_path: Path, kwargs: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=message):
        synth.synthesize(tmp_path, **{"n": 10, "seed": 0, **kwargs})
    assert not (tmp_path / "audio").exists()
