"""Reweighted wake-sleep with one set of importance weights per data point.

Estimator: ``RWS_ELBO`` (wake-theta and wake-phi; Bornschein & Bengio 2015). Pyro has
:class:`pyro.infer.ReweightedWakeSleep`, but it normalizes the weights over the whole
batch at once and has no ``differentiable_loss``; this keeps the local plates apart
and gives the surrogate loss a PyTorch loop steps on.

References:
    Bornschein & Bengio (2015), Reweighted Wake-Sleep.
    Le, Kosiorek, Siddharth, Teh & Wood (2019), Revisiting Reweighted Wake-Sleep.
"""

from __future__ import annotations

import math

import torch
from pyro.infer import ReweightedWakeSleep

from .common import FromDifferentiableLoss, check_particles, log_densities

__all__ = ["RWS_ELBO"]


class RWS_ELBO(FromDifferentiableLoss, ReweightedWakeSleep):
    """Reweighted wake-sleep (wake-theta and wake-phi), with one weight per data point.

    Guide samples are detached, so no reparameterization is needed (discrete guides
    work). The model gets the IWAE-k gradient with the guide held fixed; the guide
    gets ``-sum_i w~_i grad log q(z_i | x)``, a self-normalized estimate of the
    gradient of KL(p(z | x) || q(z | x)) (inclusive KL). Pyro's
    :class:`~pyro.infer.ReweightedWakeSleep` normalizes the weights over the whole
    batch at once and has no ``differentiable_loss``; this one keeps local plates
    apart, as :class:`RenyiBound` does. The value is the negative IWAE-k bound, so it
    compares with the other objectives; the gradient is RWS's. Only the wake-phi
    phase (``insomnia=1``): the sleep phase needs guides that take observations as a
    keyword.

    References:
        Bornschein & Bengio (2015), Reweighted Wake-Sleep.
        Le, Kosiorek, Siddharth, Teh & Wood (2019), Revisiting Reweighted Wake-Sleep
        for Models with Stochastic Control Flow.
    """

    def __init__(self, num_particles: int = 5, max_plate_nesting: float = float("inf")):
        if isinstance(num_particles, int) and not isinstance(num_particles, bool) and num_particles < 2:
            raise ValueError(f"reweighted wake-sleep needs k >= 2 particles to weight, got {num_particles}")
        check_particles(num_particles)
        super().__init__(num_particles=num_particles, insomnia=1.0, max_plate_nesting=max_plate_nesting,
                         vectorize_particles=True)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """A scalar whose value is the negative IWAE-k bound summed over the data points, and whose
        gradient is wake-theta's for the model's parameters and wake-phi's for the guide's."""
        (model_trace, guide_trace), = self._get_traces(model, guide, args, kwargs)
        log_p, log_q = log_densities(model_trace, guide_trace, reparameterized=False)
        log_w = log_p - log_q.detach()
        bound = torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)
        wake_theta = -bound.sum()
        weights = torch.softmax(log_w.detach(), dim=0)
        wake_phi = -(weights * log_q).sum()
        return wake_theta + (wake_phi - wake_phi.detach())
