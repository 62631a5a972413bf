"""The Conformer-CTC network, built from SpeechBrain's own modules.

waveform -> Fbank (80 mel, 25/10 ms) -> global CMVN -> SpecAugment (training only)
-> 2 conv blocks (stride 2 each) -> Conformer encoder (TransformerASR, no decoder)
-> Linear -> log-softmax over the tokenizer's vocabulary (blank 0)."""

from __future__ import annotations

import torch
from speechbrain.augment import freq_domain
from speechbrain.lobes import features
from speechbrain.lobes.models import convolution
from speechbrain.lobes.models.transformer import TransformerASR
from speechbrain.nnet import adapters
from speechbrain.processing import features as processing

from speechtune.engines.speechbrain_ctc import settings


class ConformerCTC(torch.nn.Module):
    def __init__(self, model: settings.ModelSettings, *, vocab_size: int) -> None:
        super().__init__()
        self.fbank = features.Fbank(n_mels=model.n_mels, sample_rate=16000)
        # Global mean/variance from the first epoch's batches; stored by its own
        # checkpoint hooks (not in state_dict), so the engine saves it separately.
        self.normalize = processing.InputNormalization(norm_type="global", update_until_epoch=1)
        channels = model.frontend_channels
        self.frontend = convolution.ConvolutionFrontEnd(
            input_shape=(None, None, model.n_mels), num_blocks=2, num_layers_per_block=1,
            out_channels=(channels, channels // 2), kernel_sizes=(3, 3), strides=(2, 2),
            residuals=(False, False),
        )
        with torch.no_grad():
            frontend_out = self.frontend(torch.zeros(1, 8, model.n_mels))
        self.encoder = TransformerASR.TransformerASR(
            tgt_vocab=vocab_size, input_size=frontend_out.shape[2] * frontend_out.shape[3],
            d_model=model.d_model, nhead=model.nhead, num_encoder_layers=model.num_layers,
            num_decoder_layers=0, d_ffn=model.d_ffn, dropout=model.dropout,
            activation=torch.nn.GELU, encoder_module="conformer", attention_type="RelPosMHAXL",
            normalize_before=True, kernel_size=model.kernel_size, causal=False,
        )
        self.ctc_head = torch.nn.Linear(model.d_model, vocab_size)
        self.augment: torch.nn.Module = torch.nn.Identity()

    def set_spec_augment(self, train: settings.TrainSettings) -> None:
        """Time and frequency masking (SpecAugment), applied in `features` when training."""
        masks: list[torch.nn.Module] = []
        if train.time_masks:
            masks.append(freq_domain.SpectrogramDrop(
                drop_length_low=1, drop_length_high=train.time_mask_width,
                drop_count_low=1, drop_count_high=train.time_masks, dim=1))
        if train.freq_masks:
            masks.append(freq_domain.SpectrogramDrop(
                drop_length_low=1, drop_length_high=train.freq_mask_width,
                drop_count_low=1, drop_count_high=train.freq_masks, dim=2))
        self.augment = torch.nn.Sequential(*masks)

    def features(self, fbank: torch.Tensor, lens: torch.Tensor, *, epoch: int) -> torch.Tensor:
        """Normalised (and, in training mode, augmented) Fbank features [B, T, n_mels];
        `fbank` comes from `self.fbank`, computed once per utterance by the engine."""
        with torch.autocast(device_type=fbank.device.type, enabled=False):  # CMVN in fp32
            feats = self.normalize(fbank.float(), lens, epoch=epoch)
        if self.training:
            feats = self.augment(feats)
        return feats

    def forward(self, feats: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """Log-probabilities [B, T/4, vocab]; `lens` are relative lengths (0..1]."""
        encoded = self.encoder.encode(self.frontend(feats), lens)
        return torch.log_softmax(self.ctc_head(encoded).float(), dim=-1)


class DropoutLoRA(adapters.LoRA):
    """SpeechBrain's LoRA with dropout on the adapter branch's input (as in peft)."""

    def __init__(self, target_module: torch.nn.Module, rank: int = 16, alpha: float = 1.0,
                 dropout: float = 0.0) -> None:
        super().__init__(target_module, rank=rank, alpha=alpha)
        self.adapter_dropout = torch.nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        adapted = self.adapter_up_proj(self.adapter_down_proj(self.adapter_dropout(x)))
        return self.pretrained_module(x) + adapted * self.scaling


def add_lora(net: ConformerCTC, *, rank: int, alpha: float, dropout: float,
             targets: list[str] | None = None) -> int:
    """Wraps the encoder's Linear layers (all, or those matching `targets` globs) with
    LoRA via speechbrain.nnet.adapters; freezes everything but the adapters and the CTC
    head. Returns the number of trainable parameters."""
    net.encoder = adapters.AdaptedModel(
        model_to_adapt=net.encoder, adapter_class=DropoutLoRA,
        all_linear=not targets, target_layers=targets or [],
        adapter_kwargs={"rank": rank, "alpha": alpha, "dropout": dropout},
    )
    for parameter in net.frontend.parameters():
        parameter.requires_grad = False
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
