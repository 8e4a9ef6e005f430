"""VIMCO: the IWAE-k bound with leave-one-out score-function gradients for discrete guides.

Estimator: ``VIMCO`` (Mnih & Rezende 2016). Pyro has no VIMCO estimator; its
``TraceGraph_ELBO`` gives score-function gradients of the single-sample ELBO only.

References:
    Mnih & Rezende (2016), Variational Inference for Monte Carlo Objectives.
"""

from __future__ import annotations

import math

import torch
from pyro.infer.util import get_dependent_plate_dims, torch_sum

from .common import check_particles, log_weight
from .renyi import RenyiBound

__all__ = ["VIMCO", "leave_one_out_signals", "score_log_q"]


def leave_one_out_signals(log_w: torch.Tensor) -> torch.Tensor:
    """VIMCO's per-sample learning signals ``L - L_{-i}`` for log weights of shape ``(k, ...)``.

    ``L = log mean_j w_j`` is the IWAE-k bound; ``L_{-i}`` is the same bound with ``w_i``
    replaced by the geometric mean of the other k-1 weights, a baseline that does not
    depend on ``z_i``, so the signal keeps the estimator unbiased.
    """
    k = log_w.shape[0]
    if k < 2:
        raise ValueError(f"VIMCO's leave-one-out baselines need k >= 2 samples, got {k}")
    log_w = log_w.detach()
    bound = torch.logsumexp(log_w, dim=0) - math.log(k)
    others_mean = (log_w.sum(0, keepdim=True) - log_w) / (k - 1)  # (k, ...): mean of log w_j, j != i
    eye = torch.eye(k, dtype=torch.bool, device=log_w.device).reshape(k, k, *([1] * (log_w.dim() - 1)))
    # row i: the k log weights with the i-th replaced by the others' mean
    replaced = torch.where(eye, others_mean.unsqueeze(1), log_w.unsqueeze(0))
    loo = torch.logsumexp(replaced, dim=1) - math.log(k)
    return bound.unsqueeze(0) - loo


def score_log_q(model_trace, guide_trace) -> torch.Tensor | float:
    """log q of the guide's non-reparameterized sample sites, summed over all but the local
    (data) plates: the term whose gradient is the score function."""
    sum_dims = get_dependent_plate_dims(model_trace.nodes.values())
    total = 0.0
    for site in guide_trace.nodes.values():
        if site["type"] == "sample" and not site["fn"].has_rsample:
            total = total + torch_sum(site["log_prob"], sum_dims)
    return total


class VIMCO(RenyiBound):
    """The IWAE-k bound with VIMCO's gradient (Mnih & Rezende 2016), one set of weights per data point.

    Value: the negative IWAE-k bound ``-log (1/k) sum_i w_i``, summed over data points.
    Gradient: ``sum_i w~_i grad log w_i`` (the IWAE gradient: model parameters, and guide
    parameters through reparameterized sites and through log q) plus the score-function
    term ``sum_i (L - L_{-i}) grad log q(z_i | x)`` for the guide's non-reparameterized
    sites, where ``L_{-i}`` replaces ``w_i`` by the geometric mean of the other weights
    (:func:`leave_one_out_signals`). Each sample's baseline is built from the others, so
    the estimator is unbiased and needs no learned baseline network. Guides may mix
    discrete and reparameterized sites.

    References:
        Mnih & Rezende (2016), Variational Inference for Monte Carlo Objectives.
    """

    def __init__(self, num_particles: int = 5, max_plate_nesting: float = float("inf")):
        if check_particles(num_particles) < 2:
            raise ValueError(f"VIMCO needs k >= 2 samples (its baselines leave one out), got k={num_particles}")
        super().__init__(alpha=0.0, num_particles=num_particles, max_plate_nesting=max_plate_nesting,
                         vectorize_particles=True)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """A scalar whose value is the negative IWAE-k bound summed over the data points, and whose
        gradient is VIMCO's estimate of the bound's gradient."""
        ((model_trace, guide_trace),) = list(self._get_traces(model, guide, args, kwargs))
        log_w = log_weight(model_trace, guide_trace, reparameterized=False)
        log_q = score_log_q(model_trace, guide_trace)
        signals = leave_one_out_signals(log_w)
        weights = torch.softmax(log_w.detach(), dim=0)
        bound = torch.logsumexp(log_w.detach(), dim=0) - math.log(self.num_particles)
        surrogate = (weights * log_w).sum() + (signals * log_q).sum()
        return -bound.sum() - (surrogate - surrogate.detach())
