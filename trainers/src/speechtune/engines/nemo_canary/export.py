"""`speechtune export`: a chosen NeMo `.ckpt` -> `.nemo`, or the top-k checkpoints of a run
averaged into one `.nemo` (checkpoint averaging, as the Canary guide suggests).

    speechtune export RUN/checkpoints/canary--val_loss=0.41-step=800.ckpt -o step800.nemo
    speechtune export RUN/checkpoints --average-top-k 3 -o averaged.nemo

Checkpoints are ranked by the monitored metric that exp_manager writes into their file
names (`val_loss=0.4123`); `-last` copies are skipped so one step is not counted twice.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence


def metric_in_name(path: Path, monitor: str) -> float | None:
    match = re.search(rf"{re.escape(monitor)}=(-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)", path.name)
    return float(match.group(1)) if match else None


def rank_checkpoints(paths: Sequence[Path], *, monitor: str = "val_loss", mode: str = "min") -> list[Path]:
    """Best first; `-last.ckpt` duplicates and files without the metric are left out."""
    scored = [(metric_in_name(p, monitor), p) for p in paths if not p.stem.endswith("-last")]
    ranked = sorted(((s, p) for s, p in scored if s is not None), key=lambda sp: sp[0], reverse=(mode == "max"))
    return [p for _, p in ranked]


def average_state_dicts(state_dicts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Element-wise mean of floating-point tensors; integer buffers (e.g. batch-norm step
    counters) are taken from the first checkpoint, since their mean means nothing."""
    import torch

    if not state_dicts:
        raise ValueError("no checkpoints to average")
    keys = list(state_dicts[0])
    for index, other in enumerate(state_dicts[1:], start=2):
        if list(other) != keys:
            raise ValueError(f"checkpoint {index} has different parameters than checkpoint 1")
    averaged: dict[str, Any] = {}
    for key in keys:
        first = state_dicts[0][key]
        if isinstance(first, torch.Tensor) and first.is_floating_point():
            stacked = torch.stack([sd[key].to(torch.float64) for sd in state_dicts])
            averaged[key] = stacked.mean(dim=0).to(first.dtype)
        else:
            averaged[key] = first
    return averaged


def checkpoint_safe_globals() -> list[Any]:
    """What a NeMo Lightning .ckpt pickles besides tensors and builtins: its hyper_parameters
    are OmegaConf containers. Allowing exactly these keeps `weights_only=True` (no pickled
    code runs, whatever the file holds) while the config still loads."""
    import collections
    import typing

    from omegaconf import DictConfig, ListConfig, base, nodes

    return [DictConfig, ListConfig, base.ContainerMetadata, base.Metadata, nodes.AnyNode, typing.Any,
            collections.defaultdict, dict, list, int]  # the containers name the builtins as globals


def load_lightning_checkpoint(ckpt: Path) -> Any:
    """A .ckpt's contents with weights_only=True (tensors, containers, OmegaConf configs)."""
    import torch

    with torch.serialization.safe_globals(checkpoint_safe_globals()):
        return torch.load(str(ckpt), map_location="cpu", weights_only=True)


def load_checkpoint_model(ckpt: Path) -> Any:
    """The model a Lightning checkpoint holds (its NeMo config is stored inside)."""
    import torch
    from nemo.collections.asr.models import EncDecMultiTaskModel

    with torch.serialization.safe_globals(checkpoint_safe_globals()):
        return EncDecMultiTaskModel.load_from_checkpoint(str(ckpt), map_location="cpu", strict=True,
                                                         weights_only=True)


def ckpt_to_nemo(ckpt: Path, output: Path) -> Path:
    model = load_checkpoint_model(ckpt)
    output.parent.mkdir(parents=True, exist_ok=True)
    model.save_to(str(output))
    return output


def average_to_nemo(ckpts: Sequence[Path], output: Path) -> Path:
    if not ckpts:
        raise ValueError("no checkpoints to average")
    model = load_checkpoint_model(ckpts[0])
    states = [load_lightning_checkpoint(p)["state_dict"] for p in ckpts]
    model.load_state_dict(average_state_dicts(states), strict=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    model.save_to(str(output))
    return output


def checkpoints_in(path: Path) -> list[Path]:
    """A run folder (…/<run-id>) or its checkpoints/ folder."""
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    return sorted(folder.glob("*.ckpt"))


def run(args: argparse.Namespace) -> int:
    source = Path(args.source)
    if source.is_file():
        if args.average_top_k:
            raise ValueError("--average-top-k needs a checkpoint folder, not one .ckpt")
        written = ckpt_to_nemo(source, Path(args.output))
        print(f"{source} -> {written}")
        return 0
    if not source.is_dir():
        raise ValueError(f"{source}: no such checkpoint or folder")
    ranked = rank_checkpoints(checkpoints_in(source), monitor=args.monitor, mode=args.mode)
    if not ranked:
        raise ValueError(f"{source}: no .ckpt with {args.monitor}=... in its name")
    if args.average_top_k:
        chosen = ranked[: args.average_top_k]
        written = average_to_nemo(chosen, Path(args.output))
        print(f"averaged {len(chosen)} checkpoints ({', '.join(p.name for p in chosen)}) -> {written}")
    else:
        written = ckpt_to_nemo(ranked[0], Path(args.output))
        print(f"best {ranked[0]} -> {written}")
    return 0


def main(args: argparse.Namespace) -> int:
    try:
        return run(args)
    except ValueError as error:
        print(f"speechtune export: {error}", file=sys.stderr)
        return 2


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "export",
        help="NeMo .ckpt -> .nemo, or average the top-k checkpoints of a run into one .nemo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", help="a .ckpt file, a run folder, or its checkpoints/ folder")
    parser.add_argument("-o", "--output", required=True, help="the .nemo file to write")
    parser.add_argument("-k", "--average-top-k", type=int, default=0,
                        help="average the K best checkpoints of the folder (0: convert the best one)")
    parser.add_argument("--monitor", default="val_loss", help="metric in the checkpoint names to rank by")
    parser.add_argument("--mode", choices=["min", "max"], default="min")
    parser.set_defaults(func=main)
