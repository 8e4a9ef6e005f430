"""Inference: the objectives (one estimator per module) and the training loop around them.

- :mod:`.objectives`: Pyro's ELBOs and the estimators Pyro lacks, by name through ``get()``.
- :mod:`.train`: :func:`fit`, a plain PyTorch loop over ``differentiable_loss``.
- :mod:`.checkpoint`: atomic checkpoints and JSON files.
- :mod:`.progress`: tqdm bars that stay readable in log files.
"""

from . import objectives
from .checkpoint import CheckpointError, atomic_write, load_checkpoint, save_checkpoint, write_json
from .train import FitResult, NonFiniteLossError, fit

__all__ = ["objectives", "fit", "FitResult", "NonFiniteLossError", "CheckpointError", "atomic_write", "save_checkpoint",
           "load_checkpoint", "write_json"]
