"""One process per GPU: when a job asks for gpusPerNode > 1 and this process was not
started by torchrun, start the same command again under torchrun (PyTorchJob's PET_*
variables give the node count, rank and rendezvous; locally it is one node)."""

from __future__ import annotations

import os
import sys
from typing import Mapping, Sequence

from speechtune.runtime import rundir


def torchrun_command(argv: Sequence[str], *, gpus_per_node: int, environ: Mapping[str, str]) -> list[str]:
    nodes = environ.get("PET_NNODES", "1")
    command = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}",
               f"--nproc_per_node={gpus_per_node}"]
    if nodes != "1":
        command += [f"--node_rank={environ.get('PET_NODE_RANK', '0')}",
                    f"--master_addr={environ.get('MASTER_ADDR', 'localhost')}",
                    f"--master_port={environ.get('MASTER_PORT', '23456')}"]
    else:
        command.append("--standalone")
    return [*command, "-m", "speechtune.cli", *argv]


def needs_torchrun(gpus_per_node: int, environ: Mapping[str, str] = os.environ) -> bool:
    return gpus_per_node > 1 and "LOCAL_RANK" not in environ


def check_gpus(gpus_per_node: int) -> None:
    """gpusPerNode > 1 starts one process per GPU: without that many CUDA devices it would
    start CPU processes that all train the same thing (or fail on cuda:N), so refuse."""
    import torch  # only asked for jobs that want several GPUs

    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if found < gpus_per_node:
        raise ValueError(
            f"spec.resources.gpusPerNode: {gpus_per_node} GPUs per node, but this machine has {found} CUDA "
            "device(s); set gpusPerNode: 0 (or 1) to train in one process on the CPU")


def exec_torchrun(argv: Sequence[str], *, gpus_per_node: int) -> None:
    """Replaces this process; every rank gets the same run id (one run folder)."""
    environ = dict(os.environ)
    environ.setdefault(rundir.RUN_ID_ENV, rundir.run_id(environ))
    command = torchrun_command(argv, gpus_per_node=gpus_per_node, environ=environ)
    os.execve(command[0], command, environ)
