"""Training on several processes (`torchrun`): one small place for the process group.

A run started by `torchrun --nproc_per_node N -m postergenre train ...` sees `WORLD_SIZE` > 1
in its environment and joins a process group (gloo on CPU, NCCL on GPU). Without torchrun every
helper here is a no-op, so a single-process run is exactly what it was.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from postergenre import console
from postergenre.errors import UserError

T = TypeVar("T")


def launched() -> bool:
    """Whether torchrun started this process as one of several (`WORLD_SIZE` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    """Whether this process belongs to an initialised process group of several ranks."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of processes training together (1 without torchrun)."""
    return dist.get_world_size() if active() else 1


def rank() -> int:
    """This process's rank (0 without a process group; `RANK` before one is started)."""
    return dist.get_rank() if active() else int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Whether this process is rank 0: the one that prints and writes files."""
    return rank() == 0


def device() -> torch.device:
    """This rank's GPU under NCCL, else the CPU."""
    if active() and dist.get_backend() == "nccl":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


@contextlib.contextmanager
def session() -> Iterator[None]:
    """Join the process group for the duration of the block when launched by torchrun."""
    if not launched() or active():
        yield
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    try:
        yield
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op alone)."""
    if active():
        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. filling a cache), then the other ranks do."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """The sum of `value` over ranks (the value itself alone)."""
    if not active():
        return value
    out = value.detach().clone().to(device())
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.to(value.device)


def broadcast(obj: T) -> T:
    """Rank 0's `obj` on every rank (e.g. the loop state with its stop decision)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=device())
    return box[0]


def gather(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def shard(index: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This rank's part of one global batch: every `world`-th index from `rank`, so the ranks'
    parts are disjoint and together are the batch one process would train on."""
    return index[rank::world]


def local_batch_size(global_batch: int, world: int) -> int:
    """Per-rank batch: the global `--batch-size` split evenly over `world` ranks."""
    if global_batch % world:
        raise UserError(f"--batch-size {global_batch} does not split evenly over {world} processes")
    return global_batch // world


def echo(message: str) -> None:
    """A status line, from rank 0 only."""
    if is_main():
        console.echo(message)


def warn(message: str) -> None:
    """A warning, from rank 0 only."""
    if is_main():
        console.warn(message)
