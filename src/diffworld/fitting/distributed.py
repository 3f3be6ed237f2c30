"""Data-parallel training of an engine with PyTorch's DistributedDataParallel, launched by ``torchrun``
(docs/engine.md, "Multi-GPU").

``torchrun --nproc-per-node N -m diffworld engine train ...`` starts N processes with ``RANK``, ``LOCAL_RANK``
and ``WORLD_SIZE`` in their environment (several nodes: ``--nnodes`` and a rendezvous endpoint). Each process
builds the same models (same seed), DDP averages the gradients over the processes in every backward pass, so
an update on N batches of B / N segments is the update of one process on the global batch of B. The backend
is ``nccl`` on CUDA devices and ``gloo`` on the CPU. Process 0 alone writes the run folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from diffworld.errors import UserError


@dataclass(frozen=True)
class Processes:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run folder and prints progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_processes() -> Processes:
    """The processes ``torchrun`` launched this one among (from its environment), one process without it."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Processes()
    return Processes(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))


def process_device(device: str, processes: Processes) -> torch.device:
    """The device of this process: ``cuda:<local rank>`` for ``auto`` (with CUDA) and ``cuda`` under
    ``torchrun``; the CPU, or ``device`` as given, otherwise."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and processes.distributed:
        return torch.device("cuda", processes.local_rank)
    return torch.device(device)


def start(processes: Processes, device: torch.device) -> None:
    """Join the process group (a no-op for one process); the environment gives the rendezvous."""
    if not processes.distributed or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo", rank=processes.rank, world_size=processes.world_size
    )


def stop(processes: Processes, *, failed: bool = False) -> None:
    """Leave the process group, if this process joined one. Unless this process ``failed``, first wait for
    every process to come to leave it: a gloo process torn down while a peer still talks to it can abort
    ("terminate called without an active exception", seen in CI when process 0 was still writing its
    checkpoint). A failed process leaves at once: its peers may never come (torchrun stops them)."""
    if processes.distributed and dist.is_initialized():
        if not failed:
            dist.barrier()
        dist.destroy_process_group()


def wrap(model: nn.Module, processes: Processes, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel over the processes (itself for one process)."""
    if not processes.distributed:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def per_process_batch_size(
    batch_size: int, processes: Processes, key: str, *, per_process: bool = False
) -> int:
    """This process's share of a global batch of ``batch_size`` segments (``key`` names it in the error), or
    ``batch_size`` itself where it is each process's (``per_process``, the official code's semantics)."""
    if per_process:
        return batch_size
    if batch_size % processes.world_size != 0:
        raise UserError(
            f"{key}={batch_size} does not split over {processes.world_size} processes: make it a multiple of "
            f"{processes.world_size}."
        )
    return batch_size // processes.world_size


def mean_over_processes(metrics: dict[str, float], processes: Processes) -> dict[str, float]:
    """Each metric averaged over the processes (the global batch's metrics); the same dict for one."""
    if not processes.distributed:
        return metrics
    keys = sorted(metrics)
    values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(values)
    return {k: float(v) / processes.world_size for k, v in zip(keys, values.tolist(), strict=True)}


def gather(obj: Any, processes: Processes) -> list[Any]:
    """Every process's ``obj`` (picklable), in rank order, on every process."""
    if not processes.distributed:
        return [obj]
    out: list[Any] = [None] * processes.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(processes: Processes) -> None:
    if processes.distributed:
        dist.barrier()
