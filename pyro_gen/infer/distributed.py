"""Training on several processes with ``torch.distributed``: DistributedDataParallel, launched
by ``torchrun``. pyro_gen adds no engine of its own.

:class:`World` is this process's place: its rank, the number of processes, and the few
collectives fit needs (sums of numbers, a broadcast, gradient averaging for parameters
that live in Pyro's param store rather than in a module). :meth:`World.wrap` puts the
model's modules under ``DistributedDataParallel`` through a small module whose forward is
the objective's loss, so that DDP's gradient hooks, buckets and overlap apply as in any
PyTorch program.

The random numbers (documented in the README, "Training on your own data"): with more than
one shard per step (several processes, or ``accumulate > 1`` in one), the torch RNG is
seeded for each shard from (seed, step, shard index), and the shuffling generator is seeded
alike on every process. Shard ``j`` of a global batch therefore draws the same numbers on
whichever process runs it: P processes with ``accumulate=a`` equal one process with
``accumulate=P·a`` to float tolerance, for every objective.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.distributed as dist

__all__ = ["World", "world", "current"]


@dataclass
class World:
    """This process's rank among ``size`` processes (rank 0 of 1 when not distributed)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    #: a process group is initialized (collectives run; possibly with one process)
    active: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self, device) -> torch.device:
        """The device of this process: ``cuda`` means ``cuda:LOCAL_RANK`` under torchrun."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None and self.active:
            return torch.device("cuda", self.local_rank)
        return device

    def all_sum(self, values: Sequence[float]) -> list[float]:
        """Sums over processes, in float64 (the values themselves where there is one process)."""
        if not self.active:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
        dist.all_reduce(t)
        return t.tolist()

    def broadcast(self, tensors: Sequence[torch.Tensor]) -> None:
        """Rank 0's values into every process's tensors, in place."""
        if self.active:
            with torch.no_grad():
                for t in tensors:
                    buf = t.detach().to(_collective_device())
                    dist.broadcast(buf, 0)
                    t.copy_(buf.to(t.device))

    def broadcast_int(self, value: int) -> int:
        """Rank 0's ``value`` on every process (``value`` itself where there is no process group)."""
        if not self.active:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=_collective_device())
        dist.broadcast(t, 0)
        return int(t.item())

    def average_grads(self, params: Sequence[torch.Tensor]) -> None:
        """Average the gradients of ``params`` over processes (those DDP does not own)."""
        if not self.active or not params:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads]).to(_collective_device())
        dist.all_reduce(flat)
        flat /= self.size
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[offset:offset + n].view_as(g).to(p.device)
            offset += n

    def all_gather_rows(self, n: int, parts: Sequence[tuple[int, torch.Tensor]]) -> torch.Tensor:
        """The (n,) float64 vector of which this process holds rows ``parts = [(start, values), ...]``,
        put together on every process (exactly: each row is summed with zeros only)."""
        device = parts[0][1].device if parts else torch.device("cpu")
        full = torch.zeros(n, dtype=torch.float64, device=device)
        for start, values in parts:
            full[start:start + len(values)] = values.double()
        if self.active:
            buf = full.to(_collective_device())
            dist.all_reduce(buf)
            full = buf.to(device)
        return full

    def barrier(self) -> None:
        """Wait until every process gets here (nothing to wait for without a process group)."""
        if self.active:
            dist.barrier()

    def wrap(self, modules: Sequence[torch.nn.Module], loss: Callable) -> Callable:
        """``loss(batch) -> tensor`` with its gradients averaged over processes by DDP for the modules'
        parameters; the function itself where there is one process or no module parameter."""
        if not self.active or not any(p.requires_grad for m in modules for p in m.parameters()):
            return loss
        from torch.nn.parallel import DistributedDataParallel

        dev = next(p for m in modules for p in m.parameters()).device
        ids = [dev.index] if dev.type == "cuda" else None
        return DistributedDataParallel(_Objective(modules, loss), device_ids=ids, find_unused_parameters=True)


class _Objective(torch.nn.Module):
    """The model's modules under one module whose forward is the loss: what DDP wraps."""

    def __init__(self, modules: Sequence[torch.nn.Module], loss: Callable):
        super().__init__()
        self.owners = torch.nn.ModuleList(modules)
        self._loss = loss

    def forward(self, batch):
        return self._loss(batch)


def _collective_device() -> torch.device:
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def current() -> World:
    """The :class:`World` of an initialized process group (one process otherwise); initializes nothing."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), True)
    return World()


def world(distributed: bool | None, device) -> World:
    """This process's :class:`World`. ``distributed=None``: distributed when a process group is
    initialized, or when torchrun launched this process among several (``WORLD_SIZE > 1``); then
    a group is initialized from torchrun's environment (gloo on CPU, NCCL on CUDA). ``True``
    insists on it; ``False`` trains in this process alone."""
    if distributed is False:
        return World()
    if not dist.is_available():
        if distributed:
            raise RuntimeError("distributed=True, but this torch build has no torch.distributed")
        return World()
    if not dist.is_initialized():
        launched = "TORCHELASTIC_RUN_ID" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
        if not (distributed or launched):
            return World()
        missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise RuntimeError(f"distributed=True needs a process group: launch with torchrun (it sets "
                               f"{', '.join(missing)}), or call torch.distributed.init_process_group first")
        backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)
    return current()


def no_sync(fn) -> contextlib.AbstractContextManager:
    """DDP's ``no_sync`` for a wrapped loss (gradient accumulation); nothing otherwise."""
    return fn.no_sync() if hasattr(fn, "no_sync") else contextlib.nullcontext()
