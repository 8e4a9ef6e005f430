"""Per-item transforms and a map-style dataset that applies one, a batch at a time.

:class:`DynamicBinarize` draws a fresh binarization of grey levels at each call (the
MNIST protocol of Burda et al. 2016); :class:`Transformed` applies it (or any transform)
to the rows of a tensor or the items of a dataset, inside DataLoader workers too.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

__all__ = ["DynamicBinarize", "Transformed"]


class DynamicBinarize:
    """``x -> torch.bernoulli(x)`` for grey levels ``x`` in [0, 1]: a fresh draw from torch's
    current RNG at each call, so each epoch sees another binarization (Burda et al. 2016)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(x) or not torch.is_floating_point(x):
            what = x.dtype if torch.is_tensor(x) else type(x).__name__
            raise TypeError(f"DynamicBinarize takes a floating tensor of grey levels in [0, 1], got {what}")
        if x.numel():
            lo, hi = torch.aminmax(x)
            if not (lo >= 0 and hi <= 1):  # also catches NaN
                raise ValueError(f"DynamicBinarize takes grey levels in [0, 1], got values in "
                                 f"[{lo.item():g}, {hi.item():g}] (scale to [0, 1] first, e.g. x / 255)")
        return torch.bernoulli(x)

    def __repr__(self) -> str:
        return "DynamicBinarize()"


class Transformed(torch.utils.data.Dataset):
    """``transform`` applied to row ``i`` of a tensor (N, ...), or to item ``i`` of a map-style dataset.

    Where an item is a tuple ``(x, y, ...)``, only ``x`` is transformed. ``__getitems__`` (which
    torch's DataLoader calls when present) returns the list of items, as ``__getitem__`` would,
    transforming the stacked ``x`` of a batch with one call where they share a shape. That
    needs a transform that treats each row of a batch alike (as :class:`DynamicBinarize`
    does); pass ``batched=False`` for one that takes a single item only.
    """

    def __init__(self, data, transform: Callable[[torch.Tensor], torch.Tensor], batched: bool = True):
        if torch.is_tensor(data) and data.dim() == 0:
            raise ValueError("Transformed needs a tensor with one row per item (N, ...), got a scalar")
        if not (torch.is_tensor(data) or (hasattr(data, "__getitem__") and hasattr(data, "__len__"))):
            raise TypeError(f"Transformed takes a tensor (N, ...) or a map-style dataset, got {type(data).__name__}")
        if not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}")
        self.data, self.transform, self.batched = data, transform, batched

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index):
        return _apply(self.transform, self.data[index])

    def __getitems__(self, indices: Sequence[int]) -> list:
        if not self.batched:
            return [self[i] for i in indices]
        if torch.is_tensor(self.data):
            return list(self.transform(self.data[torch.as_tensor(indices, dtype=torch.long)]).unbind(0))
        getitems = getattr(self.data, "__getitems__", None)
        items = list(getitems(indices)) if getitems is not None else [self.data[i] for i in indices]
        paired = bool(items) and all(isinstance(it, (tuple, list)) for it in items)
        xs = [it[0] for it in items] if paired else items
        if not xs or not all(torch.is_tensor(x) and x.shape == xs[0].shape for x in xs):
            return [_apply(self.transform, it) for it in items]
        out = self.transform(torch.stack(xs)).unbind(0)
        return [(x, *it[1:]) for x, it in zip(out, items)] if paired else list(out)


def _apply(transform, item):
    """``transform`` applied to an item, or to the first element of a tuple item."""
    return (transform(item[0]), *item[1:]) if isinstance(item, (tuple, list)) else transform(item)
