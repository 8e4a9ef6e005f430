"""VQ-VAE (van den Oord, Vinyals & Kavukcuoglu 2017) as a Pyro model/guide pair.

Generative model, for each image x_n with a grid of H' x W' latent positions::

    e_1..e_K                                   (the codebook: K vectors of code_dim numbers)
    z_n[h, w] ~ Uniform{e_1, ..., e_K}         (prior: log p(z_n) = -H'W' log K)
    x_n ~ p(x | decoder(z_n))                  (Bernoulli logits, or a continuous Bernoulli)

Guide: a deterministic one-hot posterior. The encoder maps x_n to a grid z_e of code_dim
vectors; each position takes its nearest code, q(z = e_k*) = 1, so log q = 0 and
KL(q || p) = H'W' log K. The site ``"z"`` holds the chosen code vectors through the
straight-through estimator, ``z_e + (e_k* - z_e).detach()``: its value is the code, its gradient
passes to the encoder as if quantization were the identity.

While training the guide adds, per image, the codebook loss ``||sg(z_e) - e||^2`` (unless the
codebook is an exponential moving average of the encoder outputs assigned to each code,
``ema=True``) and the commitment loss ``commitment * ||z_e - sg(e)||^2``, as a ``pyro.factor``:
the training objective is then van den Oord et al.'s, and in ``eval()`` mode the model and guide
are the plain pair, whose ELBO is a bound on log p(x) for the uniform prior. Codes that fall out
of use (their share of the assignments, a moving average over about 20 steps, below ``restart / K``)
are restarted at
encoder outputs of the current batch (Dhariwal et al. 2020's Jukebox trick); the codebook
itself starts at encoder outputs of the first training batch.

The learned prior: :class:`CodePrior`, a small autoregressive model over the code grid (gated
masked convolutions in raster order, PixelCNN-style) fitted to the training images' code maps by
:meth:`VQVAE.fit_prior`. With it, samples are decoded code maps drawn from the prior, and the
bound becomes ``log p(x) >= log p(x | z(x)) + log p_prior(z(x))`` (q is deterministic), reported
in bits per dimension by :meth:`VQVAE.bits_per_dim`. Codebook use is reported by
:meth:`VQVAE.perplexity` (exp of the entropy of the code frequencies; K when all are used evenly).

The model updates its own state while training (the EMA codebook, restarts), so ``fit``'s fast
path leaves it alone (``fast_path = False``).

References:
    van den Oord, Vinyals & Kavukcuoglu (2017), Neural Discrete Representation Learning.
    van den Oord et al. (2016), Conditional Image Generation with PixelCNN Decoders.
    Dhariwal et al. (2020), Jukebox: A Generative Model for Music (dead-code restarts).
"""

from __future__ import annotations

import math
from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule, pyro_method
from torch import nn

__all__ = ["VQVAE", "UniformCodebook", "CodePrior"]


class UniformCodebook(dist.TorchDistribution):
    """The uniform prior over a codebook at every position of a grid: a draw is a (H', W', D) grid of
    code vectors; the log density of any grid of codes is -H'W' log K (counting measure on the codes)."""

    arg_constraints = {}
    support = constraints.independent(constraints.real, 3)
    has_rsample = False

    def __init__(self, codebook: torch.Tensor, grid: tuple[int, int], batch_shape=torch.Size(), validate_args=None):
        self.codebook, self.grid = codebook, tuple(grid)
        super().__init__(torch.Size(batch_shape), torch.Size((*self.grid, codebook.shape[-1])),
                         validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return UniformCodebook(self.codebook, self.grid, batch_shape)

    def sample(self, sample_shape=torch.Size()):
        shape = torch.Size(sample_shape) + self.batch_shape + torch.Size(self.grid)
        index = torch.randint(len(self.codebook), shape, device=self.codebook.device)
        return self.codebook[index]

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        shape = value.shape[:value.dim() - 3]
        return value.new_full(shape, -math.prod(self.grid) * math.log(len(self.codebook)))


def _conv_net(c_in: int, channels: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, channels, 4, 2, 1), nn.ReLU(), nn.Conv2d(channels, channels, 4, 2, 1),
                         nn.ReLU(), nn.Conv2d(channels, channels, 3, 1, 1), nn.ReLU(), nn.Conv2d(channels, c_out, 1))


def _deconv_net(c_in: int, channels: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, channels, 3, 1, 1), nn.ReLU(), nn.ConvTranspose2d(channels, channels, 4, 2, 1),
                         nn.ReLU(), nn.ConvTranspose2d(channels, c_out, 4, 2, 1))


class VQVAE(PyroModule):
    """A VQ-VAE on images, with a uniform prior over K codes per latent position.

    Args:
        image_shape: (C, H, W) of the images (rows of C*H*W numbers); H and W are divided by 4.
        codes: K, the codebook size (>= 2).
        code_dim: the length of each code vector.
        channels: width of the convolutional encoder and decoder.
        likelihood: ``"bernoulli"`` (binary data) or ``"continuous-bernoulli"`` (grey levels in [0, 1]).
        commitment: the weight of the commitment loss (the paper's 0.25).
        ema: keep the codebook as a moving average of the assigned encoder outputs (decay ``decay``)
            instead of learning it by gradient.
        restart: restart codes whose moving-average share of assignments falls below ``restart / K``
            (0: never).

    Examples:
        >>> from pyro_gen import data, fit
        >>> ds = data.load("digits")
        >>> vq = VQVAE((1, 8, 8), codes=8, code_dim=4, channels=8)
        >>> result = fit(vq.model, vq.guide, ds.train, epochs=1, batch_size=128, progress=False)
        >>> vq.codes_of(ds.test[:2]).shape, 1 <= vq.perplexity(ds.test) <= 8
        (torch.Size([2, 2, 2]), True)
        >>> VQVAE((1, 8, 8), codes=1)
        Traceback (most recent call last):
        ...
        ValueError: the codebook needs at least 2 codes, got codes=1
    """

    fast_path = False  # the EMA codebook and the restarts change the model's state inside a step

    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), codes: int = 64, code_dim: int = 16,
                 channels: int = 32, likelihood: str = "bernoulli", commitment: float = 0.25, ema: bool = False,
                 decay: float = 0.99, restart: float = 0.1):
        super().__init__()
        if codes < 2:
            raise ValueError(f"the codebook needs at least 2 codes, got codes={codes}")
        if likelihood not in ("bernoulli", "continuous-bernoulli"):
            raise ValueError(f"unknown likelihood {likelihood!r}; valid choices: bernoulli, continuous-bernoulli")
        if commitment < 0 or not 0 < decay < 1 or restart < 0:
            raise ValueError(f"need commitment >= 0, 0 < decay < 1 and restart >= 0, got {commitment}, {decay}, {restart}")
        c, h, w = image_shape
        self.image_shape, self.x_dim = (c, h, w), c * h * w
        self.codes, self.code_dim, self.likelihood = int(codes), int(code_dim), likelihood
        self.commitment, self.ema, self.decay, self.restart = float(commitment), bool(ema), float(decay), float(restart)
        self.encoder = _conv_net(c, channels, code_dim)
        self.decoder = _deconv_net(code_dim, channels, c)
        with torch.no_grad():
            self.grid = tuple(self.encoder(torch.zeros(1, c, h, w)).shape[-2:])
        init = torch.randn(codes, code_dim) / code_dim ** 0.5
        if ema:
            self.register_buffer("codebook", init)
            self.register_buffer("ema_count", torch.ones(codes))
            self.register_buffer("ema_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)
        self.register_buffer("usage", torch.full((codes,), 1.0 / codes))
        self.register_buffer("initialized", torch.tensor(False))
        self.prior_net: CodePrior | None = None

    # --- the two Pyro programs -------------------------------------------------------------------

    @pyro_method
    def model(self, x: torch.Tensor) -> None:
        """In the plate ``"data"``: a grid ``"z"`` of codes from the uniform prior, ``"x"`` observed given it."""
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", UniformCodebook(self.codebook, self.grid))
            pyro.sample("x", self.observation(self._decode_logits(z)), obs=x)

    @pyro_method
    def guide(self, x: torch.Tensor) -> None:
        """In the plate ``"data"``: ``"z"``, the nearest codes (straight-through), and while training
        the codebook and commitment losses as a factor."""
        with pyro.plate("data", x.shape[0]):
            z_e = self._encode(x)
            if self.training and not self.initialized:
                self._initialize(z_e.detach())
            index = self._nearest(z_e)
            e = self.codebook[index]
            if self.training:
                penalty = self.commitment * (z_e - e.detach()).pow(2).sum((-3, -2, -1))
                if not self.ema:
                    penalty = penalty + (z_e.detach() - e).pow(2).sum((-3, -2, -1))
                pyro.factor("vq_loss", penalty, has_rsample=True)  # in the guide: adds to the loss
                self._update_codebook(z_e.detach(), index)
            pyro.sample("z", dist.Delta(z_e + (e - z_e).detach(), event_dim=3))

    # --- pieces ----------------------------------------------------------------------------------

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        """z_e, the encoder's grid (N, H', W', D) for rows x (N, C*H*W)."""
        return self.encoder(x.reshape(-1, *self.image_shape)).permute(0, 2, 3, 1)

    def _nearest(self, z_e: torch.Tensor) -> torch.Tensor:
        flat = z_e.detach().reshape(-1, self.code_dim)
        d = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.codebook.detach().T + self.codebook.detach().pow(2).sum(1)
        return d.argmin(1).reshape(z_e.shape[:-1])

    def _decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        batch = z.shape[:-3]
        out = self.decoder(z.reshape(-1, *self.grid, self.code_dim).permute(0, 3, 1, 2))
        c, h, w = self.image_shape
        return out[..., :h, :w].reshape(*batch, self.x_dim)

    def observation(self, logits: torch.Tensor) -> dist.TorchDistribution:
        """p(x | z) given the decoder's logits."""
        if self.likelihood == "bernoulli":
            return dist.Bernoulli(logits=logits, validate_args=False).to_event(1)
        return dist.ContinuousBernoulli(logits=logits, validate_args=False).to_event(1)

    @torch.no_grad()
    def _initialize(self, z_e: torch.Tensor) -> None:
        """The codebook starts at encoder outputs of the first training batch (drawn without replacement
        where the batch has enough positions): codes far from every output would never be chosen."""
        flat = z_e.reshape(-1, self.code_dim)
        pick = torch.randperm(len(flat), device=flat.device)[:self.codes]
        if len(pick) < self.codes:
            pick = torch.randint(len(flat), (self.codes,), device=flat.device)
        self.codebook.data.copy_(flat[pick] + 1e-3 * torch.randn_like(flat[pick]))
        if self.ema:
            self.ema_sum.copy_(self.codebook)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _update_codebook(self, z_e: torch.Tensor, index: torch.Tensor) -> None:
        """The EMA codebook step and the dead-code restarts (training only)."""
        flat, idx = z_e.reshape(-1, self.code_dim), index.reshape(-1)
        counts = torch.bincount(idx, minlength=self.codes).to(flat.dtype)
        self.usage.mul_(0.95).add_(0.05 * counts / counts.sum())  # a short memory: dead codes are found in ~50 steps
        if self.ema:
            sums = torch.zeros_like(self.ema_sum).index_add_(0, idx, flat)
            self.ema_count.mul_(self.decay).add_((1 - self.decay) * counts)
            self.ema_sum.mul_(self.decay).add_((1 - self.decay) * sums)
            n = self.ema_count.sum()
            smoothed = (self.ema_count + 1e-5) / (n + self.codes * 1e-5) * n  # Laplace smoothing
            self.codebook.copy_(self.ema_sum / smoothed[:, None])
        if self.restart > 0:
            dead = self.usage < self.restart / self.codes
            if dead.any():
                pick = torch.randint(len(flat), (int(dead.sum()),), device=flat.device)
                self.codebook.data[dead] = flat[pick]
                self.usage[dead] = 1.0 / self.codes
                if self.ema:
                    self.ema_sum[dead] = flat[pick]
                    self.ema_count[dead] = 1.0

    # --- uses ------------------------------------------------------------------------------------

    @torch.no_grad()
    def codes_of(self, x: torch.Tensor) -> torch.Tensor:
        """The code index at each latent position, (N, H', W')."""
        return self._nearest(self._encode(x))

    @torch.no_grad()
    def decode_codes(self, index: torch.Tensor) -> torch.Tensor:
        """The mean of p(x | z) for grids of code indices (N, H', W')."""
        return self.observation(self._decode_logits(self.codebook[index])).base_dist.mean

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of p(x | z(x))."""
        return self.decode_codes(self.codes_of(x))

    @torch.no_grad()
    def reconstruction_error(self, x: torch.Tensor) -> torch.Tensor:
        """-log p(x | z(x)) per row, in nats."""
        return -self.observation(self._decode_logits(self.codebook[self.codes_of(x)])).log_prob(x)

    @torch.no_grad()
    def perplexity(self, x: torch.Tensor) -> float:
        """exp(entropy) of the frequencies of the codes used for x: between 1 and K."""
        counts = torch.bincount(self.codes_of(x).reshape(-1), minlength=self.codes).double()
        p = counts / counts.sum()
        return math.exp(-(p[p > 0] * p[p > 0].log()).sum().item())

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """n images: code maps from the learned prior (:meth:`fit_prior`) if fitted, else uniform."""
        if self.prior_net is None:
            index = torch.randint(self.codes, (n, *self.grid), device=self.codebook.device)
        else:
            index = self.prior_net.sample(n)
        return self.decode_codes(index)

    def fit_prior(self, x: torch.Tensor, epochs: int = 10, batch_size: int = 128, lr: float = 1e-3,
                  channels: int = 32, layers: int = 4, seed: int = 0, progress: bool = False) -> "CodePrior":
        """Fit :class:`CodePrior` to the code maps of the images x by maximum likelihood; returns it
        (also kept as ``self.prior_net`` for :meth:`sample` and :meth:`bits_per_dim`)."""
        from pyro_gen.infer.progress import progress_bar

        was = self.training
        self.eval()
        codes = torch.cat([self.codes_of(x[i:i + 1000]) for i in range(0, len(x), 1000)])
        self.train(was)
        prior = CodePrior(self.codes, self.grid, channels, layers).to(x.device)
        g = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(prior.parameters(), lr=lr)
        with progress_bar(total=epochs * math.ceil(len(codes) / batch_size), disable=not progress, desc="prior") as bar:
            for _ in range(epochs):
                for idx in torch.randperm(len(codes), generator=g).split(batch_size):
                    loss = -prior.log_prob(codes[idx.to(codes.device)]).mean()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    bar.update()
        self.prior_net = prior.eval()
        return prior

    @torch.no_grad()
    def bits_per_dim(self, x: torch.Tensor) -> torch.Tensor:
        """The bound -log p(x | z(x)) - log p_prior(z(x)) per row, in bits per pixel (the learned
        prior if fitted, else the uniform one: then the KL term is H'W' log K)."""
        index = self.codes_of(x)
        rec = self.observation(self._decode_logits(self.codebook[index])).log_prob(x)
        if self.prior_net is None:
            prior = -math.prod(self.grid) * math.log(self.codes) * torch.ones_like(rec)
        else:
            prior = self.prior_net.log_prob(index)
        return -(rec + prior) / (self.x_dim * math.log(2))


class _MaskedConv(nn.Conv2d):
    """A convolution that sees only the positions before the centre in raster order (and the centre
    itself unless ``first``), so that a stack of them is autoregressive."""

    def __init__(self, c_in: int, c_out: int, size: int, first: bool):
        super().__init__(c_in, c_out, size, padding=size // 2)
        mask = torch.ones_like(self.weight)
        centre = size // 2
        mask[..., centre, centre + (0 if first else 1):] = 0
        mask[..., centre + 1:, :] = 0
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class CodePrior(nn.Module):
    """An autoregressive prior over grids of code indices: p(z) = prod_i p(z_i | z_<i) in raster order,
    by masked convolutions (PixelCNN, without the blind-spot fix: the grids here are small)."""

    def __init__(self, codes: int, grid: tuple[int, int], channels: int = 32, layers: int = 4):
        super().__init__()
        self.codes, self.grid = codes, tuple(grid)
        self.embed = nn.Embedding(codes, channels)
        stack: list[nn.Module] = [_MaskedConv(channels, channels, 5, first=True), nn.ReLU()]
        for _ in range(layers - 1):
            stack += [_MaskedConv(channels, channels, 3, first=False), nn.ReLU()]
        self.net = nn.Sequential(*stack, nn.Conv2d(channels, codes, 1))

    def logits(self, index: torch.Tensor) -> torch.Tensor:
        """(N, K, H', W'): the logits of each position given those before it."""
        return self.net(self.embed(index).permute(0, 3, 1, 2))

    def log_prob(self, index: torch.Tensor) -> torch.Tensor:
        """log p(z) for grids of code indices (N, H', W'), shape (N,)."""
        return -nn.functional.cross_entropy(self.logits(index), index, reduction="none").sum((-2, -1))

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """n grids, one position at a time in raster order."""
        device = self.embed.weight.device
        index = torch.zeros(n, *self.grid, dtype=torch.long, device=device)
        for i in range(self.grid[0]):
            for j in range(self.grid[1]):
                index[:, i, j] = torch.distributions.Categorical(logits=self.logits(index)[:, :, i, j]).sample()
        return index


def examples(seed: int = 0) -> dict[str, tuple[VQVAE, torch.Tensor]]:
    """Small instances with matching data, for the contract test over every model."""
    g = torch.Generator().manual_seed(seed)
    binary = (torch.rand(16, 64, generator=g) < 0.3).float()
    torch.manual_seed(seed)
    return {
        "vqvae": (VQVAE((1, 8, 8), codes=6, code_dim=3, channels=8), binary),
        "vqvae-ema": (VQVAE((1, 8, 8), codes=6, code_dim=3, channels=8, ema=True), binary),
    }


#: The objectives a VQ-VAE trains with: its guide is deterministic, so every particle is the same
#: and the importance-weighted bounds equal the ELBO (``iwae`` is kept to show that they run).
OBJECTIVES = ["trace", "iwae:3"]


# --- the command line: python -m inference.fit vqvae (see models/__init__.py) ---------------------


def cli_options(parser) -> None:
    g = parser.add_argument_group("VQ-VAE")
    g.add_argument("--codes", type=int, default=64, help="codebook size K")
    g.add_argument("--code-dim", type=int, default=16)
    g.add_argument("--channels", type=int, default=32)
    g.add_argument("--commitment", type=float, default=0.25)
    g.add_argument("--ema", action="store_true", help="EMA codebook (decay 0.99) instead of the codebook loss")
    g.add_argument("--restart", type=float, default=0.1, help="restart codes used less than this share / K (0: never)")
    g.add_argument("--prior-epochs", type=int, default=10, help="epochs of the learned autoregressive prior")


def from_cli(args, ds) -> VQVAE:
    if ds.image_shape is None:
        raise ValueError(f"vqvae needs images; {ds.name} has no image shape")
    return VQVAE(ds.image_shape, codes=args.codes, code_dim=args.code_dim, channels=args.channels,
                 likelihood="bernoulli" if ds.binary else "continuous-bernoulli", commitment=args.commitment,
                 ema=args.ema, restart=args.restart)


def report(args, model: VQVAE, ds, test: torch.Tensor, out) -> tuple[dict, dict]:
    """Codebook perplexity, the reconstruction error, the bound in bits per dimension with the uniform
    and the learned prior, and samples from the learned prior."""
    from pyro_gen.figures.plots import samples

    model.eval()
    uniform = model.bits_per_dim(test)
    model.fit_prior(ds.train.to(test.device), epochs=args.prior_epochs, seed=args.seed, progress=not args.no_progress)
    learned = model.bits_per_dim(test)
    err = model.reconstruction_error(test)
    metrics = {"perplexity": model.perplexity(test), "codes": model.codes,
               "reconstruction_nats": err.mean().item(), "bits_per_dim_uniform_prior": uniform.mean().item(),
               "bits_per_dim": learned.mean().item(), "bits_per_dim_se": (learned.std() / len(learned) ** 0.5).item()}
    return metrics, {"samples": str(samples(model.sample(64), ds.image_shape, out / "samples.png"))}
