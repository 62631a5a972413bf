"""The start-of-run line that tells a user which transport NCCL will use between nodes."""

from __future__ import annotations

from pathlib import Path

from speechtune.runtime import network

TWO_NODES = {"WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8", "PET_NNODES": "2", "GROUP_RANK": "1"}


def test_single_process_says_nothing(tmp_path: Path) -> None:
    assert network.describe({}, tmp_path) is None
    assert network.describe({"WORLD_SIZE": "1"}, tmp_path) is None


def test_rdma_devices_mean_infiniband(tmp_path: Path) -> None:
    for name in ("mlx5_1", "mlx5_0"):
        (tmp_path / name).mkdir()
    line = network.describe({**TWO_NODES, "NCCL_IB_HCA": "mlx5"}, tmp_path)
    assert line == ("network: world size 16 (2 nodes x 8 ranks), node rank 1; "
                    "NCCL transport: InfiniBand/RoCE (RDMA) via mlx5_0, mlx5_1 (NCCL_IB_HCA=mlx5)")


def test_no_rdma_device_is_a_tcp_fallback_said_plainly(tmp_path: Path) -> None:
    line = network.describe({**TWO_NODES, "NCCL_SOCKET_IFNAME": "eth0"}, tmp_path / "missing")
    assert line is not None
    assert "NCCL transport: TCP sockets on eth0: no RDMA device" in line
    assert "spec.pod.extraResources" in line


def test_ib_disabled_wins_over_devices(tmp_path: Path) -> None:
    (tmp_path / "mlx5_0").mkdir()
    line = network.describe({**TWO_NODES, "NCCL_IB_DISABLE": "1"}, tmp_path)
    assert line is not None and line.endswith("NCCL transport: TCP sockets on the default interface (NCCL_IB_DISABLE=1)")


def test_one_node_several_gpus_stays_inside_the_node(tmp_path: Path) -> None:
    line = network.describe({"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "8", "PET_NNODES": "1"}, tmp_path / "none")
    assert line == "network: world size 8 (1 node x 8 ranks), node rank 0; NCCL transport: NVLink/shared memory within the node"
