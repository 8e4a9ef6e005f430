"""pyro_gen: deep generative models on Pyro.

Parameters live in their ``nn.Module`` (``pyro.settings.set(module_local_params=True)``),
so ``state_dict``, ``.to(device)`` and checkpoints work as in plain PyTorch.
Submodules load on first use, so ``import pyro_gen`` stays light (no matplotlib,
ArviZ or torchvision until a plot or a torchvision data set is asked for).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import pyro

pyro.settings.set(module_local_params=True)

__version__ = "0.1.0"
__all__ = ["fit", "FitResult", "objectives", "data", "evaluate", "plots", "checkpoint", "train", "progress", "report",
           "diagnostics", "sbc", "mcmc", "__version__"]

_SUBMODULES = {"objectives", "data", "evaluate", "plots", "checkpoint", "train", "progress", "report", "diagnostics", "mcmc",
               "sbc"}

if TYPE_CHECKING:  # pragma: no cover
    from . import checkpoint, data, evaluate, objectives, plots, train
    from .train import FitResult, fit


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in ("fit", "FitResult"):
        return getattr(importlib.import_module(".train", __name__), name)
    raise AttributeError(f"module 'pyro_gen' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
