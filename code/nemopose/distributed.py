"""torch.distributed plumbing for the entry points (METHOD.md §15).

The same code runs as one plain process (no torchrun), or under ``torchrun`` on one or many
GPUs of one or many machines (``env://`` rendezvous: RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT). The backend follows the device: gloo on CPU, nccl on CUDA. Only
the entry point calls :func:`init`; library code receives a :class:`DistContext`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import UsageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size`` processes and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def choose_device(device: str = "auto", local_rank: int = 0,
                  fix: str = "leave GPUS empty to run on the CPU") -> torch.device:
    """'auto' -> cuda:<local_rank> when CUDA is available, else cpu; 'cpu'; 'cuda'.

    ``fix``: what the error for CUDA without CUDA tells the user to do, in their terms (the
    drivers' variables by default; the Python API passes ``use device='cpu'``)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise UsageError(f"device={device!r} but torch.cuda.is_available() is False ({why}); {fix}")
        return torch.device("cuda", local_rank if device == "cuda" else torch.device(device).index)
    if device != "cpu":
        raise UsageError(f"device must be auto, cpu or cuda[:i], got {device!r}")
    return torch.device("cpu")


def init(device: str = "auto") -> DistContext:
    """Initialise the process group when launched by torchrun (WORLD_SIZE > 1), else a
    single-process context. Sets the CUDA device of this rank."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return DistContext(device=choose_device(device))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    dev = choose_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", init_method="env://")
    log.info("distributed: rank %d of %d on %s (%s)", rank, world, dev, dist.get_backend())
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def all_gather_cat(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Concatenate ``tensor`` of every rank along dim 0, in rank order. Ranks may hold
    different numbers of rows (padded for the collective, trimmed after)."""
    if not ctx.distributed:
        return tensor
    tensor = tensor.contiguous()
    size = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(ctx.world_size)]
    dist.all_gather(sizes, size)
    sizes = [int(s) for s in sizes]
    longest = max(sizes)
    padded = tensor.new_zeros((longest,) + tuple(tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes)], dim=0)


def all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum over ranks (a copy; the input is left unchanged)."""
    out = values.clone()
    if ctx.distributed:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def broadcast_object(obj, ctx: DistContext, src: int = 0):
    """Rank ``src``'s Python object on every rank."""
    if not ctx.distributed:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]
