"""Annealed importance sampling (AIS) and bidirectional Monte Carlo (BDMC) for log p(x).

- :func:`ais`: a stochastic lower bound on log p(x) for each data point, from chains
  annealed from a start distribution q0 (the prior, or the guide) to the posterior along
  the geometric path f_b(z) = q0(z)^(1 - b) p(x, z)^b, with Hamiltonian Monte Carlo
  transitions (Neal 2001; Wu et al. 2017).
- :func:`bdmc`: on data simulated from the model, the same forward chains (lower bound)
  and reverse chains started at the exact posterior sample that generated the data (a
  stochastic upper bound; Grosse et al. 2015). The gap between them says how loose a
  bound is on that model; IWAE-k beside it says how much IWAE understates log p(x).

Any model/guide pair with continuous latents: each latent site is moved in the
unconstrained space of its support (``biject_to``), with the log-Jacobian. With every latent
local to its data point (a VAE), each point gets its own weights, step size and
acceptance; with latents shared by the data, the data set is one point. Chains run
vectorized in a plate left of the model's own (as vectorized particles do), a chunk of
chains at a time, so memory stays bounded.

What comes from Pyro: the leapfrog integrator (``pyro.ops.integrator.velocity_verlet``),
traces, conditioning and ``biject_to``. Written here: the annealing path and its weights,
per-point step sizes (the integrator takes one step size: each point's potential is scaled
by its step size squared and its momentum by the step size, which is the same leapfrog),
the per-point Metropolis correction, and the reverse chains. Pyro's ``HMC`` kernel samples
one joint target with one step size and one accept decision, so it does not fit.

References:
    Neal (2001), Annealed Importance Sampling.
    Grosse, Ghahramani & Adams (2015), Sandwiching the marginal likelihood using
    bidirectional Monte Carlo.
    Wu, Burda, Salakhutdinov & Grosse (2017), On the Quantitative Analysis of
    Decoder-Based Generative Models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import pyro
import torch
from pyro import poutine
from torch.distributions import biject_to
from pyro.ops.integrator import velocity_verlet
from pyro.poutine.util import site_is_subsample

from ..data import check_batch
from ..infer.params import modules_of
from ..infer.progress import progress_bar
from .estimates import Estimate, _estimate, _modules_eval, _restore

__all__ = ["AISResult", "BDMCResult", "ais", "bdmc", "annealing_schedule", "SCHEDULES"]

#: The annealing schedules :func:`annealing_schedule` knows.
SCHEDULES = ("sigmoid", "linear")

_CHAINS = "_ais_chains"  # the name of the plate that vectorizes the chains


@dataclass
class AISResult:
    """What :func:`ais` returns.

    Attributes:
        estimate: the mean over data points of the per-point bound, with the SE over points
            (for latents shared by the data: log p(x_1..N) / N, with the chains' SE).
        per_point: log (1/C) sum_c w_c for each data point, shape (N,) (or (1,) for shared latents).
        se: each point's Monte Carlo SE over the chains (delta method), shape as ``per_point``.
        log_weights: the chains' log weights, shape (chains, N).
        acceptance: the mean HMC acceptance rate over all transitions.
    """

    estimate: Estimate
    per_point: torch.Tensor
    se: torch.Tensor
    log_weights: torch.Tensor = field(repr=False)
    acceptance: float

    def __format__(self, spec: str) -> str:
        return format(self.estimate, spec)


@dataclass
class BDMCResult:
    """What :func:`bdmc` returns: the two sides of the sandwich on simulated data.

    Attributes:
        lower: forward AIS on the simulated data (a stochastic lower bound on log p(x)).
        upper: reverse AIS from the exact posterior samples (a stochastic upper bound).
        data: the simulated data the bounds are for, as passed to the model.
        gap: ``upper.estimate.mean - lower.estimate.mean``, nats per point.
    """

    lower: AISResult
    upper: AISResult
    data: tuple[torch.Tensor, ...]

    @property
    def gap(self) -> float:
        return self.upper.estimate.mean - self.lower.estimate.mean


def annealing_schedule(steps: int, schedule: str = "sigmoid", delta: float = 4.0) -> torch.Tensor:
    """The inverse temperatures 0 = b_0 < b_1 < ... < b_steps = 1 (float64).

    ``"sigmoid"`` spends more steps near both ends (Grosse et al. 2015, with ``delta``);
    ``"linear"`` spaces them evenly.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; valid choices: {', '.join(SCHEDULES)}")
    t = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    if schedule == "linear" or steps == 1:
        return t
    s = torch.sigmoid(delta * (2 * t - 1))
    return (s - s[0]) / (s[-1] - s[0])


class _Path:
    """The annealing path of one batch: densities of the unconstrained latents, per point."""

    def __init__(self, model: Callable, guide: Callable | None, data: tuple[torch.Tensor, ...]):
        self.model, self.guide, self.data = model, guide, data
        start = guide if guide is not None else model
        with torch.no_grad():
            start_trace = poutine.trace(start).get_trace(*data)
            model_trace = poutine.trace(poutine.replay(model, trace=start_trace)).get_trace(*data)
        self.sites = [name for name, s in model_trace.nodes.items() if _latent(s)]
        if not self.sites:
            raise ValueError("the model has no latent sample sites: its log p(x) needs no estimate")
        for name in self.sites:
            if model_trace.nodes[name]["fn"].support.is_discrete:
                raise ValueError(
                    f"latent site {name!r} is discrete: AIS moves continuous latents with HMC. Sum discrete "
                    "latents out by enumeration instead (infer={'enumerate': 'parallel'}; "
                    "pyro_gen.evaluate.log_likelihood then scores them exactly)")
            if guide is not None and name not in start_trace.nodes:
                raise ValueError(f"the guide has no site {name!r} of the model: AIS from the guide needs a guide "
                                 "over every latent (or start from the prior)")
        sample_sites = [s for s in model_trace.nodes.values() if _scored(s)]
        self.nesting = max((-f.dim for s in sample_sites for f in s["cond_indep_stack"]
                            if f.vectorized and f.dim is not None), default=0)
        if guide is not None:
            self.nesting = max([self.nesting] + [-f.dim for s in start_trace.nodes.values() if _scored(s)
                                                 for f in s["cond_indep_stack"] if f.vectorized and f.dim is not None])
        # the local plates: those every sample site of the model sits in; each of their cells is a point
        common = set.intersection(*(set(f for f in s["cond_indep_stack"] if f.vectorized) for s in sample_sites))
        self.point_shape = [1] * self.nesting
        for f in common:
            self.point_shape[f.dim] = f.size
        self.supports = {name: model_trace.nodes[name]["fn"].support for name in self.sites}
        self.event_dims = {name: model_trace.nodes[name]["fn"].event_dim for name in self.sites}

    @property
    def points(self) -> int:
        return math.prod(self.point_shape)

    def chains_plate(self, chains: int):
        return pyro.plate(_CHAINS, chains, dim=-(self.nesting + 1))

    def start(self, chains: int) -> dict[str, torch.Tensor]:
        """Unconstrained latents drawn from q0, ``chains`` of them."""
        start = self.guide if self.guide is not None else self.model
        with torch.no_grad(), self.chains_plate(chains):
            tr = poutine.trace(start).get_trace(*self.data)
        return {name: biject_to(self.supports[name]).inv(tr.nodes[name]["value"]) for name in self.sites}

    def unconstrained(self, z: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: biject_to(self.supports[name]).inv(z[name]) for name in self.sites}

    def densities(self, u: dict[str, torch.Tensor], chains: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log q0(z), log p(x, z), log |dz/du|) at z = T(u), each of shape (chains, *point_shape)."""
        z, log_jac = {}, 0.0
        for name in self.sites:
            t = biject_to(self.supports[name])
            z[name] = t(u[name])
            log_jac = log_jac + self.per_point(t.log_abs_det_jacobian(u[name], z[name]), chains)
        with self.chains_plate(chains):
            model_trace = poutine.trace(poutine.condition(self.model, data=z)).get_trace(*self.data)
            model_trace.compute_log_prob()
            log_p = sum(self.per_point(s["log_prob"], chains) for s in model_trace.nodes.values() if _scored(s))
            if self.guide is None:
                log_q = sum(self.per_point(model_trace.nodes[name]["log_prob"], chains) for name in self.sites)
            else:
                guide_trace = poutine.trace(poutine.condition(self.guide, data=z)).get_trace(*self.data)
                guide_trace.compute_log_prob()
                log_q = sum(self.per_point(guide_trace.nodes[name]["log_prob"], chains) for name in self.sites)
        return log_q, log_p, log_jac

    def per_point(self, values: torch.Tensor, chains: int) -> torch.Tensor:
        """``values`` (batch dims of a site) summed to one number per chain and point."""
        shape = (chains, *self.point_shape)
        values = values.reshape((1,) * max(0, len(shape) - values.dim()) + tuple(values.shape))
        dims = [d for d in range(values.dim()) if shape[d] == 1 and values.shape[d] != 1]
        values = values.sum(dims, keepdim=True) if dims else values
        return values.expand(shape)

    def to_site(self, per_point: torch.Tensor, name: str) -> torch.Tensor:
        """A per-(chain, point) tensor shaped to broadcast against site ``name``'s unconstrained value."""
        return per_point.reshape(tuple(per_point.shape) + (1,) * self.event_dims[name])


def _latent(site) -> bool:
    return _scored(site) and not site["is_observed"]


def _scored(site) -> bool:
    """A sample site that carries a log density (not a plate's subsample site)."""
    return site["type"] == "sample" and not site_is_subsample(site) and not site["infer"].get("_do_not_score", False)


class _Chains:
    """One chunk of annealed chains: their states, step sizes, and the HMC transition."""

    def __init__(self, path: _Path, u: dict[str, torch.Tensor], chains: int, step_size: float, leapfrog: int,
                 target_accept: float, steps: int):
        self.path, self.u, self.chains = path, u, chains
        # Wu et al. (2017) scale the step by 1.02 or 0.98 per move over thousands of steps; short runs adapt faster
        self.adapt = max(0.02, min(0.2, 5.0 / steps))
        self.leapfrog, self.target = leapfrog, target_accept
        self.eps = torch.full((1, *path.point_shape), step_size, dtype=next(iter(u.values())).dtype)
        self.accepted, self.moves = 0.0, 0

    def log_ratio(self) -> torch.Tensor:
        """log p(x, z) - log q0(z) at the current states: the weight increment per unit of b."""
        with torch.no_grad():
            log_q, log_p, _ = self.path.densities(self.u, self.chains)
        return (log_p - log_q).double()

    def log_target(self, u, beta: float) -> torch.Tensor:
        log_q, log_p, log_jac = self.path.densities(u, self.chains)
        return (1 - beta) * log_q + beta * log_p + log_jac

    def transition(self, beta: float) -> None:
        """One HMC move per chain and point leaving f_beta invariant; step sizes adapt towards the
        target acceptance (per point, over the chains; Wu et al. 2017)."""
        path, eps = self.path, self.eps
        cache = {}

        def scaled_potential(u):  # eps^2 U: leapfrog with step 1 on it is leapfrog with step eps on U
            cache["U"] = -self.log_target(u, beta)
            return (eps ** 2 * cache["U"]).sum()

        with torch.enable_grad():
            u0 = {k: v.detach() for k, v in self.u.items()}
            U0 = -self.log_target(u0, beta).detach()
            r = {k: torch.randn_like(v) for k, v in u0.items()}
            kin0 = sum(self._kinetic(k, r[k]) for k in r)
            scaled_r = {k: path.to_site(eps, k) * r[k] for k in r}
            u1, r1, _, _ = velocity_verlet(u0, scaled_r, scaled_potential, lambda r: r, 1.0, self.leapfrog)
        U1 = cache["U"].detach()
        kin1 = sum(self._kinetic(k, r1[k] / path.to_site(eps, k)) for k in r1)
        log_accept = (U0 + kin0 - U1 - kin1).nan_to_num(nan=-math.inf)
        accept = torch.rand_like(log_accept).log() < log_accept
        self.u = {k: torch.where(path.to_site(accept, k), u1[k].detach(), u0[k]) for k in u0}
        rate = accept.to(eps.dtype).mean(0, keepdim=True)
        self.eps = torch.where(rate > self.target, eps * (1 + self.adapt), eps * (1 - self.adapt))
        self.accepted += accept.float().mean().item()
        self.moves += 1

    def _kinetic(self, name: str, r: torch.Tensor) -> torch.Tensor:
        value = 0.5 * r.pow(2)
        value = value.sum(tuple(range(-self.path.event_dims[name], 0))) if self.path.event_dims[name] else value
        return self.path.per_point(value, self.chains)


def _anneal(path: _Path, u: dict[str, torch.Tensor], chains: int, betas: torch.Tensor, step_size: float,
            leapfrog: int, target_accept: float, bar) -> tuple[torch.Tensor, float]:
    """Run chains from ``u`` along ``betas``; returns the log weights (chains, points) and acceptance.

    Weights follow Neal (2001): w += (b_t - b_{t-1}) (log p - log q0) at the state before the
    move at b_t. A decreasing ``betas`` (1 -> 0) gives the reverse chains of BDMC."""
    run = _Chains(path, u, chains, step_size, leapfrog, target_accept, len(betas) - 1)
    log_w = torch.zeros(chains, *path.point_shape, dtype=torch.float64)
    for t in range(1, len(betas)):
        log_w = log_w + (betas[t] - betas[t - 1]) * run.log_ratio()
        if t < len(betas) - 1:
            run.transition(float(betas[t]))
        bar.update(chains)
    return log_w.reshape(chains, -1), run.accepted / max(run.moves, 1)


def _rows_of(path: _Path, name: str, value: torch.Tensor, i: int, rows: int, n: int) -> torch.Tensor:
    """Rows i:i+rows of a simulated latent, cut along its data plate's dim (all of it if it has none)."""
    batch_dims = value.dim() - path.event_dims[name]
    for d in range(-1, -batch_dims - 1, -1):
        if -d <= path.nesting and path.point_shape[d] != 1 and value.shape[d - path.event_dims[name]] == n:
            return value.narrow(batch_dims + d, i, min(rows, n - i))
    return value


def _chains_of(path: _Path, name: str, value: torch.Tensor, chains: int) -> torch.Tensor:
    """A latent value without the chains' plate, copied into each of ``chains`` chains."""
    event = path.event_dims[name]
    batch = tuple(value.shape[:value.dim() - event])
    batch = (1,) * (path.nesting - len(batch)) + batch
    value = value.reshape((1,) + batch + tuple(value.shape[value.dim() - event:]))
    return value.expand((chains,) + tuple(value.shape[1:])).clone()


def _check(steps: int, chains: int, leapfrog: int, step_size: float, start) -> None:
    for name, value in (("steps", steps), ("chains", chains), ("leapfrog", leapfrog)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size!r}")
    if not (start is None or start == "prior" or callable(start)):
        raise ValueError(f"start the chains from 'prior' (or None) or a guide function, got {start!r}")


def _result(log_w: torch.Tensor, accept: float, whole: bool, n: int) -> AISResult:
    chains = log_w.shape[0]
    per_point = torch.logsumexp(log_w, 0) - math.log(chains)
    ratio = (log_w - per_point).exp()
    se = ((ratio - 1).pow(2).mean(0) / chains).sqrt() if chains > 1 else torch.full_like(per_point, math.nan)
    if whole:  # latents shared by the data: the data set is one point, reported per data point
        est = Estimate(per_point.item() / n, se.item() / n, n)
    else:
        est = _estimate(per_point)
    return AISResult(est, per_point, se, log_w, accept)


def _run(model, start, data, steps, chains, *, schedule, step_size, leapfrog, target_accept, batch_size,
         max_chains_per_pass, progress, reverse_from=None) -> AISResult:
    batch = check_batch(data)
    n = len(batch[0])
    guide = None if start in (None, "prior") else start
    betas = annealing_schedule(steps, schedule)
    if reverse_from is not None:
        betas = betas.flip(0)
    mods, was = _modules_eval(*([model] + ([guide] if guide is not None else [])))
    try:
        whole = _Path(model, guide, tuple(t[:min(n, 2)] for t in batch)).points == 1 and n > 1
        rows = n if whole else max(1, min(batch_size, n))
        per_pass = max_chains_per_pass or chains
        parts, accepts = [], []
        total = math.ceil(n / rows) * chains * steps
        with pyro.validation_enabled(False), progress_bar(total=total, disable=not progress, unit="chain-step",
                                                          desc=f"AIS, {steps} steps") as bar:
            for i in range(0, n, rows):
                x = tuple(t[i:i + rows] for t in batch)
                path = _Path(model, guide, x)
                chunks = []
                for c0 in range(0, chains, per_pass):
                    c = min(per_pass, chains - c0)
                    if reverse_from is None:
                        u = path.start(c)
                    else:
                        u = path.unconstrained({k: _rows_of(path, k, reverse_from[k], i, rows, n)
                                                for k in path.sites})
                        u = {k: _chains_of(path, k, v, c) for k, v in u.items()}
                    log_w, acc = _anneal(path, u, c, betas, step_size, leapfrog, target_accept, bar)
                    chunks.append(log_w)
                    accepts.append(acc)
                parts.append(torch.cat(chunks))
    finally:
        _restore(mods, was)
    log_w = torch.cat(parts, dim=1)
    result = _result(log_w, sum(accepts) / len(accepts), whole, n)
    if reverse_from is not None:  # reverse weights estimate 1/p(x): the bound is -log mean w
        per_point = -(torch.logsumexp(log_w, 0) - math.log(chains))
        est = Estimate(per_point.item() / n, result.estimate.se, n) if whole else _estimate(per_point)
        result = AISResult(est, per_point, result.se, log_w, result.acceptance)
    return result


def ais(model: Callable, guide_or_prior: Callable | str | None, x, steps: int = 1000, chains: int = 16, *,
        schedule: str = "sigmoid", step_size: float = 0.05, leapfrog: int = 10, target_accept: float = 0.65,
        batch_size: int = 100, max_chains_per_pass: int | None = None, seed: int | None = None,
        progress: bool = False) -> AISResult:
    """AIS estimate of log p(x) per data point: a stochastic lower bound (E[w] = p(x)).

    Args:
        model: a Pyro model with continuous latents, called as ``model(*x)``.
        guide_or_prior: ``"prior"`` (or None) to start the chains at the model's prior, or a
            guide over every latent to start there (fewer steps needed where it is good).
        x: a tensor or a tuple of tensors sharing N (as :func:`~pyro_gen.evaluate.log_likelihood`).
        steps: intermediate distributions along the path; chains: chains per data point.
        schedule: see :func:`annealing_schedule`.
        step_size, leapfrog, target_accept: the HMC moves: the initial step size (adapted per
            point towards ``target_accept``) and the leapfrog steps per move.
        batch_size: data points annealed together; max_chains_per_pass: chains vectorized in one
            pass (None: all), so that memory stays bounded.
        seed: seeds torch's RNG for this call (None: draw from it as it is).
        progress: a tqdm bar over chain-steps.

    Raises:
        ValueError: a discrete latent (sum it out by enumeration), no latents, or a bad option.

    Examples:
        A Normal-Normal model, whose log p(x) = log N(x; 0, 2) is known exactly:

        >>> import pyro, pyro.distributions as dist, torch
        >>> def model(x):
        ...     with pyro.plate("data", len(x)):
        ...         z = pyro.sample("z", dist.Normal(0.0, 1.0))
        ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x[:, 0])
        >>> x = torch.tensor([[0.0], [1.0], [-2.0]])
        >>> result = ais(model, "prior", x, steps=200, chains=32, seed=0)
        >>> exact = dist.Normal(0.0, 2 ** 0.5).log_prob(x[:, 0])
        >>> bool(((result.per_point - exact).abs() < 3 * result.se).all())  # within Monte Carlo error
        True
    """
    _check(steps, chains, leapfrog, step_size, guide_or_prior)
    with _seeded(seed):
        return _run(model, guide_or_prior, x, steps, chains, schedule=schedule, step_size=step_size,
                    leapfrog=leapfrog, target_accept=target_accept, batch_size=batch_size,
                    max_chains_per_pass=max_chains_per_pass, progress=progress)


def bdmc(model: Callable, guide_or_prior: Callable | str | None, x, steps: int = 1000, chains: int = 16, *,
         seed: int | None = None, **options) -> BDMCResult:
    """Bidirectional Monte Carlo: lower and upper stochastic bounds on log p(x) for data
    simulated from the model (Grosse et al. 2015).

    The model is run with its observed site set free (``poutine.uncondition``) on ``x``'s
    shapes: the simulated observations replace ``x`` and the latents that made them are exact
    posterior samples, where the reverse chains start. The model must have one observed
    site, with as many numbers as ``x`` (its first tensor, for a tuple), whose draw is
    reshaped to ``x``'s shape.

    Args:
        model, guide_or_prior, steps, chains: as :func:`ais`; the guide scores the simulated data.
        x: a template for the data: the number of points and their shape.
        seed: seeds torch's RNG for this call.
        options: :func:`ais`'s keyword options (schedule, step_size, leapfrog, ...).

    Returns:
        A :class:`BDMCResult`: ``lower`` <= log p(x_sim) <= ``upper`` in expectation.
    """
    _check(steps, chains, options.get("leapfrog", 10), options.get("step_size", 0.05), guide_or_prior)
    batch = check_batch(x)
    defaults = dict(schedule="sigmoid", step_size=0.05, leapfrog=10, target_accept=0.65, batch_size=100,
                    max_chains_per_pass=None, progress=False)
    unknown = set(options) - set(defaults)
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(sorted(unknown))}; valid choices: {', '.join(defaults)}")
    opts = {**defaults, **options}
    with _seeded(seed):
        mods, was = _modules_eval(*modules_of(model))
        try:
            with torch.no_grad(), pyro.validation_enabled(False):
                given = poutine.trace(model).get_trace(*batch)
                tr = poutine.trace(poutine.uncondition(model)).get_trace(*batch)
        finally:
            _restore(mods, was)
        observed = [name for name, s in given.nodes.items() if _scored(s) and s["is_observed"]]
        matching = [name for name in observed if tr.nodes[name]["value"].numel() == batch[0].numel()]
        if len(observed) != 1 or not matching:
            raise ValueError(f"bdmc simulates the data from the model: it needs one observed site with as many numbers as x "
                             f"{tuple(batch[0].shape)}; the model observes {observed or 'nothing'}")
        sim = (tr.nodes[matching[0]]["value"].detach().reshape(batch[0].shape).to(batch[0].dtype),) + batch[1:]
        latents = {name: s["value"].detach() for name, s in tr.nodes.items() if _scored(s) and name not in observed}
        lower = _run(model, guide_or_prior, sim, steps, chains, **opts)
        upper = _run(model, guide_or_prior, sim, steps, chains, reverse_from=latents, **opts)
    return BDMCResult(lower, upper, sim)


class _seeded:
    """torch's RNG seeded for a block, and put back as it was afterwards (a plugin leaves it alone)."""

    def __init__(self, seed: int | None):
        self.seed = seed

    def __enter__(self):
        if self.seed is not None:
            self.state = torch.get_rng_state()
            torch.manual_seed(self.seed)

    def __exit__(self, *exc):
        if self.seed is not None:
            torch.set_rng_state(self.state)
