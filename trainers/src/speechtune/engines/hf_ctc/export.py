"""The exported artefact: a Hugging Face folder anyone can load with transformers alone.

- adapters: the model folder plus `adapter.<lang>.safetensors` (adapter layers + head),
  loadable with `Wav2Vec2ForCTC.from_pretrained(dir, target_lang=lang,
  ignore_mismatched_sizes=True)` or dropped next to another copy of the base model.
- lora: the peft adapter in `lora/` (`save_embedding_layers=False`; the head is in it as a
  module to save) and the merged model in the folder itself.
- none: the fine-tuned model.
Every variant carries the processor (feature extractor + the grown vocabulary).
"""

from __future__ import annotations

from pathlib import Path

import peft
import safetensors.torch
import torch
from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor

from speechtune.engines.hf_ctc import modelling

LORA_SUBDIR = "lora"


def write(model: torch.nn.Module, processor: Wav2Vec2Processor, directory: Path, *, mode: str, adapter_lang: str) -> Wav2Vec2ForCTC:
    """Writes the artefact for `mode` into `directory`; returns the plain model that was
    saved (for lora the merged one, which decodes exactly like the adapted model)."""
    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(model, peft.PeftModel):
        model.save_pretrained(str(directory / LORA_SUBDIR), save_embedding_layers=False)
        plain = model.merge_and_unload()
    else:
        plain = modelling.unwrap(model)
    assert isinstance(plain, Wav2Vec2ForCTC)
    plain.float()  # frozen weights may sit in half precision during training; export fp32
    if hasattr(plain.config, "target_lang"):
        # mms-1b-all's config.json has this key; kept, transformers 5 would hand the
        # documented from_pretrained(dir, target_lang=...) to the config, not the model.
        del plain.config.target_lang
    plain.save_pretrained(str(directory))
    if mode == "adapters":
        weights = {k: v.detach().cpu().contiguous() for k, v in modelling.adapter_parameters(plain).items()}
        safetensors.torch.save_file(weights, str(directory / modelling.ADAPTER_FILE.format(adapter_lang)))
    processor.save_pretrained(str(directory))
    return plain
