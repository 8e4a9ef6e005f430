"""FactorVAE: the ELBO plus a total-correlation penalty estimated by a discriminator.

Estimator: ``FactorVAE_ELBO`` (Kim & Mnih 2018). A discriminator D is trained to tell codes
drawn from the aggregate posterior q(z) (the guide's draws for a batch) from codes drawn from
the product of its marginals (the same draws with each dimension shuffled across the batch).
At its optimum logit D(z) = log q(z) - log prod_d q(z_d), so the batch mean of logit D(z)
estimates the total correlation, and

    loss = -ELBO + gamma * sum_i logit D(z_i).

The discriminator trains in the same loop: each call that builds a gradient (a training step)
first takes one Adam step of D on the batch's codes (detached), then scores the codes with a frozen copy of D's
weights, so the model's gradient never moves D and D's never moves the model. D is
an MLP built at the first call, for the codes' width; it is part of the objective's
``state_dict``, which ``fit`` saves in its checkpoints. Kim & Mnih shuffle a second batch; here
the shuffled codes come from the same batch (half the data per step, the same estimator).
Pyro has no adversarial objective.

References:
    Kim & Mnih (2018), Disentangling by Factorising.
"""

from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
from pyro.infer import Trace_ELBO
from torch import nn

from .common import FromDifferentiableLoss, elbo_terms, latent_codes

__all__ = ["FactorVAE_ELBO", "permute_dims"]


def permute_dims(z: torch.Tensor) -> torch.Tensor:
    """Each column of z (N, D) shuffled across the rows independently: a draw from the product
    of the marginals of the rows' distribution."""
    n = len(z)
    index = torch.argsort(torch.rand(z.shape, device=z.device), dim=0)
    return torch.gather(z, 0, index) if n > 1 else z


class FactorVAE_ELBO(FromDifferentiableLoss, Trace_ELBO):
    """``-ELBO + gamma * sum_i logit D(z_i)``, with the discriminator D trained alongside.

    Args:
        gamma: the weight of the total correlation (> 0; the paper's 10 to 100 on dSprites).
        hidden: the discriminator's hidden widths (LeakyReLU(0.2) between them).
        lr, betas: D's Adam settings (the paper's 1e-4 and (0.5, 0.9)).
    """

    def __init__(self, gamma: float = 10.0, hidden: Sequence[int] = (256, 256, 256), lr: float = 1e-4,
                 betas: tuple[float, float] = (0.5, 0.9)):
        if not math.isfinite(gamma) or gamma <= 0:
            raise ValueError(f"gamma must be positive, got {gamma}")
        super().__init__(num_particles=1)
        self.gamma, self.hidden, self.lr, self.betas = float(gamma), tuple(int(h) for h in hidden), lr, tuple(betas)
        self.discriminator: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.last_accuracy = math.nan  #: D's accuracy on the last training batch (real vs shuffled)

    @property
    def description(self) -> str:
        return f"FactorVAE_ELBO(gamma={self.gamma:g})"

    def _build(self, dim: int, like: torch.Tensor) -> None:
        widths = [dim, *self.hidden]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.LeakyReLU(0.2)]
        layers.append(nn.Linear(widths[-1], 1))
        self.discriminator = nn.Sequential(*layers).to(dtype=like.dtype, device=like.device)
        self.optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=self.lr, betas=self.betas)

    def state_dict(self) -> dict:
        """The discriminator's width, weights and Adam state, for a checkpoint (``{"dim": None}`` before the first call)."""
        if self.discriminator is None:
            return {"dim": None}
        return {"dim": self.discriminator[0].in_features, "discriminator": self.discriminator.state_dict(),
                "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Rebuild the discriminator from a checkpoint (drawing no random numbers) and load its state."""
        if state["dim"] is None:
            self.discriminator = self.optimizer = None
            return
        weights = state["discriminator"]
        with torch.random.fork_rng(devices=[]):  # building draws initial weights: keep the global stream as it was
            self._build(state["dim"], next(iter(weights.values())))
        self.discriminator.load_state_dict(weights)
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))  # Adam would share the moment tensors

    def _train_discriminator(self, z: torch.Tensor) -> None:
        real, fake = z.detach(), permute_dims(z.detach())
        logits = self.discriminator(torch.cat([real, fake])).squeeze(-1)
        target = torch.cat([torch.ones(len(real)), torch.zeros(len(fake))]).to(logits)
        self.optimizer.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(logits, target).backward()
        self.optimizer.step()
        self.last_accuracy = ((logits > 0) == (target > 0.5)).float().mean().item()

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        ((model_trace, guide_trace),) = list(self._get_traces(model, guide, args, kwargs))
        log_lik, log_prior, log_q = elbo_terms(model_trace, guide_trace)
        z = torch.cat([value for _, value, _ in latent_codes(guide_trace, "FactorVAE's discriminator")], dim=-1)
        if self.discriminator is None:
            self._build(z.shape[-1], z)
        elif self.discriminator[0].in_features != z.shape[-1]:
            raise ValueError(f"the codes have {z.shape[-1]} dimensions, but the discriminator was built for "
                             f"{self.discriminator[0].in_features}: use a new FactorVAE_ELBO per model")
        if torch.is_grad_enabled():
            with torch.enable_grad():
                self._train_discriminator(z)
        # D's weights as constants (copies: D's next step must not touch this graph)
        frozen = {k: v.detach().clone() for k, v in self.discriminator.named_parameters()}
        tc = torch.func.functional_call(self.discriminator, frozen, (z,)).squeeze(-1)
        return -(log_lik + log_prior - log_q).sum() + self.gamma * tc.sum()
