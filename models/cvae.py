"""The conditional VAE (Sohn, Lee & Yan 2015) on image completion, and its deterministic baseline.

The task of Pyro's CVAE tutorial: an image x is cut into four quadrants; ``visible`` of
them are shown (the input x_v, the hidden pixels set to -1) and the model predicts the
hidden pixels y. Generative model, for each image::

    z ~ Normal(prior_net(x_v))                    (the prior network p(z | x_v))
    y ~ Bernoulli(generation_net(z, x_v))         (the hidden pixels only)

Guide (the recognition network)::

    q(z | x_v, y) = Normal(recognition_net(x))

Both are Pyro programs of the whole image x with the hidden pixels' log density kept by
a mask, so every tool scores log p(y | x_v): IWAE-k with the guide bounds it per image.
:class:`MaskedBaseline` is the deterministic network of the same size, y ~
Bernoulli(net(x_v)), written as a Pyro program with no latents (its guide is empty), so it
trains and is scored by the same calls and its log-likelihood is exact.

References:
    Sohn, Lee & Yan (2015), Learning Structured Output Representation using Deep Conditional
    Generative Models.
"""

from __future__ import annotations

from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, pyro_method
from torch import nn
from torch.nn import functional as F

from models import mlp
from pyro_gen.data import check_binary

__all__ = ["CVAE", "MaskedBaseline", "quadrant_mask", "OBJECTIVES", "examples"]

#: The objectives the CVAE trains with, every reparameterized one; the baseline lists its own.
OBJECTIVES = ["trace", "meanfield", "iwae:3", "dreg:3"]

# The quadrants shown for 1, 2 and 3 visible: top-left; the top half; all but bottom-right.
_VISIBLE = {1: ((0, 0),), 2: ((0, 0), (0, 1)), 3: ((0, 0), (0, 1), (1, 0))}


def quadrant_mask(visible: int, image_shape: Sequence[int] = (1, 28, 28)) -> torch.Tensor:
    """A boolean mask over the flattened image, True on the ``visible`` quadrants shown as input
    (1: top-left; 2: the top half; 3: all but the bottom-right)."""
    if visible not in _VISIBLE:
        raise ValueError(f"visible must be 1, 2 or 3 quadrants, got {visible!r}")
    c, h, w = image_shape
    mask = torch.zeros(c, h, w, dtype=torch.bool)
    for row, col in _VISIBLE[visible]:
        mask[:, row * h // 2:(row + 1) * h // 2 if row == 0 else h, col * w // 2:(col + 1) * w // 2 if col == 0 else w] = True
    return mask.flatten()



class _Completion(PyroModule):
    """What the CVAE and its baseline share: the visible-quadrant mask, the input x_v and the data check."""

    def __init__(self, x_dim: int, image_shape: Sequence[int], visible: int):
        super().__init__()
        self.x_dim, self.image_shape, self.visible = int(x_dim), tuple(image_shape), int(visible)
        mask = quadrant_mask(visible, image_shape)
        if mask.numel() != x_dim:
            raise ValueError(f"image_shape {tuple(image_shape)} has {mask.numel()} pixels but x_dim is {x_dim}")
        self.register_buffer("shown", mask)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """x_v: the visible quadrants, the hidden pixels set to -1 (as in Pyro's tutorial)."""
        return torch.where(self.shown, x, torch.full_like(x, -1.0))

    def hidden_pixels(self, logits: torch.Tensor) -> dist.TorchDistribution:
        """p(y | ...): Bernoulli over the hidden pixels only (the visible ones are masked out)."""
        return dist.Bernoulli(logits=logits, validate_args=False).mask(~self.shown).to_event(1)

    def check_data(self, x: torch.Tensor) -> None:
        """Rows of x_dim binary pixels."""
        check_binary(x, f"{type(self).__name__} (image completion)", self.x_dim)

    @torch.no_grad()
    def complete(self, x: torch.Tensor, n: int = 1) -> torch.Tensor:
        """n completions of each image: visible quadrants kept, hidden ones drawn as pixel
        probabilities: (n, N, x_dim)."""
        probs = self.predict(x, n)
        return torch.where(self.shown, x, probs)

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True) -> torch.Tensor:
        """n completions of a blank input (every visible pixel 0): (n, x_dim); the baseline's are all one."""
        probs = self.complete(torch.zeros(1, self.x_dim, device=self.shown.device), n)[:, 0]
        return probs if mean else torch.bernoulli(probs)


class CVAE(_Completion):
    """The conditional VAE for completing images from ``visible`` quadrants.

    Args:
        x_dim: pixels per image.
        image_shape: (C, H, W).
        visible: quadrants shown (1, 2 or 3).
        z_dim: latent size (200 in Pyro's tutorial).
        hidden: hidden widths of the prior, recognition and generation networks.

    Examples:
        >>> import torch
        >>> cvae = CVAE(64, (1, 8, 8), visible=2, z_dim=4, hidden=(32,))
        >>> x = torch.bernoulli(torch.full((3, 64), 0.3))
        >>> cvae.complete(x, n=5).shape
        torch.Size([5, 3, 64])
        >>> CVAE(64, (1, 8, 8), visible=4)
        Traceback (most recent call last):
        ...
        ValueError: visible must be 1, 2 or 3 quadrants, got 4
    """

    def __init__(self, x_dim: int = 784, image_shape: Sequence[int] = (1, 28, 28), visible: int = 1, z_dim: int = 200,
                 hidden: Sequence[int] = (500, 500)):
        super().__init__(x_dim, image_shape, visible)
        self.z_dim = int(z_dim)
        self.prior_net = mlp([x_dim, *hidden, 2 * z_dim])
        self.recognition_net = mlp([2 * x_dim, *hidden, 2 * z_dim])
        self.generation_net = mlp([z_dim + x_dim, *reversed(tuple(hidden)), x_dim])

    @staticmethod
    def _gaussian(out: torch.Tensor) -> dist.TorchDistribution:
        loc, raw = out.chunk(2, -1)
        return dist.Normal(loc, F.softplus(raw) + 1e-4).to_event(1)

    @pyro_method
    def model(self, x: torch.Tensor) -> None:
        """In the plate ``"data"``: ``"z"`` from the prior network p(z | x_v), then ``"y"``, the hidden
        pixels of x, from Bernoulli(generation_net(z, x_v))."""
        xv = self.inputs(x)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self._gaussian(self.prior_net(xv)))
            pyro.sample("y", self.hidden_pixels(self.generation_net(torch.cat([z, xv.expand(*z.shape[:-1], -1)], -1))),
                        obs=x)

    @pyro_method
    def guide(self, x: torch.Tensor) -> None:
        """In the plate ``"data"``: ``"z"`` from the recognition network q(z | x_v, y)."""
        xv = self.inputs(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self._gaussian(self.recognition_net(torch.cat([xv, x], -1))))

    @torch.no_grad()
    def predict(self, x: torch.Tensor, n: int = 1) -> torch.Tensor:
        """Pixel probabilities of n draws from p(y | x_v): z from the prior network: (n, N, x_dim)."""
        xv = self.inputs(x)
        z = self._gaussian(self.prior_net(xv)).sample((n,))
        return torch.sigmoid(self.generation_net(torch.cat([z, xv.expand(n, *xv.shape)], -1)))


class MaskedBaseline(_Completion):
    """The deterministic baseline: y ~ Bernoulli(net(x_v)), a network of the CVAE's widths.

    A Pyro program with no latent: its guide is empty, ``fit`` trains it by maximum likelihood
    and IWAE-k of it is its exact log p(y | x_v).
    """

    objectives = ["trace", "iwae:3"]

    def __init__(self, x_dim: int = 784, image_shape: Sequence[int] = (1, 28, 28), visible: int = 1,
                 hidden: Sequence[int] = (500, 500)):
        super().__init__(x_dim, image_shape, visible)
        self.net = mlp([x_dim, *hidden, *reversed(tuple(hidden)), x_dim])

    @pyro_method
    def model(self, x: torch.Tensor) -> None:
        """In the plate ``"data"``: ``"y"``, the hidden pixels of x, from Bernoulli(net(x_v))."""
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", self.hidden_pixels(self.net(self.inputs(x))), obs=x)

    @pyro_method
    def guide(self, x: torch.Tensor) -> None:
        """No latent variables: nothing to sample."""

    @torch.no_grad()
    def predict(self, x: torch.Tensor, n: int = 1) -> torch.Tensor:
        """The (single) prediction, repeated n times: (n, N, x_dim)."""
        return torch.sigmoid(self.net(self.inputs(x))).expand(n, *x.shape)


def examples(seed: int = 0) -> dict[str, tuple[_Completion, torch.Tensor]]:
    """Small instances with matching data, for the contract test over every model."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(16, 64, generator=g) < 0.3).float()
    torch.manual_seed(seed)
    return {"cvae-1": (CVAE(64, (1, 8, 8), 1, z_dim=3, hidden=(16,)), x),
            "cvae-3": (CVAE(64, (1, 8, 8), 3, z_dim=3, hidden=(16,)), x),
            "baseline-2": (MaskedBaseline(64, (1, 8, 8), 2, hidden=(16,)), x)}


# --- the command line: python -m inference.fit cvae (see models/__init__.py) ---------------------


def cli_options(parser) -> None:
    """The CVAE's flags."""
    g = parser.add_argument_group("conditional VAE (image completion)")
    g.add_argument("--visible", type=int, default=1, choices=[1, 2, 3], help="quadrants shown as input")
    g.add_argument("--latent-dim", type=int, default=200)
    g.add_argument("--hidden", type=int, nargs="+", default=[500, 500])
    g.add_argument("--baseline", action="store_true", help="train the deterministic baseline instead")


def completions_figure(model: _Completion, x: torch.Tensor, path, n: int = 6, title: str | None = None):
    """One row per image: the input (hidden quadrants grey), the truth, then ``n`` completions."""
    from pyro_gen.figures.plots import image_grid

    shown = torch.where(model.shown, x, torch.full_like(x, 0.5))
    rows = torch.cat([shown.unsqueeze(1), x.unsqueeze(1), model.complete(x, n).transpose(0, 1)], 1)
    return image_grid(rows.reshape(-1, model.x_dim), model.image_shape, path, nrow=n + 2,
                      title=title or "input (grey: hidden), truth, then completions drawn from p(y | x_v)")


def report(args, model: _Completion, ds, test: torch.Tensor, out) -> tuple[dict, dict]:
    """The completions figure (the conditional log-likelihood is fit's test log-likelihood)."""
    picks = test[torch.randperm(len(test), generator=torch.Generator().manual_seed(args.seed))[:8]]
    return {"visible": args.visible}, {"completions": str(completions_figure(model, picks, out / "completions.png"))}


def from_cli(args, ds):
    """The CVAE (or with ``--baseline`` the deterministic network) for binary images ``ds``."""
    if ds.image_shape is None or not ds.binary and args.binarize != "dynamic":
        raise ValueError(f"image completion needs binary images; {ds.name} is not: use --data binarized-mnist, "
                         "or --binarize dynamic")
    if args.baseline:
        return MaskedBaseline(ds.dim, ds.image_shape, args.visible, hidden=args.hidden)
    return CVAE(ds.dim, ds.image_shape, args.visible, z_dim=args.latent_dim, hidden=args.hidden)
