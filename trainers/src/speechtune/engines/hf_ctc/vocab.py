"""Character vocabularies for CTC: built from transcripts or grown from a pretrained one.

A CTC head has one row per character. Banglish mixes Bengali script, Latin letters and
digits; MMS's Bengali vocabulary lacks the latter, so the guide adds them. Its
`resize_token_embeddings` call raises for wav2vec2 in transformers 5, so the head is grown
here by hand, keeping the trained rows so the pretrained characters keep their meaning.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Iterable, Mapping

import torch
from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2ForCTC

PAD, BOS, EOS, UNK, WORD_DELIMITER = "<pad>", "<s>", "</s>", "<unk>", "|"
# MMS's layout: <pad> (the CTC blank) first, then the specials, then "|" for spaces.
SPECIALS = (PAD, BOS, EOS, UNK, WORD_DELIMITER)

Vocabulary = Mapping[str, int]


def characters(texts: Iterable[str]) -> list[str]:
    """The characters CTC must emit for these transcripts, spaces as the word delimiter."""
    return sorted({WORD_DELIMITER if c == " " else c for text in texts for c in text})


def build(texts: Iterable[str]) -> dict[str, int]:
    """A fresh vocabulary: the specials, then every transcript character in sorted order."""
    vocab = {token: index for index, token in enumerate(SPECIALS)}
    for char in characters(texts):
        vocab.setdefault(char, len(vocab))
    return vocab


def extend(base: Vocabulary, texts: Iterable[str], extra: str = "") -> tuple[dict[str, int], list[str]]:
    """`base` with missing transcript characters and `extra` appended after its last id;
    returns the vocabulary and the characters added. Existing ids never move, so the
    trained rows of the head stay valid."""
    vocab = dict(base)
    added = []
    next_id = max(vocab.values(), default=-1) + 1
    for char in [*characters(texts), *extra]:
        if char == " " or char in vocab:
            continue
        vocab[char] = next_id
        added.append(char)
        next_id += 1
    return vocab, added


def pretrained_vocabulary(tokenizer: Wav2Vec2CTCTokenizer, lang: str) -> dict[str, int] | None:
    """The flat vocabulary of a pretrained tokenizer; for MMS's nested per-language
    vocabulary the one of `lang`, or None when it has no such language."""
    nested = tokenizer.vocab
    if nested and all(isinstance(value, dict) for value in nested.values()):
        return dict(nested[lang]) if lang in nested else None
    return dict(tokenizer.encoder)


def save_tokenizer(vocab: Vocabulary, directory: Path, *, write: bool = True) -> Wav2Vec2CTCTokenizer:
    """Returns the tokenizer for `vocab`; with `write`, also saves its files to `directory`.
    Under DDP every rank builds the same tokenizer but only rank 0 writes: another rank
    reading vocab.json while rank 0 rewrites it would see a half-written file."""
    with tempfile.TemporaryDirectory(prefix="speechtune-vocab-") as scratch:
        vocab_file = Path(scratch) / "vocab.json"  # read once, in the constructor
        vocab_file.write_text(json.dumps(dict(vocab), ensure_ascii=False, indent=1), encoding="utf-8")
        tokenizer = Wav2Vec2CTCTokenizer(
            str(vocab_file), unk_token=UNK, pad_token=PAD, bos_token=BOS, eos_token=EOS,
            word_delimiter_token=WORD_DELIMITER,
        )
    if write:
        directory.mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(str(directory))
    return tokenizer


def load_tokenizer(directory: Path) -> Wav2Vec2CTCTokenizer:
    return Wav2Vec2CTCTokenizer.from_pretrained(str(directory))


def resize_head(model: Wav2Vec2ForCTC, vocab_size: int, *, keep_rows: bool) -> None:
    """Replaces lm_head by one with `vocab_size` rows; with keep_rows the old rows are
    copied over, new rows start like a freshly initialised head."""
    old = model.lm_head
    new = torch.nn.Linear(old.in_features, vocab_size, device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.normal_(mean=0.0, std=model.config.initializer_range)
        new.bias.zero_()
        if keep_rows:
            rows = min(old.out_features, vocab_size)
            new.weight[:rows] = old.weight[:rows]
            new.bias[:rows] = old.bias[:rows]
    model.lm_head = new
    model.config.vocab_size = vocab_size
