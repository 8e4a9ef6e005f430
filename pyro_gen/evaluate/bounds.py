"""Check, per data point, that ELBO <= IWAE-k <= log p(x) where log p(x) is known exactly.

What is guaranteed, and therefore what is checked:

- ELBO <= IWAE-k holds for every draw when both are computed from the *same* k
  particles: the mean of log w_i is at most the log of the mean of w_i (Jensen). So
  ``elbo_le_iwae`` is exact, with no statistical margin.
- IWAE-k <= log p(x) holds only in expectation: E[log (1/k) sum_i w_i] <= log E[w] =
  log p(x); a single estimate can exceed log p(x). The check averages ``replicates``
  independent IWAE-k estimates per point and asks that the average not exceed log p(x)
  by more than a margin as improbable as ``z`` standard deviations of a normal (z = 5:
  about 3e-7 per point, so hundreds of points rarely see a false alarm). The standard
  error comes from the replicates themselves, so the margin uses Student's t with
  ``replicates - 1`` degrees of freedom (with 4 replicates "5 SE" would be exceeded by
  chance at about 1% of points). A float tolerance covers an exact guide whose weights
  all equal p(x).

References:
    Burda, Grosse & Salakhutdinov (2016), Importance Weighted Autoencoders, Theorem 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..data import check_data
from .estimates import _modules_eval, _restore, per_point_log_weights, plate_nesting

__all__ = ["BoundCheck", "check_bounds"]


@dataclass
class BoundCheck:
    """Per-point bounds (float64, shape (N,)) and whether they are ordered.

    Attributes:
        elbo: the ELBO estimate, the mean of all ``replicates * k`` log weights.
        iwae: the mean of ``replicates`` IWAE-k estimates; ``iwae_se`` its standard error.
        exact: the exact log p(x) passed in.
        elbo_le_iwae, iwae_le_exact: boolean masks per point.
    """

    elbo: torch.Tensor
    iwae: torch.Tensor
    iwae_se: torch.Tensor
    exact: torch.Tensor
    elbo_le_iwae: torch.Tensor
    iwae_le_exact: torch.Tensor
    k: int
    replicates: int

    @property
    def ordered(self) -> bool:
        """ELBO <= IWAE-k <= log p(x) at every data point."""
        return bool(self.elbo_le_iwae.all() and self.iwae_le_exact.all())

    def summary(self) -> dict:
        """The check as a dict for reports: ``ordered``, ``k``, ``replicates``, ``n``, the means of
        ``elbo``, ``iwae`` and ``exact`` over the points, and the counts of points with
        ``elbo_le_iwae`` and ``iwae_le_exact``."""
        return {"ordered": self.ordered, "k": self.k, "replicates": self.replicates, "n": self.exact.numel(),
                "elbo": self.elbo.mean().item(), "iwae": self.iwae.mean().item(), "exact": self.exact.mean().item(),
                "elbo_le_iwae": int(self.elbo_le_iwae.sum()), "iwae_le_exact": int(self.iwae_le_exact.sum())}


@torch.no_grad()
def check_bounds(model, guide, x: torch.Tensor, exact_log_p: torch.Tensor, k: int = 100, replicates: int = 20,
                 z: float = 5.0, rtol: float = 1e-5) -> BoundCheck:
    """Estimate ELBO and IWAE-k per point and check ELBO <= IWAE-k <= exact log p(x).

    Args:
        model, guide: a pair with one local latent per data point (as :mod:`pyro_gen.evaluate` needs).
        x: data (N, D).
        exact_log_p: the exact log p(x_n), shape (N,).
        k: particles per IWAE estimate.
        replicates: independent IWAE-k estimates per point (>= 2, for the standard error).
        z: how improbable (in normal standard deviations) an IWAE average above
            log p(x) must be before the point counts as out of order.
        rtol: float tolerance relative to ``|log p(x)|`` on both comparisons.
    """
    check_data(x, "x")
    exact = torch.as_tensor(exact_log_p).detach().double().to(x.device)
    if exact.shape != (len(x),):
        raise ValueError(f"exact_log_p must have shape ({len(x)},), got {tuple(exact.shape)}")
    if replicates < 2 or k < 1:
        raise ValueError(f"need k >= 1 and replicates >= 2, got k={k}, replicates={replicates}")
    mods, was = _modules_eval(model, guide)
    try:
        nesting = plate_nesting(model, guide, x)
        iw, mean_log_w = [], torch.zeros(len(x), dtype=torch.float64, device=x.device)
        for _ in range(replicates):  # one replicate per pass keeps memory at k * N * D
            log_w = per_point_log_weights(model, guide, x, k, nesting).double()
            iw.append(torch.logsumexp(log_w, 0) - math.log(k))
            mean_log_w += log_w.mean(0) / replicates
    finally:
        _restore(mods, was)
    iw = torch.stack(iw)
    iwae, se = iw.mean(0), iw.std(0) / math.sqrt(replicates)
    from scipy import stats

    margin = float(stats.t.isf(stats.norm.sf(z), replicates - 1)) * se
    tol = rtol * exact.abs()
    return BoundCheck(elbo=mean_log_w, iwae=iwae, iwae_se=se, exact=exact,
                      elbo_le_iwae=mean_log_w <= iwae + tol, iwae_le_exact=iwae <= exact + margin + tol,
                      k=k, replicates=replicates)
