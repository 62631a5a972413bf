"""Tokenizers for the CTC head: characters or SentencePiece pieces, blank always at id 0."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Protocol, Sequence

BLANK = "<blank>"


class Tokenizer(Protocol):
    kind: str

    @property
    def vocab(self) -> Sequence[str]: ...  # id -> token; vocab[0] is the CTC blank

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def save(self, folder: Path) -> None: ...


class CharTokenizer:
    """One id per character seen in the training text; unknown characters are dropped
    when encoding (the preflight reports them before training)."""

    kind = "char"

    def __init__(self, chars: Sequence[str]) -> None:
        self._vocab = [BLANK, *chars]
        self._ids = {c: i for i, c in enumerate(self._vocab)}

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> "CharTokenizer":
        return cls(sorted({c for text in texts for c in text}))

    @property
    def vocab(self) -> Sequence[str]:
        return self._vocab

    def encode(self, text: str) -> list[int]:
        return [self._ids[c] for c in text if c in self._ids and c != BLANK]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self._vocab[i] for i in ids if i > 0)

    def save(self, folder: Path) -> None:
        (folder / "tokenizer.json").write_text(json.dumps({"kind": "char", "vocab": self._vocab[1:]}))


class SentencePieceTokenizer:
    """A SentencePiece model whose ids are shifted by one, so id 0 stays the CTC blank."""

    kind = "spm"

    def __init__(self, model_file: Path) -> None:
        import sentencepiece  # only the spm tokenizer needs it

        self.model_file = model_file
        self._sp = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
        self._vocab = [BLANK, *(self._sp.id_to_piece(i) for i in range(self._sp.get_piece_size()))]

    @classmethod
    def train(cls, texts: Iterable[str], folder: Path, vocab_size: int) -> "SentencePieceTokenizer":
        import sentencepiece

        folder.mkdir(parents=True, exist_ok=True)
        corpus = folder / "spm_corpus.txt"
        corpus.write_text("\n".join(texts) + "\n")
        # hard_vocab_limit=False: on small corpora vocab_size is an upper bound, not an error.
        sentencepiece.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=str(folder / "spm"), vocab_size=vocab_size,
            model_type="unigram", character_coverage=1.0, hard_vocab_limit=False,
            bos_id=-1, eos_id=-1, unk_id=0,
        )
        return cls(folder / "spm.model")

    @property
    def vocab(self) -> Sequence[str]:
        return self._vocab

    def encode(self, text: str) -> list[int]:
        return [i + 1 for i in self._sp.encode(text)]

    def decode(self, ids: Iterable[int]) -> str:
        return str(self._sp.decode([i - 1 for i in ids if i > 0]))

    def save(self, folder: Path) -> None:
        (folder / "spm.model").write_bytes(self.model_file.read_bytes())
        (folder / "tokenizer.json").write_text(json.dumps({"kind": "spm", "model": "spm.model"}))


def load(folder: Path) -> Tokenizer:
    """Reads what `save` wrote; the file names the kind."""
    path = folder / "tokenizer.json"
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no tokenizer saved in this folder") from None
    if saved.get("kind") == "char":
        return CharTokenizer(saved["vocab"])
    if saved.get("kind") == "spm":
        return SentencePieceTokenizer(folder / saved["model"])
    raise ValueError(f"{path}: unknown tokenizer kind {saved.get('kind')!r}")
