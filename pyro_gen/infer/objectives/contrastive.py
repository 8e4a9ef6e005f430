"""Contrastive divergence for energy-based models: a training objective that is not an ELBO.

Estimator: ``ContrastiveDivergence``: CD-k (Hinton 2002) and persistent CD (Tieleman
2008). An energy-based model with its hidden units summed out scores an observation by
its free energy, log p(x) = -F(x) - log Z, and Z is intractable. The gradient of the
log-likelihood is -grad F(x_data) + E_model[grad F(x)]; CD estimates the second term at
the end of k Gibbs sweeps started at the data (CD-k) or at persistent chains carried over
from the previous step (PCD-k). A model states this by observing its data through an
:class:`EnergyDistribution` (e.g. ``models.rbm``'s binary RBM); the objective finds that
site in the model's trace, so the model stays a plain Pyro program and trains through
:func:`pyro_gen.fit` like every other: checkpoints (the persistent chains included),
resume, progress, early stopping and the command line.

The loss's value is the negative pseudo-log-likelihood per data point (Besag 1975; one
randomly chosen unit flipped per point, times the number of units, as scikit-learn's
``BernoulliRBM.score_samples``): a number that falls as the model improves, which CD's
surrogate does not. Its gradient is CD's.

References:
    Hinton (2002), Training Products of Experts by Minimizing Contrastive Divergence.
    Tieleman (2008), Training Restricted Boltzmann Machines using Approximations to the
    Likelihood Gradient.
"""

from __future__ import annotations

import math

import torch
from pyro import poutine
from pyro.distributions import TorchDistribution
from pyro.infer import ELBO
from pyro.poutine.util import site_is_subsample

from .common import FromDifferentiableLoss, check_particles

__all__ = ["EnergyDistribution", "ContrastiveDivergence", "energy_sites"]


class EnergyDistribution(TorchDistribution):
    """A distribution known up to its normalizer: log p(x) = -F(x) - log Z.

    Subclasses give :meth:`free_energy`, :meth:`gibbs` (Markov chain moves that leave p
    invariant) and :meth:`flip_one` (a point with one unit changed, for the pseudo-likelihood);
    ``log_partition`` is log Z where it is known (exactly or estimated), else NaN, and
    :meth:`log_prob` is then NaN too: nothing silently pretends Z = 1.
    """

    def __init__(self, batch_shape=torch.Size(), event_shape=torch.Size(), log_partition: torch.Tensor | float = math.nan,
                 validate_args=None):
        self.log_partition = torch.as_tensor(log_partition)
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    def free_energy(self, x: torch.Tensor) -> torch.Tensor:
        """F(x), shape ``x.shape[:-event_dim]``."""
        raise NotImplementedError

    def gibbs(self, x: torch.Tensor, steps: int) -> torch.Tensor:
        """``steps`` sweeps of the model's Markov chain from ``x``."""
        raise NotImplementedError

    def flip_one(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with one randomly chosen unit per point changed."""
        raise NotImplementedError

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """-F(x) - log Z (NaN while log Z is unknown)."""
        return -self.free_energy(value) - self.log_partition.to(value.dtype)


def _unwrap(fn):
    while not isinstance(fn, EnergyDistribution) and hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return fn


def energy_sites(trace) -> list[str]:
    """The observed sites of a model trace whose distribution is an :class:`EnergyDistribution`."""
    return [name for name, s in trace.nodes.items()
            if s["type"] == "sample" and s["is_observed"] and isinstance(_unwrap(s["fn"]), EnergyDistribution)]


class ContrastiveDivergence(FromDifferentiableLoss, ELBO):
    """CD-k or persistent CD-k for the :class:`EnergyDistribution` sites of a model.

    Args:
        k: Gibbs sweeps per step (CD-1, CD-25, ...).
        persistent: keep the negative chains from step to step (PCD, Tieleman 2008); they
            start at the first batch's data and are part of :meth:`state_dict`, so a resumed
            run continues them exactly.

    Other observed sites of the model add their negative log-likelihood (a conditional
    part trained by maximum likelihood); latent sites are refused: CD needs their sum
    done inside the energy (an RBM's hidden units), or an ELBO.

    References:
        Hinton (2002), Training Products of Experts by Minimizing Contrastive Divergence.
        Tieleman (2008), Training Restricted Boltzmann Machines using Approximations to
        the Likelihood Gradient.
    """

    def __init__(self, k: int = 1, persistent: bool = False):
        check_particles(k)
        super().__init__(num_particles=1)
        self.k, self.persistent = k, persistent
        self.chains: dict[str, torch.Tensor] = {}

    @property
    def description(self) -> str:
        """``CD-k`` or ``PCD-k``, which checkpoints compare on resume."""
        return f"{'PCD' if self.persistent else 'CD'}-{self.k}"

    def state_dict(self) -> dict:
        """The persistent chains (empty for CD), for checkpoints."""
        return {"chains": {k: v.clone() for k, v in self.chains.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s chains."""
        self.chains = {k: v.clone() for k, v in state["chains"].items()}

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """The negative pseudo-log-likelihood summed over the batch, with CD's gradient.

        Under ``torch.no_grad`` (validation) only the value is computed and persistent
        chains do not move.

        Raises:
            ValueError: the model has latent sites, or no :class:`EnergyDistribution` site.
        """
        model_trace, _ = self._get_trace(model, guide, args, kwargs)
        latent = [name for name, s in model_trace.nodes.items()
                  if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)]
        if latent:
            raise ValueError(f"contrastive divergence trains models whose latents are summed out in the energy; "
                             f"this model samples {', '.join(map(repr, latent))}: train it with an ELBO")
        sites = energy_sites(model_trace)
        if not sites:
            raise ValueError("contrastive divergence needs an observed site whose distribution is an "
                             "EnergyDistribution (e.g. models.rbm's BinaryRBM); this model has none")
        loss = 0.0
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample" or not site["is_observed"] or site_is_subsample(site):
                continue
            scale = site["scale"]
            if name not in sites:
                loss = loss - scale * site["fn"].log_prob(site["value"]).sum()
                continue
            energy, x = _unwrap(site["fn"]), site["value"]
            positive = energy.free_energy(x)
            flipped = energy.flip_one(x)
            units = math.prod(energy.event_shape)
            pll = units * torch.nn.functional.logsigmoid(energy.free_energy(flipped) - positive)
            value = -pll.sum().detach()
            if torch.is_grad_enabled():
                with torch.no_grad():
                    negative = energy.gibbs(self._start(name, x), self.k)
                if self.persistent:
                    self._keep(name, negative)
                surrogate = (positive.sum() - energy.free_energy(negative.detach()).sum())
                value = value + surrogate - surrogate.detach()
            loss = loss + scale * value
        return loss

    def _get_trace(self, model, guide, args, kwargs):  # ELBO's abstract hook: CD draws no guide particles
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        return poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs), guide_trace

    def _start(self, name: str, x: torch.Tensor) -> torch.Tensor:
        if not self.persistent:
            return x
        chains = self.chains.get(name)
        if chains is None or chains.shape[1:] != x.shape[1:] or len(chains) < len(x):
            chains = x.detach().clone() if chains is None or chains.shape[1:] != x.shape[1:] else \
                torch.cat([chains, x[len(chains):].detach()])
            self.chains[name] = chains
        return chains[:len(x)].to(x.device)

    def _keep(self, name: str, negative: torch.Tensor) -> None:
        chains = self.chains[name]
        self.chains[name] = torch.cat([negative.to(chains.device), chains[len(negative):]])
