"""CTC decoding: greedy (SpeechBrain's ctc_greedy_decode) or beam (CTCBeamSearcher)."""

from __future__ import annotations

from typing import Sequence

import torch
from speechbrain.decoders import ctc

from speechtune.engines.speechbrain_ctc import tokenizer as tokenizers


class Decoder:
    def __init__(self, tokenizer: tokenizers.Tokenizer, *, beam_size: int) -> None:
        self.tokenizer = tokenizer
        self.beam_size = beam_size
        self._searcher: ctc.CTCBeamSearcher | None = None
        if beam_size > 1:
            vocab = list(tokenizer.vocab)
            is_spm = tokenizer.kind == "spm"
            self._searcher = ctc.CTCBeamSearcher(
                blank_index=0, vocab_list=vocab, beam_size=beam_size,
                space_token=" " if not is_spm or " " in vocab else "▁",
            )

    def __call__(self, log_probs: torch.Tensor, lens: torch.Tensor) -> list[str]:
        """One hypothesis per row of `log_probs` [B, T, V] (relative lengths `lens`)."""
        if self._searcher is None:
            ids: Sequence[list[int]] = ctc.ctc_greedy_decode(log_probs, lens, blank_id=0)
            return [self.tokenizer.decode(row) for row in ids]
        hyps = self._searcher(log_probs.float().cpu(), lens.cpu())
        return [" ".join(h[0].text.split()) if h else "" for h in hyps]
