"""Distributed setup and the one function that applies parallelism (torchtitan's ``parallelize_*``).

Launch: ``torchrun --nproc_per_node N -m pipeline.cli train pretrain ...`` (or ``.venv/bin/torchrun
$(which winnow) ...``).  torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; without them the
run is a single process and nothing here touches ``torch.distributed``.  NCCL on GPUs (one per
local rank), gloo on CPU.

Only data parallelism (DDP) is applied: the models this trainer is for (≤ ~1B parameters) fit
with their AdamW state in one GPU's memory (16 bytes/parameter → 16 GB at 1B), where FSDP's sharding
would only add all-gathers.  Larger models would change this one function.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: the local rank's GPU when CUDA is available, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                "--device cuda: no CUDA device is available (torch.cuda.is_available() is False)"
            )
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {name!r} (auto, cpu or cuda)")


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group torchrun describes (env vars), or describe a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
            dist.init_process_group("nccl", device_id=dev)
        else:
            dist.init_process_group("gloo")
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world, device=dev)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def parallelize(model: nn.Module, info: DistInfo, *, compile: bool = False) -> nn.Module:
    """Apply ``torch.compile`` (optional) then DDP (when there is more than one process).

    Compile first, then wrap (nanoGPT's order): DDP's bucketed all-reduce hooks stay outside the
    compiled graph and overlap with the backward pass as in eager mode.  The returned module is
    what the training step calls; checkpoints save ``train.checkpoint.unwrap_model(...)`` of it.
    """
    if compile:
        model = torch.compile(model)
    if info.distributed:
        ids = [info.device.index] if info.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return model


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum over ranks in place (a no-op for one process)."""
    if info.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_max(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Maximum over ranks in place (a no-op for one process)."""
    if info.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t
