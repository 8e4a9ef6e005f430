"""MCMC beside VI: Pyro's NUTS as the gold standard on small models, and the comparison.

:func:`nuts` runs Pyro's NUTS (discrete latents summed out by enumeration when the
model marks them) and returns draws, ArviZ's R-hat and ESS, and an
``arviz.InferenceData``. :func:`compare_posteriors` lines up VI draws against NUTS
draws per scalar parameter: means, standard deviations, the mean error in units of
the NUTS standard deviation, the SD ratio, and a forest plot of central intervals
(:func:`interval_plot`).

References:
    Hoffman & Gelman (2014), The No-U-Turn Sampler.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import pyro
import torch

from ..data import data_args

__all__ = ["NUTSResult", "nuts", "compare_posteriors", "interval_plot"]


@dataclass
class NUTSResult:
    """Draws ``{site: (chains * samples, *shape)}``, diagnostics per site, and the InferenceData."""

    draws: dict[str, torch.Tensor]
    r_hat: dict[str, np.ndarray]
    ess_bulk: dict[str, np.ndarray]
    idata: object
    seconds: float

    def converged(self, r_hat_max: float = 1.01, ess_min: float = 100.0) -> bool:
        """Whether every site's R-hat is at most ``r_hat_max`` and its bulk ESS at least ``ess_min``
        (elementwise, for every coordinate of every site)."""
        return all((r <= r_hat_max).all() for r in self.r_hat.values()) and \
            all((e >= ess_min).all() for e in self.ess_bulk.values())


def nuts(model: Callable, *args, num_samples: int = 500, warmup_steps: int = 500, num_chains: int = 2,
         seed: int = 0, max_plate_nesting: int | None = None, init_values: Mapping[str, torch.Tensor] | None = None,
         progress: bool = False, **kwargs) -> NUTSResult:
    """Run NUTS on ``model(*args)``: ``num_chains`` chains, one after another, each
    seeded from ``seed``; R-hat and bulk ESS from ArviZ.

    Discrete sites the model marks for enumeration are summed out (give
    ``max_plate_nesting``). ``init_values`` starts every chain there (e.g. at a VI
    posterior's means): for mixtures and HMMs, whose posteriors have one mode per
    relabelling of the states, this keeps all chains on the same labelling.
    """
    import time

    args = data_args(args)  # a torch Dataset or DataLoader: its tensors

    from pyro.infer import MCMC, NUTS
    from pyro.infer.autoguide import init_to_value

    from .posterior import _az

    for name, v in (("num_samples", num_samples), ("warmup_steps", warmup_steps), ("num_chains", num_chains)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    # One MCMC object per chain: Pyro runs several chains in worker processes, which
    # costs more than it gains on a 2-core machine and breaks under some notebook kernels.
    chains: list[dict[str, torch.Tensor]] = []
    t0 = time.perf_counter()
    for c in range(num_chains):
        pyro.set_rng_seed(seed * 1000 + c)
        init = {} if init_values is None else {"init_strategy": init_to_value(values=dict(init_values))}
        kernel = NUTS(model, max_plate_nesting=max_plate_nesting, jit_compile=False, **init)
        run = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup_steps, num_chains=1,
                   disable_progbar=not progress)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            run.run(*args, **kwargs)
        chains.append({k: v.detach() for k, v in run.get_samples().items()})
    seconds = time.perf_counter() - t0
    az = _az()
    grouped = {k: torch.stack([ch[k] for ch in chains]) for k in chains[0]}
    idata = az.from_dict(posterior={k: v.double().numpy() for k, v in grouped.items()})
    r_hat, ess = az.rhat(idata), az.ess(idata, method="bulk")
    draws = {k: v.reshape(-1, *v.shape[2:]) for k, v in grouped.items()}
    return NUTSResult(draws, {k: np.asarray(r_hat[k]) for k in draws}, {k: np.asarray(ess[k]) for k in draws},
                      idata, seconds)


def _scalars(draws: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    out = {}
    for name, d in draws.items():
        flat = torch.as_tensor(d).detach().double().reshape(len(d), -1).cpu().numpy()
        for j in range(flat.shape[1]):
            out[name if flat.shape[1] == 1 else f"{name}[{j}]"] = flat[:, j]
    return out


def compare_posteriors(vi: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]) -> list[dict]:
    """Per scalar parameter: VI and reference (NUTS) mean and SD, the mean error in
    reference SDs (``z_mean``) and the SD ratio VI / reference."""
    missing = sorted(set(reference) - set(vi))
    if missing:
        raise ValueError(f"VI draws lack the sites {missing} that the reference has")
    a, b = _scalars({k: vi[k] for k in reference}), _scalars(reference)
    rows = []
    for name, ref in b.items():
        if name not in a:
            raise ValueError(f"{name}: VI and reference draws have different shapes")
        v = a[name]
        sd = ref.std(ddof=1)
        rows.append({"param": name, "vi_mean": float(v.mean()), "ref_mean": float(ref.mean()),
                     "vi_sd": float(v.std(ddof=1)), "ref_sd": float(sd),
                     "z_mean": float((v.mean() - ref.mean()) / sd) if sd > 0 else float("nan"),
                     "sd_ratio": float(v.std(ddof=1) / sd) if sd > 0 else float("nan")})
    return rows


def interval_plot(draws: Mapping[str, Mapping[str, torch.Tensor]], path, prob: float = 0.9, max_params: int = 30):
    """Central ``prob`` intervals and medians of each scalar parameter, one row per
    parameter, one colour per method (e.g. ``{"NUTS": ..., "trace/diagonal": ...}``)."""
    from ..figures.plots import _plt, _save

    plt = _plt()
    methods = list(draws)
    scalars = {m: _scalars(d) for m, d in draws.items()}
    params = list(scalars[methods[0]])[:max_params]
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(params) * len(methods) + 1.2))
    lo_q, hi_q = (1 - prob) / 2, 1 - (1 - prob) / 2
    for j, m in enumerate(methods):
        for i, p in enumerate(params):
            if p not in scalars[m]:
                continue
            x = scalars[m][p]
            y = i * (len(methods) + 1) + j
            ax.plot(np.quantile(x, [lo_q, hi_q]), [y, y], color=f"C{j}", lw=2, label=m if i == 0 else None)
            ax.plot([np.median(x)], [y], "o", color=f"C{j}", ms=4)
    ax.set_yticks([i * (len(methods) + 1) + (len(methods) - 1) / 2 for i in range(len(params))])
    ax.set_yticklabels(params)
    ax.invert_yaxis()
    ax.legend(fontsize=8)
    ax.set_title(f"{prob:.0%} posterior intervals")
    return _save(fig, path)
