"""Optimizers and per-epoch learning-rate schedules by name, from ``torch.optim``."""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["OPTIMIZERS", "SCHEDULES", "make_optimizer", "make_scheduler"]

#: The ``torch.optim`` optimizer classes by the name :func:`make_optimizer` takes.
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
              "rmsprop": torch.optim.RMSprop}
#: The learning-rate schedule names :func:`make_scheduler` accepts (before any ``:`` arguments).
SCHEDULES = ("constant", "cosine", "exponential", "step", "plateau")


def make_optimizer(name: str, params, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """``torch.optim`` optimizer ``name`` (one of :data:`OPTIMIZERS`) over ``params``."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid choices: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](params, lr=lr, weight_decay=weight_decay)


def make_scheduler(spec: str | Callable | None, optimizer: torch.optim.Optimizer, epochs: int):
    """A per-epoch LR scheduler from a spec: ``None``/``"constant"``, ``"cosine"``,
    ``"exponential:0.95"``, ``"step:10:0.5"`` (every 10 epochs times 0.5),
    ``"plateau:3:0.5"`` (on validation loss), or a callable ``optimizer -> scheduler``."""
    if spec is None or spec == "constant":
        return None
    if callable(spec):
        return spec(optimizer)
    name, *args = str(spec).split(":")
    try:
        nums = [float(a) for a in args]
    except ValueError:
        raise ValueError(f"bad lr_schedule {spec!r}: arguments after ':' must be numbers") from None
    S = torch.optim.lr_scheduler
    if name == "cosine":
        return S.CosineAnnealingLR(optimizer, T_max=max(1, epochs))
    if name == "exponential":
        return S.ExponentialLR(optimizer, gamma=nums[0] if nums else 0.95)
    if name == "step":
        return S.StepLR(optimizer, step_size=int(nums[0]) if nums else 10, gamma=nums[1] if len(nums) > 1 else 0.5)
    if name == "plateau":
        return S.ReduceLROnPlateau(optimizer, patience=int(nums[0]) if nums else 3,
                                   factor=nums[1] if len(nums) > 1 else 0.5)
    raise ValueError(f"unknown lr_schedule {spec!r}; valid choices: {', '.join(SCHEDULES)}")


def step_scheduler(sched, row: dict) -> None:
    """Step a per-epoch scheduler after an epoch (a plateau schedule reads the epoch's loss)."""
    if sched is None:
        return
    if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
        sched.step(row.get("val_loss", row["train_loss"]))
    else:
        sched.step()
