"""Exact answers for probabilistic PCA, the linear-Gaussian latent model

    z ~ N(0, I_q),    x | z ~ N(W z + mu, sigma^2 I_d),    so    x ~ N(mu, C),  C = W W^T + sigma^2 I_d.

Everything here is closed form, computed in float64, and used to check inference:

- :func:`ml_solution` and :func:`max_log_likelihood`: the maximum-likelihood parameters
  and the maximum itself L* (Tipping & Bishop 1999, eqs. 7-8 and 4).
- :func:`exact_log_likelihood`: log p(x) per data point for any (W, mu, sigma); the
  reference line every variational bound on this model must stay below.
- :func:`exact_posterior`: p(z | x) = N(M^-1 W^T (x - mu), sigma^2 M^-1), M = W^T W + sigma^2 I.
- :func:`elbo_gap`: log p(x) - ELBO(x) = KL(q(z | x) || p(z | x)) for a Gaussian q,
  exactly, with no Monte Carlo noise.
- :func:`subspace_angle`: the largest principal angle between two column spaces, in
  degrees (SciPy's ``subspace_angles``).

scikit-learn's ``PCA`` fits the same model by SVD (its ``score`` is the pPCA
log-likelihood, with the unbiased N-1 covariance); it has no posterior, no gap and no
log-likelihood at parameters other than its own, which is what this module adds.

References:
    Tipping & Bishop (1999), Probabilistic Principal Component Analysis, JRSS B 61(3).
"""

from __future__ import annotations

import math

import torch
from torch.distributions import LowRankMultivariateNormal, MultivariateNormal, kl_divergence

from ..data import check_data

__all__ = ["ml_solution", "max_log_likelihood", "exact_log_likelihood", "exact_posterior", "elbo_gap",
           "subspace_angle"]

_LOG_2PI = math.log(2 * math.pi)


def _sample_covariance_eigh(x: torch.Tensor, q: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, eigenvalues (descending) and eigenvectors of the ML (1/N) sample covariance."""
    check_data(x, "x")
    n, d = x.shape
    if isinstance(q, bool) or not isinstance(q, int) or not 1 <= q < d:
        raise ValueError(f"the latent dimension q must be an integer with 1 <= q < d={d}, got {q!r}")
    if n < 2:
        raise ValueError(f"x needs at least 2 rows to estimate a covariance, got {n}")
    x = x.double()
    mean = x.mean(0)
    centred = x - mean
    evals, evecs = torch.linalg.eigh(centred.T @ centred / n)
    return mean, evals.flip(0).clamp_min(0.0), evecs.flip(1)


def ml_solution(x: torch.Tensor, q: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The maximum-likelihood pPCA parameters for data ``x`` (N, d) with ``q`` latent dimensions.

    sigma^2 is the mean of the d - q smallest eigenvalues of the sample covariance S
    (divided by N), and W = U_q (Lambda_q - sigma^2 I)^(1/2), the rotation R = I; any
    W R with R orthogonal has the same likelihood.

    Returns:
        ``(W, mu, sigma)`` in float64: (d, q), (d,), and a scalar tensor (the standard
        deviation, not the variance).

    References:
        Tipping & Bishop (1999), eqs. (7) and (8).
    """
    mean, evals, evecs = _sample_covariance_eigh(x, q)
    sigma2 = evals[q:].mean()
    if sigma2 <= 0:
        raise ValueError("the data have rank <= q, so the ML noise variance is 0 and the likelihood is unbounded")
    W = evecs[:, :q] * (evals[:q] - sigma2).clamp_min(0.0).sqrt()
    return W, mean, sigma2.sqrt()


def max_log_likelihood(x: torch.Tensor, q: int) -> float:
    """L*/N: the largest mean log-likelihood per data point any pPCA with ``q`` latents reaches on ``x``.

    L*/N = -1/2 [d log 2 pi + sum_{j<=q} log lambda_j + (d - q) log sigma^2 + d],
    with lambda_j the eigenvalues of the ML sample covariance.

    References:
        Tipping & Bishop (1999), eq. (4) at the solution (7)-(8).
    """
    _, evals, _ = _sample_covariance_eigh(x, q)
    d = evals.numel()
    sigma2 = evals[q:].mean()
    return float(-0.5 * (d * _LOG_2PI + evals[:q].log().sum() + (d - q) * sigma2.log() + d))


def _params(W: torch.Tensor, mu: torch.Tensor, sigma) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    W, mu, sigma = (torch.as_tensor(t, dtype=torch.float64).detach() for t in (W, mu, sigma))
    if W.dim() != 2 or mu.shape != (W.shape[0],):
        raise ValueError(f"W must be (d, q) and mu (d,), got W {tuple(W.shape)} and mu {tuple(mu.shape)}")
    if sigma.numel() != 1 or not sigma.item() > 0:
        raise ValueError(f"sigma must be one positive number, got {sigma}")
    return W, mu, sigma.reshape(())


def exact_log_likelihood(x: torch.Tensor, W: torch.Tensor, mu: torch.Tensor, sigma) -> torch.Tensor:
    """log p(x_n) = log N(x_n; mu, W W^T + sigma^2 I) for each row of ``x``, float64, shape (N,).

    Uses torch's ``LowRankMultivariateNormal`` (Woodbury identity), so d in the
    thousands costs O(N d q).
    """
    W, mu, sigma = _params(W, mu, sigma)
    check_data(x, "x", dim=W.shape[0])
    diag = (sigma**2).expand(W.shape[0])
    return LowRankMultivariateNormal(mu, W, diag).log_prob(x.double())


def exact_posterior(x: torch.Tensor, W: torch.Tensor, mu: torch.Tensor, sigma) -> MultivariateNormal:
    """p(z | x_n) for each row: N(M^-1 W^T (x_n - mu), sigma^2 M^-1), M = W^T W + sigma^2 I.

    Returns a float64 ``MultivariateNormal`` with batch shape (N,); its covariance is
    the same for every x, only the mean depends on it.

    References:
        Tipping & Bishop (1999), eq. (6) and section 3.2.
    """
    W, mu, sigma = _params(W, mu, sigma)
    check_data(x, "x", dim=W.shape[0])
    q = W.shape[1]
    M = W.T @ W + sigma**2 * torch.eye(q, dtype=W.dtype)
    loc = torch.linalg.solve(M, W.T @ (x.double() - mu).T).T
    cov = sigma**2 * torch.linalg.inv(M)
    return MultivariateNormal(loc, covariance_matrix=(cov + cov.T) / 2)


def elbo_gap(x: torch.Tensor, q_loc: torch.Tensor, q_scale_tril: torch.Tensor, W: torch.Tensor,
             mu: torch.Tensor, sigma) -> torch.Tensor:
    """log p(x_n) - ELBO(x_n) = KL(q(z | x_n) || p(z | x_n)) for a Gaussian guide, exactly.

    Args:
        x: data (N, d).
        q_loc: the guide's means (N, q).
        q_scale_tril: the guide's Cholesky factors, (q, q) shared or (N, q, q); a
            diagonal guide passes ``torch.diag_embed(scale)``.
        W, mu, sigma: the model's parameters.

    Returns:
        The gap per data point, float64, shape (N,); ELBO(x) = exact_log_likelihood - gap.
    """
    post = exact_posterior(x, W, mu, sigma)
    q_loc = torch.as_tensor(q_loc).detach().double()
    if q_loc.shape != post.loc.shape:
        raise ValueError(f"q_loc must have shape {tuple(post.loc.shape)}, got {tuple(q_loc.shape)}")
    q = MultivariateNormal(q_loc, scale_tril=torch.as_tensor(q_scale_tril).detach().double())
    return kl_divergence(q, post)


def subspace_angle(A, B) -> float:
    """The largest principal angle, in degrees, between the column spaces of ``A`` and ``B`` (d, q).

    0 means the same subspace; invariant to rotations and scalings of the columns.
    """
    from scipy.linalg import subspace_angles

    A = torch.as_tensor(A).detach().double().numpy()
    B = torch.as_tensor(B).detach().double().numpy()
    if A.ndim != 2 or B.ndim != 2 or A.shape[0] != B.shape[0]:
        raise ValueError(f"A and B must be (d, q) matrices with the same d, got {A.shape} and {B.shape}")
    return float(math.degrees(subspace_angles(A, B).max()))
