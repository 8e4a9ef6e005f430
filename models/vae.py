"""The amortized variational autoencoder (Kingma & Welling 2014; Rezende et al. 2014).

Generative model, for each data point x_n::

    z_n ~ Normal(0, I)                      (prior, latent_dim)
    x_n ~ p(x | decoder(z_n))               (Bernoulli, continuous Bernoulli or Gaussian)

Amortized guide::

    q(z_n | x_n) = Normal(mu(x_n), diag sigma(x_n)^2),  (mu, sigma) = encoder(x_n)

Options: ``guide_flow="iaf"`` (any of :data:`pyro_gen.flows.FAMILIES`) pushes that
Gaussian through ``flow_depth`` amortized flow layers conditioned on the encoder's
last hidden layer h(x_n) (for ``"sylvester"`` the encoder emits the layers'
parameters, as in van den Berg et al. 2018); ``prior_flow="spline"`` replaces the
Normal(0, I) prior by a learnable flow that scores any z cheaply.

The encoder and decoder are plain ``torch.nn`` networks (an MLP, or a small
convolutional net for images); the model and guide are the two Pyro functions
below and nothing else.

References:
    Kingma & Welling (2014), Auto-Encoding Variational Bayes.
    Rezende, Mohamed & Wierstra (2014), Stochastic Backpropagation and Approximate
    Inference in Deep Generative Models.
    Loaiza-Ganem & Cunningham (2019), The continuous Bernoulli.
    Rezende & Mohamed (2015); Kingma et al. (2016); van den Berg et al. (2018) (flow guides).
"""

from __future__ import annotations

import contextlib
import math
from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, pyro_method
from torch import nn

from models import activation as activation_class, mlp
from pyro_gen.data import check_data
from pyro_gen.flows import FAMILIES, SCORABLE, FlowStack, check_family, conditional_flow_distribution

__all__ = ["VAE", "MLPEncoder", "MLPDecoder", "ConvEncoder", "ConvDecoder", "LIKELIHOODS"]

#: The likelihoods p(x | z), ``"bernoulli"`` (logits; binary data), ``"continuous-bernoulli"`` (data in
#: [0, 1]) or ``"gaussian"`` (real data; a learned per-dimension scale).
LIKELIHOODS = ("bernoulli", "continuous-bernoulli", "gaussian")
class MLPEncoder(nn.Module):
    """x -> (loc, scale) of a diagonal Gaussian over z."""

    def __init__(self, x_dim: int, z_dim: int, hidden: Sequence[int] = (400,), activation: str = "relu"):
        super().__init__()
        self.body = mlp([x_dim, *hidden], activation)
        self.act = activation_class(activation)()
        self.feature_dim = hidden[-1] if hidden else x_dim
        self.head = nn.Linear(self.feature_dim, 2 * z_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer h(x): what an amortized flow is conditioned on."""
        return self.act(self.body(x)) if len(self.body) else x

    def gaussian(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The diagonal Gaussian's ``(loc, scale)`` from features h (those of :meth:`features`):
        a linear head, the scale made positive by a softplus plus 1e-5."""
        loc, raw_scale = self.head(h).chunk(2, dim=-1)
        return loc, nn.functional.softplus(raw_scale) + 1e-5

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.gaussian(self.features(x))


class MLPDecoder(nn.Module):
    """z -> likelihood parameters for x (logits, or the mean of a Gaussian)."""

    def __init__(self, z_dim: int, x_dim: int, hidden: Sequence[int] = (400,), activation: str = "relu"):
        super().__init__()
        self.net = mlp([z_dim, *reversed(tuple(hidden)), x_dim], activation)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class ConvEncoder(nn.Module):
    """A small convolutional encoder for (C, H, W) images flattened to x_dim."""

    def __init__(self, image_shape: Sequence[int], z_dim: int, channels: int = 32, activation: str = "relu"):
        super().__init__()
        c, h, w = image_shape
        self.image_shape = tuple(image_shape)
        act = activation_class(activation)
        self.conv = nn.Sequential(
            nn.Conv2d(c, channels, 4, 2, 1), act(),
            nn.Conv2d(channels, 2 * channels, 4, 2, 1), act(),
        )
        with torch.no_grad():
            n = self.conv(torch.zeros(1, c, h, w)).numel()
        self.feature_dim = n
        self.head = nn.Linear(n, 2 * z_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The flattened convolutional features h(x): what an amortized flow is conditioned on."""
        return self.conv(x.reshape(-1, *self.image_shape)).flatten(1).reshape(*x.shape[:-1], -1)

    def gaussian(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The diagonal Gaussian's ``(loc, scale)`` from features h (those of :meth:`features`):
        a linear head, the scale made positive by a softplus plus 1e-5."""
        loc, raw_scale = self.head(h).chunk(2, dim=-1)
        return loc, nn.functional.softplus(raw_scale) + 1e-5

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.gaussian(self.features(x))


class ConvDecoder(nn.Module):
    """The mirror image of :class:`ConvEncoder`: z -> per-pixel parameters, flattened."""

    def __init__(self, z_dim: int, image_shape: Sequence[int], channels: int = 32, activation: str = "relu"):
        super().__init__()
        c, h, w = image_shape
        self.image_shape = tuple(image_shape)
        self.start = (2 * channels, math.ceil(h / 4), math.ceil(w / 4))
        act = activation_class(activation)
        self.fc = nn.Sequential(nn.Linear(z_dim, math.prod(self.start)), act())
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(2 * channels, channels, 4, 2, 1), act(),
            nn.ConvTranspose2d(channels, c, 4, 2, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        batch = z.shape[:-1]
        c, h, w = self.image_shape
        out = self.deconv(self.fc(z.reshape(-1, z.shape[-1])).reshape(-1, *self.start))
        return out[..., :h, :w].reshape(*batch, c * h * w)


class VAE(PyroModule):
    """A VAE with a standard-normal (or flow) prior and a diagonal-Gaussian (or flow) amortized guide.

    Args:
        x_dim: number of observed dimensions (images are flattened).
        z_dim: latent size.
        hidden: hidden layer widths of the MLP encoder (the decoder mirrors them).
        likelihood: ``"bernoulli"`` (logits; binary data), ``"continuous-bernoulli"``
            (data in [0, 1]) or ``"gaussian"`` (real data; a learned per-pixel scale).
        network: ``"mlp"`` or ``"conv"`` (then ``image_shape=(C, H, W)`` is required).
        activation: hidden nonlinearity of the MLPs.
        beta: weight of the KL term while training (beta-VAE, Higgins et al. 2017); 1 is
            the ELBO. In ``eval()`` mode the model is the plain VAE, so evaluation
            reports true bounds.
        guide_flow: a flow family (:data:`pyro_gen.flows.FAMILIES`, or ``"zuko:NAME"``) for
            q(z|x), amortized on the encoder's features; None: the diagonal Gaussian.
        flow_depth: number of layers of each flow.
        prior_flow: a flow family for a learnable prior p(z); it must score any z, so
            planar, radial and sylvester are refused. None: Normal(0, I).
        flow_hidden: hidden widths of the flows' networks (None: Pyro's defaults).

    Examples:
        >>> from pyro_gen import data, evaluate, fit
        >>> ds = data.load("digits")
        >>> vae = VAE(x_dim=64, z_dim=2, hidden=(32,))
        >>> result = fit(vae.model, vae.guide, ds.train, epochs=2, batch_size=128, progress=False)
        >>> len(result.history), vae.sample(5).shape
        (2, torch.Size([5, 64]))
        >>> vae.check_data(ds.train[:, :10])
        Traceback (most recent call last):
        ...
        ValueError: data has 10 columns but the model expects 64
    """

    def __init__(
        self,
        x_dim: int = 784,
        z_dim: int = 50,
        hidden: Sequence[int] = (400,),
        likelihood: str = "bernoulli",
        network: str = "mlp",
        image_shape: Sequence[int] | None = None,
        activation: str = "relu",
        beta: float = 1.0,
        guide_flow: str | None = None,
        flow_depth: int = 4,
        prior_flow: str | None = None,
        flow_hidden: Sequence[int] | None = None,
    ):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; valid choices: {', '.join(LIKELIHOODS)}")
        if network not in ("mlp", "conv"):
            raise ValueError(f"unknown network {network!r}; valid choices: mlp, conv")
        if beta <= 0:
            raise ValueError(f"beta must be positive, got {beta}")
        self.x_dim, self.z_dim, self.likelihood, self.beta = int(x_dim), int(z_dim), likelihood, float(beta)
        self.image_shape = tuple(image_shape) if image_shape is not None else None
        if network == "conv":
            if self.image_shape is None or math.prod(self.image_shape) != x_dim:
                raise ValueError(f"network='conv' needs image_shape=(C, H, W) with C*H*W == x_dim={x_dim}")
            self.encoder = ConvEncoder(self.image_shape, z_dim, activation=activation)
            self.decoder = ConvDecoder(z_dim, self.image_shape, activation=activation)
        else:
            self.encoder = MLPEncoder(x_dim, z_dim, hidden, activation)
            self.decoder = MLPDecoder(z_dim, x_dim, hidden, activation)
        if likelihood == "gaussian":
            self.log_scale = nn.Parameter(torch.zeros(x_dim))
        # Flows: None keeps the plain VAE (and its state_dict keys) unchanged.
        self.guide_flow, self.prior_flow = guide_flow, prior_flow
        self.q_flow = self.p_flow = None
        if guide_flow is not None:
            self.q_flow = FlowStack(check_family(guide_flow, what="guide"), z_dim, flow_depth,
                                    context_dim=self.encoder.feature_dim, hidden=flow_hidden)
        if prior_flow is not None:
            self.p_flow = FlowStack(check_family(prior_flow, scorable=True, what="prior"), z_dim, flow_depth,
                                    hidden=flow_hidden, direction="score")

    # --- the two Pyro programs -------------------------------------------------------

    @pyro_method
    def model(self, x: torch.Tensor) -> None:
        """The generative model of a batch of rows.

        In the plate ``"data"``, samples ``"z"`` from :meth:`prior` (Normal(0, I), or the
        prior flow) and observes ``"x"`` from :meth:`observation` of the decoder's output. While
        training with ``beta != 1`` the log density of ``"z"`` is scaled by beta.

        Args:
            x: the observed batch, (N, x_dim).
        """
        with pyro.plate("data", x.shape[0]):
            with self._kl_weight():
                z = pyro.sample("z", self.prior(x))
            pyro.sample("x", self.observation(self.decoder(z)), obs=x)

    @pyro_method
    def guide(self, x: torch.Tensor) -> None:
        """The amortized guide: in the plate ``"data"``, samples ``"z"`` from :meth:`posterior`,
        the encoder's diagonal Gaussian, pushed through the amortized flow conditioned on the
        encoder's features h(x) when there is a guide flow (scaled by beta as in the model).

        Args:
            x: the observed batch, (N, x_dim).
        """
        with pyro.plate("data", x.shape[0]), self._kl_weight():
            pyro.sample("z", self.posterior(x))

    def check_data(self, x: torch.Tensor) -> None:
        """Data this VAE can score, checked once before training or evaluation: (N, x_dim) rows,
        and values in [0, 1] for the Bernoulli and continuous-Bernoulli likelihoods."""
        check_data(x, "data", self.x_dim)
        if self.likelihood != "gaussian" and (x.min() < 0 or x.max() > 1):
            raise ValueError(
                f"the {self.likelihood} likelihood needs values in [0, 1], but the data range over "
                f"[{x.min().item():g}, {x.max().item():g}]: rescale them (x / x.max()), or use likelihood='gaussian'")

    # --- pieces of the model -----------------------------------------------------------

    def prior(self, like: torch.Tensor | None = None) -> dist.TorchDistribution:
        """p(z) = Normal(0, I) over ``z_dim`` dimensions, pushed through the prior flow if any."""
        zeros = (like if like is not None else self.decoder_weight()).new_zeros(self.z_dim)
        p = dist.Normal(zeros, 1.0).to_event(1)
        return p if self.p_flow is None else dist.TransformedDistribution(p, self.p_flow.transforms())

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        """q(z | x): the encoder's Gaussian, pushed through the amortized guide flow if any."""
        h = self.encoder.features(x)
        loc, scale = self.encoder.gaussian(h)
        if self.q_flow is None:
            return dist.Normal(loc, scale).to_event(1)
        return conditional_flow_distribution(self.q_flow, loc, scale, h)

    def observation(self, out: torch.Tensor) -> dist.TorchDistribution:
        """p(x | z) given the decoder's output for z."""
        if self.likelihood == "bernoulli":
            return dist.Bernoulli(logits=out, validate_args=False).to_event(1)
        if self.likelihood == "continuous-bernoulli":
            return dist.ContinuousBernoulli(logits=out, validate_args=False).to_event(1)
        return dist.Normal(out, self.log_scale.exp(), validate_args=False).to_event(1)

    def _kl_weight(self):
        """beta weighs log p(z) and log q(z|x) while training; evaluation sees the true model."""
        if self.training and self.beta != 1.0:
            return pyro.poutine.scale(scale=self.beta)
        return contextlib.nullcontext()

    def decoder_weight(self) -> torch.Tensor:
        """The decoder's first parameter tensor, whose dtype and device new tensors follow
        (the prior's zeros when no data are at hand)."""
        return next(self.decoder.parameters())

    # --- uses of a trained model ---------------------------------------------------------

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The guide's mean and standard deviation of z for each row of x (before any guide flow)."""
        return self.encoder(x)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The mean of p(x | z)."""
        out = self.decoder(z)
        if self.likelihood == "gaussian":
            return out
        return self.observation(out).base_dist.mean

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of p(x | z) at the guide's mean of z."""
        return self.decode(self.encode(x)[0])

    @torch.no_grad()
    def reconstruction_error(self, x: torch.Tensor) -> torch.Tensor:
        """-log p(x | z) per row at the guide's mean of z (the code, for a point posterior), in nats."""
        return -self.observation(self.decoder(self.encode(x)[0])).log_prob(x)

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True) -> torch.Tensor:
        """n draws from the model: z from the prior, then x (or its mean) given z."""
        z = self.prior().sample((n,))
        return self.decode(z) if mean else self.observation(self.decoder(z)).sample()


def examples(seed: int = 0) -> dict[str, tuple[VAE, torch.Tensor]]:
    """Small instances with matching data, for the contract test over every model."""
    g = torch.Generator().manual_seed(seed)
    binary = (torch.rand(16, 64, generator=g) < 0.3).float()
    grey = torch.rand(16, 64, generator=g)
    torch.manual_seed(seed)
    return {
        "mlp-bernoulli": (VAE(64, 3, (16,)), binary),
        "conv-bernoulli": (VAE(64, 3, network="conv", image_shape=(1, 8, 8)), binary),
        "mlp-gaussian": (VAE(64, 3, (16, 16), likelihood="gaussian", activation="tanh"), grey),
        "mlp-continuous-bernoulli": (VAE(64, 3, (16,), likelihood="continuous-bernoulli", beta=2.0), grey),
        "householder-guide": (VAE(64, 3, (16,), guide_flow="householder", flow_depth=2), binary),
        "iaf-guide-spline-prior": (VAE(64, 3, (16,), guide_flow="iaf", flow_depth=2, prior_flow="spline"), binary),
    }


# --- the command line: python -m inference.fit vae (see models/__init__.py) ---------------------


def cli_options(parser) -> None:
    """The VAE's flags, its flow guide and flow prior (pyro_gen.flows) included."""
    g = parser.add_argument_group("VAE")
    g.add_argument("--latent-dim", type=int, default=50)
    g.add_argument("--hidden", type=int, nargs="+", default=[400])
    g.add_argument("--activation", default="relu")
    g.add_argument("--likelihood", default=None, help="bernoulli, continuous-bernoulli or gaussian "
                   "(default: bernoulli for binary data, continuous-bernoulli otherwise)")
    g.add_argument("--network", default="mlp", choices=["mlp", "conv"])
    f = parser.add_argument_group("flows")
    f.add_argument("--guide-flow", default=None, help=f"amortized flow guide: {', '.join(FAMILIES)} or zuko:NAME")
    f.add_argument("--flow-depth", type=int, default=4, help="layers of each flow")
    f.add_argument("--prior-flow", default=None, help=f"learnable flow prior: {', '.join(SCORABLE)} or zuko:NAME")


def default_objective(args) -> str:
    return "trace"


def from_cli(args, ds) -> VAE:
    """The VAE for data set ``ds``; a missing ``--likelihood`` is resolved from the data (and recorded in args)."""
    if args.likelihood is None:
        args.likelihood = "bernoulli" if ds.binary else "continuous-bernoulli"
    return VAE(x_dim=ds.dim, z_dim=args.latent_dim, hidden=args.hidden, likelihood=args.likelihood,
               network=args.network, image_shape=ds.image_shape, activation=args.activation, beta=args.beta,
               guide_flow=args.guide_flow, prior_flow=args.prior_flow, flow_depth=args.flow_depth)
