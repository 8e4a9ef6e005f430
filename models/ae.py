"""Deterministic and denoising autoencoders (Vincent et al. 2008), written as Pyro programs.

Generative "model", for each data point x_n::

    z_n ~ improper flat density over R^d   (log density 0: no prior)
    x_n ~ p(x | decoder(z_n))              (Bernoulli, continuous Bernoulli or Gaussian, as the VAE's)

Guide: a point posterior, ``q(z_n | x_n) = Delta(encoder(x~_n))``, where x~_n = x_n for the
autoencoder and x~_n ~ C(x~ | x_n) for the denoising autoencoder, a corruption process drawn
in the guide while training (masking noise: each pixel set to 0 with probability p; salt and
pepper: set to 0 or 1 with probability p; Gaussian: x + N(0, s^2)). The corruption is drawn
with torch's generator (seeded by ``pyro.set_rng_seed`` like every draw) and is no sample site:
the objective never scores it, so the loss is the reconstruction term of the clean x from the
corrupted input, as in Vincent et al.

With log q = 0 (a Delta) and log p(z) = 0 (flat), every objective's loss is the negative
reconstruction log-likelihood ``-log p(x | encoder(x~))``: the autoencoder's usual loss (binary
cross-entropy for the Bernoulli). It is **not** a bound on a log-likelihood, because there is
no prior: :func:`pyro_gen.evaluate.log_likelihood` and ``elbo`` refuse such a model by name.

Sampling: an autoencoder has no prior to sample from. :meth:`Autoencoder.sample` decodes codes
drawn from a Gaussian fitted to training codes (:meth:`Autoencoder.fit_codes`; N(0, I) before
that): the usual attempt, whose poor samples (codes off the data's thin code manifold) are
what the VAE's prior fixes. ``python -m inference.fit ae`` draws them beside the
reconstructions.

References:
    Vincent, Larochelle, Bengio & Manzagol (2008), Extracting and Composing Robust Features
    with Denoising Autoencoders.
"""

from __future__ import annotations

import math
from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import pyro_method
from torch import nn

from models import mlp
from models.vae import VAE, ConvEncoder

__all__ = ["Autoencoder", "Flat", "NOISES", "parse_noise"]

#: The corruption processes of the denoising autoencoder, by name (``"mask:0.25"``).
NOISES = ("mask", "saltpepper", "gaussian")


def parse_noise(spec: str | None) -> tuple[str, float] | None:
    """``"mask:0.25"`` -> ``("mask", 0.25)``; None stays None.

    Raises:
        ValueError: for an unknown kind (listing :data:`NOISES`), or a level outside (0, 1) for
            mask and saltpepper, or <= 0 for gaussian.
    """
    if spec is None:
        return None
    kind, _, level = str(spec).partition(":")
    if kind not in NOISES:
        raise ValueError(f"unknown corruption {spec!r}; valid choices: {', '.join(NOISES)} (as 'mask:0.25')")
    try:
        p = float(level) if level else 0.25
    except ValueError:
        raise ValueError(f"corruption {spec!r}: the level after ':' must be a number") from None
    if not (0 < p < 1 if kind != "gaussian" else 0 < p < math.inf):
        raise ValueError(f"corruption {spec!r}: the level must be in (0, 1) for {kind}" if kind != "gaussian"
                         else f"corruption {spec!r}: the noise scale must be > 0")
    return kind, p


class Autoencoder(VAE):
    """A (denoising) autoencoder as a Pyro model/guide pair with a point posterior.

    Args:
        x_dim, z_dim, hidden, likelihood, network, image_shape, activation: as :class:`models.vae.VAE`
            (the decoder and likelihood are the VAE's).
        noise: None (an autoencoder) or the denoising autoencoder's corruption, ``"mask:p"``,
            ``"saltpepper:p"`` or ``"gaussian:s"`` (:data:`NOISES`).

    Examples:
        >>> from pyro_gen import data, fit
        >>> ds = data.load("digits")
        >>> dae = Autoencoder(x_dim=64, z_dim=4, hidden=(32,), noise="mask:0.25")
        >>> result = fit(dae.model, dae.guide, ds.train, epochs=2, batch_size=128, progress=False)
        >>> dae.fit_codes(ds.train).sample(3).shape
        torch.Size([3, 64])
        >>> Autoencoder(64, 4, noise="blur:1")
        Traceback (most recent call last):
        ...
        ValueError: unknown corruption 'blur:1'; valid choices: mask, saltpepper, gaussian (as 'mask:0.25')
    """

    #: True, as the guide's posterior is a point (the scale that :meth:`encode` returns is 0) and there
    #: is no likelihood bound.
    point_posterior = True

    def __init__(self, x_dim: int = 784, z_dim: int = 10, hidden: Sequence[int] = (400,), likelihood: str = "bernoulli",
                 network: str = "mlp", image_shape: Sequence[int] | None = None, activation: str = "relu",
                 noise: str | None = None):
        self.noise = parse_noise(noise)
        super().__init__(x_dim, z_dim, hidden, likelihood, network, image_shape, activation)
        # the point encoder: the VAE's body with a head of z_dim outputs (no scale)
        if network == "conv":
            body = ConvEncoder(self.image_shape, z_dim, activation=activation)
            self.encoder = nn.Sequential(_Features(body), nn.Linear(body.feature_dim, z_dim))
        else:
            self.encoder = mlp([x_dim, *hidden, z_dim], activation)
        self.register_buffer("code_mean", torch.zeros(z_dim))
        self.register_buffer("code_scale_tril", torch.eye(z_dim))

    # --- the two Pyro programs -----------------------------------------------------------------

    @pyro_method
    def model(self, x: torch.Tensor) -> None:
        """In the plate ``"data"``: ``"z"`` from a flat (improper) density, ``"x"`` observed given z."""
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior(x))
            pyro.sample("x", self.observation(self.decoder(z)), obs=x)

    @pyro_method
    def guide(self, x: torch.Tensor) -> None:
        """In the plate ``"data"``: ``"z"`` at the encoder's code of the (while training, corrupted) x."""
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.posterior(x))

    # --- pieces ----------------------------------------------------------------------------------

    def prior(self, like: torch.Tensor | None = None) -> dist.TorchDistribution:
        """A flat density over R^z_dim (log density 0): an autoencoder has no prior (:class:`models.ae.Flat`)."""
        return Flat(dist.constraints.real_vector, (), (self.z_dim,))

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        """The point posterior Delta(encoder(x~)), x~ the corrupted x while training."""
        return dist.Delta(self.encoder(self.corrupt(x)), event_dim=1)

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        """x~ ~ C(x~ | x) while training a denoising autoencoder, else x. The draws are torch's (seeded by
        ``pyro.set_rng_seed`` like every other) and no sample site: the objective never scores them."""
        if self.noise is None or not self.training:
            return x
        kind, level = self.noise
        if kind == "gaussian":
            return x + level * torch.randn_like(x)
        hit = torch.bernoulli(torch.full_like(x, level))
        if kind == "mask":
            return x * (1 - hit)
        return x * (1 - hit) + hit * torch.bernoulli(torch.full_like(x, 0.5))

    # --- uses ------------------------------------------------------------------------------------

    @torch.no_grad()
    def code(self, x: torch.Tensor) -> torch.Tensor:
        """The code of each row of x (uncorrupted)."""
        return self.encoder(x)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(code, 0)``: the point posterior's location and its zero scale."""
        z = self.code(x)
        return z, torch.zeros_like(z)

    @torch.no_grad()
    def fit_codes(self, x: torch.Tensor) -> "Autoencoder":
        """Fit the Gaussian that :meth:`sample` draws codes from to the codes of x (rows); returns self."""
        z = self.code(x)
        if len(z) < 2:
            raise ValueError(f"fitting a Gaussian to codes needs at least 2 rows, got {len(z)}")
        cov = torch.cov(z.T).reshape(self.z_dim, self.z_dim) + 1e-5 * torch.eye(self.z_dim, dtype=z.dtype)
        self.code_mean.copy_(z.mean(0))
        self.code_scale_tril.copy_(torch.linalg.cholesky(cov))
        return self

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True) -> torch.Tensor:
        """n decodings of codes from the Gaussian of :meth:`fit_codes` (not a prior: see the module docstring)."""
        z = dist.MultivariateNormal(self.code_mean, scale_tril=self.code_scale_tril).sample((n,))
        return self.decode(z) if mean else self.observation(self.decoder(z)).sample()


class Flat(dist.ImproperUniform):
    """Pyro's ``ImproperUniform`` whose draws are NaN instead of an error: Pyro's ``Predictive`` runs
    a model once with its sites sampled to count its plates (and then replays the guide's z), so a
    model with a flat prior can be predicted from; a draw from the model alone decodes NaN codes,
    which no one mistakes for data."""

    def sample(self, sample_shape=torch.Size()):
        return torch.full(torch.Size(sample_shape) + self.batch_shape + self.event_shape, math.nan)


class _Features(nn.Module):
    """A convolutional encoder's feature map, flattened (its Gaussian head unused)."""

    def __init__(self, body: ConvEncoder):
        super().__init__()
        self.conv, self.image_shape = body.conv, body.image_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.reshape(-1, *self.image_shape)).flatten(1).reshape(*x.shape[:-1], -1)


def examples(seed: int = 0) -> dict[str, tuple[Autoencoder, torch.Tensor]]:
    """Small instances with matching data, for the contract test over every model."""
    g = torch.Generator().manual_seed(seed)
    binary = (torch.rand(16, 64, generator=g) < 0.3).float()
    torch.manual_seed(seed)
    return {
        "ae-mlp": (Autoencoder(64, 3, (16,)), binary),
        "dae-mask-conv": (Autoencoder(64, 3, network="conv", image_shape=(1, 8, 8), noise="mask:0.3"), binary),
        "dae-gaussian": (Autoencoder(64, 3, (16,), likelihood="gaussian", noise="gaussian:0.2"), binary),
    }


#: The objectives an autoencoder trains with: each is its reconstruction loss (q is a point, p(z)
#: flat). ``rws`` (its guide step fits log q) and ``dreg`` (it scores z under a detached q) need a
#: density for q, which a Delta does not have, so they are left out.
OBJECTIVES = ["trace", "meanfield", "iwae:3", "renyi:0.5", "graph"]


# --- the command line: python -m inference.fit ae|dae (see models/__init__.py) ---------------------


def cli_options(parser) -> None:
    """The autoencoders' flags (the decoder's are the VAE's)."""
    g = parser.add_argument_group("autoencoder")
    g.add_argument("--latent-dim", type=int, default=10)
    g.add_argument("--hidden", type=int, nargs="+", default=[400])
    g.add_argument("--activation", default="relu")
    g.add_argument("--likelihood", default=None, help="bernoulli, continuous-bernoulli or gaussian "
                   "(default: bernoulli for binary data, continuous-bernoulli otherwise)")
    g.add_argument("--network", default="mlp", choices=["mlp", "conv"])
    g.add_argument("--noise", default=None, help=f"corruption of the denoising autoencoder: {', '.join(NOISES)} "
                   "with its level, as mask:0.25 (dae's default)")


def from_cli(args, ds, variant: str) -> Autoencoder:
    """The autoencoder (``variant="ae"``) or denoising autoencoder (``"dae"``, masking noise 0.25 unless
    ``--noise`` says otherwise) for data set ``ds``."""
    if args.likelihood is None:
        args.likelihood = "bernoulli" if ds.binary else "continuous-bernoulli"
    if variant == "ae" and args.noise is not None:
        raise ValueError("--noise makes a denoising autoencoder: use python -m inference.fit dae")
    args.noise = args.noise or ("mask:0.25" if variant == "dae" else None)  # recorded in metrics.json as resolved
    return Autoencoder(ds.dim, args.latent_dim, args.hidden, args.likelihood, args.network, ds.image_shape,
                       args.activation, noise=args.noise)


def report(args, model: Autoencoder, ds, test: torch.Tensor, out) -> tuple[dict, dict]:
    """The test reconstruction error, and samples from a Gaussian fitted to the training codes."""
    from pyro_gen.figures.plots import samples

    model.eval()
    err = model.reconstruction_error(test)
    model.fit_codes(ds.train.to(test.device))
    figures = {}
    if ds.image_shape is not None:
        figures["samples"] = str(samples(model.sample(100), ds.image_shape, out / "samples.png"))
    return {"reconstruction_nats": err.mean().item(), "reconstruction_nats_se": (err.std() / len(err) ** 0.5).item()}, \
        figures
