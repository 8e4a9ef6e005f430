"""DIP-VAE: the ELBO plus a penalty that pulls the covariance of the aggregate posterior to the identity.

Estimator: ``DIPVAE_ELBO`` (Kumar, Sattigeri & Balakrishnan 2018). The aggregate posterior
q(z) = mean_n q(z | x_n) of a Gaussian guide has covariance

    Cov_q(z) = Cov_n[mu(x_n)] + mean_n diag sigma^2(x_n),

computed over the batch from the guide's means and variances (no sampling: the moments are
exact for the batch). DIP-VAE-II penalizes ``lambda_od * sum_{i != j} C_ij^2 + lambda_d *
sum_i (C_ii - 1)^2`` with lambda_d = lambda_od (``kind="ii"``); DIP-VAE-I uses the covariance of
the means alone and lambda_d = 10 lambda_od (``kind="i"``). The loss is summed over the batch
like every objective here, so the penalty (a property of the batch) is counted N times. The guide
must give each latent dimension a mean and a variance (a diagonal Gaussian, or any distribution
with ``mean`` and ``variance``); the ELBO part is reparameterized. Pyro has no such objective.

References:
    Kumar, Sattigeri & Balakrishnan (2018), Variational Inference of Disentangled Latent Concepts
    from Unlabeled Observations.
"""

from __future__ import annotations

import math

import torch
from pyro.infer import Trace_ELBO

from .common import FromDifferentiableLoss, elbo_terms, latent_codes

__all__ = ["DIPVAE_ELBO", "aggregate_covariance"]


def aggregate_covariance(guide_trace, kind: str = "ii") -> torch.Tensor:
    """The covariance (D, D) of the batch's aggregate posterior (``"ii"``), or of the guide's means
    alone (``"i"``), all latent sites of the guide trace together."""
    means, variances = [], []
    for name, value, site in latent_codes(guide_trace, "DIP-VAE"):
        fn = site["fn"]
        try:
            means.append(fn.mean.reshape(len(value), -1))
            variances.append(fn.variance.reshape(len(value), -1))
        except NotImplementedError:
            raise ValueError(f"DIP-VAE needs the mean and variance of q(z | x); guide site {name!r} "
                             f"({type(fn).__name__}) has none in closed form") from None
    mu, var = torch.cat(means, -1), torch.cat(variances, -1)
    centred = mu - mu.mean(0)
    cov = centred.T @ centred / len(mu)
    return cov + torch.diag(var.mean(0)) if kind == "ii" else cov


class DIPVAE_ELBO(FromDifferentiableLoss, Trace_ELBO):
    """``-ELBO + N (lambda_od sum_{i != j} C_ij^2 + lambda_d sum_i (C_ii - 1)^2)``, C the aggregate
    posterior's covariance over the batch.

    Args:
        lambda_od: the weight of the off-diagonal terms (> 0; the paper's 10 on dSprites for DIP-VAE-II).
        kind: ``"ii"`` (the aggregate posterior's covariance; lambda_d = lambda_od) or ``"i"`` (the
            means' covariance; lambda_d = 10 lambda_od).
    """

    def __init__(self, lambda_od: float = 10.0, kind: str = "ii"):
        if not math.isfinite(lambda_od) or lambda_od <= 0:
            raise ValueError(f"lambda_od must be positive, got {lambda_od}")
        if kind not in ("i", "ii"):
            raise ValueError(f"unknown DIP-VAE kind {kind!r}; valid choices: i, ii")
        super().__init__(num_particles=1)
        self.lambda_od, self.kind = float(lambda_od), kind
        self.lambda_d = self.lambda_od * (10.0 if kind == "i" else 1.0)

    @property
    def description(self) -> str:
        return f"DIPVAE_ELBO(lambda_od={self.lambda_od:g}, kind={self.kind})"

    def penalty(self, guide_trace) -> torch.Tensor:
        """The batch's penalty, ``lambda_od sum_{i != j} C_ij^2 + lambda_d sum_i (C_ii - 1)^2``."""
        cov = aggregate_covariance(guide_trace, self.kind)
        diag = torch.diagonal(cov)
        return self.lambda_od * (cov.pow(2).sum() - diag.pow(2).sum()) + self.lambda_d * (diag - 1).pow(2).sum()

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        ((model_trace, guide_trace),) = list(self._get_traces(model, guide, args, kwargs))
        log_lik, log_prior, log_q = elbo_terms(model_trace, guide_trace)
        return -(log_lik + log_prior - log_q).sum() + log_lik.numel() * self.penalty(guide_trace)
