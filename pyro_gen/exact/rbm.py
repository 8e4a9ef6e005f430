"""The binary restricted Boltzmann machine in closed form, for RBMs small enough to enumerate.

Energy E(v, h) = -b_v.v - b_h.h - v^T W h over v in {0,1}^D, h in {0,1}^H, with W of
shape (D, H). Summing h out gives the free energy F(v) = -b_v.v - sum_j softplus(b_h_j +
(v W)_j); summing v out instead gives the same form with the roles swapped. So log Z is a
sum over 2^min(D, H) states: :func:`rbm_log_partition` enumerates the smaller layer, in
chunks, which is what the AIS estimate of log Z (:mod:`pyro_gen.evaluate.partition`) is
tested against.

References:
    Salakhutdinov & Murray (2008), On the Quantitative Analysis of Deep Belief Networks.
"""

from __future__ import annotations

import math

import torch
from torch.nn.functional import softplus

__all__ = ["rbm_free_energy", "rbm_log_partition", "MAX_ENUMERATED_UNITS"]

#: The largest layer :func:`rbm_log_partition` enumerates (2^24 states, a few seconds).
MAX_ENUMERATED_UNITS = 24


def rbm_free_energy(v: torch.Tensor, W: torch.Tensor, b_v: torch.Tensor, b_h: torch.Tensor) -> torch.Tensor:
    """F(v) = -b_v.v - sum_j softplus(b_h_j + (v W)_j), for v of shape (..., D); shape (...)."""
    return -(v * b_v).sum(-1) - softplus(v @ W + b_h).sum(-1)


def _all_states(n: int, start: int, stop: int, dtype) -> torch.Tensor:
    codes = torch.arange(start, stop)
    return ((codes[:, None] >> torch.arange(n)) & 1).to(dtype)


def rbm_log_partition(W: torch.Tensor, b_v: torch.Tensor, b_h: torch.Tensor, chunk: int = 2**14) -> torch.Tensor:
    """log Z of a binary RBM by exact enumeration of its smaller layer (float64).

    Raises:
        ValueError: both layers have more than :data:`MAX_ENUMERATED_UNITS` units, or the
            shapes do not match.

    Examples:
        A one-by-one RBM has four states: log Z = log(1 + e^{b_v} + e^{b_h} + e^{b_v + b_h + w}).

        >>> import torch
        >>> W, b_v, b_h = torch.tensor([[1.0]]), torch.tensor([0.5]), torch.tensor([-0.5])
        >>> round(rbm_log_partition(W, b_v, b_h).item(), 4)
        1.7873
    """
    D, H = W.shape
    if b_v.shape != (D,) or b_h.shape != (H,):
        raise ValueError(f"W of shape (D, H) = {tuple(W.shape)} needs b_v of shape ({D},) and b_h of shape ({H},), "
                         f"got {tuple(b_v.shape)} and {tuple(b_h.shape)}")
    if min(D, H) > MAX_ENUMERATED_UNITS:
        raise ValueError(f"enumerating 2^{min(D, H)} states is out of reach (at most 2^{MAX_ENUMERATED_UNITS}): "
                         "estimate log Z with AIS, pyro_gen.evaluate.partition.rbm_ais_log_partition")
    W, b_v, b_h = W.double(), b_v.double(), b_h.double()
    if H > D:  # enumerate the visible layer: the free energy of h has the same form with W transposed
        W, b_v, b_h = W.T, b_h, b_v
    n = min(D, H)
    parts = []
    for start in range(0, 2**n, chunk):
        h = _all_states(n, start, min(2**n, start + chunk), W.dtype)
        parts.append(torch.logsumexp(-rbm_free_energy(h, W.T, b_h, b_v), 0))
    return torch.logsumexp(torch.stack(parts), 0) if len(parts) > 1 else parts[0]
