"""Partly labeled data: which points keep their label, and the checks labels and masks get.

Semi-supervised models take ``(x, y, mask)``: every point has a slot in ``y``, and
``mask[n]`` says whether ``y[n]`` is observed. :func:`balanced_label_mask` picks the
labeled points as Kingma et al. (2014) did, the same number from every class.

References:
    Kingma, Rezende, Mohamed & Welling (2014), Semi-Supervised Learning with Deep Generative Models.
"""

from __future__ import annotations

import torch

__all__ = ["balanced_label_mask", "check_labels", "oversample_labeled"]


def check_labels(y: torch.Tensor, mask: torch.Tensor | None, n: int, num_classes: int) -> None:
    """Refuse labels and masks that do not fit a batch of ``n`` points, naming the problem.

    ``y`` must be integers (N,) in ``0..num_classes-1`` wherever ``mask`` is True (the
    slots of unlabeled points are ignored); ``mask`` must be boolean (N,).
    """
    if not torch.is_tensor(y) or y.dtype.is_floating_point or y.dtype == torch.bool or y.dim() != 1:
        raise TypeError(f"labels must be an integer tensor of shape (N,), got "
                        f"{getattr(y, 'dtype', type(y).__name__)} {tuple(getattr(y, 'shape', ()))}")
    if len(y) != n:
        raise ValueError(f"labels have {len(y)} entries but the batch has {n} points")
    if mask is not None:
        if not torch.is_tensor(mask) or mask.dtype != torch.bool or mask.shape != (n,):
            raise ValueError(f"the label mask must be a boolean tensor of shape ({n},) matching the batch, got "
                             f"{getattr(mask, 'dtype', type(mask).__name__)} {tuple(getattr(mask, 'shape', ()))}")
        y = y[mask]
    bad = (y < 0) | (y >= num_classes)
    if bad.any():
        raise ValueError(f"labels must lie in 0..{num_classes - 1}; found {y[bad][0].item()} "
                         f"({int(bad.sum())} label(s) outside)")


def balanced_label_mask(y: torch.Tensor, n_labeled: int, seed: int = 0) -> torch.Tensor:
    """A boolean mask that keeps ``n_labeled`` labels, the same number from every class (seeded).

    Raises:
        ValueError: if ``n_labeled`` is not a multiple of the number of classes, or a class has
            too few points.
    """
    classes = torch.unique(y)
    if n_labeled < len(classes) or n_labeled % len(classes):
        raise ValueError(f"n_labeled={n_labeled} cannot be balanced over {len(classes)} classes: "
                         f"use a positive multiple of {len(classes)}")
    per_class = n_labeled // len(classes)
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(len(y), dtype=torch.bool)
    for c in classes.tolist():
        idx = (y == c).nonzero().flatten()
        if len(idx) < per_class:
            raise ValueError(f"class {c} has {len(idx)} points, fewer than the {per_class} labels asked of it")
        mask[idx[torch.randperm(len(idx), generator=g)[:per_class]]] = True
    return mask


def oversample_labeled(mask: torch.Tensor, fraction: float, seed: int = 0) -> torch.Tensor:
    """Indices of a training set in which the labeled points (``mask``) are repeated so that they make
    up about ``fraction`` of it, every unlabeled point once: with 100 labels among 60,000 points a
    shuffled minibatch would otherwise hold one labeled point in six hundred. Each labeled point
    appears ``max(1, round(...))`` times; the indices are in a seeded random order."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
    labeled, unlabeled = mask.nonzero().flatten(), (~mask).nonzero().flatten()
    if len(labeled) == 0:
        return torch.arange(len(mask))
    repeats = max(1, round(fraction * len(unlabeled) / ((1 - fraction) * len(labeled))))
    idx = torch.cat([unlabeled, labeled.repeat(repeats)])
    return idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed))]
