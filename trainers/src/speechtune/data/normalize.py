"""Text normalizers, chosen per job by `spec.data.normalization`.

The runtime applies the same normalizer to references and hypotheses before WER/CER, so
scores compare words, not formatting.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Callable

Normalizer = Callable[[str], str]

_SPACES = re.compile(r"\s+")
# ATC0 package rule (common/text_norm.py): UPPERCASE, digits kept, only "." and "/".
_NOT_ATC = re.compile(r"[^A-Z0-9./\s]")
# Bengali block (letters, vowel signs, digits), Latin letters and ASCII digits.
_NOT_BANGLISH = re.compile(r"[^\u0980-\u09FFa-z0-9\s]")


def _squeeze(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def none(text: str) -> str:
    return text


def lower(text: str) -> str:
    """Lowercase, punctuation removed (every Unicode P* character), spaces squeezed."""
    kept = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text.lower())
    return _squeeze(kept)


def atc(text: str) -> str:
    return _squeeze(_NOT_ATC.sub(" ", text.upper()))


def banglish(text: str) -> str:
    """Bengali script, Latin letters (lowercased) and digits; everything else is a space.
    NFC first so a vowel sign typed as two code points compares equal to the composed one;
    zero-width joiners only shape glyphs, so they are dropped rather than split words."""
    text = unicodedata.normalize("NFC", text).replace("\u200c", "").replace("\u200d", "")
    return _squeeze(_NOT_BANGLISH.sub(" ", text.lower()))


NORMALIZERS: dict[str, Normalizer] = {"none": none, "lower": lower, "atc": atc, "banglish": banglish}


def get(name: str) -> Normalizer:
    try:
        return NORMALIZERS[name]
    except KeyError:
        raise ValueError(f"unknown normalization {name!r} (want one of {', '.join(NORMALIZERS)})") from None
