"""Data bigger than memory: rows of a raw binary file, read a batch at a time.

The file is the layout of ``np.memmap(path, dtype, shape=(N, *row_shape))``: rows back to
back, no header. :class:`MemmapDataset` reads only the rows asked for, with positional
file reads into a new buffer. It does not keep the file mapped, because on Linux with
large page-cache folios (ext4, kernel 6.x) a fault on a mapping can map megabytes around
the row: one batch of 1024 random rows of a 190 MB file mapped about all of it, and
unmapping after each batch did not stop the resident size from growing with the file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from .datasets import DataNotFoundError

__all__ = ["MemmapDataset", "write_memmap"]


class MemmapDataset(torch.utils.data.Dataset):
    """The rows of a raw file of shape ``(N, *row_shape)`` and numpy ``dtype``, each read when asked
    for and returned as a float32 tensor of shape ``row_shape``.

    ``__getitems__`` (which torch's DataLoader calls when present) reads a batch in file order,
    one read per run of consecutive rows, so resident memory grows with the batch, not the file.
    """

    def __init__(self, path: str | os.PathLike, row_shape: int | Sequence[int], dtype=np.float32):
        self.path = Path(path)
        self.row_shape = (int(row_shape),) if isinstance(row_shape, (int, np.integer)) else tuple(map(int, row_shape))
        self.dtype = np.dtype(dtype)
        if any(d < 1 for d in self.row_shape):
            raise ValueError(f"row_shape must be positive sizes, got {self.row_shape}")
        if not self.path.is_file():
            raise DataNotFoundError(f"memmap file {self.path} not found")
        self.row_bytes = int(np.prod(self.row_shape)) * self.dtype.itemsize
        size = self.path.stat().st_size
        if size % self.row_bytes:
            raise ValueError(f"{self.path}: size {size} bytes is not a whole number of rows of {self.row_bytes} "
                             f"bytes (row_shape {self.row_shape} of {self.dtype.name}): wrong row_shape or dtype, "
                             "or a truncated file")
        self._len = size // self.row_bytes

    def __len__(self) -> int:
        return self._len

    def __repr__(self) -> str:
        return f"MemmapDataset({str(self.path)!r}, rows={len(self)}, row_shape={self.row_shape}, dtype={self.dtype.name})"

    def __getitem__(self, index: int) -> torch.Tensor:
        return self._read(np.asarray([index]))[0]

    def __getitems__(self, indices: Sequence[int]) -> list[torch.Tensor]:
        return list(self._read(np.asarray(indices)).unbind(0))

    def _read(self, idx: np.ndarray) -> torch.Tensor:
        """Rows ``idx`` (B,) as a float32 tensor of shape ``(B, *row_shape)``."""
        if idx.ndim != 1 or not (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)):
            raise TypeError(f"MemmapDataset takes integer row indices, got {idx.dtype} of shape {idx.shape}")
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            bad = idx[(idx < -n) | (idx >= n)][0]
            raise IndexError(f"row {bad} out of range for {self.path} with {n} rows")
        idx = idx.astype(np.int64) % max(n, 1)
        order = np.argsort(idx, kind="stable")
        rows = idx[order]
        out = np.empty((len(rows), *self.row_shape), dtype=self.dtype)
        buf = memoryview(out.reshape(-1).view(np.uint8))
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        starts, ends = np.r_[0, breaks].tolist(), np.r_[breaks, len(rows)].tolist()
        rb = self.row_bytes
        with open(self.path, "rb") as f:
            for a, b in zip(starts, ends):
                f.seek(int(rows[a]) * rb)
                got = f.readinto(buf[a * rb:b * rb])
                if got != (b - a) * rb:
                    raise ValueError(f"{self.path}: short read at row {rows[a]} (the file shrank while in use?)")
        result = np.empty((len(rows), *self.row_shape), dtype=np.float32)
        result[order] = out
        return torch.from_numpy(result)


def write_memmap(path: str | os.PathLike, chunks: Iterable, dtype=np.float32) -> MemmapDataset:
    """Write arrays or tensors of shape ``(N_i, *row_shape)``, one chunk at a time, to a raw file at ``path``.

    The rows go to a temporary file in the same folder, renamed onto ``path`` once all are
    written: a reader never sees a partial file. Returns the :class:`MemmapDataset` over it."""
    path = Path(path)
    dtype = np.dtype(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".part")
    row_shape = None
    try:
        with os.fdopen(fd, "wb") as f:
            for i, chunk in enumerate(chunks):
                arr = chunk.detach().cpu().numpy() if torch.is_tensor(chunk) else np.asarray(chunk)
                if arr.ndim < 2:
                    raise ValueError(f"chunk {i} must have shape (N_i, *row_shape), got shape {arr.shape}")
                if row_shape is None:
                    row_shape = arr.shape[1:]
                elif arr.shape[1:] != row_shape:
                    raise ValueError(f"chunk {i} has rows of shape {arr.shape[1:]}, the first chunk {row_shape}")
                try:
                    arr = np.ascontiguousarray(arr.astype(dtype, casting="same_kind", copy=False))
                except TypeError as e:
                    raise TypeError(f"chunk {i}: cannot store {arr.dtype} as {dtype.name}: {e}") from None
                f.write(memoryview(arr.reshape(-1).view(np.uint8)))
        if row_shape is None:
            raise ValueError(f"write_memmap({str(path)!r}): no chunks to write")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return MemmapDataset(path, row_shape, dtype)
