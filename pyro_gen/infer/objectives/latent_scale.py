"""beta-VAE weights and KL annealing, as a Pyro handler over any objective.

Estimator: ``LatentScale`` scales the log density of every latent site in model and
guide, which turns any ELBO into ``E[log p(x|z)] - beta KL``. Pyro has ``poutine.scale``,
but it scales observed sites too.

References:
    Higgins et al. (2017), beta-VAE.
    Bowman et al. (2016), Generating Sentences from a Continuous Space.
"""

from __future__ import annotations

import torch
from pyro.poutine.messenger import Messenger

__all__ = ["LatentScale"]


class LatentScale(Messenger):
    """Multiplies the log density of every latent (unobserved) sample site by ``weight``.

    Applied to both model and guide it turns the ELBO into
    ``E[log p(x|z)] - weight * KL(q(z|x) || p(z))``: the beta-VAE objective
    (Higgins et al. 2017), and KL annealing when ``weight`` ramps from 0 to 1
    (Bowman et al. 2016).
    """

    def __init__(self, weight: float | torch.Tensor):
        super().__init__()
        # a 0-d tensor is kept as it is: the fast path (pyro_gen.infer.fastpath) records it as an input
        self.weight = weight if torch.is_tensor(weight) else float(weight)

    def _process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = self.weight * msg["scale"]
