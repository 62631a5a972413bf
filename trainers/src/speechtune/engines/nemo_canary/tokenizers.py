"""Canary tokenizers, in the two kinds the published checkpoints use.

- aggregate (canary-1b, canary-1b-flash, canary-180m-flash, and every model trained from
  scratch here): a special-token SentencePiece model (`spl_tokens`) plus one per language,
  config `{type: agg, langs: {...}, custom_tokenizer: CanaryTokenizer}`;
- unified (canary-1b-v2): ONE SentencePiece model with the special tokens inside it,
  config `{type: bpe, dir, custom_tokenizer: CanaryBPETokenizer}`.

Either extracted from a pretrained model (`save_tokenizers`, Approach A) or built from the
job's transcripts when training from scratch (aggregate only). Each folder holds
`tokenizer.model` and `vocab.txt` (NeMo refuses a SentencePiece folder without the latter).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

SPECIAL = "spl_tokens"
UNIFIED_CLASS = "nemo.collections.common.tokenizers.canary_tokenizer.CanaryBPETokenizer"


@dataclasses.dataclass(frozen=True)
class ModelTokenizer:
    """Where a Canary's tokenizer files are, and which kind it is."""

    langs: Mapping[str, Path]  # aggregate: spl_tokens + one folder per language; unified: empty
    unified: Path | None = None  # the one folder of a unified tokenizer
    custom_tokenizer: str = UNIFIED_CLASS  # unified: the wrapper class named by the model's config

    @property
    def special_dir(self) -> Path:
        """The SentencePiece model that holds the prompt tokens."""
        if self.unified is not None:
            return self.unified
        if SPECIAL not in self.langs:
            raise ValueError(f"the model's aggregate tokenizer has no {SPECIAL} (languages: {', '.join(self.langs)})")
        return self.langs[SPECIAL]

    @property
    def text_languages(self) -> list[str] | None:
        """Languages with their own text tokenizer; None: the unified model writes all."""
        return None if self.unified is not None else [lang for lang in self.langs if lang != SPECIAL]

    def text_model(self, language: str | None) -> Path | None:
        """The SentencePiece model a transcript in `language` is tokenized with."""
        if self.unified is not None:
            return self.unified / "tokenizer.model"
        folder = self.langs.get(language or "")
        return folder / "tokenizer.model" if folder is not None and language != SPECIAL else None

    def describe(self) -> str:
        if self.unified is not None:
            return f"unified ({self.custom_tokenizer.rsplit('.', 1)[-1]})"
        return "aggregate: " + ", ".join(self.langs)

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


def extract(model: object, out_dir: Path) -> ModelTokenizer:
    """Approach A: writes the pretrained model's tokenizer files below out_dir, as
    `save_tokenizers` lays them out: out_dir/<lang>/ for an aggregate tokenizer, straight
    into out_dir for a unified one (canary-1b-v2)."""
    from omegaconf import open_dict

    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer_cfg = model.cfg.tokenizer  # type: ignore[attr-defined]
    kind = str(tokenizer_cfg.get("type") or "").lower()
    # A restored model keeps its original `dir` next to the `nemo:` file entries; when that
    # folder still exists locally, save_tokenizers tries to copy it as a file. The packed
    # files are what we want, so the throwaway pretrained model forgets the old folders.
    langs = tokenizer_cfg.get("langs") or {}
    sections = [langs[lang] for lang in langs] if kind == "agg" else [tokenizer_cfg]
    for section in sections:
        with open_dict(section):
            section.pop("dir", None)
    model.save_tokenizers(str(out_dir))  # type: ignore[attr-defined]
    if kind != "agg":
        if kind != "bpe" or not (out_dir / "tokenizer.model").is_file():
            raise ValueError(f"model tokenizer type {kind!r}: a Canary needs a SentencePiece (bpe) or aggregate tokenizer")
        custom = (tokenizer_cfg.get("custom_tokenizer") or {}).get("_target_") or UNIFIED_CLASS
        return ModelTokenizer(langs={}, unified=out_dir, custom_tokenizer=str(custom))
    return ModelTokenizer(
        langs={p.name: p for p in sorted(out_dir.iterdir()) if p.is_dir() and (p / "tokenizer.model").exists()}
    )


def special_vocabulary(special_dir: Path) -> set[str]:
    """The pieces of the model holding the prompt tokens (to check that `<|xx|>` exist)."""
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=str(special_dir / "tokenizer.model"))
    return {processor.id_to_piece(i) for i in range(processor.get_piece_size())}


def ordered_pieces(model_file: Path) -> list[str]:
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
    return [processor.id_to_piece(i) for i in range(processor.get_piece_size())]


def append_symbols(folder: Path, tokens: Sequence[str], out_dir: Path) -> Path:
    """A copy of a unified SentencePiece model with `tokens` appended as user-defined
    pieces: every trained piece keeps its id, the new ones come last (reused on resume)."""
    from sentencepiece import sentencepiece_model_pb2

    if (out_dir / "tokenizer.model").exists():
        return out_dir
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString((folder / "tokenizer.model").read_bytes())
    for token in tokens:
        piece = proto.pieces.add()
        piece.piece, piece.score, piece.type = token, 0.0, sentencepiece_model_pb2.ModelProto.SentencePiece.USER_DEFINED
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.txt", "tokenizer.vocab"):  # NeMo registers both next to the model
        old = (folder / name).read_text(encoding="utf-8") if (folder / name).exists() else ""
        lines = [f"{token}\t0" if name == "tokenizer.vocab" else token for token in tokens]
        (out_dir / name).write_text(old + "".join(line + "\n" for line in lines), encoding="utf-8")
    partial = out_dir / "tokenizer.model.partial"
    partial.write_bytes(proto.SerializeToString())
    partial.replace(out_dir / "tokenizer.model")
    return out_dir


def grow(
    tokenizer: ModelTokenizer,
    out_dir: Path,
    *,
    new_tokens: Sequence[str],
    new_languages: Mapping[str, Sequence[str]],
    vocab_size: int,
    kind: str = "bpe",
) -> ModelTokenizer:
    """Tutorial 001's tokenizer changes on a pretrained model. Special tokens the model
    lacks (`new_tokens`, and `<|xx|>` of each new language) are added: an aggregate's
    `spl_tokens` is rebuilt with its old tokens first, a unified model gets them appended.
    A new language (`new_languages`: language -> training transcripts) gets its own
    SentencePiece model, appended after the aggregate's languages; a unified model's text
    pieces cannot be retrained without invalidating every trained embedding row, so there
    the new language is written with the pieces the model already has."""
    known = special_vocabulary(tokenizer.special_dir)
    wanted = list(new_tokens) + [f"<|{lang}|>" for lang in new_languages]
    missing = [token for token in dict.fromkeys(wanted) if token not in known]
    if tokenizer.unified is not None:
        if not missing:
            return tokenizer
        grown = append_symbols(tokenizer.unified, missing, out_dir)
        return dataclasses.replace(tokenizer, unified=grown)
    langs = dict(tokenizer.langs)
    if missing:
        # NeMo's builder puts its DEFAULT_TOKENS (<pad> among them) first by itself.
        old = [p for p in ordered_pieces(tokenizer.special_dir / "tokenizer.model") if p.startswith("<|") and p.endswith("|>")]
        langs[SPECIAL] = build_special(out_dir / SPECIAL, old + missing)
    for lang in sorted(new_languages):
        if lang not in langs:
            langs[lang] = build_language(out_dir / lang, new_languages[lang], vocab_size, kind)
    return dataclasses.replace(tokenizer, langs=langs)
