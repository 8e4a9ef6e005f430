"""The sigmoid belief network with one layer of binary latents: a Helmholtz machine.

Generative model, for each data point x_n::

    z_n ~ Bernoulli(sigmoid(b))                     (z_dim independent binary units)
    x_n ~ Bernoulli(sigmoid(W z_n + c))             (the decoder: linear, or an MLP)

Amortized guide (the recognition network)::

    q(z_n | x_n) = Bernoulli(sigmoid(encoder(x_n)))  (factorized over the units)

No latent is reparameterizable, so the objectives are those that work with discrete
guides: ``graph`` (score function with baselines), ``vimco:k`` (leave-one-out
baselines, Mnih & Rezende 2016) and ``rws:k`` (reweighted wake-sleep, Bornschein &
Bengio 2015). With at most :data:`EXACT_UNITS` latents, :meth:`SBN.enumerate_log_likelihood`
sums all 2^z_dim configurations: the answer the estimators are tested against.

References:
    Neal (1992), Connectionist learning of belief networks.
    Dayan, Hinton, Neal & Zemel (1995), The Helmholtz Machine.
    Mnih & Gregor (2014), Neural Variational Inference and Learning in Belief Networks.
    Mnih & Rezende (2016), Variational Inference for Monte Carlo Objectives.
    Bornschein & Bengio (2015), Reweighted Wake-Sleep.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, pyro_method
from torch import nn

from models import mlp
from pyro_gen.data import check_binary

__all__ = ["SBN", "OBJECTIVES", "EXACT_UNITS", "examples"]

#: The objectives for a discrete guide (the reparameterized ones refuse it).
OBJECTIVES = ["graph", "vimco:3", "rws:3"]
#: The most latent units for which :meth:`SBN.enumerate_log_likelihood` enumerates all configurations.
EXACT_UNITS = 16



class SBN(PyroModule):
    """A one-layer sigmoid belief network over binary data with a factorized Bernoulli guide.

    Args:
        x_dim: observed binary dimensions.
        z_dim: binary latent units (200 in Mnih & Rezende 2016's "SBN 200").
        hidden: hidden widths of the encoder and decoder (tanh); ``()``, the default, makes
            both linear, the classical Helmholtz machine.

    Examples:
        >>> from pyro_gen import data, fit
        >>> ds = data.load("digits")
        >>> sbn = SBN(x_dim=64, z_dim=8)
        >>> result = fit(sbn.model, sbn.guide, ds.train, objective="vimco:4", epochs=1, progress=False)
        >>> sbn.enumerate_log_likelihood(ds.test[:3]).shape
        torch.Size([3])
    """

    def __init__(self, x_dim: int = 784, z_dim: int = 200, hidden: Sequence[int] = ()):
        super().__init__()
        if x_dim < 1 or z_dim < 1:
            raise ValueError(f"x_dim and z_dim must be positive, got {x_dim} and {z_dim}")
        self.x_dim, self.z_dim = int(x_dim), int(z_dim)
        self.prior_logits = nn.Parameter(torch.zeros(z_dim))
        self.decoder = mlp([z_dim, *reversed(tuple(hidden)), x_dim], "tanh")
        self.encoder = mlp([x_dim, *hidden, z_dim], "tanh")

    # --- the two Pyro programs -------------------------------------------------------

    @pyro_method
    def model(self, x: torch.Tensor) -> None:
        """In the plate ``"data"``: ``"z"`` from the factorized Bernoulli prior, ``"x"`` observed
        from Bernoulli(sigmoid(decoder(z)))."""
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z), validate_args=False).to_event(1), obs=x)

    @pyro_method
    def guide(self, x: torch.Tensor) -> None:
        """In the plate ``"data"``: ``"z"`` from the encoder's factorized Bernoulli q(z | x)."""
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.posterior(x))

    def prior(self) -> dist.TorchDistribution:
        """p(z): independent Bernoulli units with learned logits."""
        return dist.Bernoulli(logits=self.prior_logits).to_event(1)

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        """q(z | x): independent Bernoulli units with the encoder's logits."""
        return dist.Bernoulli(logits=self.encoder(x)).to_event(1)

    def check_data(self, x: torch.Tensor) -> None:
        """Rows of x_dim binary values (0 or 1)."""
        check_binary(x, "the sigmoid belief network", self.x_dim)

    # --- uses of a trained model ---------------------------------------------------------

    @torch.no_grad()
    def enumerate_log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) for each row, summing all 2^z_dim latent configurations (z_dim <= EXACT_UNITS).

        Raises:
            ValueError: for more than :data:`EXACT_UNITS` latent units.
        """
        if self.z_dim > EXACT_UNITS:
            raise ValueError(f"exact log p(x) enumerates 2^z_dim configurations; z_dim={self.z_dim} is more "
                             f"than {EXACT_UNITS}: estimate it with pyro_gen.evaluate.log_likelihood")
        self.check_data(x)
        configs = torch.tensor(list(itertools.product((0.0, 1.0), repeat=self.z_dim)), dtype=x.dtype)
        log_prior = self.prior().log_prob(configs)  # (2^H,)
        logits = self.decoder(configs)  # (2^H, D)
        log_lik = dist.Bernoulli(logits=logits.unsqueeze(1), validate_args=False).to_event(1).log_prob(x)  # (2^H, N)
        return torch.logsumexp(log_prior.unsqueeze(1) + log_lik, dim=0)

    @torch.no_grad()
    def posterior_probs(self, x: torch.Tensor) -> torch.Tensor:
        """q(z_u = 1 | x) for each row and unit."""
        return torch.sigmoid(self.encoder(x))

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The mean of p(x | z): pixel probabilities."""
        return torch.sigmoid(self.decoder(z))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of p(x | z) at the guide's most probable z."""
        return self.decode((self.posterior_probs(x) > 0.5).to(x.dtype))

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True) -> torch.Tensor:
        """n draws: z from the prior, then x's probabilities (or x itself, ``mean=False``)."""
        probs = self.decode(self.prior().sample((n,)))
        return probs if mean else torch.bernoulli(probs)


def examples(seed: int = 0) -> dict[str, tuple[SBN, torch.Tensor]]:
    """Small instances with matching data, for the contract test over every model."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(16, 20, generator=g) < 0.3).float()
    torch.manual_seed(seed)
    return {"linear": (SBN(20, 6), x), "mlp": (SBN(20, 6, hidden=(12,)), x)}


# --- the command line: python -m inference.fit sbn (see models/__init__.py) ---------------------


def cli_options(parser) -> None:
    """The sigmoid belief network's flags."""
    g = parser.add_argument_group("sigmoid belief network")
    g.add_argument("--latent-dim", type=int, default=200, help="binary latent units")
    g.add_argument("--hidden", type=int, nargs="*", default=[],
                   help="hidden widths of encoder and decoder (none: linear, the Helmholtz machine)")


def default_objective(args) -> str:
    return "vimco:5"


def from_cli(args, ds) -> SBN:
    """The SBN for binary data set ``ds`` (grey data need ``--binarize dynamic``)."""
    if not ds.binary and args.binarize != "dynamic":
        raise ValueError(f"the sigmoid belief network models binary data; {ds.name} is not binary: "
                         "pass --binarize dynamic, or use --data binarized-mnist")
    return SBN(x_dim=ds.dim, z_dim=args.latent_dim, hidden=args.hidden)
