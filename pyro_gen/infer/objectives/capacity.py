"""Controlled capacity: the KL term pulled towards a target that grows during training.

Estimator: ``CapacityELBO`` (Burgess et al. 2018, "Understanding disentangling in beta-VAE")::

    loss = -E[log p(x | z)] + gamma * abs(KL(q(z | x) || p(z)) - C),

with the KL of the batch's mean point, estimated from the guide's sample (as ``Trace_ELBO``
does), and C raised linearly from 0 to ``capacity`` nats over ``steps`` training steps, then
held. The loss is summed over the batch like every objective here, so the penalty is N times
``gamma * abs(mean KL - C)``. A step is a call that builds a gradient (with ``fit(accumulate=k)``, k
calls a step); the count is saved in checkpoints (``state_dict``), so a resumed run goes on
where it stopped. Pyro has no such objective.

References:
    Burgess et al. (2018), Understanding disentangling in beta-VAE.
"""

from __future__ import annotations

import math

import torch
from pyro.infer import Trace_ELBO

from .common import FromDifferentiableLoss, elbo_terms

__all__ = ["CapacityELBO"]


class CapacityELBO(FromDifferentiableLoss, Trace_ELBO):
    """``-E[log p(x|z)] + gamma N |mean KL - C(t)|`` with C(t) = capacity * min(1, t / steps).

    Args:
        capacity: the final target KL per data point, in nats (>= 0; the paper's 25 on dSprites).
        gamma: the weight of the penalty (> 0; the paper's 1000).
        steps: training steps over which C rises from 0 (>= 1).
    """

    def __init__(self, capacity: float = 25.0, gamma: float = 1000.0, steps: int = 10_000):
        if not math.isfinite(capacity) or capacity < 0:
            raise ValueError(f"capacity must be a number of nats >= 0, got {capacity}")
        if not math.isfinite(gamma) or gamma <= 0:
            raise ValueError(f"gamma must be positive, got {gamma}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        super().__init__(num_particles=1)
        self.capacity, self.gamma, self.steps = float(capacity), float(gamma), int(steps)
        self.calls = 0

    @property
    def description(self) -> str:
        return f"CapacityELBO(capacity={self.capacity:g}, gamma={self.gamma:g}, steps={self.steps})"

    @property
    def target(self) -> float:
        """C at the current step, in nats."""
        return self.capacity * min(1.0, self.calls / self.steps)

    def state_dict(self) -> dict:
        """The step count, for a checkpoint."""
        return {"calls": self.calls}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a checkpoint's step count."""
        self.calls = int(state["calls"])

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        ((model_trace, guide_trace),) = list(self._get_traces(model, guide, args, kwargs))
        log_lik, log_prior, log_q = elbo_terms(model_trace, guide_trace)
        kl = log_q - log_prior
        n = kl.numel()
        loss = -log_lik.sum() + self.gamma * n * (kl.mean() - self.target).abs()
        if torch.is_grad_enabled():  # a training step (evaluation runs without gradients)
            self.calls += 1
        return loss
