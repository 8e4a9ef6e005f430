"""Training objectives: Pyro's ELBOs, plus the pieces Pyro lacks.

Every objective is a :class:`pyro.infer.ELBO` with ``differentiable_loss(model,
guide, *args)`` returning a scalar whose value is the negative bound (summed over
the batch) and whose gradient is the estimator's. Pyro's ``Trace_ELBO`` and
``TraceMeanField_ELBO`` have that already; ``RenyiELBO`` and ``TraceGraph_ELBO``
only implement ``loss_and_grads`` (which skips ``backward`` when no parameter
lives in Pyro's global store, as happens with module-local parameters), so they
get a ``differentiable_loss`` here, as does ``ReweightedWakeSleep`` (whose
weights are also kept per data point here). The doubly reparameterized IWAE
gradient (DReG) is not in Pyro at all. ``enum`` is Pyro's ``TraceEnum_ELBO``: discrete
model sites marked ``infer={"enumerate": "parallel"}`` are summed out exactly.

Pick one by name with :func:`get` (``"trace"``, ``"iwae:5"``, ``"dreg:5"``, ...).
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Callable, Iterator

import pyro
import torch
from pyro import poutine
from pyro.infer import (ELBO, RenyiELBO, ReweightedWakeSleep, Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO,
                         TraceMeanField_ELBO)
from pyro.infer.util import get_dependent_plate_dims, torch_sum
from pyro.poutine.messenger import Messenger

__all__ = [
    "trace",
    "meanfield",
    "iwae",
    "renyi",
    "graph",
    "dreg",
    "rws",
    "enum",
    "get",
    "names",
    "describe",
    "RenyiBound",
    "DReG_ELBO",
    "GraphELBO",
    "RWS_ELBO",
    "EnumELBO",
    "LatentScale",
    "detached_parameters",
    "prepare",
]


def _check_particles(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"the number of particles k must be an integer >= 1, got {k!r}")
    return k


class _FromDifferentiableLoss:
    """``loss`` and ``loss_and_grads`` of an ELBO derived from its ``differentiable_loss``."""

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.item()


class RenyiBound(_FromDifferentiableLoss, RenyiELBO):
    """The Renyi variational bound (Li & Turner 2016); alpha=0 is the IWAE bound.

    The same estimator as :class:`pyro.infer.RenyiELBO` (local plates shared by all
    sites stay independent, so the bound is per data point), with a
    ``differentiable_loss`` whose gradient is ``sum_i softmax((1-a) log w)_i grad log w_i``.
    Requires reparameterized guide sites; use ``graph`` for discrete guides.

    References:
        Li & Turner (2016), Renyi Divergence Variational Inference.
        Burda, Grosse & Salakhutdinov (2016), Importance Weighted Autoencoders.
    """

    def __init__(self, alpha: float = 0.0, num_particles: int = 5, max_plate_nesting: float = float("inf"),
                 vectorize_particles: bool = True):
        _check_particles(num_particles)
        if not math.isfinite(alpha) or alpha == 1:
            raise ValueError(f"alpha must be finite and != 1 (alpha=1 is the ELBO: use 'trace'), got {alpha}")
        super().__init__(alpha=alpha, num_particles=num_particles, max_plate_nesting=max_plate_nesting,
                         vectorize_particles=vectorize_particles and num_particles > 1)

    def log_weights(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """log p(x, z_i) - log q(z_i | x) for each particle i: shape (k, *local plates).

        Values only: any guide will do, discrete ones included (their bound is valid,
        only its reparameterized gradient would not be)."""
        return self._log_weights(model, guide, args, kwargs, reparameterized=False)

    def _log_weights(self, model, guide, args, kwargs, reparameterized: bool = True) -> torch.Tensor:
        particles = []
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            particles.append(_log_weight(model_trace, guide_trace, reparameterized))
        if self.vectorize_particles:
            return particles[0]
        return torch.stack(particles)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        a = 1.0 - self.alpha
        log_w = self._log_weights(model, guide, args, kwargs)
        bound = (torch.logsumexp(a * log_w, dim=0) - math.log(self.num_particles)) / a
        return -bound.sum()


def _log_densities(model_trace, guide_trace, reparameterized: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(x, z) and log q(z), each summed over all but the local (data) plates."""
    sum_dims = get_dependent_plate_dims(model_trace.nodes.values())
    log_p, log_q = 0.0, 0.0
    for site in model_trace.nodes.values():
        if site["type"] == "sample":
            log_p = log_p + torch_sum(site["log_prob"], sum_dims)
    for name, site in guide_trace.nodes.items():
        if site["type"] == "sample":
            if reparameterized and not site["fn"].has_rsample:
                raise ValueError(
                    f"guide site {name!r} is not reparameterizable, so the importance-weighted "
                    "bound's gradient would be biased; use objective 'graph' (score function "
                    "with baselines), 'rws' (reweighted wake-sleep) or enumerate the site in the model"
                )
            log_q = log_q + torch_sum(site["log_prob"], sum_dims)
    if not torch.is_tensor(log_p) or not torch.is_tensor(log_q):
        raise ValueError("the model and guide have no sample sites: there is nothing to infer")
    return log_p, log_q


def _log_weight(model_trace, guide_trace, reparameterized: bool = True) -> torch.Tensor:
    log_p, log_q = _log_densities(model_trace, guide_trace, reparameterized)
    return log_p - log_q


class RWS_ELBO(_FromDifferentiableLoss, ReweightedWakeSleep):
    """Reweighted wake-sleep (wake-theta and wake-phi), with one weight per data point.

    Guide samples are detached, so no reparameterization is needed (discrete guides
    work). The model gets the IWAE-k gradient with the guide held fixed; the guide
    gets ``-sum_i w~_i grad log q(z_i | x)``, a self-normalized estimate of the
    gradient of KL(p(z | x) || q(z | x)) (inclusive KL). Pyro's
    :class:`~pyro.infer.ReweightedWakeSleep` normalizes the weights over the whole
    batch at once and has no ``differentiable_loss``; this one keeps local plates
    apart, as :class:`RenyiBound` does. The value is the negative IWAE-k bound, so it
    compares with the other objectives; the gradient is RWS's. Only the wake-phi
    phase (``insomnia=1``): the sleep phase needs guides that take observations as a
    keyword.

    References:
        Bornschein & Bengio (2015), Reweighted Wake-Sleep.
        Le, Kosiorek, Siddharth, Teh & Wood (2019), Revisiting Reweighted Wake-Sleep
        for Models with Stochastic Control Flow.
    """

    def __init__(self, num_particles: int = 5, max_plate_nesting: float = float("inf")):
        if isinstance(num_particles, int) and not isinstance(num_particles, bool) and num_particles < 2:
            raise ValueError(f"reweighted wake-sleep needs k >= 2 particles to weight, got {num_particles}")
        _check_particles(num_particles)
        super().__init__(num_particles=num_particles, insomnia=1.0, max_plate_nesting=max_plate_nesting,
                         vectorize_particles=True)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        (model_trace, guide_trace), = self._get_traces(model, guide, args, kwargs)
        log_p, log_q = _log_densities(model_trace, guide_trace, reparameterized=False)
        log_w = log_p - log_q.detach()
        bound = torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)
        wake_theta = -bound.sum()
        weights = torch.softmax(log_w.detach(), dim=0)
        wake_phi = -(weights * log_q).sum()
        return wake_theta + (wake_phi - wake_phi.detach())


class _DetachParams(Messenger):
    """Detaches ``pyro.param`` values (for guides that keep parameters in Pyro's store)."""

    def _pyro_post_param(self, msg):
        msg["value"] = msg["value"].detach()


@contextlib.contextmanager
def detached_parameters(modules: list[torch.nn.Module]) -> Iterator[None]:
    """Within the block, every parameter of ``modules`` (and of Pyro's param store,
    through ``pyro.param``) is read as a detached tensor: values are unchanged,
    gradients cannot reach them."""
    saved, seen = [], set()
    for module in modules:
        for sub in module.modules():
            if id(sub) in seen:  # a module listed twice (model and guide of one PyroModule) is swapped once
                continue
            seen.add(id(sub))
            for name, p in list(sub._parameters.items()):
                if p is not None:
                    saved.append((sub, name, p))
                    sub._parameters[name] = p.detach()
    try:
        with _DetachParams():
            yield
    finally:
        for sub, name, p in saved:
            sub._parameters[name] = p


def _modules_of(fn: Callable) -> list[torch.nn.Module]:
    owner = getattr(fn, "__self__", fn)
    return [owner] if isinstance(owner, torch.nn.Module) else []


class DReG_ELBO(RenyiBound):
    """IWAE bound with the doubly reparameterized gradient for the guide (Tucker et al. 2019).

    The bound's value is IWAE-k. Model parameters get the usual IWAE gradient
    ``sum_i w~_i grad log w_i``; guide parameters get
    ``sum_i w~_i^2 (d log w_i / d z_i)(d z_i / d phi)`` with the score term of
    log q removed, which stays informative as k grows (the plain IWAE guide
    gradient's signal-to-noise ratio falls like 1/sqrt(k), Rainforth et al. 2018).

    Implementation: with ``log_w`` computed with log q at the guide's parameters held
    fixed, and ``path`` the same quantity with the model's parameters held fixed too,
    the surrogate ``sum_i w~_i log_w_i + (w~_i^2 - w~_i) path_i`` has exactly these
    gradients: ``path`` reaches only the guide's parameters, through z. The chain
    rule through z handles guides whose latents depend on each other (AutoGuides,
    q(z2 | z1)). Parameters are held fixed by replaying model and guide with their
    ``nn.Module`` parameters and ``pyro.param`` values detached; a guide with dropout
    or batch norm sees a second forward pass.

    References:
        Tucker, Lawson, Gu & Maddison (2019), Doubly Reparameterized Gradient
        Estimators for Monte Carlo Objectives.
    """

    def __init__(self, num_particles: int = 5, max_plate_nesting: float = float("inf")):
        if _check_particles(num_particles) < 2:
            raise ValueError("DReG needs k >= 2 particles (with k=1 it is the ELBO: use 'trace')")
        super().__init__(alpha=0.0, num_particles=num_particles, max_plate_nesting=max_plate_nesting,
                         vectorize_particles=True)

    def _replay(self, fn, guide_trace, args, kwargs):
        tr = poutine.trace(poutine.replay(self._vectorized_num_particles(fn), trace=guide_trace)).get_trace(
            *args, **kwargs)
        tr = pyro.poutine.util.prune_subsample_sites(tr)
        tr.compute_log_prob()
        return tr

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        ((model_trace, guide_trace),) = list(self._get_traces(model, guide, args, kwargs))
        try:
            with detached_parameters(_modules_of(guide)):
                guide_fixed = self._replay(guide, guide_trace, args, kwargs)
        except (NotImplementedError, KeyError) as e:  # log q(z) through a planar, radial or Sylvester flow
            if isinstance(e, KeyError) and "cache" not in str(e):  # Pyro's planar: "expected ... in cache"
                raise
            raise ValueError(
                "DReG rescores the guide's samples with its parameters held fixed, which needs log q(z) at an "
                "arbitrary z; this guide cannot give it (a flow without an inverse: planar, radial or "
                f"sylvester?): {e or type(e).__name__}. Use iwae:k, or an invertible flow"
            ) from e
        with detached_parameters(_modules_of(model) + _modules_of(guide)):
            model_fixed = self._replay(model, guide_trace, args, kwargs)
        log_w = _log_weight(model_trace, guide_fixed)  # gradients: model params directly, guide params via z
        path = _log_weight(model_fixed, guide_fixed)  # gradients: guide params via z only
        weights = torch.softmax(log_w.detach(), dim=0)
        bound = torch.logsumexp(log_w.detach(), dim=0) - math.log(self.num_particles)
        surrogate = (weights * log_w).sum() + ((weights**2 - weights) * path).sum()
        return -bound.sum() - (surrogate - surrogate.detach())


class GraphELBO(TraceGraph_ELBO):
    """:class:`pyro.infer.TraceGraph_ELBO` (score-function gradients with Rao-Blackwellized
    downstream costs and optional baselines for non-reparameterizable sites), with a
    ``differentiable_loss``.

    References:
        Schulman, Heess, Weber & Abbeel (2015), Gradient Estimation Using Stochastic
        Computation Graphs.
    """

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        elbo, surrogate = self._loss_and_surrogate_loss(model, guide, args, kwargs)
        value = -torch.as_tensor(elbo).detach()
        return surrogate + (value - surrogate.detach())


class LatentScale(Messenger):
    """Multiplies the log density of every latent (unobserved) sample site by ``weight``.

    Applied to both model and guide it turns the ELBO into
    ``E[log p(x|z)] - weight * KL(q(z|x) || p(z))``: the beta-VAE objective
    (Higgins et al. 2017), and KL annealing when ``weight`` ramps from 0 to 1
    (Bowman et al. 2016).
    """

    def __init__(self, weight: float):
        super().__init__()
        self.weight = float(weight)

    def _process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = self.weight * msg["scale"]


def prepare(elbo: ELBO, model: Callable, guide: Callable, *args, **kwargs) -> ELBO:
    """Fix ``max_plate_nesting`` before training when the ELBO would guess it at its first step.

    Pyro guesses it by running model and guide once, which spends random numbers at
    whatever step comes first; doing it up front keeps a resumed run identical to an
    uninterrupted one. Uses Pyro's own guess, without its log line.
    """
    guesses = getattr(elbo, "vectorize_particles", False) or isinstance(elbo, TraceEnum_ELBO)
    if guesses and elbo.max_plate_nesting == float("inf"):
        logger = logging.getLogger("pyro.infer.elbo")
        level = logger.level
        logger.setLevel(logging.WARNING)
        try:
            with pyro.validation_enabled(False), torch.no_grad():
                elbo._guess_max_plate_nesting(model, guide, args, kwargs)
        finally:
            logger.setLevel(level)
    return elbo


# --- constructors -------------------------------------------------------------------------


def trace(num_particles: int = 1) -> ELBO:
    """The standard ELBO with reparameterized (or score-function) gradients: ``Trace_ELBO``."""
    return Trace_ELBO(num_particles=_check_particles(num_particles), vectorize_particles=num_particles > 1)


def meanfield(num_particles: int = 1) -> ELBO:
    """The ELBO with analytic KL terms where available: ``TraceMeanField_ELBO``."""
    return TraceMeanField_ELBO(num_particles=_check_particles(num_particles), vectorize_particles=num_particles > 1)


def iwae(k: int = 5) -> ELBO:
    """The importance-weighted bound IWAE-k (Burda et al. 2016) = Renyi bound with alpha=0."""
    return RenyiBound(alpha=0.0, num_particles=_check_particles(k))


def renyi(alpha: float = 0.5, k: int = 5) -> ELBO:
    """The Renyi-alpha bound with k particles (Li & Turner 2016)."""
    return RenyiBound(alpha=float(alpha), num_particles=_check_particles(k))


def graph(num_particles: int = 1) -> ELBO:
    """Score-function gradients with baselines for non-reparameterizable sites."""
    return GraphELBO(num_particles=_check_particles(num_particles), vectorize_particles=num_particles > 1)


def dreg(k: int = 5) -> ELBO:
    """IWAE-k with doubly reparameterized guide gradients (Tucker et al. 2019)."""
    return DReG_ELBO(num_particles=_check_particles(k))


def rws(k: int = 5) -> ELBO:
    """Reweighted wake-sleep with k particles (Bornschein & Bengio 2015): value = IWAE-k."""
    return RWS_ELBO(num_particles=_check_particles(k))


class EnumELBO(TraceEnum_ELBO):
    """:class:`pyro.infer.TraceEnum_ELBO` whose ``differentiable_loss`` also answers under
    ``torch.no_grad()`` (validation, evaluation), where Pyro's refuses a loss with no graph.

    References:
        Obermeyer et al. (2019), Tensor Variable Elimination for Plated Factor Graphs.
    """

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        if torch.is_grad_enabled():
            return super().differentiable_loss(model, guide, *args, **kwargs)
        return torch.as_tensor(self.loss(model, guide, *args, **kwargs))


def enum(num_particles: int = 1, max_plate_nesting: int | None = None) -> ELBO:
    """The ELBO with discrete model sites summed out exactly: ``TraceEnum_ELBO``.

    Sites marked ``infer={"enumerate": "parallel"}`` (and not sampled by the guide) are
    enumerated; with no other latents the loss is exactly -log p(x). ``max_plate_nesting``
    (the number of plates the model nests) places the enumeration dimensions to the left
    of every plate; left as None, it is found once by running model and guide (see
    :func:`prepare`).

    References:
        Obermeyer et al. (2019), Tensor Variable Elimination for Plated Factor Graphs.
    """
    nesting = float("inf") if max_plate_nesting is None else int(max_plate_nesting)
    return EnumELBO(num_particles=_check_particles(num_particles), max_plate_nesting=nesting,
                    vectorize_particles=num_particles > 1)


_CONSTRUCTORS: dict[str, Callable[..., ELBO]] = {
    "trace": trace,
    "meanfield": meanfield,
    "iwae": iwae,
    "renyi": renyi,
    "graph": graph,
    "dreg": dreg,
    "iwae-dreg": dreg,
    "rws": rws,
    "enum": enum,
}


def describe(elbo: ELBO) -> str:
    """A short description that tells objectives apart (class, particles, alpha)."""
    parts = [f"k={elbo.num_particles}"]  # RWS_ELBO: insomnia is always 1
    if isinstance(elbo, RenyiELBO):
        parts.append(f"alpha={elbo.alpha:g}")
    return f"{type(elbo).__name__}({', '.join(parts)})"


def names() -> list[str]:
    """The objective names :func:`get` accepts."""
    return list(_CONSTRUCTORS)


def get(spec: str | ELBO, particles: int | None = None) -> ELBO:
    """An objective from a name, ``"name:arg"``, or an ELBO instance (returned as is).

    ``"iwae:5"`` and ``"dreg:5"`` give k=5; ``"renyi:0.5"`` gives alpha=0.5;
    ``"trace:4"`` averages 4 particles. ``particles`` sets k (or the number of
    particles) when the spec does not.
    """
    if isinstance(spec, ELBO):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"objective must be a name or a pyro.infer.ELBO, got {type(spec).__name__}")
    name, _, arg = spec.strip().lower().partition(":")
    if name not in _CONSTRUCTORS:
        raise ValueError(f"unknown objective {spec!r}; valid choices: {', '.join(names())}")
    build = _CONSTRUCTORS[name]
    if name == "renyi":
        alpha = float(arg) if arg else 0.5
        return build(alpha, particles or 5)
    if arg:
        try:
            n = int(arg)
        except ValueError:
            raise ValueError(f"objective {spec!r}: the part after ':' must be an integer number of particles") from None
        return build(n)
    return build(particles) if particles is not None else build()
