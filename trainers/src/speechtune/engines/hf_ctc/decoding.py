"""Greedy CTC decoding, validation loss and the CER/WER shown during training.

The runtime scores the final test set itself; these numbers feed `reporter.validation`
and checkpoint ranking (CER first: Banglish transliteration varies word spellings, which
inflates WER, as the guide notes).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Callable, Iterable

import torch
from transformers import Wav2Vec2CTCTokenizer

from speechtune.engines.hf_ctc import modelling


@dataclasses.dataclass(frozen=True)
class Decoded:
    index: int  # position in the dataset that was decoded
    text: str


def decode_batch(model: torch.nn.Module, inputs: dict[str, torch.Tensor], tokenizer: Wav2Vec2CTCTokenizer) -> tuple[list[str], float | None]:
    """Best-path transcripts of one padded batch, and its loss when labels are given."""
    output = model(**inputs)
    ids = output.logits.argmax(dim=-1)
    if "attention_mask" in inputs:
        # Frames past an utterance's end see only padding; their argmax is noise.
        samples = typing.cast(torch.LongTensor, inputs["attention_mask"].sum(-1))
        lengths = modelling.unwrap(model)._get_feat_extract_output_lengths(samples).tolist()
    else:
        lengths = [ids.shape[1]] * ids.shape[0]
    texts = tokenizer.batch_decode([row[:n].tolist() for row, n in zip(ids, lengths)])
    loss = float(output.loss) if output.loss is not None else None
    return texts, loss


def run(
    model: torch.nn.Module, batches: Iterable[dict[str, Any]], tokenizer: Wav2Vec2CTCTokenizer, *,
    device: str, autocast: Callable[[], Any],
) -> tuple[list[Decoded], float | None]:
    """Decodes every batch in eval mode; returns the hypotheses and the mean loss."""
    was_training = model.training
    model.eval()
    decoded: list[Decoded] = []
    losses: list[float] = []
    try:
        with torch.no_grad():
            for batch in batches:
                inputs = {k: v.to(device) for k, v in batch["inputs"].items()}
                with autocast():
                    texts, loss = decode_batch(model, inputs, tokenizer)
                decoded += [Decoded(i, t) for i, t in zip(batch["indices"], texts)]
                if loss is not None:
                    losses.append(loss)
    finally:
        model.train(was_training)
    return decoded, (sum(losses) / len(losses) if losses else None)
