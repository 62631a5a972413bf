"""What Lightning Fabric costs per optimizer step against our plain loop, on the same
network (speechbrain-ctc's Conformer-CTC at the benchmark size), the same batches and the
same step (forward, CTC loss, backward, clip, AdamW). Rounds alternate so machine load
hits both sides alike; the table shows each round and the median ratio. Issue 16 moves
the engines onto Fabric only if it costs at most 3 %."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

ROUNDS = 5
STEPS = 12  # timed steps per round (after 2 warm-up steps)
BATCH, FRAMES, VOCAB, TOKENS = 8, 400, 40, 30  # 8 utterances of 4 s


def network() -> torch.nn.Module:
    from speechtune.engines.speechbrain_ctc import model, settings

    torch.manual_seed(0)
    tiny = settings.ModelSettings(num_layers=2, d_model=64, nhead=2, d_ffn=256, kernel_size=15,
                                  frontend_channels=16, n_mels=40, dropout=0.0)
    return model.ConformerCTC(tiny, vocab_size=VOCAB)


def batches() -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(BATCH, FRAMES, 40, generator=generator), torch.ones(BATCH),
             torch.randint(1, VOCAB, (BATCH, TOKENS), generator=generator), torch.full((BATCH,), 1.0))
            for _ in range(4)]


def ctc(log_probs: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    frames = torch.full((log_probs.shape[0],), log_probs.shape[1], dtype=torch.long)
    lengths = torch.full((tokens.shape[0],), tokens.shape[1], dtype=torch.long)
    return torch.nn.functional.ctc_loss(log_probs.transpose(0, 1), tokens, frames, lengths, zero_infinity=True)


def plain_round() -> float:
    net = network()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    return _timed(lambda feats, lens, tokens: _plain_step(net, optimizer, feats, lens, tokens))


def _plain_step(net: torch.nn.Module, optimizer: torch.optim.Optimizer, feats: torch.Tensor, lens: torch.Tensor,
                tokens: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss = ctc(net(feats, lens), tokens)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
    optimizer.step()


def fabric_round() -> float:
    import lightning

    fabric = lightning.Fabric(accelerator="cpu", devices=1, precision="32-true")
    net = network()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net, optimizer = fabric.setup(net, optimizer)

    def step(feats: torch.Tensor, lens: torch.Tensor, tokens: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = ctc(net(feats, lens), tokens)
        fabric.backward(loss)
        fabric.clip_gradients(net, optimizer, max_norm=5.0)
        optimizer.step()

    return _timed(step)


def _timed(step: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]) -> float:
    data = batches()
    for feats, lens, tokens, _ in data[:2]:
        step(feats, lens, tokens)
    began = time.perf_counter()
    for index in range(STEPS):
        feats, lens, tokens, _ = data[index % len(data)]
        step(feats, lens, tokens)
    return STEPS / (time.perf_counter() - began)


def main() -> None:
    torch.set_num_threads(1)
    rows = []
    for round_ in range(ROUNDS):
        if round_ % 2 == 0:  # alternate which side runs first
            plain = plain_round()
            fabric = fabric_round()
        else:
            fabric = fabric_round()
            plain = plain_round()
        rows.append((plain, fabric))
        print(f"round {round_ + 1}: plain {plain:.3f} steps/s, fabric {fabric:.3f} steps/s, "
              f"ratio {fabric / plain:.3f}", flush=True)
    ratio = statistics.median(f / p for p, f in rows)
    print(f"| loop | steps/s (median) | ratio |\n|---|---|---|\n"
          f"| plain PyTorch | {statistics.median(p for p, _ in rows):.3f} | 1.000 |\n"
          f"| Lightning Fabric | {statistics.median(f for _, f in rows):.3f} | {ratio:.3f} |")


if __name__ == "__main__":
    main()
