"""The process group of a torchrun launch: one process per device, on one node or several.

    torchrun --nproc_per_node=4 -m geomlens train --model micro-70m --head hybrid ...
    torchrun --nproc_per_node=4 -m geomlens analyze --model ... --out runs/a

When ``WORLD_SIZE`` is unset or 1 nothing is initialised and the same code runs in one process.
Training wraps the model in DistributedDataParallel (`wrap_model`): every rank draws batches
from its own seed (``seed + RANK_SEED_STRIDE * rank``), only rank 0 evaluates, logs, writes
metrics and checkpoints, and the token budget counts all ranks. The analysis, ``kv`` and
``ablate`` split their batches over the ranks instead (`geomlens.runner.sharding`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

RANK_SEED_STRIDE = 1_000_003
"""Offset between the data seeds of consecutive ranks."""
TIMEOUT_ENV = "GEOMLENS_RANK_TIMEOUT"
"""Seconds a rank waits for the others in one collective before it gives up (default
`DEFAULT_TIMEOUT_S`): the longest one batch may take on the slowest rank."""
DEFAULT_TIMEOUT_S = 1800.0


def rank_timeout() -> float:
    """The collective timeout in seconds (``$GEOMLENS_RANK_TIMEOUT``, else 30 minutes)."""
    return float(os.environ.get(TIMEOUT_ENV, "") or DEFAULT_TIMEOUT_S)


@dataclass(frozen=True, kw_only=True)
class DistInfo:
    rank: int = 0
    """Global rank of this process."""
    local_rank: int = 0
    """Rank on this machine (selects the GPU)."""
    world_size: int = 1
    """Number of processes."""

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def data_seed(self, seed: int) -> int:
        return seed + RANK_SEED_STRIDE * self.rank


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Initialise the process group if launched by torchrun with WORLD_SIZE > 1.

    Returns the rank info and the device this process should use (``cuda:LOCAL_RANK`` under
    torchrun on CUDA). NCCL on CUDA, gloo on the CPU; collectives time out after
    `rank_timeout` seconds. A multi-node launch (torchrun's rendezvous, e.g. under SLURM) sets
    the same variables, so nothing here differs.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo(), device
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                timeout=timedelta(seconds=rank_timeout()))
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size), device


def wrap_model(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """DistributedDataParallel under DDP, else the model itself."""
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def mean_across_ranks(value: float, info: DistInfo, device: torch.device) -> float:
    """Average a float over ranks (identity in a single process)."""
    if not info.enabled:
        return value
    t = torch.tensor([value], device=device, dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


def gather_objects(obj: object, info: DistInfo) -> list[object]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` in a single process)."""
    if not info.enabled:
        return [obj]
    out: list[object] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
