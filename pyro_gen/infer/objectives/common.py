"""What the objectives share: particle checks, per-data-point log weights, and ``prepare``.

Pyro's ELBOs keep every plate's log density in one sum; the importance-weighted
objectives here keep the local (data) plates apart, so that each data point gets its
own weights, as Burda et al. (2016) define the bound. ``prepare`` fixes
``max_plate_nesting`` up front so that a resumed run spends the same random numbers
as an uninterrupted one.
"""

from __future__ import annotations

import logging
from typing import Callable

import pyro
import torch
from pyro.infer import ELBO, TraceEnum_ELBO
from pyro.infer.util import get_dependent_plate_dims, torch_sum
from pyro.poutine.util import site_is_subsample

__all__ = ["check_particles", "FromDifferentiableLoss", "log_densities", "log_weight", "prepare", "elbo_terms",
           "latent_codes"]


def check_particles(k: int) -> int:
    """Validate a number of particles.

    Returns:
        ``k``, an integer >= 1.

    Raises:
        ValueError: for anything else (``bool`` included).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"the number of particles k must be an integer >= 1, got {k!r}")
    return k


class FromDifferentiableLoss:
    """``loss`` and ``loss_and_grads`` of an ELBO derived from its ``differentiable_loss``."""

    def loss(self, model, guide, *args, **kwargs) -> float:
        """The value of ``differentiable_loss``, as a float, computed without gradients."""
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """Backpropagate ``differentiable_loss`` into the parameters' gradients and return its value."""
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.item()


def log_densities(model_trace, guide_trace, reparameterized: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(x, z) and log q(z), each summed over all but the local (data) plates."""
    sum_dims = get_dependent_plate_dims(model_trace.nodes.values())
    log_p, log_q = 0.0, 0.0
    for site in model_trace.nodes.values():
        if site["type"] == "sample":
            log_p = log_p + torch_sum(site["log_prob"], sum_dims)
    for name, site in guide_trace.nodes.items():
        if site["type"] == "sample":
            if reparameterized and not site["fn"].has_rsample:
                raise ValueError(
                    f"guide site {name!r} is not reparameterizable, so the importance-weighted "
                    "bound's gradient would be biased; use objective 'graph' (score function "
                    "with baselines), 'rws' (reweighted wake-sleep) or enumerate the site in the model"
                )
            log_q = log_q + torch_sum(site["log_prob"], sum_dims)
    if not torch.is_tensor(log_p):
        raise ValueError("the model has no sample sites: there is nothing to score")
    if not torch.is_tensor(log_q):  # no latent variables (an empty guide): the weight is log p(x) itself
        log_q = torch.zeros_like(log_p)
    return log_p, log_q


def elbo_terms(model_trace, guide_trace) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ELBO's three parts per data point: log p(x | z) (observed sites), log p(z) (latent sites)
    and log q(z) (the guide), each summed over all but the local (data) plates. For the objectives
    that weigh the KL term, ``log q(z) - log p(z)``, apart from the reconstruction term; their
    gradients are reparameterized ones.

    Raises:
        ValueError: for a guide site that is not reparameterizable (its gradient would be biased).
    """
    for name, site in guide_trace.nodes.items():
        if site["type"] == "sample" and not site["is_observed"] and not site["fn"].has_rsample:
            raise ValueError(f"guide site {name!r} is not reparameterizable, and this objective's gradient is the "
                             "reparameterized one: it would be biased. Use a reparameterized guide for it")
    sum_dims = get_dependent_plate_dims(model_trace.nodes.values())
    log_lik, log_prior = 0.0, 0.0
    for site in model_trace.nodes.values():
        if site["type"] == "sample":
            term = torch_sum(site["log_prob"], sum_dims)
            if site["is_observed"]:
                log_lik = log_lik + term
            else:
                log_prior = log_prior + term
    _, log_q = log_densities(model_trace, guide_trace, reparameterized=False)
    return torch.as_tensor(log_lik), torch.as_tensor(log_prior), log_q


def latent_codes(guide_trace, what: str) -> list[tuple[str, torch.Tensor, dict]]:
    """The guide's latent sample sites as codes, one row per data point: ``(name, value (N, D), site)``
    for each, with the site's event dimensions flattened into D.

    For the objectives that look at the aggregate posterior q(z) = mean_n q(z | x_n) (``betatc``,
    ``factorvae``): every latent must be local, in one plate over the data points.

    Raises:
        ValueError: (naming ``what`` asks) for a latent that is not in exactly one plate, or a
            guide with no latent at all.
    """
    codes = []
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site):
            continue
        value, event_dim = site["value"], site["fn"].event_dim
        plates = [f for f in site["cond_indep_stack"] if f.vectorized]
        if len(plates) != 1 or value.dim() != event_dim + 1:
            raise ValueError(f"{what} needs every latent in exactly one plate over the data points (one row per "
                             f"point); guide site {name!r} has shape {tuple(value.shape)} with event_dim {event_dim} "
                             f"in {len(plates)} plates")
        codes.append((name, value.reshape(len(value), -1), site))
    if not codes:
        raise ValueError(f"{what} needs a guide with latent sample sites; this guide has none")
    return codes


def log_weight(model_trace, guide_trace, reparameterized: bool = True) -> torch.Tensor:
    """The log importance weight log p(x, z) - log q(z) of one particle, per data point
    (:func:`log_densities`; ``reparameterized`` as there)."""
    log_p, log_q = log_densities(model_trace, guide_trace, reparameterized)
    return log_p - log_q


def prepare(elbo: ELBO, model: Callable, guide: Callable, *args, **kwargs) -> ELBO:
    """Fix ``max_plate_nesting`` before training when the ELBO would guess it at its first step.

    Pyro guesses it by running model and guide once, which spends random numbers at
    whatever step comes first; doing it up front keeps a resumed run identical to an
    uninterrupted one. Uses Pyro's own guess, without its log line.
    """
    guesses = getattr(elbo, "vectorize_particles", False) or isinstance(elbo, TraceEnum_ELBO)
    if guesses and elbo.max_plate_nesting == float("inf"):
        logger = logging.getLogger("pyro.infer.elbo")
        level = logger.level
        logger.setLevel(logging.WARNING)
        try:
            with pyro.validation_enabled(False), torch.no_grad():
                elbo._guess_max_plate_nesting(model, guide, args, kwargs)
        finally:
            logger.setLevel(level)
    return elbo
