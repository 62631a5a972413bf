"""What a multi-node run's collectives will travel over, said once per node at start.

NCCL picks InfiniBand/RoCE (its IB transport, RDMA) when the pod sees an RDMA device under
/sys/class/infiniband and NCCL_IB_DISABLE is not set, else TCP sockets. A pod without the
RDMA resource or IPC_LOCK silently falls back to TCP and all-reduces several times slower,
so the first lines of every node's log say which one to expect (NCCL_DEBUG=INFO makes NCCL
confirm it: "NET/IB : Using ..." or "NET/Socket : Using ..."). Read from the environment
torchrun and the Kubeflow controllers set; no torch needed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

RDMA_DEVICES = Path("/sys/class/infiniband")


def rdma_devices(root: Path = RDMA_DEVICES) -> list[str]:
    try:
        return sorted(entry.name for entry in root.iterdir())
    except OSError:  # no such folder: no RDMA driver visible in this pod
        return []


def _int(environ: Mapping[str, str], *names: str, default: int) -> int:
    for name in names:
        value = environ.get(name, "")
        if value.isdigit():
            return int(value)
    return default


def describe(environ: Mapping[str, str] = os.environ, root: Path = RDMA_DEVICES) -> str | None:
    """One line for a run of more than one process, None for a single process."""
    world = _int(environ, "WORLD_SIZE", default=1)
    if world <= 1:
        return None
    per_node = _int(environ, "LOCAL_WORLD_SIZE", "PET_NPROC_PER_NODE", default=world)
    nodes = _int(environ, "PET_NNODES", default=max(world // max(per_node, 1), 1))
    node_rank = _int(environ, "GROUP_RANK", "PET_NODE_RANK", default=0)
    layout = f"world size {world} ({nodes} node{'s' if nodes != 1 else ''} x {per_node} ranks), node rank {node_rank}"
    interface = environ.get("NCCL_SOCKET_IFNAME") or "the default interface"
    devices = rdma_devices(root)
    if environ.get("NCCL_IB_DISABLE") == "1":
        transport = f"TCP sockets on {interface} (NCCL_IB_DISABLE=1)"
    elif devices:
        hca = f" (NCCL_IB_HCA={environ['NCCL_IB_HCA']})" if environ.get("NCCL_IB_HCA") else ""
        transport = f"InfiniBand/RoCE (RDMA) via {', '.join(devices)}{hca}"
    else:
        transport = (f"TCP sockets on {interface}: no RDMA device in {root} (ask for it with "
                     "spec.pod.extraResources and addCapabilities IPC_LOCK)")
    if nodes == 1 and not devices:
        transport = "NVLink/shared memory within the node"
    return f"network: {layout}; NCCL transport: {transport}"
