"""Simulation-based calibration of an inference procedure on a model.

Draw parameters from the prior and data from the model, run the inference on the
simulated data, and record where the true parameter falls among the L posterior
draws (its rank, 0..L). If the inference returns the exact posterior, ranks are
uniform (Talts et al. 2018), whatever the model. :func:`sbc` returns an
:class:`SBCResult` holding the ranks, a chi-square test of uniformity per scalar
parameter (with a Bonferroni verdict over all of them), the VSBC test of Yao et al.
(2018) (the posterior quantiles q of the truth should be distributed symmetrically
about 1/2; a two-sample Kolmogorov-Smirnov test of q against 1 - q), rank histograms
with the binomial band of Talts et al., and ECDF-difference plots with ArviZ's
simultaneous band.

Pyro has no SBC; ArviZ supplies the ECDF band, scipy the tests.

References:
    Talts, Betancourt, Simpson, Vehtari & Gelman (2018), Validating Bayesian
    Inference Algorithms with Simulation-Based Calibration.
    Yao, Vehtari, Simpson & Gelman (2018), Yes, but Did It Work?: Evaluating
    Variational Inference, Sec. 3 (VSBC).
    Saeilynoja, Buerkner & Vehtari (2022), Graphical test for discrete uniformity
    and its applications in goodness-of-fit evaluation and multiple sample comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from ..infer.progress import progress_bar

__all__ = ["SBCResult", "simulate", "sbc", "guide_draws", "vi_procedure"]


def simulate(model: Callable, *args, **kwargs) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One draw from the prior predictive: (latent values, observed-site values)."""
    with torch.no_grad(), pyro.validation_enabled(False):
        tr = poutine.trace(poutine.uncondition(model)).get_trace(*args, **kwargs)
    latents, observed = {}, {}
    for name, site in tr.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        was_observed = site["infer"].get("was_observed", False)  # marked so by poutine.uncondition
        (observed if was_observed else latents)[name] = site["value"].detach()
    return latents, observed


@torch.no_grad()
def guide_draws(guide: Callable, *args, num_samples: int = 100, sites: Sequence[str] | None = None,
                **kwargs) -> dict[str, torch.Tensor]:
    """``num_samples`` independent runs of the guide: ``{site: draws}``, the draws of shape
    ``(num_samples, *shape)`` for a site of shape ``shape``."""
    out: dict[str, list[torch.Tensor]] = {}
    with pyro.validation_enabled(False):
        for _ in range(num_samples):
            tr = poutine.trace(guide).get_trace(*args, **kwargs)
            for name, site in tr.nodes.items():
                if site["type"] == "sample" and not site_is_subsample(site) and not site["is_observed"] \
                        and not site["infer"].get("is_auxiliary") and (sites is None or name in sites):
                    out.setdefault(name, []).append(site["value"].detach())
    return {k: torch.stack(v) for k, v in out.items()}


def vi_procedure(model: Callable, guide: str = "diagonal", objective: str = "trace", steps: int = 500,
                 lr: float = 0.05, num_draws: int = 99) -> Callable[..., dict[str, torch.Tensor]]:
    """An inference procedure for :func:`sbc`: fit a fresh AutoGuide to the given data
    with :func:`pyro_gen.fit` (``steps`` full-batch steps, LR decaying 100-fold),
    then draw ``num_draws`` from it. Guides as in :class:`pyro_gen.compare.AutoGuided`."""
    from .compare import AutoGuided
    from ..infer.train import fit

    def infer(*data):
        # A param store of its own for each fit: under module_local_params=False a fresh AutoGuide
        # would otherwise take the previous simulation's fitted values from the global store
        # (same names), and the simulations would not be independent. The user's store is put back.
        with pyro.get_param_store().scope():
            pair = AutoGuided(model, guide)
            fit(pair.model, pair.guide, data if len(data) > 1 else data[0], objective=objective, epochs=steps,
                batch_size=len(data[0]), lr=lr, lr_schedule=f"exponential:{0.01 ** (1 / steps):.6f}", seed=None,
                progress=False)
            return guide_draws(pair.guide, *data, num_samples=num_draws)

    return infer


def _default_data(args: tuple, observed: Mapping[str, torch.Tensor]) -> tuple:
    """Replace the first argument (the data) by the single observed site, reshaped to it."""
    if len(observed) != 1 or not args or not torch.is_tensor(args[0]):
        raise ValueError(
            f"cannot tell how simulated observations {sorted(observed)} map to the model's arguments; "
            "pass data_from=lambda observed: (...args...)")
    value = next(iter(observed.values()))
    if value.numel() != args[0].numel():
        raise ValueError(f"the observed site has {value.numel()} values but the data argument has "
                         f"{args[0].numel()}; pass data_from=")
    return (value.reshape(args[0].shape).to(args[0].dtype), *args[1:])


@dataclass
class SBCResult:
    """Ranks of the truth among L posterior draws, per simulation and scalar parameter."""

    ranks: dict[str, np.ndarray]  # (num_simulations, *shape), integers in 0..L
    num_draws: int
    truths: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def num_simulations(self) -> int:
        return len(next(iter(self.ranks.values())))

    def _flat(self) -> dict[str, np.ndarray]:
        out = {}
        for name, r in self.ranks.items():
            flat = r.reshape(len(r), -1)
            for j in range(flat.shape[1]):
                out[name if flat.shape[1] == 1 else f"{name}[{j}]"] = flat[:, j]
        return out

    def bins(self) -> int:
        """Histogram bins: at most 20, at least about 5 expected ranks each, dividing L+1 when possible."""
        target = max(2, min(20, self.num_simulations // 5, self.num_draws + 1))
        divisors = [b for b in range(target, 1, -1) if (self.num_draws + 1) % b == 0]
        return divisors[0] if divisors and divisors[0] >= target / 2 else target

    def _expected(self, bins: int) -> np.ndarray:
        edges = np.floor(np.arange(self.num_draws + 1) * bins / (self.num_draws + 1)).astype(int)
        return np.bincount(edges, minlength=bins) / (self.num_draws + 1)

    def _counts(self, ranks: np.ndarray, bins: int) -> np.ndarray:
        return np.bincount((ranks * bins) // (self.num_draws + 1), minlength=bins)

    def p_values(self) -> dict[str, float]:
        """Chi-square test of uniform ranks, per scalar parameter."""
        from scipy.stats import chisquare

        b = self.bins()
        expected = self._expected(b) * self.num_simulations
        return {k: float(chisquare(self._counts(r, b), expected).pvalue) for k, r in self._flat().items()}

    def vsbc_p_values(self) -> dict[str, float]:
        """VSBC: KS two-sample test of the truth's posterior quantile q against 1 - q."""
        from scipy.stats import ks_2samp

        out = {}
        for k, r in self._flat().items():
            q = (r + 0.5) / (self.num_draws + 1)
            out[k] = float(ks_2samp(q, 1.0 - q).pvalue)
        return out

    def passed(self, alpha: float = 0.01) -> bool:
        """Whether every parameter's rank test passes at level alpha (Bonferroni over parameters)."""
        p = self.p_values()
        return min(p.values()) > alpha / len(p)

    def summary(self, alpha: float = 0.01) -> dict:
        """The result as a dict for reports: ``num_simulations``, ``num_draws``, ``bins``, the rank
        tests' ``p_values`` and ``min_p_value``, the ``vsbc_p_values``, and ``passed`` at level ``alpha``."""
        p, v = self.p_values(), self.vsbc_p_values()
        return {"num_simulations": self.num_simulations, "num_draws": self.num_draws, "bins": self.bins(),
                "p_values": p, "min_p_value": min(p.values()), "vsbc_p_values": v, "passed": self.passed(alpha)}

    def rank_histogram(self, path, max_params: int = 12) -> Path:
        """Rank histograms with the 99% band of counts under uniform ranks (Talts et al. Fig. 1)."""
        from scipy.stats import binom

        from ..figures.plots import _plt, _save

        plt = _plt()
        flat = list(self._flat().items())[:max_params]
        b = self.bins()
        cols = min(4, len(flat))
        rows = math.ceil(len(flat) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
        expected = self._expected(b)
        p = self.p_values()
        for ax, (name, r) in zip(axes.flat, flat):
            lo = binom.ppf(0.005, self.num_simulations, expected)
            hi = binom.ppf(0.995, self.num_simulations, expected)
            ax.fill_between(np.arange(b + 1), np.r_[lo, lo[-1]], np.r_[hi, hi[-1]], step="post", color="0.85",
                            label="99% band")
            ax.bar(np.arange(b), self._counts(r, b), width=1.0, align="edge", color="C0", alpha=0.8)
            ax.set_title(f"{name}  p={p[name]:.3f}", fontsize=9)
            ax.set_xticks([])
        for ax in list(axes.flat)[len(flat):]:
            ax.axis("off")
        fig.suptitle(f"SBC rank histograms ({self.num_simulations} simulations, {self.num_draws} draws)")
        fig.tight_layout()
        return _save(fig, path)

    def ecdf_plot(self, path, max_params: int = 12, prob: float = 0.95) -> Path:
        """ECDF of the fractional ranks minus the uniform CDF, with ArviZ's simultaneous band."""
        import warnings

        from arviz.stats.ecdf_utils import ecdf_confidence_band

        from ..figures.plots import _plt, _save

        plt = _plt()
        flat = list(self._flat().items())[:max_params]
        grid = np.linspace(0, 1, 101)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lo, hi = ecdf_confidence_band(self.num_simulations, grid, grid, prob=prob, method="optimized")
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.fill_between(grid, lo - grid, hi - grid, color="0.85", label=f"{prob:.0%} simultaneous band")
        for name, r in flat:
            u = (r + 0.5) / (self.num_draws + 1)
            ecdf = (u[None, :] <= grid[:, None]).mean(1)
            ax.plot(grid, ecdf - grid, lw=1.2, label=name)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xlabel("fractional rank")
        ax.set_ylabel("ECDF - uniform CDF")
        ax.legend(fontsize=7, ncol=2)
        ax.set_title("SBC: ECDF difference")
        return _save(fig, path)


def sbc(model: Callable, infer: Callable[..., Mapping[str, torch.Tensor]], *args, num_simulations: int = 100,
        data_from: Callable[[Mapping[str, torch.Tensor]], tuple] | None = None, sites: Sequence[str] | None = None,
        seed: int = 0, progress: bool = False, **kwargs) -> SBCResult:
    """Simulation-based calibration of ``infer`` on ``model``.

    Args:
        model: the Pyro model; run with its observations uncondition-ed to simulate.
        infer: called as ``infer(*data_args)`` on each simulated data set; returns
            ``{site: draws}`` with draws of shape ``(L, *shape)`` for a site of shape ``shape``, e.g. from a
            guide fitted to that data (:func:`guide_draws`) or from MCMC.
        args: the model's arguments (the first is the data; its values are ignored).
        data_from: maps the simulated observed sites to the arguments of ``infer``;
            by default the single observed site, reshaped to the first argument.
        sites: which latent sites to check (default: every one ``infer`` returns).
        seed: seeds the simulations; each one's inference runs after the simulation.
    """
    if isinstance(num_simulations, bool) or not isinstance(num_simulations, int) or num_simulations < 10:
        raise ValueError(f"num_simulations must be an integer >= 10, got {num_simulations!r}")
    ranks: dict[str, list[np.ndarray]] = {}
    truths: dict[str, list[np.ndarray]] = {}
    num_draws = None
    for i in progress_bar(range(num_simulations), desc="SBC", unit="sim", disable=not progress):
        pyro.set_rng_seed(seed * 1_000_003 + i)
        latents, observed = simulate(model, *args, **kwargs)
        data = data_from(observed) if data_from is not None else _default_data(args, observed)
        draws = infer(*data)
        names = list(sites) if sites is not None else list(draws)
        for name in names:
            if name not in draws or name not in latents:
                raise ValueError(f"site {name!r}: infer returned {sorted(draws)}, the model's latents are "
                                 f"{sorted(latents)}")
            d, truth = draws[name].detach().cpu(), latents[name].detach().cpu()
            if d.shape[1:] != truth.shape:
                raise ValueError(f"site {name!r}: draws have shape {tuple(d.shape)}, expected (L, "
                                 f"{', '.join(map(str, truth.shape))})")
            if num_draws is None:
                num_draws = len(d)
            elif len(d) != num_draws:
                raise ValueError(f"infer returned {len(d)} draws, earlier {num_draws}: keep L fixed")
            ranks.setdefault(name, []).append((d < truth).sum(0).numpy())
            truths.setdefault(name, []).append(truth.numpy())
    return SBCResult({k: np.stack(v) for k, v in ranks.items()}, int(num_draws),
                     {k: np.stack(v) for k, v in truths.items()})
