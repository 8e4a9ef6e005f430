"""IWAE-k and the Renyi-alpha bound, with a ``differentiable_loss`` Pyro lacks.

Estimator: ``RenyiBound`` (alpha=0 is IWAE-k), the bound of Li & Turner (2016) and
Burda et al. (2016), per data point. Pyro has :class:`pyro.infer.RenyiELBO`, but only
its ``loss_and_grads``, which never calls ``backward`` when the parameters live in an
``nn.Module`` rather than Pyro's global param store; this adds the differentiable
loss that a plain PyTorch loop needs.

References:
    Li & Turner (2016), Renyi Divergence Variational Inference.
    Burda, Grosse & Salakhutdinov (2016), Importance Weighted Autoencoders.
"""

from __future__ import annotations

import math

import torch
from pyro.infer import RenyiELBO

from .common import FromDifferentiableLoss, check_particles, log_weight

__all__ = ["RenyiBound"]


class RenyiBound(FromDifferentiableLoss, RenyiELBO):
    """The Renyi variational bound (Li & Turner 2016); alpha=0 is the IWAE bound.

    The same estimator as :class:`pyro.infer.RenyiELBO` (local plates shared by all
    sites stay independent, so the bound is per data point), with a
    ``differentiable_loss`` whose gradient is ``sum_i softmax((1-a) log w)_i grad log w_i``.
    Requires reparameterized guide sites; use ``graph`` for discrete guides.

    References:
        Li & Turner (2016), Renyi Divergence Variational Inference.
        Burda, Grosse & Salakhutdinov (2016), Importance Weighted Autoencoders.
    """

    def __init__(self, alpha: float = 0.0, num_particles: int = 5, max_plate_nesting: float = float("inf"),
                 vectorize_particles: bool = True):
        check_particles(num_particles)
        if not math.isfinite(alpha) or alpha == 1:
            raise ValueError(f"alpha must be finite and != 1 (alpha=1 is the ELBO: use 'trace'), got {alpha}")
        super().__init__(alpha=alpha, num_particles=num_particles, max_plate_nesting=max_plate_nesting,
                         vectorize_particles=vectorize_particles and num_particles > 1)

    def log_weights(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """log p(x, z_i) - log q(z_i | x) for each particle i: shape ``(k, *local_plates)``.

        Values only: any guide will do, discrete ones included (their bound is valid,
        only its reparameterized gradient would not be)."""
        return self._log_weights(model, guide, args, kwargs, reparameterized=False)

    def _log_weights(self, model, guide, args, kwargs, reparameterized: bool = True) -> torch.Tensor:
        particles = []
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            particles.append(log_weight(model_trace, guide_trace, reparameterized))
        if self.vectorize_particles:
            return particles[0]
        return torch.stack(particles)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """The negative Renyi-alpha bound (IWAE-k at alpha=0) from k particles, summed over the data
        points: a scalar whose gradient is the bound's reparameterized gradient.

        Raises:
            ValueError: if a guide site is not reparameterizable.
        """
        a = 1.0 - self.alpha
        log_w = self._log_weights(model, guide, args, kwargs)
        bound = (torch.logsumexp(a * log_w, dim=0) - math.log(self.num_particles)) / a
        return -bound.sum()
