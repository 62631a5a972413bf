"""Will an hf-ctc job fit on its GPU? A memory estimate shown by `speechtune validate`.

Counts what the hf-ctc engine actually allocates: fp32 trainable weights, AdamW's two
fp32 moments and fp32 gradients for them; frozen weights in half precision for LoRA and
adapters under fp16/bf16 (the guide's `torch_dtype=float16`), in fp32 otherwise, plus the
half-precision copies autocast keeps for backward; activations of the transformer layers
(Korthikanti et al. 2022, ~34 bytes per token and hidden unit per layer in 16-bit, with
SDPA attention storing no score matrix) and of the convolutional feature encoder when it
trains; and a fixed allowance for the CUDA context and allocator slack.

For the guide's model (facebook/mms-1b-all, ~965 M parameters, batch 2 x 10 s) that gives
about 19 GiB for full fine-tuning in fp16 (the guide: 14-16 GB, "no" on a 12 GB card; we
also count autocast's half copies) and about 5 GiB for LoRA or adapters (the guide: 6-8 GB
and 4-6 GB, both fit an 8 GB card). Pure arithmetic: no torch import,
so validation stays fast in the operator's world too.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from speechtune.spec import typed

GIB = 2**30
DEFAULT_GPU_MEMORY_GIB = 16  # a T4/V100-16GB class card, the smallest common cloud GPU
ASSUMED_UTTERANCE_SECONDS = 10.0  # longest utterance a batch is sized for (MMS phrases)
FRAMES_PER_SECOND = 50  # wav2vec2's 20 ms frames
SAMPLE_RATE = 16_000
CUDA_OVERHEAD_GIB = 1.0  # CUDA context, cuDNN/cuBLAS workspaces, allocator fragmentation
ACTIVATION_FACTOR = 34  # bytes per (token x hidden unit) per layer at 16-bit (Korthikanti)
EXTRA_VOCABULARY = 36  # digits and Latin letters the engine adds to the head
LORA_DEFAULT_TARGETS = ("q_proj", "v_proj")


@dataclasses.dataclass(frozen=True)
class Architecture:
    """The wav2vec2 shape numbers that decide its size."""

    hidden: int
    layers: int
    intermediate: int
    conv_dim: tuple[int, ...] = (512,) * 7
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_bias: bool = False  # Wav2Vec2Config's default; the large/MMS configs set it true
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    adapter_dim: int | None = None
    vocab: int = 32
    masked_embedding: bool = True  # SpecAugment's learned mask vector (when masking is on)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "Architecture":
        """From a Hugging Face config.json, with wav2vec2's defaults."""
        base = cls(hidden=768, layers=12, intermediate=3072)
        return cls(
            hidden=int(config.get("hidden_size", base.hidden)),
            layers=int(config.get("num_hidden_layers", base.layers)),
            intermediate=int(config.get("intermediate_size", base.intermediate)),
            conv_dim=tuple(config.get("conv_dim", base.conv_dim)),
            conv_kernel=tuple(config.get("conv_kernel", base.conv_kernel)),
            conv_stride=tuple(config.get("conv_stride", base.conv_stride)),
            conv_bias=bool(config.get("conv_bias", base.conv_bias)),
            pos_conv_kernel=int(config.get("num_conv_pos_embeddings", base.pos_conv_kernel)),
            pos_conv_groups=int(config.get("num_conv_pos_embedding_groups", base.pos_conv_groups)),
            adapter_dim=config.get("adapter_attn_dim"),
            vocab=int(config.get("vocab_size") or base.vocab),
            masked_embedding=config.get("mask_time_prob", 0.05) > 0 or config.get("mask_feature_prob", 0.0) > 0,
        )


_MMS_1B = Architecture(hidden=1280, layers=48, intermediate=5120, adapter_dim=16, vocab=154, conv_bias=True)
_LARGE = Architecture(hidden=1024, layers=24, intermediate=4096, conv_bias=True)
# Hub models whose config.json we cannot read offline at validation time.
KNOWN_MODELS: Mapping[str, Architecture] = {
    "facebook/mms-1b-all": _MMS_1B,
    "facebook/mms-1b-fl102": _MMS_1B,
    "facebook/mms-1b-l1107": _MMS_1B,
    "facebook/mms-1b": dataclasses.replace(_MMS_1B, adapter_dim=None),
    "facebook/mms-300m": _LARGE,
    "facebook/wav2vec2-xls-r-300m": _LARGE,
    "facebook/wav2vec2-xls-r-1b": dataclasses.replace(_MMS_1B, adapter_dim=None),
    "facebook/wav2vec2-xls-r-2b": Architecture(hidden=1920, layers=48, intermediate=7680),
    "facebook/wav2vec2-large-xlsr-53": _LARGE,
    "facebook/wav2vec2-base": Architecture(hidden=768, layers=12, intermediate=3072),
    "facebook/wav2vec2-large": _LARGE,
}


@dataclasses.dataclass(frozen=True)
class Estimate:
    total_parameters: int
    trainable_parameters: int
    weights: float  # bytes
    gradients: float
    optimizer: float
    activations: float
    overhead: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + self.overhead

    def breakdown(self) -> str:
        parts = ("weights", "gradients", "optimizer", "activations", "overhead")
        return ", ".join(f"{name} {readable(getattr(self, name))}" for name in parts)


def readable(size: float) -> str:
    """GiB with one decimal, or MiB below one GiB (tiny CPU models)."""
    return f"{size / GIB:.1f} GiB" if size >= GIB else f"{size / 2**20:.1f} MiB"


# --- parameter counts ---------------------------------------------------------------


def feature_encoder_parameters(arch: Architecture) -> int:
    channels = (1, *arch.conv_dim)
    convs = sum(k * cin * cout for k, cin, cout in zip(arch.conv_kernel, channels, channels[1:]))
    biases = sum(arch.conv_dim) if arch.conv_bias else 0
    return convs + biases + 2 * sum(arch.conv_dim)  # + a layer norm per convolution (MMS's "layer" mode)


def adapter_parameters(arch: Architecture) -> int:
    """MMS attention adapters: per layer a layer norm and a down/up projection."""
    if arch.adapter_dim is None:
        return 0
    h, a = arch.hidden, arch.adapter_dim
    return arch.layers * (2 * h + (h * a + a) + (a * h + h))


def head_parameters(arch: Architecture, vocab: int) -> int:
    return arch.hidden * vocab + vocab


def total_parameters(arch: Architecture, vocab: int) -> int:
    h, f = arch.hidden, arch.intermediate
    projection = 2 * arch.conv_dim[-1] + arch.conv_dim[-1] * h + h
    # A weight-normed grouped convolution: direction (v), one magnitude per tap (g), bias.
    positional = h * (h // arch.pos_conv_groups) * arch.pos_conv_kernel + arch.pos_conv_kernel + h
    layer = 4 * (h * h + h) + (h * f + f) + (f * h + h) + 4 * h
    return (
        feature_encoder_parameters(arch) + projection + positional + arch.layers * layer + 2 * h
        + adapter_parameters(arch) + head_parameters(arch, vocab) + (h if arch.masked_embedding else 0)
    )


def lora_parameters(arch: Architecture, r: int, targets: Sequence[str]) -> int:
    """A LoRA pair (r x in + out x r) on every matching linear layer of every layer."""
    h, f = arch.hidden, arch.intermediate
    shapes = {"q_proj": (h, h), "k_proj": (h, h), "v_proj": (h, h), "out_proj": (h, h),
              "intermediate_dense": (h, f), "output_dense": (f, h)}
    per_layer = sum(r * (shapes[t][0] + shapes[t][1]) for t in targets if t in shapes)
    return arch.layers * per_layer


# --- the estimate -------------------------------------------------------------------


def estimate(
    arch: Architecture, *, mode: str, precision: str, utterances: float, seconds: float,
    lora_r: int = 16, lora_targets: Sequence[str] = LORA_DEFAULT_TARGETS,
    freeze_feature_encoder: bool = True, gradient_checkpointing: bool = False, on_gpu: bool = True,
) -> Estimate:
    """Peak training memory of one process for a batch of `utterances` x `seconds`."""
    vocab = arch.vocab + EXTRA_VOCABULARY
    total = total_parameters(arch, vocab)
    head = head_parameters(arch, vocab)
    if mode == "adapters":
        trainable = adapter_parameters(arch) + head
    elif mode == "lora":
        trainable = lora_parameters(arch, lora_r, lora_targets) + head
        total += trainable - head  # LoRA adds its matrices; the head is copied (modules_to_save)
    else:
        trainable = total - (feature_encoder_parameters(arch) if freeze_feature_encoder else 0)
    mixed = precision in ("fp16", "bf16") and on_gpu
    frozen = total - trainable
    # Frozen weights sit in half precision for the PEFT modes; autocast keeps half copies
    # of the fp32 weights it multiplies for the backward pass.
    frozen_bytes = 2 if mixed and mode != "none" else 4
    autocast_copies = 2 * total if mixed and mode == "none" else 0
    weights = frozen * frozen_bytes + trainable * 4 + autocast_copies
    act_bytes = 1 if mixed else 2  # ACTIVATION_FACTOR is for 16-bit activations
    tokens = utterances * seconds * FRAMES_PER_SECOND
    per_layer = ACTIVATION_FACTOR * tokens * arch.hidden * act_bytes
    if gradient_checkpointing:  # keep each layer's input, recompute one layer at a time
        layers = arch.layers * 2 * tokens * arch.hidden * act_bytes + per_layer
    else:
        layers = arch.layers * per_layer
    encoder = 0.0 if mode != "none" or freeze_feature_encoder else _feature_encoder_activations(arch, utterances * seconds, act_bytes)
    return Estimate(
        total_parameters=total, trainable_parameters=trainable, weights=weights,
        gradients=trainable * 4.0, optimizer=trainable * 8.0,
        activations=layers + encoder, overhead=CUDA_OVERHEAD_GIB * GIB if on_gpu else 0.0,
    )


def _feature_encoder_activations(arch: Architecture, audio_seconds: float, act_bytes: int) -> float:
    """Each convolution keeps its output, normalised output and GELU output (2 bytes each at 16-bit)."""
    samples, total = audio_seconds * SAMPLE_RATE, 0.0
    for dim, stride in zip(arch.conv_dim, arch.conv_stride):
        samples /= stride
        total += 3 * samples * dim * 2 * act_bytes
    return total


# --- the spec check -----------------------------------------------------------------


def check_spec(spec: typed.FinetuneSpec) -> list[str]:
    """Readable memory lines for `speechtune validate`; ValueError naming
    spec.resources.gpuMemoryGiB (or .memory on a CPU job) when the job cannot fit."""
    training, resources = spec.training, spec.resources
    overrides = training.overrides or {}
    peft = training.peft
    arch, name = _architecture(spec)
    if arch is None:
        return [f"memory: no estimate for {name} (unknown architecture and no readable config.json)"]
    mode = peft.method
    precision = training.precision
    on_gpu = resources.gpus_per_node > 0
    utterances, seconds = _batch_shape(training)
    result = estimate(
        arch, mode=mode, precision=precision, utterances=utterances, seconds=seconds,
        lora_r=peft.r, lora_targets=peft.target_modules or LORA_DEFAULT_TARGETS,
        freeze_feature_encoder=bool(overrides.get("freezeFeatureEncoder", True)),
        gradient_checkpointing=bool(overrides.get("gradientCheckpointing", False)), on_gpu=on_gpu,
    )
    if on_gpu:
        field = "spec.resources.gpuMemoryGiB"
        given = resources.gpu_memory_gib
        capacity = float(given or DEFAULT_GPU_MEMORY_GIB)
        where = f"{capacity:g} GiB GPU" + ("" if given else f" (assumed; set {field})")
    else:
        field = "spec.resources.memory"
        capacity = _quantity_gib(resources.memory)
        where = f"{capacity:g} GiB of pod memory (CPU training)"
    lines = [
        f"memory: {name}: {result.total_parameters / 1e6:,.1f} M parameters, "
        f"{result.trainable_parameters / 1e6:,.2f} M trainable ({mode}, {precision})",
        f"memory: batch {utterances:g} x {seconds:g} s: {result.breakdown()} = "
        f"{readable(result.total)} of {where}",
    ]
    if result.total > capacity * GIB:
        hints = ["spec.training.peft.method lora or adapters" if mode == "none" else "a smaller spec.training.batchSize"]
        if not overrides.get("gradientCheckpointing"):
            hints.append("spec.training.overrides.gradientCheckpointing: true")
        raise ValueError(
            f"{field}: {mode} fine-tuning of {name} needs about {result.total / GIB:.1f} GiB "
            f"({result.breakdown()}) but has {capacity:g} GiB; use {' or '.join(hints)}"
        )
    return lines


def _architecture(spec: typed.FinetuneSpec) -> tuple[Architecture | None, str]:
    pretrained, path = (spec.model.pretrained, spec.model.path) if spec.model else (None, None)
    name = pretrained or path or "a model from scratch"
    if pretrained and pretrained in KNOWN_MODELS:
        return KNOWN_MODELS[pretrained], name
    config_file = Path(path or pretrained or "") / "config.json"
    # Only an absolute path names a folder here: a relative one lives on the model volume,
    # which `validate` (or an admission webhook) has not mounted; its cwd is not that volume.
    if path and Path(path).is_absolute() and config_file.is_file():
        try:
            return Architecture.from_config(json.loads(config_file.read_text(encoding="utf-8"))), name
        except (OSError, ValueError, TypeError, AttributeError):  # unreadable: the engine says why
            return None, name
    return None, name


def _batch_shape(training: typed.Training) -> tuple[float, float]:
    """(utterances, seconds each) of the largest batch the engine may form."""
    batch_size = training.batch_size or 8
    duration = training.batch_duration
    if duration:  # the engine caps padded seconds per batch (and utterances at batchSize)
        seconds = min(float(duration), ASSUMED_UTTERANCE_SECONDS)
        return min(float(batch_size), max(1.0, float(duration) / seconds)), seconds
    return float(batch_size), ASSUMED_UTTERANCE_SECONDS


_QUANTITY = re.compile(r"^([0-9.]+)([KMGTPE]i?|[numk])?$")
_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
          "K": 1e3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18, "m": 1e-3}


def _quantity_gib(value: Any) -> float:
    """A Kubernetes memory quantity ("24Gi", "16G", 17179869184) in GiB."""
    match = _QUANTITY.match(str(value))
    if not match:
        raise ValueError(f"spec.resources.memory: cannot read {value!r} as a memory quantity")
    number, unit = float(match.group(1)), match.group(2)
    return number * _UNITS.get(unit or "", 1) / GIB
