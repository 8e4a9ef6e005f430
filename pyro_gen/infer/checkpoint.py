"""Atomic, safe files: checkpoints (``torch.save``/``torch.load(weights_only=True)``) and JSON.

A file is written to a temporary name in the same folder, flushed to disk and
renamed over the target, so a crash leaves either the old file or the new one,
never half of one. Checkpoints are read with ``weights_only=True``: only tensors
and plain containers, never arbitrary pickled objects.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = ["atomic_write", "save_checkpoint", "load_checkpoint", "write_json", "CheckpointError", "FORMAT"]

FORMAT = "pyro_gen.checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, or not a pyro_gen checkpoint."""


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    """Atomically save a checkpoint dict (tensors, numbers, strings, lists, dicts)."""
    return atomic_write(path, lambda f: torch.save({"format": FORMAT, **state}, f))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device | None = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for a damaged file
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable: {type(e).__name__}: {e}") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a pyro_gen checkpoint (expected format {FORMAT!r})")
    return state


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Atomically write ``obj`` as indented JSON."""
    text = json.dumps(obj, indent=2, allow_nan=True)
    return atomic_write(path, lambda f: f.write(text), mode="w")
