"""Honest evaluation of a fitted model/guide pair on held-out data.

- :func:`elbo`: the ELBO per data point, with its standard error over data points.
- :func:`log_likelihood`: log p(x) estimated by importance sampling from the
  guide, log (1/k) sum_i p(x, z_i) / q(z_i | x) (the IWAE-k bound, Burda et al.
  2016), per data point, with its standard error. Particles are drawn in chunks
  and merged with a running logsumexp, so memory stays bounded at k = 5000.
- :func:`active_units`: latent dimensions whose guide mean varies with x
  (Cov_x E_q[z_u] > 0.01, Burda et al. 2016).
- :func:`kl_per_dim`: E_x KL(q(z_u | x) || p(z_u)) for each latent dimension (of q's
  marginals, for a full-covariance Gaussian guide).

``elbo`` and ``log_likelihood`` take any model/guide pair: with one local latent per data
point (a data plate shared by every latent site, as in a VAE) they report per-point values
with the SE over points; with latents shared by the data (global, as in a Bayesian
regression with an AutoGuide) they score the whole data set and report it per point. They
take a tensor or a tuple of tensors sharing N, passed to ``model(*data)``: padded sequences
``(x, lengths)`` give one value per sequence, ``(x, y)`` a regression's inputs and outputs.
``active_units`` and ``kl_per_dim`` are for amortized (local) guides.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import pyro
import torch
from pyro import poutine
from pyro.distributions import ImproperUniform, Independent, MultivariateNormal, Normal
from torch.distributions import kl_divergence

from ..data import check_batch, check_data, check_for_models
from ..infer.distributed import current as current_world
from ..infer.objectives import RenyiBound, devectorized, prepare
from ..infer.params import modules_of
from ..infer.particles import with_particles
from ..infer.progress import progress_bar
from ..infer.sources import shard_key
from .enumerated import enumerated_log_weights, enumerated_sites

__all__ = ["Estimate", "elbo", "log_likelihood", "active_units", "kl_per_dim", "log_weights", "per_point_log_weights",
           "plate_nesting"]


@dataclass
class Estimate:
    """A mean over data points with its standard error (std / sqrt(N))."""

    mean: float
    se: float
    n: int

    def as_dict(self) -> dict:
        """``{"mean": ..., "se": ..., "n": ...}``, e.g. for JSON."""
        return asdict(self)

    def __format__(self, spec: str) -> str:
        spec = spec or ".2f"
        return f"{self.mean:{spec}} ± {self.se:{spec}}"


def _estimate(values: torch.Tensor) -> Estimate:
    values = values.double()
    n = values.numel()
    se = values.std().item() / math.sqrt(n) if n > 1 else float("nan")
    return Estimate(values.mean().item(), se, n)


def _my_batches(n: int, batch_size: int, world) -> list[int]:
    """The start rows of the batches this process evaluates: batch j goes to process j mod size."""
    return [i for j, i in enumerate(range(0, n, batch_size)) if j % world.size == world.rank]


def _reseed(seed: int | None, start: int, batch_size: int) -> None:
    """Seed torch for the batch starting at row ``start`` from (seed, its number), when a seed is given:
    then the numbers do not depend on how many processes share the work (batch 0's seed also starts
    a whole-data pass)."""
    if seed is not None:
        torch.manual_seed(shard_key(seed, start // batch_size))


def _shared_latent_under(world, model, guide, batch, batch_size: int, nesting: int, enum: bool) -> bool:
    """Under several processes, whether some latent is shared by the data (probed on the first batch by
    every process alike, so that all of them take the whole-data path together)."""
    if not world.active:
        return False
    rows = _rows(batch, 0, batch_size)
    return not _is_local(log_weights(model, guide, rows, 1, nesting, enum), len(rows[0]))


def _sharded_seed(seed: int | None, world) -> int | None:
    if world.active and seed is None:
        raise ValueError("evaluation under torch.distributed is sharded over the processes: give it a seed, so that "
                         "every process draws its batches' numbers as one process would")
    return seed


def _modules_eval(*fns):
    mods = modules_of(*fns)
    was = [m.training for m in mods]
    for m in mods:
        m.eval()
    return mods, was


def _restore(mods, was):
    for m, w in zip(mods, was):
        m.train(w)


def _rows(batch: tuple[torch.Tensor, ...], i: int, j: int) -> tuple[torch.Tensor, ...]:
    return tuple(t[i:j] for t in batch)


def plate_nesting(model, guide, x) -> int:
    """How many plates the pair nests, found by running it once on two data points."""
    batch = x if isinstance(x, tuple) else (x,)
    return prepare(RenyiBound(num_particles=2), model, guide, *_rows(batch, 0, 2)).max_plate_nesting


@torch.no_grad()
def log_weights(model, guide, x, k: int, max_plate_nesting: int | None = None,
                enumerated: bool | None = None) -> torch.Tensor:
    """log p(x, z_i) - log q(z_i | x) for k draws: shape (k, N) when every latent is local to
    its data point, (k,) when some latent is shared by the data (global latents: the weights
    are those of the whole data set). Vectorized over particles where the model broadcasts,
    one particle at a time where it does not (logged once). Sites the model marks for
    enumeration are summed out; ``enumerated`` says whether there are any (None: find out)."""
    batch = tuple(x) if isinstance(x, (tuple, list)) else (x,)
    if max_plate_nesting is None:
        max_plate_nesting = plate_nesting(model, guide, batch)
    if enumerated is None:
        enumerated = bool(enumerated_sites(model, guide, batch))
    with pyro.validation_enabled(False):
        if enumerated:  # summed out exactly, as TraceEnum_ELBO does
            return with_particles(
                model, k, "log weights", lambda: enumerated_log_weights(model, guide, batch, k, max_plate_nesting),
                lambda: enumerated_log_weights(model, guide, batch, k, max_plate_nesting, vectorize=False))
        bound = RenyiBound(alpha=0.0, num_particles=k, max_plate_nesting=max_plate_nesting)
        return with_particles(model, k, "log weights", lambda: bound.log_weights(model, guide, *batch),
                              lambda: devectorized(bound).log_weights(model, guide, *batch))


def refuse_improper(model, guide, batch: tuple) -> None:
    """Refuse a model with an improper prior (``ImproperUniform``, as an autoencoder's): its ELBO and
    IWAE values are numbers, but no bound on any log-likelihood. Runs model and guide once on two
    rows, its random draws on a forked stream: the caller's random state is left as it was.

    Raises:
        ValueError: naming the site.
    """
    devices = [batch[0].device] if batch[0].is_cuda else []
    with pyro.validation_enabled(False), torch.no_grad(), torch.random.fork_rng(devices=devices):
        guide_trace = poutine.trace(guide).get_trace(*_rows(batch, 0, 2))
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*_rows(batch, 0, 2))
    for name, site in model_trace.nodes.items():
        fn = site.get("fn")
        while fn is not None and not isinstance(fn, ImproperUniform) and hasattr(fn, "base_dist"):
            fn = fn.base_dist
        if site["type"] == "sample" and isinstance(fn, ImproperUniform):
            raise ValueError(f"model site {name!r} has an improper (flat) prior, so this model has no likelihood and "
                             "its ELBO or IWAE value bounds nothing (an autoencoder): report its reconstruction "
                             "error instead")


def _scoring_setup(model, guide, batch: tuple) -> tuple[int, bool]:
    """What :func:`elbo` and :func:`log_likelihood` learn before scoring: the pair's plate nesting and
    whether the model has sites to enumerate, after refusing an improper prior."""
    refuse_improper(model, guide, batch)
    return plate_nesting(model, guide, batch), bool(enumerated_sites(model, guide, batch))


def _is_local(log_w: torch.Tensor, n: int) -> bool:
    """One weight per particle and data point: (k, N), possibly with singleton plate dims between."""
    return log_w.dim() >= 2 and log_w.shape[-1] == n and log_w.numel() == log_w.shape[0] * n


@torch.no_grad()
def per_point_log_weights(model, guide, x, k: int, max_plate_nesting: int | None = None) -> torch.Tensor:
    """log p(x_n, z_ni) - log q(z_ni | x_n), shape (k, N), from one vectorized pass.

    ``x`` is a tensor or a tuple of tensors (``model(*x)``)."""
    batch = tuple(x) if isinstance(x, (tuple, list)) else (x,)
    n = batch[0].shape[0]
    log_w = log_weights(model, guide, batch, k, max_plate_nesting)
    if not _is_local(log_w, n):
        raise ValueError(
            f"log weights have shape {tuple(log_w.shape)}, expected (k, {n}): per-point weights need one local "
            "latent per data point inside a data plate shared by all sites; this model has latents shared by the "
            "data (global), for which evaluate.elbo and evaluate.log_likelihood estimate the whole data set's "
            "evidence")
    return log_w.reshape(-1, n)


def _whole_data(values: torch.Tensor, n: int, se: float) -> Estimate:
    """An estimate for the data set as a whole (global latents), reported per data point."""
    return Estimate(values.item() / n, se / n, n)


def _whole_data_elbo(lw: torch.Tensor, n: int) -> Estimate:
    lw = lw.double().reshape(-1)
    se = lw.std().item() / math.sqrt(len(lw)) if len(lw) > 1 else float("nan")
    return _whole_data(lw.mean(), n, se)


def elbo(model, guide, data, num_samples: int = 1, batch_size: int = 500, seed: int | None = None) -> Estimate:
    """The ELBO per data point (averaged over ``num_samples`` draws of z), with its SE.

    For local latents the SE is over data points. Where some latent is shared by the data
    (a global latent), the data are scored as a whole: the ELBO of the whole data set
    divided by N, with the Monte Carlo SE over the ``num_samples`` draws (nan for one draw).

    ``data`` may be a torch Dataset or DataLoader (read into memory). Under
    ``torch.distributed`` the batches are shared out over the processes and the per-point
    values gathered: with the same ``seed``, the mean and SE equal one process's exactly.
    """
    batch = check_batch(data)
    check_for_models(batch, modules_of(model, guide))
    n, world = len(batch[0]), current_world()
    seed = _sharded_seed(seed, world)
    mods, was = _modules_eval(model, guide)
    try:
        parts, (nesting, enum) = [], _scoring_setup(model, guide, batch)
        if _shared_latent_under(world, model, guide, batch, batch_size, nesting, enum):
            _reseed(seed, 0, batch_size)  # every process scores the whole data set, from the same seed
            return _whole_data_elbo(log_weights(model, guide, batch, num_samples, nesting, enum), n)
        for i in _my_batches(n, batch_size, world):
            _reseed(seed, i, batch_size)
            rows = _rows(batch, i, i + batch_size)
            lw = log_weights(model, guide, rows, num_samples, nesting, enum)
            if not _is_local(lw, len(rows[0])):
                if len(rows[0]) != n:  # the whole data set, from the seed's start as under several processes
                    _reseed(seed, 0, batch_size)
                    lw = log_weights(model, guide, batch, num_samples, nesting, enum)
                return _whole_data_elbo(lw, n)
            parts.append((i, lw.reshape(len(lw), -1).mean(0)))
    finally:
        _restore(mods, was)
    if not world.active:
        return _estimate(torch.cat([v for _, v in parts]))
    return _estimate(world.all_gather_rows(n, parts))


def log_likelihood(model, guide, data, k: int = 1000, batch_size: int = 100,
                   max_particles_per_pass: int | None = None, progress: bool = False,
                   seed: int | None = None) -> Estimate:
    """Importance-sampled log p(x) with k particles per data point (IWAE-k), and its SE.

    The estimate is a lower bound in expectation and tightens as k grows. Particles
    are drawn a chunk at a time (by default so that one pass holds about 4 million
    numbers per data tensor, ~16 MB: larger passes are slower on CPU, bound by memory
    traffic) and merged with a running logsumexp. ``progress`` shows a tqdm bar over
    batches of data points.

    Where some latent is shared by the data (global latents), the k particles score the
    whole data set at once: the result is log p(x_1..N) / N, with the delta-method SE of
    the importance-sampling estimate.

    ``data`` may be a torch Dataset or DataLoader (read into memory). Under
    ``torch.distributed`` the batches are shared out over the processes as in :func:`elbo`
    (``seed`` required), with the same mean and SE as one process with that seed.

    References:
        Burda, Grosse & Salakhutdinov (2016), Importance Weighted Autoencoders, App. B.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    batch = check_batch(data)
    check_for_models(batch, modules_of(model, guide))
    n, world = len(batch[0]), current_world()
    seed = _sharded_seed(seed, world)
    rows = max(1, min(batch_size, n))
    chunk = max_particles_per_pass or max(1, min(k, 4_000_000 // (rows * batch[0][0].numel())))
    mods, was = _modules_eval(model, guide)
    try:
        out, (nesting, enum) = [], _scoring_setup(model, guide, batch)
        if _shared_latent_under(world, model, guide, batch, batch_size, nesting, enum):
            _reseed(seed, 0, batch_size)
            return _whole_data_log_likelihood(model, guide, batch, k, chunk, nesting, enum)
        for i in progress_bar(_my_batches(n, batch_size, world), desc=f"log p(x), IWAE-{k}", unit="batch",
                              disable=not progress or not world.main, interval=0.5):
            _reseed(seed, i, batch_size)
            x = _rows(batch, i, i + batch_size)
            acc = torch.full((len(x[0]),), -math.inf, dtype=torch.float64, device=x[0].device)
            done = 0
            while done < k:
                c = min(chunk, k - done)
                lw = log_weights(model, guide, x, c, nesting, enum).double()
                if not _is_local(lw, len(x[0])):
                    _reseed(seed, 0, batch_size)  # from the seed's start, as under several processes
                    return _whole_data_log_likelihood(model, guide, batch, k, chunk, nesting, enum)
                acc = torch.logaddexp(acc, torch.logsumexp(lw.reshape(len(lw), -1), 0))
                done += c
            out.append((i, acc - math.log(k)))
    finally:
        _restore(mods, was)
    if not world.active:
        return _estimate(torch.cat([v for _, v in out]))
    return _estimate(world.all_gather_rows(n, out))


def _whole_data_log_likelihood(model, guide, batch, k: int, chunk: int, nesting: int, enum: bool) -> Estimate:
    """IWAE-k of the whole data set, log (1/k) sum_i w_i, with the delta-method SE
    sqrt(Var(w) / k) / mean(w), computed in log space."""
    parts, done = [], 0
    while done < k:
        c = min(chunk, k - done)
        parts.append(log_weights(model, guide, batch, c, nesting, enum).double().reshape(-1))
        done += c
    lw = torch.cat(parts)
    log_mean = torch.logsumexp(lw, 0) - math.log(k)
    ratio = (lw - log_mean).exp()  # w_i / mean(w)
    se = math.sqrt(((ratio - 1) ** 2).mean().item() / k) if k > 1 else float("nan")
    return _whole_data(log_mean, len(batch[0]), se)


def _latent_sites(model, guide, x):
    with pyro.validation_enabled(False), torch.no_grad():
        guide_trace = poutine.trace(guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    return [(name, site, model_trace.nodes[name]) for name, site in guide_trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"] and name in model_trace.nodes]


def active_units(model, guide, data: torch.Tensor, site: str = "z", threshold: float = 1e-2,
                 batch_size: int = 1000) -> dict:
    """Number of active latent units: Cov_x(E_q[z_u | x]) > threshold (Burda et al. 2016).

    Returns ``{"active": int, "total": int, "variance": [per-dimension variances]}``.
    """
    check_data(data, "data")
    mods, was = _modules_eval(model, guide)
    try:
        means = []
        for i in range(0, len(data), batch_size):
            found = {n: g for n, g, _ in _latent_sites(model, guide, data[i:i + batch_size])}
            if site not in found:
                raise ValueError(f"guide has no latent site {site!r}; it has {sorted(found)}")
            means.append(found[site]["fn"].mean.reshape(len(data[i:i + batch_size]), -1))
    finally:
        _restore(mods, was)
    var = torch.cat(means).var(0)
    return {"active": int((var > threshold).sum()), "total": var.numel(), "variance": var.tolist()}


def _univariate(d):
    while isinstance(d, Independent):
        d = d.base_dist
    if isinstance(d, MultivariateNormal):  # a full-covariance guide: KL of each marginal q(z_u | x)
        return Normal(d.loc, d.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt())
    return d


def kl_per_dim(model, guide, data: torch.Tensor, site: str = "z", batch_size: int = 1000,
               num_samples: int = 64) -> torch.Tensor:
    """E_x KL(q(z_u | x) || p(z_u)) for each latent dimension u of ``site``.

    Analytic where torch knows the KL of the two univariate families (Normal-Normal),
    else a Monte Carlo estimate from ``num_samples`` draws of q.
    """
    check_data(data, "data")
    mods, was = _modules_eval(model, guide)
    total, n = None, 0
    try:
        for i in range(0, len(data), batch_size):
            x = data[i:i + batch_size]
            found = {name: (g, m) for name, g, m in _latent_sites(model, guide, x)}
            if site not in found:
                raise ValueError(f"guide has no latent site {site!r}; it has {sorted(found)}")
            g, m = found[site]
            q, p = _univariate(g["fn"]), _univariate(m["fn"])
            try:
                kl = kl_divergence(q, p)
            except NotImplementedError:
                z = q.sample((num_samples,))
                kl = (q.log_prob(z) - p.log_prob(z)).mean(0)
            kl = kl.expand(q.batch_shape).reshape(len(x), -1)
            total = kl.sum(0) if total is None else total + kl.sum(0)
            n += len(x)
    finally:
        _restore(mods, was)
    return total / n
