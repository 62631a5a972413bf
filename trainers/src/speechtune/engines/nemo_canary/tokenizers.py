"""Canary tokenizers: the special-token model plus one SentencePiece model per language.

Either extracted from a pretrained model (`save_tokenizers`, Approach A) or built from the
job's transcripts when training from scratch. Each folder holds `tokenizer.model` and
`vocab.txt` (NeMo refuses a SentencePiece folder without the latter).
"""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

SPECIAL = "spl_tokens"

# The generic Canary-2 special tokens, as NeMo's build_canary_2_special_tokenizer.py lists them.
_CANARY2_GENERIC = [
    "<|endoftext|>", "<|startoftranscript|>", "<|nopnc|>", "<|pnc|>", "<|nospeech|>",
    "<|startofcontext|>", "<|itn|>", "<|noitn|>", "<|timestamp|>", "<|notimestamp|>",
    "<|diarize|>", "<|nodiarize|>", "<|spkchange|>", "<|audioseparator|>",
    "<|emo:undefined|>", "<|emo:neutral|>", "<|emo:happy|>", "<|emo:sad|>", "<|emo:angry|>",
    "<|unklang|>",
]
_CANARY1_GENERIC = [
    "<|endoftext|>", "<|startoftranscript|>", "<|nopnc|>", "<|pnc|>", "<|nospeech|>",
    "<|transcribe|>", "<|translate|>",
]
TIMESTAMP_FRAMES = 900  # frame-number tokens <|0|> .. <|899|> for word timestamps
SPEAKERS = 16


def special_tokens(prompt_format: str, languages: Iterable[str], extra: Sequence[str] = ()) -> list[str]:
    """The special vocabulary for a prompt format. Plain `<|en|>` language tokens are
    included because the prompt formatter emits exactly those; canary2 gets the full set
    (timestamps, speakers) padded to a power of two like NeMo's own builder."""
    langs = [f"<|{lang}|>" for lang in sorted(set(languages))]
    if prompt_format == "canary":
        return list(dict.fromkeys(_CANARY1_GENERIC + langs + list(extra)))
    tokens = (
        _CANARY2_GENERIC
        + langs
        + [f"<|{i}|>" for i in range(TIMESTAMP_FRAMES)]
        + [f"<|spk{i}|>" for i in range(SPEAKERS)]
        + list(extra)
    )
    tokens = list(dict.fromkeys(tokens))
    total = len(tokens) + 3  # sentencepiece adds <pad>, <unk> and the word boundary piece
    padding = 2 ** math.ceil(math.log2(total)) - total
    return tokens + [f"<|spltoken{i}|>" for i in range(padding)]


@contextlib.contextmanager
def _spaceless(out_dir: Path) -> Iterator[Path]:
    """NeMo passes SentencePiece its paths in one space-separated flag string, so a run
    folder with a space in its path is built elsewhere and copied in."""
    if " " not in str(out_dir):
        yield out_dir
        return
    with tempfile.TemporaryDirectory(prefix="speechtune-spm-") as tmp:
        yield Path(tmp)
        shutil.copytree(tmp, out_dir, dirs_exist_ok=True)


def build_special(out_dir: Path, tokens: Sequence[str]) -> Path:
    """Builds (or reuses, on resume) the special-token SentencePiece model in out_dir."""
    from nemo.collections.common.tokenizers.canary_tokenizer import CanaryTokenizer

    # force_rebuild=True would delete tokenizer files in the *current* directory.
    if not (out_dir / "tokenizer.model").exists():
        with _spaceless(out_dir) as build_dir:
            CanaryTokenizer.build_special_tokenizer(list(tokens), build_dir, force_rebuild=False)
    return out_dir


def build_language(out_dir: Path, texts: Sequence[str], vocab_size: int, kind: str = "bpe") -> Path:
    """A per-language SentencePiece model from the transcripts (reused when present).
    `vocab_size` is an upper bound: tiny corpora yield fewer pieces (hard_vocab_limit off)."""
    from nemo.collections.common.tokenizers.sentencepiece_tokenizer import create_spt_model

    if (out_dir / "tokenizer.model").exists():
        return out_dir
    with _spaceless(out_dir) as build_dir:
        build_dir.mkdir(parents=True, exist_ok=True)
        text_file = build_dir / "train_text.txt"
        text_file.write_text("\n".join(t for t in texts if t.strip()) + "\n", encoding="utf-8")
        create_spt_model(
            str(text_file),
            vocab_size=vocab_size,
            sample_size=-1,
            do_lower_case=False,
            tokenizer_type=kind,
            output_dir=str(build_dir),
            character_coverage=1.0,
        )
    return out_dir


def build_from_texts(
    out_dir: Path,
    *,
    texts_by_language: Mapping[str, Sequence[str]],
    prompt_languages: Iterable[str],
    prompt_format: str,
    vocab_size: int,
    kind: str = "bpe",
    extra_special: Sequence[str] = (),
) -> dict[str, Path]:
    """From scratch: special tokens for every language seen in a prompt, and a text
    tokenizer for every language that appears as a target."""
    dirs = {SPECIAL: build_special(out_dir / SPECIAL, special_tokens(prompt_format, prompt_languages, extra_special))}
    for lang in sorted(texts_by_language):
        dirs[lang] = build_language(out_dir / lang, texts_by_language[lang], vocab_size, kind)
    return dirs


def extract(model: object, out_dir: Path) -> dict[str, Path]:
    """Approach A: writes the pretrained model's tokenizers to out_dir/<lang>/ and returns them."""
    from omegaconf import open_dict

    out_dir.mkdir(parents=True, exist_ok=True)
    # A restored model keeps its original `dir` next to the `nemo:` file entries; when that
    # folder still exists locally, save_tokenizers tries to copy it as a file. The packed
    # files are what we want, so the throwaway pretrained model forgets the old folders.
    langs = model.cfg.tokenizer.get("langs") or {}  # type: ignore[attr-defined]
    for lang in langs:
        with open_dict(langs[lang]):
            langs[lang].pop("dir", None)
    model.save_tokenizers(str(out_dir))  # type: ignore[attr-defined]
    return {p.name: p for p in sorted(out_dir.iterdir()) if p.is_dir() and (p / "tokenizer.model").exists()}


def special_vocabulary(special_dir: Path) -> set[str]:
    """The pieces of a special-token model (to check that `<|xx|>` prompt tokens exist)."""
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=str(special_dir / "tokenizer.model"))
    return {processor.id_to_piece(i) for i in range(processor.get_piece_size())}
