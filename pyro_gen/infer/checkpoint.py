"""Atomic, safe files: checkpoints (``torch.save``/``torch.load(weights_only=True)``) and JSON.

A file is written to a temporary name in the same folder, flushed to disk and
renamed over the target, so a crash leaves either the old file or the new one,
never half of one. Checkpoints are read with ``weights_only=True``: only tensors
and plain containers, never arbitrary pickled objects.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = ["atomic_write", "save_checkpoint", "load_checkpoint", "write_json", "CheckpointError", "FORMAT"]

#: The format tag that :func:`save_checkpoint` writes into every checkpoint and
#: :func:`load_checkpoint` requires.
FORMAT = "pyro_gen.checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, or not a pyro_gen checkpoint."""


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkstemp: it creates the file 0600, and the rename would keep that. Created with
    # O_EXCL and mode 0666, the file gets the user's umask, like any other output.
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
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
        # torch's own text goes on to advise weights_only=False, which is unsafe for an untrusted
        # file and useless for a damaged one: keep only what went wrong. The cause stays chained.
        text = str(e).strip()
        if "weights only" in text.lower() or "weights_only" in text:
            why = "it holds objects other than tensors and plain containers, which are never unpickled"
        else:
            why = f"{type(e).__name__}: {text.splitlines()[0][:120]}" if text else type(e).__name__
        raise CheckpointError(
            f"checkpoint {path} is corrupt (damaged, truncated, or not a pyro_gen checkpoint: {why}). It is the only "
            f"checkpoint of its run folder, so there is no earlier good one to fall back to: start the run again "
            f"without resume, or restore the file from a copy") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a pyro_gen checkpoint (expected format {FORMAT!r})")
    return state


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Atomically write ``obj`` as indented JSON."""
    text = json.dumps(obj, indent=2, allow_nan=True)
    return atomic_write(path, lambda f: f.write(text), mode="w")
