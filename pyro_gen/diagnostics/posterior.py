"""Posterior diagnostics for a fitted model/guide pair, in ArviZ's terms.

- :func:`joint_log_weights`: log p(x, z_s) and log q(z_s) for S joint draws z_s ~ q,
  from one vectorized pass (every latent site at once: global and local).
- :func:`psis`: Pareto-smoothed importance sampling k-hat (Yao et al. 2018) of the
  guide as a proposal for the posterior. ``per_point=True`` gives one k-hat per data
  point for amortized guides (one local latent per point), with the share above
  0.5 and 0.7 and the worst points. k-hat < 0.5: the guide is close and importance
  sampling from it is reliable; 0.5-0.7: usable; > 0.7: the guide misses mass.
- :func:`to_inference_data`: an :class:`arviz.InferenceData` with posterior draws
  (global latents by default), ``log_p``/``log_q``/``log_weight`` per draw in
  ``sample_stats``, per-datapoint log-likelihood (for ``az.loo``), posterior
  predictive and observed data. :func:`save_inference_data` writes it as netCDF,
  atomically.
- :func:`restart_convergence`: R-hat and ESS across independent VI restarts, each
  restart's draws treated as one chain (ArviZ's rank-normalized split R-hat): restarts
  that settle in different optima give R-hat well above 1.01.
- :func:`posterior_predictive_check`: per-point statistics of observed against
  replicated data, with posterior predictive p-values and a figure.

ArviZ computes the Pareto fit, R-hat, ESS and LOO; this module only turns Pyro
traces into the arrays ArviZ expects.

References:
    Yao, Vehtari, Simpson & Gelman (2018), Yes, but Did It Work?: Evaluating
    Variational Inference.
    Vehtari, Simpson, Gelman, Yao & Gabry (2024), Pareto Smoothed Importance Sampling.
    Vehtari, Gelman, Simpson, Carpenter & Buerkner (2021), Rank-normalization,
    folding, and localization: an improved R-hat.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from ..data import data_args
from ..evaluate import per_point_log_weights, plate_nesting
from ..infer.objectives import RenyiBound, prepare
from ..infer.particles import with_particles

__all__ = [
    "PSISResult",
    "joint_log_weights",
    "psis_khat",
    "psis",
    "posterior_draws",
    "to_inference_data",
    "save_inference_data",
    "load_inference_data",
    "restart_convergence",
    "posterior_predictive_check",
    "khat_figure",
]

_PARTICLES = "_pyro_gen_draws"


def _az():
    with warnings.catch_warnings():  # ArviZ announces its refactor on import
        warnings.simplefilter("ignore", FutureWarning)
        import arviz

    return arviz


def _draws(fn: Callable, num_samples: int, dim: int) -> Callable:
    def wrapped(*args, **kwargs):
        with pyro.plate(_PARTICLES, num_samples, dim=dim):
            return fn(*args, **kwargs)

    return wrapped


@torch.no_grad()
def _vectorized_traces(model, guide, num_samples: int, args, kwargs, predictive: bool = False):
    args = data_args(args)
    """Guide and model traces with S draws along a leading particle dimension (and, with
    ``predictive``, a trace of fresh observations under each draw; else None).

    Vectorized where the model broadcasts over the draws, drawn one at a time where it does
    not (:func:`pyro_gen.infer.particles.with_particles`); both give traces of the same shapes."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2:
        raise ValueError(f"num_samples must be an integer >= 2, got {num_samples!r}")
    # Pyro's own guess of the plate nesting, as evaluate does; the draws go one dimension further left
    nesting = prepare(RenyiBound(num_particles=2), model, guide, *args, **kwargs).max_plate_nesting
    dim = -(nesting + 1)

    def vectorized():
        guide_trace = poutine.trace(_draws(guide, num_samples, dim)).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(_draws(model, num_samples, dim), trace=guide_trace)).get_trace(
            *args, **kwargs)
        pred = (poutine.trace(poutine.uncondition(poutine.replay(_draws(model, num_samples, dim), trace=guide_trace)))
                .get_trace(*args, **kwargs) if predictive else None)
        guide_trace.compute_log_prob()
        model_trace.compute_log_prob()
        return model_trace, guide_trace, pred

    def sequential():
        return _sequential_traces(model, guide, num_samples, nesting, args, kwargs, predictive)

    with pyro.validation_enabled(False):
        return (*with_particles(model, num_samples, "posterior draws", vectorized, sequential), dim)


def _sequential_traces(model, guide, num_samples: int, nesting: int, args, kwargs, predictive: bool = False):
    """The traces of :func:`_vectorized_traces`, drawn one at a time: each sample site's value
    and log density are stacked with the draws in the same place, left of every plate."""
    draws = []
    for _ in range(num_samples):
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
        pred = (poutine.trace(poutine.uncondition(poutine.replay(model, trace=guide_trace))).get_trace(*args, **kwargs)
                if predictive else None)
        guide_trace.compute_log_prob()
        model_trace.compute_log_prob()
        draws.append((model_trace, guide_trace, pred))
    stacked = draws[0]
    for which, trace in enumerate(stacked):
        if trace is None:
            continue
        for name, site in _samples(trace):
            for key in ("value", "log_prob") if which < 2 else ("value",):
                values = torch.stack([d[which].nodes[name][key].detach() for d in draws])
                event = site["fn"].event_dim if key == "value" else 0
                batch = values.dim() - 1 - event
                site[key] = values.reshape(num_samples, *[1] * (nesting - batch), *values.shape[1:])
    return stacked


def _samples(trace, observed: bool | None = None):
    """The (name, site) pairs of real sample sites (not plates), optionally only (un)observed ones."""
    return [(name, s) for name, s in trace.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)
            and (observed is None or s["is_observed"] == observed)]


def _by_draw(site, key: str, dim: int) -> torch.Tensor:
    """A site's value or log-density with the particle dimension moved first: (S, plates..., event)."""
    t = site[key].detach()
    event = site["fn"].event_dim if key == "value" else 0
    return t.movedim(t.dim() - event + dim, 0)


def _sum_per_draw(site, dim: int) -> torch.Tensor:
    """A site's log-density summed over everything but the draws: shape (S,)."""
    lp = _by_draw(site, "log_prob", dim)
    return lp.reshape(lp.shape[0], -1).sum(-1)


def _chain_draw(site, key: str, dim: int) -> np.ndarray:
    """(1, S, ...) for ArviZ: one chain, the draws, then non-singleton plate dims and event dims."""
    t = _by_draw(site, key, dim)
    event = site["fn"].event_dim if key == "value" else 0
    keep = [i for i in range(1, t.dim()) if t.shape[i] != 1 or i >= t.dim() - event]
    return t.reshape(t.shape[0], *[t.shape[i] for i in keep]).double().cpu().numpy()[None]


def joint_log_weights(model: Callable, guide: Callable, *args, num_samples: int = 1000,
                      **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(x, z_s) and log q(z_s | x) for S joint draws z_s ~ q(z | x), each shape (S,).

    The importance weight of draw s is ``log_p[s] - log_q[s]``; their logsumexp minus
    log S estimates log p(x).
    """
    model_trace, guide_trace, _, dim = _vectorized_traces(model, guide, num_samples, args, kwargs)
    log_p = sum(_sum_per_draw(s, dim) for _, s in _samples(model_trace))
    log_q = sum(_sum_per_draw(s, dim) for _, s in _samples(guide_trace, observed=False))
    if not torch.is_tensor(log_q):
        raise ValueError("the guide has no latent sample sites: there is no posterior to diagnose")
    return log_p.double(), log_q.double()


def psis_khat(log_weights) -> np.ndarray:
    """ArviZ's Pareto k-hat of importance log-weights of shape (S,) or (S, N): a float or (N,)."""
    lw = np.asarray(torch.as_tensor(log_weights, dtype=torch.float64).cpu())
    if lw.ndim not in (1, 2) or lw.shape[0] < 10:
        raise ValueError(f"log weights must have shape (S,) or (S, N) with S >= 10 draws, got {lw.shape}")
    if not np.isfinite(lw).all():
        raise ValueError("log weights contain NaN or inf: the guide puts mass where the model has none, "
                         "or the model/guide produced non-finite densities")
    with warnings.catch_warnings():  # ArviZ warns when k-hat is large: that is the result, not a problem
        warnings.simplefilter("ignore")
        _, khat = _az().psislw(lw.T)
    return np.asarray(khat)


@dataclass
class PSISResult:
    """Pareto k-hat of the guide as importance proposal (one value, or one per data point)."""

    khat: float | np.ndarray
    num_samples: int

    @property
    def per_point(self) -> bool:
        return np.ndim(self.khat) == 1

    def share_above(self, threshold: float) -> float:
        """The fraction of k-hat values above ``threshold`` (0 or 1 for a single k-hat)."""
        return float(np.mean(np.atleast_1d(self.khat) > threshold))

    def worst(self, n: int = 10) -> np.ndarray:
        """Indices of the n data points with the largest k-hat, worst first."""
        return np.argsort(-np.atleast_1d(self.khat))[:n]

    def summary(self) -> dict:
        """The result as a dict for reports: ``num_samples``, ``khat_max`` and the shares above 0.5
        and 0.7; per point also ``khat_median``, the ``worst`` indices and ``n``, else ``khat``."""
        k = np.atleast_1d(self.khat)
        out = {"num_samples": self.num_samples, "khat_max": float(k.max()),
               "share_above_0.5": self.share_above(0.5), "share_above_0.7": self.share_above(0.7)}
        if self.per_point:
            out.update(khat_median=float(np.median(k)), worst=self.worst().tolist(), n=len(k))
        else:
            out["khat"] = float(k[0])
        return out


def psis(model: Callable, guide: Callable, *args, num_samples: int = 1000, per_point: bool = False,
         **kwargs) -> PSISResult:
    """PSIS k-hat of ``guide`` against ``model`` on the data in ``args``.

    Args:
        per_point: for an amortized guide with one local latent per data point (the
            first argument is the data tensor (N, D)): one k-hat per point from
            ``num_samples`` draws each. Otherwise one k-hat of the joint weights.

    References:
        Yao et al. (2018), Yes, but Did It Work?, Sec. 2.
    """
    args = data_args(args)
    if per_point:
        if len(args) != 1 or kwargs:
            raise ValueError("per_point=True takes the data tensor as the only argument")
        x = args[0]
        log_w = per_point_log_weights(model, guide, x, num_samples, plate_nesting(model, guide, x))
    else:
        log_p, log_q = joint_log_weights(model, guide, *args, num_samples=num_samples, **kwargs)
        log_w = log_p - log_q
    khat = psis_khat(log_w)
    return PSISResult(khat if per_point else float(khat), num_samples)


# --- ArviZ InferenceData -------------------------------------------------------------------


def _observed_frames(model_trace) -> set:
    return {f for _, s in _samples(model_trace, observed=True) for f in s["cond_indep_stack"] if f.name != _PARTICLES}


def _posterior(model_trace, guide_trace, dim: int, include_local: bool) -> dict[str, np.ndarray]:
    """The guide's latent draws as (1, S, ...) arrays: global sites, and local ones if asked."""
    observed = _observed_frames(model_trace)
    posterior = {}
    for name, site in _samples(guide_trace, observed=False):
        local = any(f in observed for f in site["cond_indep_stack"])
        if (include_local or not local) and not site["infer"].get("is_auxiliary"):  # e.g. AutoNormal's
            # z_unconstrained: its log-density counts in log q, its draws are not the posterior's
            posterior[name] = _chain_draw(site, "value", dim)
    if not posterior and not include_local:
        raise ValueError("the guide has only local latents (each shares a plate with the data); "
                         "pass include_local=True to keep them")
    return posterior


def posterior_draws(model: Callable, guide: Callable, *args, num_samples: int = 1000, include_local: bool = False,
                    **kwargs) -> dict[str, torch.Tensor]:
    """``num_samples`` joint draws of the guide's latents, ``{site: (S, ...)}``, from one
    vectorized pass: global sites, and local ones if ``include_local``."""
    model_trace, guide_trace, _, dim = _vectorized_traces(model, guide, num_samples, args, kwargs)
    return {k: torch.as_tensor(v[0]) for k, v in _posterior(model_trace, guide_trace, dim, include_local).items()}


def to_inference_data(model: Callable, guide: Callable, *args, num_samples: int = 500,
                      include_local: bool = False, **kwargs):
    """Draws from the guide and what ArviZ needs about them, as ``arviz.InferenceData``.

    Groups: ``posterior`` (latent sites; only global ones unless ``include_local``, a
    site being local when it shares a plate with an observed site), ``sample_stats``
    (``log_p``, ``log_q``, ``log_weight`` per draw: what PSIS needs),
    ``log_likelihood`` (each observed site's log-density per data point, for
    ``az.loo``; for latent-variable models this is log p(x_n | z_n), conditional on
    the drawn locals), ``posterior_predictive`` (fresh observations under each draw)
    and ``observed_data``. One chain of ``num_samples`` draws.
    """
    model_trace, guide_trace, predictive, dim = _vectorized_traces(model, guide, num_samples, args, kwargs,
                                                                   predictive=True)
    posterior = _posterior(model_trace, guide_trace, dim, include_local)
    log_q = sum(_sum_per_draw(site, dim) for _, site in _samples(guide_trace, observed=False))
    log_lik, obs_data, log_p = {}, {}, 0.0
    for name, site in _samples(model_trace):
        log_p = log_p + _sum_per_draw(site, dim)
        if site["is_observed"]:
            log_lik[name] = _chain_draw(site, "log_prob", dim)
            obs_data[name] = site["value"].detach().cpu().double().numpy()
    post_pred = {name: _chain_draw(predictive.nodes[name], "value", dim) for name in obs_data}
    stats = {"log_p": log_p.double().cpu().numpy()[None], "log_q": log_q.double().cpu().numpy()[None]}
    stats["log_weight"] = stats["log_p"] - stats["log_q"]
    az = _az()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "More chains than draws" never applies: one chain
        return az.from_dict(posterior=posterior, sample_stats=stats, log_likelihood=log_lik,
                            posterior_predictive=post_pred, observed_data=obs_data)


def save_inference_data(idata, path: str | os.PathLike) -> Path:
    """Write ``idata`` as netCDF atomically: a temporary file beside ``path``, then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        idata.to_netcdf(str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_inference_data(path: str | os.PathLike):
    """Read an InferenceData netCDF file written by :func:`save_inference_data`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no InferenceData file at {path}")
    return _az().from_netcdf(str(path))


def restart_convergence(draws: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, dict[str, np.ndarray]]:
    """R-hat and bulk ESS of each latent across independent VI restarts.

    Args:
        draws: one dict per restart (seed) mapping a site name to its posterior
            draws, shape (S, ...) with the same S for every restart.

    Returns:
        ``{site: {"r_hat": array, "ess_bulk": array}}`` with the site's event shape.
    """
    if len(draws) < 2:
        raise ValueError(f"R-hat across restarts needs at least 2 restarts, got {len(draws)}")
    names = set(draws[0])
    for i, d in enumerate(draws):
        if set(d) != names:
            raise ValueError(f"restart {i} has sites {sorted(d)}, restart 0 has {sorted(names)}")
    posterior = {}
    for name in sorted(names):
        shapes = {tuple(d[name].shape) for d in draws}
        if len(shapes) != 1:
            raise ValueError(f"site {name!r} has draws of different shapes across restarts: {sorted(shapes)}")
        posterior[name] = np.stack([torch.as_tensor(d[name]).detach().double().cpu().numpy() for d in draws])
    az = _az()
    idata = az.from_dict(posterior=posterior)
    rhat, ess = az.rhat(idata), az.ess(idata, method="bulk")
    return {name: {"r_hat": np.asarray(rhat[name]), "ess_bulk": np.asarray(ess[name])} for name in posterior}


def posterior_predictive_check(idata, path=None, statistics: Mapping[str, Callable] | None = None) -> dict:
    """Posterior predictive check of each observed site on per-data-point statistics.

    For each statistic T (default: the mean and the standard deviation over a data
    point's values), compares T of the observed points with T of the replicated
    points drawn from the posterior predictive, and reports the posterior predictive
    p-value Pr(T(x_rep) >= T(x)) averaged over points (near 0 or 1: the model
    misses that feature). With ``path``, saves the observed against replicated
    distributions of each T as a figure.

    References:
        Gelman, Meng & Stern (1996), Posterior Predictive Assessment of Model Fitness.
    """
    statistics = statistics or {"mean": lambda v: v.mean(-1), "sd": lambda v: v.std(-1)}
    if "posterior_predictive" not in idata.groups() or "observed_data" not in idata.groups():
        raise ValueError("the InferenceData has no posterior_predictive/observed_data groups: "
                         "make it with to_inference_data")
    out, panels = {}, []
    for name in idata.observed_data.data_vars:
        obs = np.asarray(idata.observed_data[name].values, dtype=float)
        rep = np.asarray(idata.posterior_predictive[name].values, dtype=float)[0]  # (S, *obs.shape)
        if obs.ndim == 1:  # one scalar per point: the statistic is taken over all points
            obs, rep = obs[None], rep[:, None]
        for stat, fn in statistics.items():
            t_obs, t_rep = fn(obs), fn(rep)  # (N,), (S, N)
            p = float(np.mean(t_rep >= t_obs[None]))
            out[f"{name}:{stat}"] = {"p_value": p, "observed_mean": float(t_obs.mean()),
                                     "replicated_mean": float(t_rep.mean())}
            panels.append((f"{name}: {stat}", t_obs, t_rep, p))
    if path is not None:
        from ..figures.plots import _plt, _save

        plt = _plt()
        fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3), squeeze=False)
        for ax, (title, t_obs, t_rep, p) in zip(axes[0], panels):
            bins = np.histogram_bin_edges(np.concatenate([t_obs.ravel(), t_rep.ravel()]), bins=30)
            ax.hist(t_rep.ravel(), bins=bins, density=True, alpha=0.6, color="C0", label="replicated")
            ax.hist(t_obs.ravel(), bins=bins, density=True, histtype="step", lw=2, color="k", label="observed")
            ax.set_title(f"{title} (p={p:.2f})", fontsize=9)
        axes[0][0].legend(fontsize=7)
        fig.suptitle("posterior predictive check")
        fig.tight_layout()
        out["figure"] = str(_save(fig, path))
    return out


def khat_figure(result: PSISResult, path, title: str = "PSIS k-hat per data point") -> Path:
    """Histogram of per-point k-hat with the 0.5 and 0.7 thresholds."""
    from ..figures.plots import _plt, _save

    plt = _plt()
    k = np.atleast_1d(result.khat)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist(k, bins=30, color="C0", alpha=0.8)
    for t, c in ((0.5, "C1"), (0.7, "C3")):
        ax.axvline(t, color=c, ls="--", lw=1, label=f"{t}: {result.share_above(t):.0%} above")
    ax.set_xlabel("k-hat")
    ax.set_ylabel("data points")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)
