"""A pretrained MMS fixture with facebook/mms-1b-all's layout, built with transformers' own
`Wav2Vec2ForCTC(config)`, `save_pretrained` and `Wav2Vec2Processor`.

What it mirrors of facebook/mms-1b-all (its config.json, tokenizer files and repository
listing; the MMS paper, arXiv 2305.13516, for how it was trained):

- config.json: `Wav2Vec2ForCTC`, pre-norm transformer (`do_stable_layer_norm: true`,
  `feat_extract_norm: layer`), `adapter_attn_dim: 16` (an attention adapter in every
  layer, as published), `target_lang: eng`, gelu, `layer_norm_eps: 1e-5`,
  `ctc_loss_reduction: mean`, pad/bos/eos ids 0/1/2, the published dropouts (0.05),
  `layerdrop: 0.05`, `mask_time_prob: 0.05`, `vocab_size` = the English head's rows.
  Scaled: hidden 1280 -> 128, 48 layers -> 4, 16 heads -> 4, FFN 5120 -> 256, positional
  convolution 128 taps / 16 groups -> 32 / 4. The feature encoder is two convolutions
  (a learnable 25 ms / 10 ms filterbank, then stride 2) instead of the published seven
  (kernel 10,3,3,3,3,2,2, stride 5,2,2,2,2,2,2): the same 20 ms frames (320 samples), but
  a stack that leaves CTC's all-blank plateau in a few hundred CPU steps.
- model.safetensors: the base weights with the *English* adapter and head in place (what
  `from_pretrained` without `target_lang` gives).
- adapter.<lang>.safetensors, one per language (eng, deu, fra here; 1162 published):
  every layer's adapter + the language's lm_head, under the names `load_adapter` reads.
- vocab.json nested by ISO 639-3 code ({"eng": {...}, "deu": {...}, ...}), each with
  `<pad>` (the CTC blank) 0, `<s>` 1, `</s>` 2, `<unk>` 3, `|` (word delimiter) 4, then
  the language's lower-case characters; tokenizer_config.json with `target_lang: eng` and
  the special tokens (transformers 5 writes no separate special_tokens_map.json),
  preprocessor_config.json (16 kHz, `do_normalize`, `return_attention_mask`).
- Trained like MMS, in miniature: the whole model on several languages at once (one
  joint character head), then per language an adapter + head with the base frozen. Here
  on espeak-ng speech (speechtune.data.synth, generic domain) of en, de and fr; es and
  bn (Banglish) are never seen, so they serve as the *new* languages of the tests.

`cached()` builds it once per machine (tests/pretrained/cache.py: keyed by this file's
code, the synthesiser's and the library versions). `python tests/pretrained/mms.py DIR`
copies the model folder into DIR (`make tiny-mms-base`).
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

PUBLISHED = "facebook/mms-1b-all"
# ISO 639-3 (MMS's adapter and vocabulary keys) -> the synthesiser's language code.
LANGUAGES: Mapping[str, str] = {"eng": "en", "deu": "de", "fra": "fr"}
DEFAULT_LANG = "eng"  # mms-1b-all's model.safetensors holds the English adapter and head
SPECIALS = ("<pad>", "<s>", "</s>", "<unk>", "|")

CONFIG: Mapping[str, Any] = {
    "hidden_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 256,
    "conv_dim": [128, 128],
    "conv_stride": [160, 2],
    "conv_kernel": [400, 2],
    "conv_bias": True,
    "feat_extract_norm": "layer",
    "feat_extract_activation": "gelu",
    "do_stable_layer_norm": True,
    "num_conv_pos_embeddings": 32,
    "num_conv_pos_embedding_groups": 4,
    "adapter_attn_dim": 16,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "hidden_dropout": 0.05,
    "attention_dropout": 0.05,
    "activation_dropout": 0.05,
    "feat_proj_dropout": 0.05,
    "final_dropout": 0.05,
    "layerdrop": 0.05,
    "mask_time_prob": 0.05,
    "mask_time_length": 10,
    "ctc_loss_reduction": "mean",
    "ctc_zero_infinity": True,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How the fixture is trained: sizes chosen to fit a few CPU minutes."""

    utterances_per_language: int = 160  # 80% train, 10% valid, 10% test (sentence-disjoint)
    joint_steps: int = 600  # every weight, all languages, one joint head
    joint_lr: float = 3e-3
    adapter_steps: int = 100  # per language: adapter + head, base frozen
    adapter_lr: float = 3e-3
    batch_size: int = 8
    seed: int = 20


RECIPE = Recipe()


@dataclasses.dataclass(frozen=True)
class Fixture:
    model: Path  # the mms-1b-all-shaped folder
    data: Path  # data/<lang>/{train,valid,test}.json: what it was trained on, and held-out test rows
    facts: Mapping[str, Any]  # build.json: parameters, steps, seconds, held-out CER per language


# --- the layout: pure writers over a model and its vocabularies ---------------------------


def character_vocab(texts: Sequence[str]) -> dict[str, int]:
    """MMS's per-language vocabulary: the specials, then the characters (space -> `|`)."""
    vocab = {token: index for index, token in enumerate(SPECIALS)}
    for char in sorted({c for text in texts for c in text if c != " "}):
        vocab.setdefault(char, len(vocab))
    return vocab


def write_layout(folder: Path, model: Any, vocabs: Mapping[str, Mapping[str, int]],
                 adapters: Mapping[str, Mapping[str, Any]]) -> None:
    """Writes `model` (holding DEFAULT_LANG's adapter and head) with mms-1b-all's files:
    config.json (+ target_lang), model.safetensors, adapter.<lang>.safetensors per
    language, nested vocab.json and the processor files."""
    import safetensors.torch
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor

    folder.mkdir(parents=True, exist_ok=True)
    model.config.target_lang = DEFAULT_LANG
    model.config.vocab_size = len(vocabs[DEFAULT_LANG])
    model.save_pretrained(str(folder))
    for lang, weights in adapters.items():
        tensors = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
        safetensors.torch.save_file(tensors, str(folder / f"adapter.{lang}.safetensors"))
    vocab_file = folder / "vocab.json"
    vocab_file.write_text(json.dumps({lang: dict(v) for lang, v in vocabs.items()}, ensure_ascii=False), encoding="utf-8")
    tokenizer = Wav2Vec2CTCTokenizer(str(vocab_file), target_lang=DEFAULT_LANG, unk_token="<unk>", pad_token="<pad>",
                                     bos_token="<s>", eos_token="</s>", word_delimiter_token="|")
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16_000, padding_value=0.0, do_normalize=True,
                                         return_attention_mask=True)
    # Each on its own, as the published repository has them (preprocessor_config.json,
    # tokenizer_config.json), not transformers 5's combined processor_config.json.
    extractor.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))


def adapter_weights(model: Any) -> dict[str, Any]:
    """Every layer's adapter + lm_head, under the names `load_adapter` expects (transformers
    exposes that naming only through `_get_adapters`)."""
    return {name: parameter.detach().clone() for name, parameter in model._get_adapters().items()}


def random_layout(folder: Path, *, seed: int = 0) -> Path:
    """The layout with random weights and a different random adapter per language (loading
    tests: which language's weights arrived is then visible)."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    vocabs = {lang: character_vocab(["abcdefghij"[: 4 + i] + "äé"[: i]]) for i, lang in enumerate(LANGUAGES)}
    adapters = {}
    for i, lang in enumerate(LANGUAGES):
        torch.manual_seed(seed + i)
        adapters[lang] = adapter_weights(Wav2Vec2ForCTC(Wav2Vec2Config(**CONFIG, vocab_size=len(vocabs[lang]))))
    torch.manual_seed(seed)
    model = Wav2Vec2ForCTC(Wav2Vec2Config(**CONFIG, vocab_size=len(vocabs[DEFAULT_LANG])))
    model.load_state_dict(adapters[DEFAULT_LANG], strict=False)
    write_layout(folder, model, vocabs, adapters)
    return folder


# --- training: a plain loop (a few dozen lines; transformers.Trainer would add output ------
# --- folders, logging and accelerate state for nothing here) -------------------------------


@dataclasses.dataclass(frozen=True)
class Row:
    audio: Path
    text: str  # normalised (lower case, no punctuation)


def read_rows(manifest_path: Path) -> list[Row]:
    from speechtune.data import manifest, normalize

    lower = normalize.get("lower")
    return [Row(u.audio_filepath, lower(u.text)) for u in manifest.read(manifest_path)]


def _batch(rows: Sequence[Row], vocab: Mapping[str, int], extractor: Any) -> dict[str, Any]:
    import soundfile
    import torch

    audio = [soundfile.read(str(r.audio), dtype="float32")[0] for r in rows]
    features = extractor(audio, sampling_rate=16_000, padding=True, return_tensors="pt", return_attention_mask=True)
    ids = [[vocab["|" if c == " " else c] for c in r.text] for r in rows]
    labels = torch.full((len(ids), max(len(i) for i in ids)), -100, dtype=torch.long)
    for n, row_ids in enumerate(ids):
        labels[n, : len(row_ids)] = torch.tensor(row_ids)
    return {"input_values": features["input_values"], "attention_mask": features["attention_mask"], "labels": labels}


def train(model: Any, rows: Sequence[Row], vocab: Mapping[str, int], *, steps: int, lr: float, batch_size: int,
          seed: int, log: Callable[[str], None]) -> None:
    """AdamW, linear warm-up over a tenth of the steps then linear decay, gradient clip 1."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor, get_linear_schedule_with_warmup

    extractor = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=lr)
    schedule = get_linear_schedule_with_warmup(optimizer, max(1, steps // 10), steps)
    rng = random.Random(seed)
    order: list[int] = []
    started = time.monotonic()
    model.train()
    for step in range(1, steps + 1):
        if len(order) < batch_size:
            order = list(range(len(rows)))
            rng.shuffle(order)
        chosen, order = order[:batch_size], order[batch_size:]
        loss = model(**_batch([rows[i] for i in chosen], vocab, extractor)).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step in (5, steps):
            log(f"step {step}/{steps} loss {loss.item():.3f} ({(time.monotonic() - started) / step:.2f} s/step)")
    model.eval()


def cer(model: Any, rows: Sequence[Row], vocab: Mapping[str, int]) -> float:
    """Greedy CTC decoding, jiwer CER (the runtime's scorer)."""
    import jiwer
    import torch
    from transformers import Wav2Vec2FeatureExtractor

    extractor = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    tokens = {index: ("|" if token == "|" else token) for token, index in vocab.items()}
    hypotheses = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(rows), 16):
            batch = _batch(rows[start : start + 16], vocab, extractor)
            for best in model(batch["input_values"], attention_mask=batch["attention_mask"]).logits.argmax(-1):
                collapsed = torch.unique_consecutive(best).tolist()
                text = "".join(tokens[i] for i in collapsed if i >= len(SPECIALS) - 1)
                hypotheses.append(" ".join(text.replace("|", " ").split()))
    return float(jiwer.cer([r.text for r in rows], hypotheses))


# --- the build -------------------------------------------------------------------------------


def build(out: Path, recipe: Recipe = RECIPE, log: Callable[[str], None] = print) -> Fixture:
    """Synthesises the pretraining speech, trains the joint model, then one adapter per
    language, and writes model/ (the layout), data/ and build.json into `out`."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    from speechtune.data import synth

    started = time.monotonic()
    torch.manual_seed(recipe.seed)
    rows: dict[str, dict[str, list[Row]]] = {}
    for n, (lang, code) in enumerate(LANGUAGES.items()):
        paths = synth.synthesize(out / "data" / lang, n=recipe.utterances_per_language, languages=[code],
                                 domain="generic", seed=recipe.seed + n)
        rows[lang] = {split: read_rows(path) for split, path in paths.items()}
    synth_seconds = time.monotonic() - started
    vocabs = {lang: character_vocab([r.text for r in split["train"]]) for lang, split in rows.items()}
    joint = character_vocab([r.text for split in rows.values() for r in split["train"]])

    model = Wav2Vec2ForCTC(Wav2Vec2Config(**CONFIG, vocab_size=len(joint)))
    everything = [r for split in rows.values() for r in split["train"]]
    log(f"mms fixture: joint training on {len(everything)} utterances ({', '.join(LANGUAGES)})")
    train(model, everything, joint, steps=recipe.joint_steps, lr=recipe.joint_lr, batch_size=recipe.batch_size,
          seed=recipe.seed, log=log)
    joint_state = {k: v.clone() for k, v in model.state_dict().items()}

    adapters: dict[str, dict[str, Any]] = {}
    scores: dict[str, dict[str, float]] = {}
    for lang, vocab in vocabs.items():
        _restore(model, joint_state, joint)
        _head_for(model, joint, vocab)
        model.requires_grad_(False)
        for parameter in model._get_adapters().values():
            parameter.requires_grad_(True)
        joint_cer = cer(model, rows[lang]["test"], vocab)
        log(f"mms fixture: adapter {lang}")
        train(model, rows[lang]["train"], vocab, steps=recipe.adapter_steps, lr=recipe.adapter_lr,
              batch_size=recipe.batch_size, seed=recipe.seed, log=log)
        scores[lang] = {"joint_head_test_cer": joint_cer, "adapter_test_cer": cer(model, rows[lang]["test"], vocab)}
        adapters[lang] = adapter_weights(model)

    _restore(model, joint_state, joint)
    _head_for(model, joint, vocabs[DEFAULT_LANG])
    model.load_state_dict(adapters[DEFAULT_LANG], strict=False)
    model.requires_grad_(True)
    write_layout(out / "model", model, vocabs, adapters)
    facts = {
        "published": PUBLISHED, "parameters": sum(p.numel() for p in model.parameters()),
        "adapter_parameters": sum(v.numel() for k, v in adapters[DEFAULT_LANG].items() if not k.startswith("lm_head")),
        "languages": list(LANGUAGES), "recipe": dataclasses.asdict(recipe), "test_cer": scores,
        "synth_seconds": round(synth_seconds, 1), "build_seconds": round(time.monotonic() - started, 1),
    }
    (out / "build.json").write_text(json.dumps(facts, indent=1), encoding="utf-8")
    log(f"mms fixture: {json.dumps(facts)}")
    return Fixture(out / "model", out / "data", facts)


def _restore(model: Any, state: Mapping[str, Any], joint: Mapping[str, int]) -> None:
    """Back to the jointly trained weights (and the joint head's size)."""
    import torch

    model.lm_head = torch.nn.Linear(model.lm_head.in_features, len(joint))
    model.config.vocab_size = len(joint)
    model.load_state_dict(state)


def _head_for(model: Any, joint: Mapping[str, int], vocab: Mapping[str, int]) -> None:
    """A language's head: the joint head's rows of that language's characters."""
    import torch

    rows = torch.tensor([joint[token] for token in vocab])
    old = model.lm_head
    head = torch.nn.Linear(old.in_features, len(vocab))
    with torch.no_grad():
        head.weight.copy_(old.weight[rows])
        head.bias.copy_(old.bias[rows])
    model.lm_head = head
    model.config.vocab_size = len(vocab)


def cached(recipe: Recipe = RECIPE, log: Callable[[str], None] = print) -> Fixture:
    """The fixture, built at most once per machine (see cache.py)."""
    from speechtune.data import sentences, synth

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import cache  # tests/pretrained/cache.py, also when this file runs as a script

    folder = cache.cached(
        "mms-1b-all", sources=[Path(__file__), Path(synth.__file__), Path(sentences.__file__)],
        extra=repr(recipe), build=lambda out: build(out, recipe, log),
    )
    facts = json.loads((folder / "build.json").read_text(encoding="utf-8"))
    return Fixture(folder / "model", folder / "data", facts)


def main(argv: Sequence[str]) -> int:
    """`python tests/pretrained/mms.py DIR`: the (cached) fixture's model folder, copied to DIR."""
    if len(argv) != 1:
        print("usage: python tests/pretrained/mms.py DIR", file=sys.stderr)
        return 2
    fixture = cached()
    destination = Path(argv[0])
    if destination.exists():
        shutil.rmtree(destination)
    shutil.copytree(fixture.model, destination)
    print(f"{destination}: {PUBLISHED}-shaped MMS ({fixture.facts['parameters']:,} parameters, adapters "
          f"{', '.join(fixture.facts['languages'])}), built in {fixture.facts['build_seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
