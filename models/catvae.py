"""A VAE with categorical latents (Jang, Gu & Poole 2017; Maddison, Mnih & Teh 2017).

Generative model, for each data point x_n::

    z_{n,v} ~ OneHotCategorical(1/K)       v = 1..n_vars  (n_vars one-hot codes of K classes)
    x_n     ~ Bernoulli(decoder(z_n))      (the codes concatenated)

Amortized guide::

    q(z_{n,v} | x_n) = OneHotCategorical(softmax(encoder(x_n)_v))

The discrete model trains with the estimators for discrete guides (``vimco:k``,
``graph``, ``rws:k``). With ``relaxed=True`` it trains instead on the Concrete
relaxation: while the module is in training mode, prior and guide are
ExpRelaxedCategorical (the Concrete distribution in log space, which keeps the
densities finite at low temperatures) with temperature ``temperature``, so the
reparameterized objectives (``trace``, ``iwae:k``) apply, and :meth:`CategoricalVAE.anneal`
lowers the temperature over the epochs. In ``eval()`` mode the model is always the
discrete one: held-out bounds are bounds on the true discrete model, not the relaxed one.

References:
    Jang, Gu & Poole (2017), Categorical Reparameterization with Gumbel-Softmax.
    Maddison, Mnih & Teh (2017), The Concrete Distribution.
    Mnih & Rezende (2016), Variational Inference for Monte Carlo Objectives.
"""

from __future__ import annotations

import math
from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import TorchDistributionMixin
from pyro.nn import PyroModule, pyro_method
from torch import nn
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical as _TorchExpRelaxed

from models import mlp
from pyro_gen.data import check_binary

__all__ = ["CategoricalVAE", "ExpRelaxedCategorical", "OBJECTIVES", "examples"]

#: The objectives of the discrete model; a relaxed one lists its own in ``.objectives``.
OBJECTIVES = ["vimco:3", "graph", "rws:3"]


class ExpRelaxedCategorical(_TorchExpRelaxed, TorchDistributionMixin):
    """torch's ExpRelaxedCategorical (log of a Concrete sample; Maddison et al. 2017) as a Pyro
    distribution: Pyro wraps ``RelaxedOneHotCategorical``, whose density underflows at low
    temperatures, but not this log-space form."""



class CategoricalVAE(PyroModule):
    """A VAE whose latent code is ``n_vars`` categorical variables of ``n_classes`` classes each.

    Args:
        x_dim: observed binary dimensions.
        n_vars, n_classes: the code: ``n_vars`` one-hot vectors of length ``n_classes``
            (Jang et al. 2017 use 20 or 30 of 10 classes on MNIST).
        hidden: hidden widths of the encoder (the decoder mirrors them).
        relaxed: train on the Concrete relaxation (see the module docstring).
        temperature: the starting temperature of the relaxation (> 0).
        min_temperature, anneal_rate: :meth:`anneal` sets the temperature to
            ``max(min_temperature, temperature * exp(-anneal_rate * epoch))`` (Jang et al. 2017).

    Examples:
        >>> from pyro_gen import data, fit
        >>> ds = data.load("digits")
        >>> vae = CategoricalVAE(x_dim=64, n_vars=4, n_classes=5, hidden=(32,), relaxed=True)
        >>> result = fit(vae.model, vae.guide, ds.train, epochs=2, callback=vae.anneal, progress=False)
        >>> round(vae.temperature.item(), 4)
        0.8187
        >>> CategoricalVAE(x_dim=64, relaxed=True, temperature=0.0)
        Traceback (most recent call last):
        ...
        ValueError: the temperature must be positive, got 0.0
    """

    def __init__(self, x_dim: int = 784, n_vars: int = 20, n_classes: int = 10, hidden: Sequence[int] = (512, 256),
                 relaxed: bool = False, temperature: float = 1.0, min_temperature: float = 0.5,
                 anneal_rate: float = 0.1):
        super().__init__()
        if n_vars < 1 or n_classes < 2:
            raise ValueError(f"the code needs n_vars >= 1 variables of n_classes >= 2 classes, "
                             f"got {n_vars} and {n_classes}")
        for name, value in (("temperature", temperature), ("min_temperature", min_temperature)):
            if not value > 0:
                raise ValueError(f"the {name.replace('_', ' ')} must be positive, got {value}")
        if anneal_rate < 0:
            raise ValueError(f"anneal_rate must be >= 0, got {anneal_rate}")
        self.x_dim, self.n_vars, self.n_classes, self.relaxed = int(x_dim), int(n_vars), int(n_classes), bool(relaxed)
        self.start_temperature, self.min_temperature, self.anneal_rate = float(temperature), float(min_temperature), float(anneal_rate)
        # a buffer: checkpointed with the weights, so a resumed run continues at the same temperature
        self.register_buffer("temperature", torch.tensor(float(temperature)))
        self.encoder = mlp([x_dim, *hidden, n_vars * n_classes])
        self.decoder = mlp([n_vars * n_classes, *reversed(tuple(hidden)), x_dim])
        self.objectives = ["trace", "iwae:3"] if relaxed else OBJECTIVES

    @property
    def z_dim(self) -> int:
        """The length of the flattened code, n_vars * n_classes."""
        return self.n_vars * self.n_classes

    # --- the two Pyro programs -------------------------------------------------------

    @pyro_method
    def model(self, x: torch.Tensor) -> None:
        """In the plate ``"data"``: the code ``"z"`` (n_vars, n_classes) from the uniform prior, then
        ``"x"`` from Bernoulli(decoder(z)). Relaxed and training: z is the log of a Concrete sample."""
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self._code(x.new_zeros(self.n_vars, self.n_classes)))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(self._one_hot(z)), validate_args=False).to_event(1),
                        obs=x)

    @pyro_method
    def guide(self, x: torch.Tensor) -> None:
        """In the plate ``"data"``: ``"z"`` from the encoder's categoricals (relaxed while training if set)."""
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self._code(self.logits(x)))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The guide's logits, (..., n_vars, n_classes)."""
        return self.encoder(x).reshape(*x.shape[:-1], self.n_vars, self.n_classes)

    def _is_relaxed(self) -> bool:
        return self.relaxed and self.training

    def _code(self, logits: torch.Tensor) -> dist.TorchDistribution:
        if self._is_relaxed():
            return ExpRelaxedCategorical(self.temperature, logits=logits).to_event(1)
        return dist.OneHotCategorical(logits=logits).to_event(1)

    def _one_hot(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's input: the one-hot codes (or the relaxed ones, exp of the log-space sample), flattened."""
        return (z.exp() if self._is_relaxed() else z).flatten(-2)

    def anneal(self, row: dict | int) -> None:
        """Set the temperature for the epoch after ``row`` (a :func:`pyro_gen.fit` history row, so this
        is a ``callback``; or an epoch number): ``max(min, start * exp(-rate * epoch))``."""
        epoch = row["epoch"] if isinstance(row, dict) else int(row)
        value = max(self.min_temperature, self.start_temperature * math.exp(-self.anneal_rate * epoch))
        self.temperature.fill_(value)  # in place: a recorded fast-path step reads the buffer itself

    def check_data(self, x: torch.Tensor) -> None:
        """Rows of x_dim binary values."""
        check_binary(x, "the categorical VAE", self.x_dim)

    # --- uses of a trained model ---------------------------------------------------------

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel probabilities for one-hot codes z of shape (..., n_vars, n_classes)."""
        return torch.sigmoid(self.decoder(z.flatten(-2)))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of p(x | z) at the guide's most probable code."""
        z = nn.functional.one_hot(self.logits(x).argmax(-1), self.n_classes).to(x.dtype)
        return self.decode(z)

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True) -> torch.Tensor:
        """n draws: codes from the uniform prior, then pixel probabilities (or pixels, ``mean=False``)."""
        w = next(self.decoder.parameters())
        z = dist.OneHotCategorical(logits=w.new_zeros(self.n_vars, self.n_classes)).sample((n,))
        probs = self.decode(z)
        return probs if mean else torch.bernoulli(probs)


def examples(seed: int = 0) -> dict[str, tuple[CategoricalVAE, torch.Tensor]]:
    """Small instances with matching data, for the contract test over every model."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(16, 20, generator=g) < 0.3).float()
    torch.manual_seed(seed)
    return {"discrete": (CategoricalVAE(20, 3, 4, hidden=(12,)), x),
            "relaxed": (CategoricalVAE(20, 3, 4, hidden=(12,), relaxed=True, temperature=0.7), x)}


# --- the command line: python -m inference.fit catvae (see models/__init__.py) ---------------------


def cli_options(parser) -> None:
    """The categorical VAE's flags."""
    g = parser.add_argument_group("categorical VAE")
    g.add_argument("--vars", type=int, default=20, help="categorical latent variables")
    g.add_argument("--classes", type=int, default=10, help="classes of each variable")
    g.add_argument("--hidden", type=int, nargs="+", default=[512, 256])
    g.add_argument("--relaxed", action="store_true",
                   help="train on the Concrete / Gumbel-softmax relaxation (objective trace by default); "
                        "evaluation is on the discrete model")
    g.add_argument("--temperature", type=float, default=1.0, help="starting temperature of the relaxation")
    g.add_argument("--min-temperature", type=float, default=0.5)
    g.add_argument("--anneal-rate", type=float, default=0.1, help="per epoch: t = max(min, t0 exp(-rate epoch))")


def default_objective(args) -> str:
    return "trace" if args.relaxed else "vimco:5"


def from_cli(args, ds) -> CategoricalVAE:
    """The categorical VAE for binary data set ``ds`` (grey data need ``--binarize dynamic``)."""
    if not ds.binary and args.binarize != "dynamic":
        raise ValueError(f"the categorical VAE models binary data; {ds.name} is not binary: "
                         "pass --binarize dynamic, or use --data binarized-mnist")
    return CategoricalVAE(x_dim=ds.dim, n_vars=args.vars, n_classes=args.classes, hidden=args.hidden,
                          relaxed=args.relaxed, temperature=args.temperature, min_temperature=args.min_temperature,
                          anneal_rate=args.anneal_rate)
