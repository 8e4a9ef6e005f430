"""How noisy an objective's gradient estimate is: variance and signal-to-noise ratio over repeated draws.

Estimators for discrete latents (score function, VIMCO, RWS) differ mostly in the variance
of the guide's gradient; this measures it on one fixed batch, as Mnih & Rezende (2016)
and Rainforth et al. (2018) report it. Written here because neither Pyro nor torch has it.

References:
    Mnih & Rezende (2016), Variational Inference for Monte Carlo Objectives.
    Rainforth et al. (2018), Tighter Variational Bounds are Not Necessarily Better.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Iterable

import torch

from pyro_gen.infer.objectives import prepare

__all__ = ["GradientNoise", "gradient_variance"]


@dataclass
class GradientNoise:
    """Summary of ``draws`` gradient estimates of the listed parameters.

    Attributes:
        variance: the total variance, the sum over coordinates of each coordinate's variance
            (the trace of the estimate's covariance).
        mean_norm2: the squared norm of the mean estimate (the signal).
        snr: the signal-to-noise ratio ``||E g|| / sqrt(tr Cov g)`` of one estimate g, with
            ``||E g||^2`` estimated without bias as ``mean_norm2 - variance / draws`` (0 where
            the noise swamps the signal).
        draws: the number of estimates.
    """

    variance: float
    mean_norm2: float
    snr: float
    draws: int

    def as_dict(self) -> dict:
        """The four numbers by name, for JSON."""
        return asdict(self)


def gradient_variance(elbo, model: Callable, guide: Callable, *args, parameters: Iterable[torch.nn.Parameter],
                      draws: int = 20, seed: int = 0) -> GradientNoise:
    """The spread of ``elbo.differentiable_loss(model, guide, *args)``'s gradient over ``draws``
    independent estimates on the same data.

    Args:
        elbo: any objective with a ``differentiable_loss``.
        model, guide, args: as for the objective.
        parameters: the parameters whose gradient is measured (a guide's, say).
        draws: the number of estimates (>= 2).
        seed: seeds the draws; the global random state is restored afterwards, so a training
            run that measures along the way continues as it would have.

    Returns:
        A :class:`GradientNoise`. The parameters' ``.grad`` are left as they were.

    Raises:
        ValueError: for fewer than 2 draws, or no parameters.
    """
    params = list(parameters)
    if draws < 2:
        raise ValueError(f"a variance needs draws >= 2, got {draws}")
    if not params:
        raise ValueError("no parameters given: pass the ones whose gradient to measure (e.g. the guide's)")
    saved = [None if p.grad is None else p.grad.clone() for p in params]
    estimates = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        prepare(elbo, model, guide, *args)  # fixes max_plate_nesting quietly, where the objective would guess it
        for _ in range(draws):
            loss = elbo.differentiable_loss(model, guide, *args)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            estimates.append(torch.cat([(torch.zeros_like(p) if g is None else g).flatten()
                                        for p, g in zip(params, grads)]))
    for p, g in zip(params, saved):
        p.grad = g
    g = torch.stack(estimates).double()
    variance, mean_norm2 = g.var(0).sum().item(), g.mean(0).pow(2).sum().item()
    signal = max(0.0, mean_norm2 - variance / draws)  # E||mean of n draws||^2 = ||E g||^2 + tr Cov / n
    snr = (signal / variance) ** 0.5 if variance > 0 else float("inf")
    return GradientNoise(variance=variance, mean_norm2=mean_norm2, snr=snr, draws=draws)
