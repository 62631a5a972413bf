"""Selective initialisation from the starting model (`spec.model.init`), done here rather
than by NeMo's `init_from_nemo_model`, for two reasons:

- `include`/`exclude` mean *prefixes* of parameter names everywhere in SpeechTune (the CRD);
  NeMo matches substrings (`encoder` also hits `transf_encoder...`);
- when the tokenizer grew (new special tokens, a new language), the decoder's token
  embedding and output layer grow with it: the rows of tokens the starting model knew are
  kept, matched by token (not by id, which moves when a tokenizer in front grows), and only
  the new rows keep their fresh initialisation.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

# Parameters with one row per vocabulary entry (NeMo's TransformerDecoderNM embedding and
# the TokenClassifier head of EncDecMultiTaskModel).
VOCABULARY_ROWS = (
    "transf_decoder._embedding.token_embedding.weight",
    "log_softmax.mlp.layer0.weight",
    "log_softmax.mlp.layer0.bias",
)


@dataclasses.dataclass(frozen=True)
class InitReport:
    loaded: int  # parameters copied whole
    grown: Mapping[str, tuple[int, int]]  # parameter -> (rows kept, rows in total)
    skipped: int  # left out by include/exclude
    absent: Sequence[str]  # not in the starting model (kept fresh)

    def summary(self) -> str:
        parts = [f"{self.loaded} tensors loaded"]
        parts += [f"{name}: {kept}/{total} rows kept" for name, (kept, total) in self.grown.items()]
        if self.skipped:
            parts.append(f"{self.skipped} left out by spec.model.init")
        if self.absent:
            parts.append(f"{len(self.absent)} not in the starting model")
        return "; ".join(parts)


def selected(name: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """Prefix rules: an empty include means everything; exclude wins."""
    if include and not any(name.startswith(prefix) for prefix in include):
        return False
    return not any(name.startswith(prefix) for prefix in exclude)


def vocabulary_keys(tokenizer: Any) -> list[str]:
    """One key per token id that names the token itself: `lang/piece` for an aggregate
    tokenizer (the same piece means different things in two languages), the piece for a
    unified one."""
    sub_tokenizers = getattr(tokenizer, "tokenizers_dict", None)
    if sub_tokenizers is not None:
        return [f"{lang}/{piece}" for lang, sub in sub_tokenizers.items() for piece in sub.vocab]
    return [str(piece) for piece in tokenizer.vocab]


def row_map(new_keys: Sequence[str], old_keys: Sequence[str]) -> list[int | None]:
    """For every new token id, the old id of the same token (None: a new token)."""
    old_index = {key: index for index, key in enumerate(old_keys)}
    return [old_index.get(key) for key in new_keys]


def load_into(
    model: Any,
    source_state: Mapping[str, Any],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    rows: Sequence[int | None] | None = None,
) -> InitReport:
    """Copies the selected tensors of `source_state` into `model`; a vocabulary-shaped
    tensor whose row count differs is copied row by row through `rows`. Any other shape
    difference is refused, naming the parameter (exclude it to start it fresh)."""
    import torch

    state = model.state_dict()
    loaded, skipped, absent, grown = 0, 0, [], {}
    with torch.no_grad():
        for name, target in state.items():
            if not selected(name, include, exclude):
                skipped += 1
                continue
            source = source_state.get(name)
            if source is None:
                absent.append(name)
                continue
            if tuple(source.shape) == tuple(target.shape) and (rows is None or name not in VOCABULARY_ROWS):
                target.copy_(source)
                loaded += 1
            elif name in VOCABULARY_ROWS and rows is not None and source.shape[1:] == target.shape[1:]:
                kept = [(new, old) for new, old in enumerate(rows) if old is not None and old < source.shape[0]]
                if kept:
                    new_ids, old_ids = zip(*kept)
                    target[list(new_ids)] = source[list(old_ids)]
                grown[name] = (len(kept), int(target.shape[0]))
            else:
                raise ValueError(
                    f"spec.model.init: parameter {name} has shape {tuple(source.shape)} in the starting model but "
                    f"{tuple(target.shape)} here; add it to spec.model.init.exclude to start it fresh")
    return InitReport(loaded=loaded, grown=grown, skipped=skipped, absent=absent)
