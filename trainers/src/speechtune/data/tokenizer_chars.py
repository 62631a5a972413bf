"""Which characters a tokenizer can produce, for preflight's "characters the tokenizer
cannot produce" check.

Understands a character/token vocabulary file (one token per line, or `token<TAB>score`
as SentencePiece writes `.vocab`), a JSON vocabulary (`{"a": 1, "|": 4}`, as wav2vec2
uses), a SentencePiece `.model`, and a NeMo tokenizer folder (`tokenizer.model` and/or
`vocab.txt`, also one folder per language as the aggregate/Canary tokenizers keep them).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable

# Tokens that stand for something other than their spelling: <unk>, <pad>, <|en|>, [PAD].
_SPECIAL = re.compile(r"^(<.*>|\[.*\])$")
# How vocabularies spell the word boundary: SentencePiece "▁", wav2vec2 "|", "<space>".
_SPACE_TOKENS = {"▁", "|", "<space>", " "}


class TokenizerError(ValueError):
    pass


def producible_chars(path: str | Path) -> frozenset[str] | None:
    """The characters the tokenizer at `path` can produce (a space means word breaks are
    producible); None when it can produce anything (SentencePiece byte fallback)."""
    tokenizer = Path(path)
    if tokenizer.is_dir():
        return _from_folder(tokenizer)
    if not tokenizer.is_file():
        raise TokenizerError(f"{tokenizer}: no such tokenizer file or folder")
    if tokenizer.suffix == ".model":
        return _from_sentencepiece(tokenizer)
    if tokenizer.suffix == ".json":
        return _from_tokens(tokenizer, _json_tokens(tokenizer))
    lines = tokenizer.read_text(encoding="utf-8").splitlines()
    # `piece<TAB>score` (SentencePiece .vocab) or a bare token per line (vocab.txt).
    return _from_tokens(tokenizer, (line.split("\t", 1)[0] if "\t" in line else line for line in lines))


def _from_folder(folder: Path) -> frozenset[str] | None:
    found = sorted(folder.rglob("tokenizer.model")) or sorted(folder.rglob("vocab.txt"))
    if not found:
        raise TokenizerError(f"{folder}: no tokenizer.model or vocab.txt inside")
    chars: set[str] = set()
    for file in found:
        part = _from_sentencepiece(file) if file.suffix == ".model" else producible_chars(file)
        if part is None:
            return None
        chars |= part
    return frozenset(chars)


def _from_sentencepiece(model: Path) -> frozenset[str] | None:
    try:
        import sentencepiece
    except ImportError as error:  # an engine extra; core installs may lack it
        raise TokenizerError(f"{model}: reading a SentencePiece model needs the sentencepiece package") from error
    processor = sentencepiece.SentencePieceProcessor()
    try:
        processor.Load(str(model))
    except (OSError, RuntimeError) as error:
        raise TokenizerError(f"{model}: not a SentencePiece model ({error})") from None
    pieces = []
    for index in range(processor.GetPieceSize()):
        if processor.IsByte(index):
            return None  # byte fallback spells any character
        if not (processor.IsControl(index) or processor.IsUnknown(index) or processor.IsUnused(index)):
            pieces.append(processor.IdToPiece(index))
    return _from_tokens(model, pieces)


def _json_tokens(vocab: Path) -> Iterable[str]:
    try:
        data = json.loads(vocab.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise TokenizerError(f"{vocab}: not valid JSON ({error.msg})") from None
    if isinstance(data, dict) and all(isinstance(v, dict) for v in data.values()):
        # {"en": {...}, "bn": {...}}: a multi-lingual vocabulary (wav2vec2 with adapters).
        return [token for sub in data.values() for token in sub]
    if isinstance(data, (dict, list)):
        return [str(token) for token in data]
    raise TokenizerError(f"{vocab}: want a JSON object or list of tokens")


def _from_tokens(source: Path, tokens: Iterable[str]) -> frozenset[str]:
    chars: set[str] = set()
    for token in tokens:
        if token in _SPACE_TOKENS:
            chars.add(" ")
        elif token and not _SPECIAL.match(token):
            # WordPiece continuations ("##ing") and SentencePiece word starts ("▁the").
            chars |= set(token.removeprefix("##").replace("▁", " "))
    if not chars:
        raise TokenizerError(f"{source}: no tokens found")
    return frozenset(chars)
