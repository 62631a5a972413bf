"""Normalizers applied to references and hypotheses before WER/CER."""

from __future__ import annotations

import pytest

from speechtune.data import normalize


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("none", "Hello, World!", "Hello, World!"),
        ("lower", "Hello,  World! Ça va?", "hello world ça va"),
        ("atc", "Delta 642, turn left heading 270; FL3.5/x", "DELTA 642 TURN LEFT HEADING 270 FL3.5/X"),
        ("atc", "cleared-to-land  runway two seven", "CLEARED TO LAND RUNWAY TWO SEVEN"),
        ("banglish", "আমার Passport number A02। ঠিক আছে? ১২৩", "আমার passport number a02 ঠিক আছে ১২৩"),
        ("banglish", "র\u200d্যাব, phone: 017-246", "র্যাব phone 017 246"),
    ],
)
def test_normalizers(name: str, text: str, expected: str) -> None:
    assert normalize.get(name)(text) == expected


def test_unknown_normalizer_names_the_choices() -> None:
    with pytest.raises(ValueError, match="none, lower, atc, banglish"):
        normalize.get("upper")
