"""Training objectives: Pyro's ELBOs, plus the pieces Pyro lacks; one estimator per module.

Every objective is a :class:`pyro.infer.ELBO` with ``differentiable_loss(model, guide,
*args)`` returning a scalar whose value is the negative bound (summed over the batch)
and whose gradient is the estimator's.

=======================  ==============================  =============
name                     estimator                       module
=======================  ==============================  =============
``trace``                Pyro's ``Trace_ELBO``           (Pyro)
``meanfield``            Pyro's ``TraceMeanField_ELBO``  (Pyro)
``iwae:k``, ``renyi:a``  :class:`RenyiBound`             :mod:`.renyi`
``dreg:k``               :class:`DReG_ELBO`              :mod:`.dreg`
``rws:k``                :class:`RWS_ELBO`               :mod:`.rws`
``vimco:k``              :class:`VIMCO`                  :mod:`.vimco`
``graph``                :class:`GraphELBO`              :mod:`.graph`
``enum``                 :class:`EnumELBO`               :mod:`.enum`
``cd:k``, ``pcd:k``      :class:`ContrastiveDivergence`  :mod:`.contrastive`
``betatc:b``             :class:`BetaTC_ELBO`            :mod:`.betatc`
``factorvae:g``          :class:`FactorVAE_ELBO`         :mod:`.factorvae`
``capacity:c``           :class:`CapacityELBO`           :mod:`.capacity`
``dipvae:l``             :class:`DIPVAE_ELBO`            :mod:`.dipvae`
=======================  ==============================  =============

``cd`` and ``pcd`` train energy-based models (``models.rbm``): not an ELBO, but the same
``differentiable_loss`` shape, so :func:`pyro_gen.fit` trains them like the rest.

``betatc``, ``factorvae``, ``capacity`` and ``dipvae`` weigh parts of the ELBO's KL term, or
add a penalty on the aggregate posterior, to favour disentangled codes (Chen et al. 2018; Kim &
Mnih 2018; Burgess et al. 2018; Kumar et al. 2018): their values are not bounds. :class:`LatentScale` (beta, KL annealing) wraps any of them. Pick one by name with
:func:`get` (``"trace"``, ``"iwae:5"``, ``"dreg:5"``, ...).
"""

from __future__ import annotations

import copy
from typing import Callable

from pyro.infer import ELBO, RenyiELBO, Trace_ELBO, TraceMeanField_ELBO

from .common import check_particles, prepare
from .betatc import BetaTC_ELBO, total_correlation
from .capacity import CapacityELBO
from .contrastive import ContrastiveDivergence, EnergyDistribution
from .dipvae import DIPVAE_ELBO, aggregate_covariance
from .dreg import DReG_ELBO, detached_parameters
from .enum import EnumELBO, marked_for_enumeration
from .factorvae import FactorVAE_ELBO, permute_dims
from .graph import GraphELBO
from .latent_scale import LatentScale
from .renyi import RenyiBound
from .rws import RWS_ELBO
from .vimco import VIMCO

__all__ = ["trace", "meanfield", "iwae", "renyi", "graph", "dreg", "rws", "vimco", "enum", "betatc", "factorvae", "capacity", "dipvae",
           "get", "names", "describe",
           "cd", "pcd", "RenyiBound", "DReG_ELBO", "GraphELBO", "RWS_ELBO", "VIMCO", "EnumELBO", "LatentScale",
           "ContrastiveDivergence", "EnergyDistribution", "detached_parameters",
           "BetaTC_ELBO", "FactorVAE_ELBO", "CapacityELBO", "DIPVAE_ELBO", "total_correlation", "permute_dims",
           "aggregate_covariance",
           "prepare", "devectorized", "marked_for_enumeration"]


def trace(num_particles: int = 1) -> ELBO:
    """The standard ELBO with reparameterized (or score-function) gradients: ``Trace_ELBO``."""
    return Trace_ELBO(num_particles=check_particles(num_particles), vectorize_particles=num_particles > 1)


def meanfield(num_particles: int = 1) -> ELBO:
    """The ELBO with analytic KL terms where available: ``TraceMeanField_ELBO``."""
    return TraceMeanField_ELBO(num_particles=check_particles(num_particles), vectorize_particles=num_particles > 1)


def iwae(k: int = 5) -> ELBO:
    """The importance-weighted bound IWAE-k (Burda et al. 2016) = Renyi bound with alpha=0."""
    return RenyiBound(alpha=0.0, num_particles=check_particles(k))


def renyi(alpha: float = 0.5, k: int = 5) -> ELBO:
    """The Renyi-alpha bound with k particles (Li & Turner 2016)."""
    return RenyiBound(alpha=float(alpha), num_particles=check_particles(k))


def graph(num_particles: int = 1) -> ELBO:
    """Score-function gradients with baselines for non-reparameterizable sites."""
    return GraphELBO(num_particles=check_particles(num_particles), vectorize_particles=num_particles > 1)


def dreg(k: int = 5) -> ELBO:
    """IWAE-k with doubly reparameterized guide gradients (Tucker et al. 2019)."""
    return DReG_ELBO(num_particles=check_particles(k))


def rws(k: int = 5) -> ELBO:
    """Reweighted wake-sleep with k particles (Bornschein & Bengio 2015): value = IWAE-k."""
    return RWS_ELBO(num_particles=check_particles(k))


def vimco(k: int = 5) -> ELBO:
    """IWAE-k with VIMCO's leave-one-out score-function gradients for discrete guides (Mnih & Rezende 2016)."""
    return VIMCO(num_particles=check_particles(k))


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
    return EnumELBO(num_particles=check_particles(num_particles), max_plate_nesting=nesting,
                    vectorize_particles=num_particles > 1)


def cd(k: int = 1) -> ELBO:
    """Contrastive divergence with k Gibbs sweeps from the data (Hinton 2002), for energy-based models."""
    return ContrastiveDivergence(k)


def pcd(k: int = 1) -> ELBO:
    """Persistent contrastive divergence with k Gibbs sweeps per step (Tieleman 2008)."""
    return ContrastiveDivergence(k, persistent=True)


def betatc(beta: float = 6.0) -> ELBO:
    """beta-TCVAE (Chen et al. 2018): the ELBO with its total correlation weighted by beta."""
    return BetaTC_ELBO(beta)


def factorvae(gamma: float = 10.0) -> ELBO:
    """FactorVAE (Kim & Mnih 2018): the ELBO minus gamma times a discriminator's total correlation."""
    return FactorVAE_ELBO(gamma)


def capacity(c: float = 25.0) -> ELBO:
    """Controlled capacity (Burgess et al. 2018): KL pulled to a target rising to ``c`` nats over 10,000 steps."""
    return CapacityELBO(c)


def dipvae(lambda_od: float = 10.0) -> ELBO:
    """DIP-VAE-II (Kumar et al. 2018): the aggregate posterior's covariance pulled to the identity."""
    return DIPVAE_ELBO(lambda_od)


_CONSTRUCTORS: dict[str, Callable[..., ELBO]] = {
    "trace": trace,
    "meanfield": meanfield,
    "iwae": iwae,
    "renyi": renyi,
    "graph": graph,
    "dreg": dreg,
    "iwae-dreg": dreg,
    "rws": rws,
    "vimco": vimco,
    "enum": enum,
    "cd": cd,
    "pcd": pcd,
    "betatc": betatc,
    "factorvae": factorvae,
    "capacity": capacity,
    "dipvae": dipvae,
}

#: The objectives whose argument is a weight, not a number of particles.
_WEIGHTED = ("betatc", "factorvae", "capacity", "dipvae")


def describe(elbo: ELBO) -> str:
    """A short description that tells objectives apart (class, particles, alpha)."""
    if hasattr(elbo, "description"):  # ContrastiveDivergence and the disentangling objectives
        return elbo.description
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
    ``"trace:4"`` averages 4 particles; ``"cd:25"`` and ``"pcd:1"`` give k Gibbs sweeps; ``"betatc:6"``,
    ``"factorvae:10"``, ``"capacity:25"`` and ``"dipvae:10"`` give their weight (beta, gamma, lambda) or
    capacity (nats). ``particles`` sets k (or the number of
    particles) when the spec does not.

    Examples:
        >>> from pyro_gen import objectives
        >>> objectives.describe(objectives.get("iwae:5"))
        'RenyiBound(k=5, alpha=0)'
        >>> objectives.get("trace", particles=4).num_particles
        4
        >>> objectives.get("vimco:1")
        Traceback (most recent call last):
        ...
        ValueError: VIMCO needs k >= 2 samples (its baselines leave one out), got k=1
        >>> objectives.get("vmco:5")
        Traceback (most recent call last):
        ...
        ValueError: unknown objective 'vmco:5'; valid choices: trace, meanfield, iwae, renyi, graph, dreg, iwae-dreg, rws, vimco, enum, cd, pcd, betatc, factorvae, capacity, dipvae
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
    if name in _WEIGHTED:
        try:
            return build(float(arg)) if arg else build()
        except ValueError as e:
            raise ValueError(f"objective {spec!r}: {e}") from None
    if arg:
        try:
            n = int(arg)
        except ValueError:
            raise ValueError(f"objective {spec!r}: the part after ':' must be an integer number of particles") from None
        return build(n)
    return build(particles) if particles is not None else build()



def devectorized(elbo: ELBO) -> ELBO | None:
    """The same objective drawing its particles one at a time (Pyro's ``vectorize_particles=False``),
    or None where there is nothing to change (one particle) or no such form (DReG, RWS and VIMCO need
    all particles in one trace)."""
    if not getattr(elbo, "vectorize_particles", False) or isinstance(elbo, (DReG_ELBO, RWS_ELBO, VIMCO)):
        return None
    clone = copy.copy(elbo)
    clone.vectorize_particles = False
    return clone
