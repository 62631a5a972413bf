"""Canary .nemo fixtures, built with NeMo's own `EncDecMultiTaskModel(cfg)` + `save_to`.

Each mirrors one published checkpoint's `model_config.yaml` (NeMo 3.0 sources, the model
cards and tutorial 001 in ../shared/reference) with the sizes scaled down:

- `CANARY_1B_V2` (nvidia/canary-1b-v2): ONE unified SentencePiece model with the Canary
  special tokens inside it (`tokenizer: {type: bpe, dir, custom_tokenizer: {_target_:
  ...CanaryBPETokenizer}}`; `save_tokenizers` writes it straight into the target folder),
  special tokens as user-defined symbols at the head of the vocabulary in NeMo's
  DEFAULT_TOKENS order, `<|xx|>` tokens for the 25 European languages, 128 mel features,
  `canary2` prompt (context, emotion, pnc, itn, timestamp, diarize slots). Published:
  32 FastConformer + 8 Transformer layers, d_model 1024, 16384 pieces.
- `CANARY_180M_FLASH` (nvidia/canary-180m-flash; canary-1b-flash has the same layout):
  aggregate tokenizer (`type: agg`, `langs: {spl_tokens, en, de, es, fr}`,
  `custom_tokenizer: CanaryTokenizer`), canary2 special tokens incl. frame tokens,
  128 mel features, `canary2` prompt. Published: 17 + 4 layers, 1024 pieces per language.
- `CANARY_1B` (nvidia/canary-1b): aggregate tokenizer with the canary-1 special tokens
  (`<|transcribe|>`, `<|translate|>`), `canary` prompt format (task slot), 128 mel
  features. Published: 24 + 24 layers.

Weights are random: these fixtures test loading, tokenizers and config layout; learning
is asserted relative to the fixture's own score before fine-tuning.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

from speechtune.data import sentences

# canary-1b-v2's languages (its model card): 25 European languages.
V2_LANGUAGES = ("bg", "hr", "cs", "da", "nl", "en", "et", "fi", "fr", "de", "el", "hu", "it", "lv", "lt",
                "mt", "pl", "pt", "ro", "sk", "sl", "es", "sv", "ru", "uk")
FLASH_LANGUAGES = ("en", "de", "es", "fr")

# NeMo's canary_tokenizer.DEFAULT_TOKENS, then the canary2 generic tokens
# (scripts/speech_recognition/canary/build_canary_2_special_tokenizer.py).
_DEFAULT = ["<|nospeech|>", "<pad>", "<|endoftext|>", "<|startoftranscript|>", "<|pnc|>", "<|nopnc|>"]
_CANARY2 = ["<|startofcontext|>", "<|itn|>", "<|noitn|>", "<|timestamp|>", "<|notimestamp|>", "<|diarize|>",
            "<|nodiarize|>", "<|spkchange|>", "<|audioseparator|>", "<|emo:undefined|>", "<|emo:neutral|>",
            "<|emo:happy|>", "<|emo:sad|>", "<|emo:angry|>", "<|unklang|>"]
_CANARY1 = ["<|transcribe|>", "<|translate|>"]


@dataclasses.dataclass(frozen=True)
class Published:
    """What a fixture mirrors of one published model."""

    name: str  # the hub name
    tokenizer: str  # "unified" | "aggregate"
    prompt_format: str
    languages: tuple[str, ...]
    text_languages: tuple[str, ...]  # languages the fixture's text tokenizer(s) are trained on


CANARY_1B_V2 = Published("nvidia/canary-1b-v2", "unified", "canary2", V2_LANGUAGES, ("en", "de", "fr", "es"))
CANARY_180M_FLASH = Published("nvidia/canary-180m-flash", "aggregate", "canary2", FLASH_LANGUAGES, FLASH_LANGUAGES)
CANARY_1B = Published("nvidia/canary-1b", "aggregate", "canary", FLASH_LANGUAGES, FLASH_LANGUAGES)


def _texts(language: str, n: int, seed: int) -> list[str]:
    generator = sentences.get("generic")
    rng = random.Random(seed)
    return [generator.render(generator.draw(rng), language).text for _ in range(n)]


def _spm(out_dir: Path, texts: Sequence[str], vocab_size: int, symbols: Sequence[str] = ()) -> Path:
    """A SentencePiece BPE model the way NeMo's process_asr_text_tokenizer.py writes one
    (tokenizer.model, tokenizer.vocab, vocab.txt)."""
    from nemo.collections.common.tokenizers.sentencepiece_tokenizer import create_spt_model

    out_dir.mkdir(parents=True, exist_ok=True)
    text_file = out_dir / "train_text.txt"
    text_file.write_text("\n".join(list(symbols) + list(texts)) + "\n", encoding="utf-8")
    create_spt_model(str(text_file), vocab_size=vocab_size, sample_size=-1, do_lower_case=False,
                     tokenizer_type="bpe", output_dir=str(out_dir), character_coverage=1.0,
                     user_defined_symbols=list(symbols) or None)
    text_file.unlink()
    return out_dir


def _lang_tokens(languages: Sequence[str]) -> list[str]:
    return [f"<|{lang}|>" for lang in languages]


def _tokenizer_section(published: Published, work: Path) -> dict[str, Any]:
    if published.tokenizer == "unified":
        symbols = _DEFAULT + _CANARY2 + _lang_tokens(published.languages)
        texts = [t for lang in published.text_languages for t in _texts(lang, 400, seed=len(lang))]
        folder = _spm(work / "unified", texts, vocab_size=512, symbols=symbols)
        return {"dir": str(folder), "type": "bpe", "custom_tokenizer": {
            "_target_": "nemo.collections.common.tokenizers.canary_tokenizer.CanaryBPETokenizer"}}
    from nemo.collections.common.tokenizers.canary_tokenizer import CanaryTokenizer

    if published.prompt_format == "canary":
        special = _CANARY1 + _lang_tokens(published.languages)
    else:
        frames = [f"<|{i}|>" for i in range(900)]
        special = _CANARY2 + _lang_tokens(published.languages) + frames + [f"<|spk{i}|>" for i in range(16)]
    CanaryTokenizer.build_special_tokenizer(special, work / "spl_tokens", force_rebuild=False)
    langs: dict[str, Any] = {"spl_tokens": {"dir": str(work / "spl_tokens"), "type": "bpe"}}
    for lang in published.text_languages:
        langs[lang] = {"dir": str(_spm(work / lang, _texts(lang, 300, seed=len(lang)), vocab_size=128)), "type": "bpe"}
    return {"dir": None, "type": "agg", "langs": langs, "custom_tokenizer": {
        "_target_": "nemo.collections.common.tokenizers.canary_tokenizer.CanaryTokenizer", "tokenizer": None}}


def _prompt_defaults(prompt_format: str) -> list[dict[str, Any]]:
    if prompt_format == "canary":
        slots: dict[str, Any] = {"source_lang": "en", "target_lang": "en", "task": "asr", "pnc": "yes"}
    else:
        slots = {"decodercontext": "", "emotion": "<|emo:undefined|>", "itn": "no", "timestamp": "no",
                 "diarize": "no", "pnc": "yes", "source_lang": "en", "target_lang": "en"}
    return [{"role": "user", "slots": slots}]


def _dataset(manifest: str, *, train: bool) -> dict[str, Any]:
    """The published configs keep the datasets NVIDIA trained on (cluster paths, 2D
    bucketing tuned for their GPUs): a fine-tuning job must not inherit them."""
    section: dict[str, Any] = {"use_lhotse": True, "manifest_filepath": manifest, "sample_rate": 16000,
                               "prompt_format": None, "num_workers": 4, "shuffle": train,
                               "batch_size": None, "batch_duration": 360 if train else None}
    if train:
        section.update(use_bucketing=True, bucket_duration_bins=[[3.79, 27], [8.78, 60], [40.0, 272]],
                       bucket_batch_size=[334, 142, 26], max_duration=40.0, min_duration=0.1)
    else:
        section.update(batch_size=16, use_bucketing=False)
    return section


def model_config(published: Published, tokenizer: dict[str, Any]) -> dict[str, Any]:
    """The published `model_config.yaml` shape (NeMo fast-conformer_aed keys), scaled down."""
    d_model, dec_hidden = 96, 96
    return {
        "sample_rate": 16000,
        "label_smoothing": 0.0,
        "context_len_for_AR_decoding": 5,
        "log_prediction": True,
        "prompt_format": published.prompt_format,
        "prompt_defaults": _prompt_defaults(published.prompt_format),
        "use_loss_mask_for_prompt": published.prompt_format == "canary2",
        # canary-1b-v2 packs a CTC model for word timestamps into its .nemo (restored when
        # this is true); the fixture leaves it out and says so.
        "restore_timestamps_model": False,
        "model_defaults": {"asr_enc_hidden": d_model, "lm_enc_hidden": dec_hidden, "lm_dec_hidden": dec_hidden},
        "train_ds": _dataset("/data/nvidia/asr_set_3.0/train_manifest.json", train=True),
        "validation_ds": _dataset("/data/nvidia/asr_set_3.0/valid_manifest.json", train=False),
        "test_ds": _dataset("/data/nvidia/asr_set_3.0/test_manifest.json", train=False),
        "tokenizer": tokenizer,
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "sample_rate": 16000, "normalize": "per_feature", "window_size": 0.025, "window_stride": 0.01,
            "window": "hann", "features": 128, "n_fft": 512, "log": True, "frame_splicing": 1,
            "dither": 1e-05, "pad_to": 0, "pad_value": 0.0,
        },
        "spec_augment": {"_target_": "nemo.collections.asr.modules.SpectrogramAugmentation",
                         "freq_masks": 2, "time_masks": 2, "freq_width": 27, "time_width": 0.05},
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConformerEncoder", "feat_in": 128, "feat_out": -1,
            "n_layers": 2, "d_model": d_model, "subsampling": "dw_striding", "subsampling_factor": 8,
            "subsampling_conv_channels": 64, "causal_downsampling": False, "ff_expansion_factor": 4,
            "self_attention_model": "rel_pos", "n_heads": 4, "att_context_size": [-1, -1], "xscaling": True,
            "untie_biases": True, "pos_emb_max_len": 5000, "conv_kernel_size": 9,
            "conv_norm_type": "batch_norm", "conv_context_size": None, "dropout": 0.1,
            "dropout_pre_encoder": 0.1, "dropout_emb": 0.0, "dropout_att": 0.1,
        },
        "transf_encoder": {
            "_target_": "nemo.collections.asr.modules.transformer.transformer_encoders.TransformerEncoder",
            "num_layers": 0, "hidden_size": dec_hidden, "inner_size": 4 * dec_hidden, "num_attention_heads": 4,
            "ffn_dropout": 0.1, "attn_score_dropout": 0.1, "attn_layer_dropout": 0.1, "mask_future": False,
            "pre_ln": True, "pre_ln_final_layer_norm": True,
        },
        "transf_decoder": {
            "_target_": "nemo.collections.asr.modules.transformer.get_nemo_transformer",
            "model_name": None, "pretrained": False, "encoder": None, "pre_ln_final_layer_norm": True,
            "config_dict": {
                "max_sequence_length": 512, "num_token_types": 0, "embedding_dropout": 0.1,
                "learn_positional_encodings": False, "hidden_size": dec_hidden, "inner_size": 4 * dec_hidden,
                "num_layers": 2, "num_attention_heads": 4, "ffn_dropout": 0.1, "attn_score_dropout": 0.1,
                "attn_layer_dropout": 0.1, "hidden_act": "relu", "pre_ln": True, "vocab_size": None,
            },
        },
        "head": {
            "_target_": "nemo.collections.asr.parts.submodules.token_classifier.TokenClassifier",
            "num_layers": 1, "activation": "relu", "log_softmax": True, "hidden_size": dec_hidden,
            "num_classes": None, "dropout": 0.0, "use_transformer_init": True,
        },
        "decoding": {"strategy": "beam", "return_best_hypothesis": True,
                     "beam": {"beam_size": 1, "len_pen": 0.0, "max_generation_delta": 20}},
        "loss": {"_target_": "nemo.collections.common.losses.smoothed_cross_entropy.SmoothedCrossEntropyLoss",
                 "label_smoothing": 0.0, "pad_id": None},
        "optim": {"name": "adamw", "lr": 3e-4, "betas": [0.9, 0.98], "weight_decay": 1e-3,
                  "sched": {"name": "InverseSquareRootAnnealing", "warmup_steps": 2500, "warmup_ratio": None,
                            "min_lr": 1e-6}},
    }


def build(published: Published, out_file: Path) -> Path:
    """Writes `out_file` (.nemo) mirroring `published`; returns it."""
    from nemo.collections.asr.models import EncDecMultiTaskModel
    from omegaconf import OmegaConf

    out_file.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="canary-fixture-") as tmp:
        cfg = model_config(published, _tokenizer_section(published, Path(tmp)))
        # The published configs carry their datasets; constructing must not load them.
        setup = {key: cfg.pop(key) for key in ("train_ds", "validation_ds", "test_ds")}
        model = EncDecMultiTaskModel(cfg=OmegaConf.create(cfg))
        with_data = OmegaConf.create({**OmegaConf.to_container(model.cfg), **setup})
        model._cfg = with_data  # saved in model_config.yaml as the published files have them
        model.save_to(str(out_file))
        del model
    return out_file


def cached(published: Published, cache_dir: Path) -> Path:
    """`build` once per cache folder (the test session's)."""
    target = cache_dir / (published.name.split("/")[-1] + ".nemo")
    if not target.is_file():
        partial = build(published, cache_dir / "partial" / target.name)
        shutil.move(str(partial), target)
    return target


def place_in_hub_cache(nemo_file: Path, hf_home: Path, repo_id: str, revision: str = "0" * 40) -> Path:
    """Lays `nemo_file` out as huggingface_hub caches a download of `repo_id` (what NeMo's
    from_pretrained looks up first: hub/models--org--name/snapshots/<rev>/<name>.nemo), so
    a hub name resolves offline as it does on a cluster whose model volume was pre-filled."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    target = snapshot / (repo_id.split("/")[-1] + ".nemo")
    shutil.copyfile(nemo_file, target)
    return target
