"""beta-TCVAE: the ELBO with its total-correlation term weighted, by minibatch-weighted sampling.

Estimator: ``BetaTC_ELBO`` (Chen et al. 2018). The KL term of the ELBO, averaged over the data,
splits into the index-code mutual information, the total correlation
``TC = KL(q(z) || prod_d q(z_d))`` of the aggregate posterior q(z) = mean_n q(z | x_n), and the
dimension-wise KL. beta-TCVAE weighs TC by beta and leaves the other two at 1:

    loss = -ELBO + (beta - 1) * TC.

q(z) and its marginals q(z_d) are sums over the whole data set; minibatch-weighted sampling
(Chen et al.'s appendix C.1) estimates them from a batch of N points out of M: point i's own
density gets weight 1/M and each of the N - 1 others (M - 1) / (M (N - 1)),

    log q(z_i) ~ logsumexp_j [log q(z_i | x_j) + log w_ij],

and the same per dimension; a batch that is the whole data set gives the exact value. With a
plate over the batch alone (M = N, as ``fit`` trains a model whose plate is ``len(x)``) every
weight is 1/N: Chen et al.'s own MWS estimator, whose weights are all 1/(NM), up to a constant
that leaves the gradient unchanged. The
guide must factorize over the latent dimensions (a diagonal Gaussian, or any ``Independent``
of per-dimension distributions) so that each q(z_d | x_j) can be scored; a flow guide is
refused by name. M is the size of the data plate (``pyro.plate("data", M, subsample=...)``),
else ``dataset_size``. Pyro has no estimator of TC.

References:
    Chen, Li, Grosse & Duvenaud (2018), Isolating Sources of Disentanglement in Variational
    Autoencoders.
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import Independent
from pyro.infer import Trace_ELBO

from .common import FromDifferentiableLoss, elbo_terms, latent_codes

__all__ = ["BetaTC_ELBO", "total_correlation"]


def _per_dimension(name: str, site: dict):
    """The site's distribution as a batch of per-dimension ones, shape (N, *event)."""
    fn = site["fn"]
    while isinstance(fn, Independent):
        fn = fn.base_dist
    if tuple(fn.batch_shape) != tuple(site["value"].shape) or not fn.has_rsample:
        raise ValueError(f"the total correlation needs q(z | x) to factorize over the latent dimensions, each "
                         f"reparameterized (e.g. a diagonal Normal); guide site {name!r} is "
                         f"{type(site['fn']).__name__}, which does not")
    return fn


def _log_weights(n: int, size: int, like: torch.Tensor) -> torch.Tensor:
    """log w_ij of minibatch-weighted sampling: 1/M on the diagonal, (M - 1) / (M (N - 1)) off it."""
    if n > size:
        raise ValueError(f"a batch of {n} points cannot come from a data set of {size}: give dataset_size")
    w = torch.full((n, n), (size - 1) / (size * max(n - 1, 1)), dtype=like.dtype, device=like.device)
    w.fill_diagonal_(1.0 / size)
    return w.log()


def total_correlation(guide_trace, dataset_size: int | None = None) -> torch.Tensor:
    """The minibatch-weighted-sampling estimate of each point's ``log q(z_i) - sum_d log q(z_id)``
    (shape (N,)), whose mean over the batch estimates the total correlation of q(z); the codes z_i
    are the guide trace's latent values, all its latent sites together."""
    joint = marginal = None
    for name, value, site in latent_codes(guide_trace, "the total correlation"):
        fn = _per_dimension(name, site)
        n = len(value)
        plate = next(f for f in site["cond_indep_stack"] if f.vectorized)
        log_w = _log_weights(n, dataset_size or plate.size, value)
        # log q(z_id | x_j) for all pairs (i, j) and dimensions d: (N, N, D)
        pairs = fn.log_prob(site["value"].unsqueeze(1)).reshape(n, n, -1)
        site_joint = pairs.sum(-1)
        site_marginal = torch.logsumexp(pairs + log_w.unsqueeze(-1), dim=1).sum(-1)
        joint = site_joint if joint is None else joint + site_joint
        marginal = site_marginal if marginal is None else marginal + site_marginal
    return torch.logsumexp(joint + log_w, dim=1) - marginal


class BetaTC_ELBO(FromDifferentiableLoss, Trace_ELBO):
    """``-ELBO + (beta - 1) * TC``, TC by minibatch-weighted sampling (Chen et al. 2018), summed
    over the batch; gradients are reparameterized. beta = 1 is the ELBO.

    Args:
        beta: the weight of the total correlation, > 0 (the paper's 6 on dSprites).
        dataset_size: M, the number of data points, where the data plate does not say it.
    """

    def __init__(self, beta: float = 6.0, dataset_size: int | None = None):
        if not math.isfinite(beta) or beta <= 0:
            raise ValueError(f"beta must be a positive number, got {beta}")
        if dataset_size is not None and dataset_size < 1:
            raise ValueError(f"dataset_size must be >= 1, got {dataset_size}")
        super().__init__(num_particles=1)
        self.beta, self.dataset_size = float(beta), dataset_size

    @property
    def description(self) -> str:
        return f"BetaTC_ELBO(beta={self.beta:g})"

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        ((model_trace, guide_trace),) = list(self._get_traces(model, guide, args, kwargs))
        log_lik, log_prior, log_q = elbo_terms(model_trace, guide_trace)
        loss = -(log_lik + log_prior - log_q).sum()
        if self.beta != 1.0:
            loss = loss + (self.beta - 1.0) * total_correlation(guide_trace, self.dataset_size).sum()
        return loss
