"""Flows as density models: 2-D test energies and toy data sets, fitted by VI or maximum likelihood.

- :data:`ENERGIES`: the four unnormalized 2-D densities exp(-U(z)) of Rezende & Mohamed
  (2015, Table 1), with :func:`log_normalizer` by quadrature on a fine grid, so
  KL(q || p) = log Z - ELBO is known to quadrature accuracy.
- :func:`toy_data`: moons and circles (scikit-learn's generators), 8 Gaussians and a
  checkerboard (written here: scikit-learn has neither).
- :func:`fit_energy` (reverse KL, reparameterized) and :func:`fit_data` (maximum
  likelihood) fit a :class:`~pyro_gen.flows.Flow` with Adam and a decaying learning rate.

U2-U4 as printed depend on z1 only through w(z1), so exp(-U) is not integrable over
R^2 (the paper plots them on [-4, 4]^2). Here they are multiplied by a broad
Gaussian envelope N(z1; 0, 2^2), written into U, so that log Z and the KL exist.

References:
    Rezende & Mohamed (2015), Variational Inference with Normalizing Flows, Table 1 / Fig. 3.
    Grathwohl et al. (2019), FFJORD (8 Gaussians, checkerboard toy sets).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .families import Flow

__all__ = ["ENERGIES", "TOY_DATA", "energy", "log_normalizer", "toy_data", "fit_energy", "fit_data", "kl_to_energy",
           "grid", "FitTrace"]

ENVELOPE = 2.0  # std of the z1 envelope that makes U2-U4 normalizable


def _w1(z):
    return torch.sin(2 * math.pi * z[..., 0] / 4)


def _w2(z):
    return 3 * torch.exp(-0.5 * ((z[..., 0] - 1) / 0.6) ** 2)


def _w3(z):
    return 3 * torch.sigmoid((z[..., 0] - 1) / 0.3)


def _envelope(z):
    return 0.5 * (z[..., 0] / ENVELOPE) ** 2


def _u1(z):
    ring = 0.5 * ((z.norm(dim=-1) - 2) / 0.4) ** 2
    modes = torch.logaddexp(-0.5 * ((z[..., 0] - 2) / 0.6) ** 2, -0.5 * ((z[..., 0] + 2) / 0.6) ** 2)
    return ring - modes


def _u2(z):
    return 0.5 * ((z[..., 1] - _w1(z)) / 0.4) ** 2 + _envelope(z)


def _u3(z):
    a = -0.5 * ((z[..., 1] - _w1(z)) / 0.35) ** 2
    b = -0.5 * ((z[..., 1] - _w1(z) + _w2(z)) / 0.35) ** 2
    return -torch.logaddexp(a, b) + _envelope(z)


def _u4(z):
    a = -0.5 * ((z[..., 1] - _w1(z)) / 0.4) ** 2
    b = -0.5 * ((z[..., 1] - _w1(z) + _w3(z)) / 0.35) ** 2
    return -torch.logaddexp(a, b) + _envelope(z)


#: The 2-D test energies U1-U4 of Rezende & Mohamed (2015), by name. Each maps points z of shape
#: (..., 2) to U(z), the density being exp(-U(z)) / Z (U2-U4 with a wide Gaussian envelope, so that Z is
#: finite).
ENERGIES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"U1": _u1, "U2": _u2, "U3": _u3, "U4": _u4}


def energy(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The energy U (log p(z) = -U(z) - log Z) by name; z has shape (..., 2)."""
    if name not in ENERGIES:
        raise ValueError(f"unknown energy {name!r}; valid choices: {', '.join(ENERGIES)}")
    return ENERGIES[name]


def grid(lim: float = 4.0, n: int = 200, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An n x n grid on [-lim, lim]^2: (points (n*n, 2), xs, ys), for quadrature and plots."""
    xs = torch.linspace(-lim, lim, n, dtype=dtype)
    gx, gy = torch.meshgrid(xs, xs, indexing="xy")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], -1), xs, xs


@torch.no_grad()
def log_normalizer(name: str, lim: float = 10.0, n: int = 2001) -> float:
    """log Z = log of the integral of exp(-U) over R^2, by the midpoint rule on [-lim, lim]^2 (float64).

    The densities are smooth at scale >= 0.35 and negligible beyond ``|z| = 10``, so a
    0.01 spacing gives many more digits than the KLs reported need.
    """
    pts, xs, _ = grid(lim, n)
    cell = (xs[1] - xs[0]).item() ** 2
    return (torch.logsumexp(-energy(name)(pts), 0) + math.log(cell)).item()


def _check_xy(x: torch.Tensor, what: str) -> torch.Tensor:
    if not torch.is_tensor(x) or x.dim() != 2:
        raise ValueError(f"{what} must be a 2-D tensor (N, D), got {type(x).__name__} "
                         f"{tuple(x.shape) if torch.is_tensor(x) else ''}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{what} has NaN or inf entries")
    return x


def _eight_gaussians(n, g):
    centers = torch.tensor([(math.cos(a), math.sin(a)) for a in torch.arange(8) * math.pi / 4]) * 2.0
    return centers[torch.randint(8, (n,), generator=g)] + 0.1 * torch.randn(n, 2, generator=g)


def _checkerboard(n, g):
    x1 = torch.rand(n, generator=g) * 4 - 2
    x2 = torch.rand(n, generator=g) - torch.randint(2, (n,), generator=g) * 2.0
    x2 = x2 + torch.floor(x1) % 2
    return torch.stack([x1, x2], 1)


def _sklearn(kind):
    def make(n, g):
        from sklearn import datasets

        seed = int(torch.randint(2 ** 31 - 1, (1,), generator=g))
        if kind == "moons":
            x, _ = datasets.make_moons(n, noise=0.05, random_state=seed)
            x = (x - [0.5, 0.25]) * 1.5
        else:
            x, _ = datasets.make_circles(n, noise=0.05, factor=0.5, random_state=seed)
            x = x * 2.0
        return torch.as_tensor(x, dtype=torch.float32)
    return make


#: The 2-D toy data sets of :func:`toy_data`, by name. Each is a function ``(n, generator)`` that
#: returns n points of shape (n, 2) (``moons`` and ``circles`` need scikit-learn).
TOY_DATA = {"moons": _sklearn("moons"), "circles": _sklearn("circles"), "8gaussians": _eight_gaussians,
            "checkerboard": _checkerboard}


def toy_data(name: str, n: int = 2000, seed: int = 0) -> torch.Tensor:
    """n points (float32, shape (n, 2)) of a 2-D toy data set, roughly within [-3, 3]^2."""
    if name not in TOY_DATA:
        raise ValueError(f"unknown toy data set {name!r}; valid choices: {', '.join(TOY_DATA)}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return TOY_DATA[name](n, torch.Generator().manual_seed(seed)).float()


@dataclass
class FitTrace:
    """What the fitting loops return: the loss per step and the seconds taken."""

    losses: list[float]
    seconds: float
    steps: int


def _loop(params, loss_fn: Callable[[], torch.Tensor], steps: int, lr: float, final_lr: float,
          max_seconds: float | None = None) -> FitTrace:
    """Adam with a learning rate decaying exponentially from lr to final_lr.

    The decay follows progress through the budget: the fraction of ``steps`` taken or,
    with ``max_seconds``, of the seconds spent, whichever is further; the loop stops
    when either runs out, so a time-budgeted fit still ends at final_lr.
    """
    import time

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    params = [p for p in params if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    losses, t0 = [], time.perf_counter()
    for step in range(steps):
        elapsed = time.perf_counter() - t0
        progress = max(step / steps, elapsed / max_seconds if max_seconds else 0.0)
        if progress >= 1.0:
            break
        for group in opt.param_groups:
            group["lr"] = lr * (final_lr / lr) ** progress
        loss = loss_fn()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss became {loss.item()} at step {len(losses)}; lower the learning rate")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 100.0)  # a rare huge gradient from a far-out sample
        opt.step()
        losses.append(loss.item())
    return FitTrace(losses, time.perf_counter() - t0, len(losses))


def fit_energy(flow: Flow, name_or_u: str | Callable, steps: int = 2000, batch: int = 256, lr: float = 1e-2,
               final_lr: float = 1e-4, anneal: int = 0, max_seconds: float | None = None) -> FitTrace:
    """Fit q = flow to p ∝ exp(-U) by minimizing KL(q || p) (the negative ELBO) with reparameterized draws.

    Args:
        anneal: steps over which U is tempered from 0.01 U to U (Rezende & Mohamed's
            annealing); 0 for none.
        max_seconds: a time budget; the fit stops when it or ``steps`` runs out.

    References:
        Rezende & Mohamed (2015), Sec. 6.1.
    """
    u = energy(name_or_u) if isinstance(name_or_u, str) else name_or_u
    step = [0]

    def loss():
        beta = min(1.0, 0.01 + step[0] / anneal) if anneal else 1.0
        step[0] += 1
        z, log_q = flow.rsample_and_log_prob(batch)
        return (log_q + beta * u(z)).mean()

    return _loop(flow.parameters(), loss, steps, lr, final_lr, max_seconds)


@torch.no_grad()
def kl_to_energy(flow: Flow, name: str, n: int = 20000, log_z: float | None = None) -> tuple[float, float]:
    """KL(q || p) = log Z - ELBO, estimated with n draws from q; returns (kl, standard error)."""
    log_z = log_normalizer(name) if log_z is None else log_z
    z, log_q = flow.rsample_and_log_prob(n)
    gap = (log_q + energy(name)(z)).double()
    return log_z + gap.mean().item(), gap.std().item() / math.sqrt(n)


def fit_data(flow: Flow, x: torch.Tensor, steps: int = 2000, batch: int = 512, lr: float = 5e-3,
             final_lr: float = 1e-4, seed: int = 0, max_seconds: float | None = None) -> FitTrace:
    """Fit a flow (``direction="score"``) to the rows of x by maximum likelihood with minibatches."""
    _check_xy(x, "x")
    if x.shape[1] != flow.dim:
        raise ValueError(f"x has {x.shape[1]} columns, the flow has dim {flow.dim}")
    g = torch.Generator().manual_seed(seed)

    def loss():
        idx = torch.randint(len(x), (min(batch, len(x)),), generator=g)
        return -flow.log_prob(x[idx]).mean()

    return _loop(flow.parameters(), loss, steps, lr, final_lr, max_seconds)
