"""Normalizing flows as guides, priors and density models, from one family name.

Every family is built from ``pyro.distributions.transforms`` (and zuko), stacked
``depth`` times, with a fixed reversal between coupling/autoregressive layers so that
every coordinate is transformed:

=====================  ============================================  ============================================
family                 global layer (Pyro)                           amortized layer (conditioned on features h)
=====================  ============================================  ============================================
planar                 ``Planar``                                    ``ConditionalPlanar``
radial                 ``Radial``                                    ``ConditionalRadial``
iaf                    ``AffineAutoregressive`` (IAF)                ``ConditionalAffineAutoregressive``
householder            ``Householder`` (one reflection)              ``ConditionalHouseholder``
sylvester              :class:`.HouseholderSylvester`                :class:`.ConditionalHouseholderSylvester`
spline                 ``SplineCoupling`` (NSF, coupling)            ``ConditionalSpline`` (elementwise; Pyro has
                                                                     no conditional spline coupling)
spline_autoregressive  ``SplineAutoregressive``                      ``ConditionalSplineAutoregressive``
affine_coupling        ``AffineCoupling`` (RealNVP)                  ``ConditionalAffineCoupling``
zuko:NAME              zuko's ``NAME`` flow (``maf``, ``nsf``,       the same flow, with h as zuko's context
                       ``naf``, ...), its transform used as a layer
=====================  ============================================  ============================================

Directions. A flow used as a guide or fitted by variational inference must sample and
score its own samples: every family does that cheaply in the *sample* direction (the
layers applied base -> z). A flow used as a prior or fitted to data by maximum
likelihood must score an arbitrary z: the *score* direction applies the inverse of
each layer base -> z, so that scoring runs the layers forward (MAF for ``iaf``).
Planar, radial and Sylvester layers have no inverse, so they cannot be used there
(:data:`SCORABLE` lists the families that can).

References:
    Rezende & Mohamed (2015), Variational Inference with Normalizing Flows.
    Kingma et al. (2016), Improved Variational Inference with Inverse Autoregressive Flow.
    Papamakarios, Pavlakou & Murray (2017), Masked Autoregressive Flow for Density Estimation.
    Tomczak & Welling (2016), Improving Variational Auto-Encoders using Householder Flow.
    van den Berg et al. (2018), Sylvester Normalizing Flows for Variational Inference.
    Dinh, Sohl-Dickstein & Bengio (2017), Density estimation using Real NVP.
    Durkan et al. (2019), Neural Spline Flows.
    Rozet et al., zuko (https://github.com/probabilists/zuko).
"""

from __future__ import annotations

import math
from typing import Sequence

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from pyro.distributions.conditional import ConditionalTransformModule
from pyro.infer.autoguide import AutoContinuous
from pyro.infer.autoguide.initialization import init_to_median
from torch import nn
from torch.distributions import Transform

from .sylvester import ConditionalHouseholderSylvester, HouseholderSylvester

__all__ = ["FAMILIES", "SCORABLE", "ZUKO_FLOWS", "FlowStack", "Flow", "FlowGuide", "flow_guide", "check_family",
           "conditional_flow_distribution"]

#: The flow family names that Pyro's transforms provide (see the table above); ``"zuko:NAME"`` names
#: a zuko flow.
FAMILIES = ("planar", "radial", "iaf", "householder", "sylvester", "spline", "spline_autoregressive",
            "affine_coupling")
NOT_INVERTIBLE = ("planar", "radial", "sylvester")
#: The families whose layers have an inverse, so that a flow of them can score an arbitrary z (usable in
#: the ``"score"`` direction, as a prior or a density model); any ``"zuko:NAME"`` can too.
SCORABLE = tuple(f for f in FAMILIES if f not in NOT_INVERTIBLE)
#: The zuko flows that ``"zuko:NAME"`` accepts as NAME (zuko's discrete flows, not its continuous-time CNF).
ZUKO_FLOWS = ("maf", "nsf", "naf", "unaf", "nice", "realnvp", "sospf", "bpf")  # zuko's discrete flows
_PERMUTED = ("iaf", "spline", "spline_autoregressive", "affine_coupling")  # order matters between layers
_NETWORKED = _PERMUTED  # layers whose parameters come from a network, started at the identity


def check_family(family: str, *, scorable: bool = False, what: str = "flow") -> str:
    """Validate a family name; ``scorable=True`` also asks that it can score any z.

    Raises:
        ValueError: naming the valid choices.

    Examples:
        >>> check_family("iaf")
        'iaf'
        >>> check_family("planar", scorable=True)
        Traceback (most recent call last):
        ...
        ValueError: a 'planar' flow has no inverse, so as a flow it could not score an arbitrary z; families that can: iaf, householder, spline, spline_autoregressive, affine_coupling (or any zuko:NAME)
    """
    zuko_names = [f"zuko:{n}" for n in ZUKO_FLOWS]
    if family not in FAMILIES and family not in zuko_names:
        raise ValueError(f"unknown {what} family {family!r}; valid choices: {', '.join(FAMILIES + tuple(zuko_names))}")
    if scorable and family in NOT_INVERTIBLE:
        raise ValueError(
            f"a {family!r} flow has no inverse, so as a {what} it could not score an arbitrary z; "
            f"families that can: {', '.join(SCORABLE)} (or any zuko:NAME)")
    return family


def _zuko_flow(name: str, dim: int, depth: int, context_dim: int, hidden: Sequence[int] | None) -> nn.Module:
    import zuko  # imported here: only zuko families need it

    cls = getattr(zuko.flows, name.upper() if name != "realnvp" else "RealNVP")
    kwargs = {"features": dim, "context": context_dim, "transforms": depth}
    if hidden is not None:
        kwargs["hidden_features"] = tuple(hidden)
    return cls(**kwargs)


def _layer(family: str, dim: int, context_dim: int | None, hidden: list[int] | None, bins: int, bound: float):
    """One learnable layer of ``family`` (conditional when ``context_dim`` is given)."""
    c = context_dim
    if family == "planar":
        return T.conditional_planar(dim, c, hidden) if c else T.Planar(dim)
    if family == "radial":
        return T.conditional_radial(dim, c, hidden) if c else T.Radial(dim)
    if family == "iaf":
        return (T.conditional_affine_autoregressive(dim, c, hidden) if c
                else T.affine_autoregressive(dim, hidden))
    if family == "householder":
        return T.conditional_householder(dim, c, hidden) if c else T.Householder(dim)
    if family == "sylvester":
        k = min(dim, 8)
        return ConditionalHouseholderSylvester(dim, c, k) if c else HouseholderSylvester(dim, k)
    if family == "spline":
        if c:
            return T.conditional_spline(dim, c, hidden, count_bins=bins, bound=bound)
        return T.spline_coupling(dim, hidden_dims=hidden, count_bins=bins, bound=bound) if dim > 1 else \
            T.Spline(dim, count_bins=bins, bound=bound)
    if family == "spline_autoregressive":
        return (T.conditional_spline_autoregressive(dim, c, hidden, count_bins=bins, bound=bound) if c
                else T.spline_autoregressive(dim, hidden, count_bins=bins, bound=bound))
    if family == "affine_coupling":
        return T.conditional_affine_coupling(dim, c, hidden) if c else T.affine_coupling(dim, hidden)
    raise AssertionError(family)  # check_family ran first


def _start_at_identity(layer: nn.Module) -> nn.Module:
    """Shrink the output layer of a layer's network 100-fold, so a deep stack starts near the identity.

    Pyro's default initialization makes each coupling/autoregressive layer a random
    affine map; 32 of them compose to a map whose scale overflows (NaN in the first
    steps). Near-zero outputs are the usual remedy (RealNVP, Glow); not exactly zero,
    which would leave the hidden layers without a gradient at the first step.
    """
    linears = [m for m in layer.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        if linears:
            linears[-1].weight.mul_(0.01)
            linears[-1].bias.zero_()
        for m in layer.modules():
            if isinstance(m, T.Spline):  # Pyro draws these at random; equal bins and unit slopes are the identity
                m.unnormalized_widths.zero_()
                m.unnormalized_heights.zero_()
                m.unnormalized_derivatives.fill_(math.log(math.expm1(1.0)))
    return layer


class FlowStack(nn.Module):
    """``depth`` layers of one family; ``transforms(context)`` gives the Pyro transform list.

    Args:
        family: one of :data:`FAMILIES` or ``"zuko:NAME"``.
        dim: event size.
        depth: number of layers (for zuko, its ``transforms`` argument).
        context_dim: size of the conditioning features for amortized flows (None: global).
        hidden: hidden widths of the layers' networks (None: Pyro's / zuko's defaults).
        direction: ``"sample"`` (layers base -> z; cheap sampling, guides) or ``"score"``
            (inverse layers base -> z; cheap scoring of any z, priors and density models).
        count_bins, bound: spline settings (bins, and the box [-bound, bound] outside
            which a spline is the identity).
    """

    def __init__(self, family: str, dim: int, depth: int, *, context_dim: int | None = None,
                 hidden: Sequence[int] | None = None, direction: str = "sample", count_bins: int = 8,
                 bound: float = 5.0):
        super().__init__()
        check_family(family, scorable=direction == "score")
        if direction not in ("sample", "score"):
            raise ValueError(f"unknown direction {direction!r}; valid choices: sample, score")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"flow depth must be an integer >= 1, got {depth!r}")
        if dim < 1:
            raise ValueError(f"flow dim must be >= 1, got {dim}")
        if dim == 1 and family in ("iaf", "spline_autoregressive", "affine_coupling"):
            raise ValueError(f"a {family!r} flow needs at least 2 dimensions; for 1 use planar, radial or spline")
        self.family, self.dim, self.depth, self.direction = family, int(dim), depth, direction
        self.context_dim = context_dim
        hidden = list(hidden) if hidden is not None else None
        if family.startswith("zuko:"):
            self.zuko = _zuko_flow(family[5:], self.dim, depth, context_dim or 0, hidden)
            self.layers = nn.ModuleList()
        else:
            self.zuko = None
            self.layers = nn.ModuleList(
                _start_at_identity(_layer(family, self.dim, context_dim, hidden, count_bins, bound))
                if family in _NETWORKED else _layer(family, self.dim, context_dim, hidden, count_bins, bound)
                for _ in range(depth))
        self.register_buffer("reverse", torch.arange(self.dim - 1, -1, -1))

    def transforms(self, context: torch.Tensor | None = None) -> list[Transform]:
        """The transforms base -> z (conditioned on ``context`` for an amortized stack)."""
        if (context is None) != (self.context_dim is None):
            raise ValueError("an amortized flow needs its context, a global one takes none"
                             if context is None else "this flow is global: it takes no context")
        if self.zuko is not None:
            # zuko's transform maps z -> base cheaply; used forward it plays the role of an IAF layer.
            t = self.zuko.transform(context) if context is not None else self.zuko.transform()
            return [t] if self.direction == "sample" else [t.inv]
        out: list[Transform] = []
        for i, layer in enumerate(self.layers):
            if i and self.family in _PERMUTED and self.dim > 1:
                out.append(T.Permute(self.reverse))
            out.append(layer.condition(context) if isinstance(layer, ConditionalTransformModule) else layer)
        if self.direction == "score":
            out = [t.inv for t in reversed(out)]
        return out


class Flow(nn.Module):
    """A standalone flow density: a diagonal Gaussian base followed by a :class:`FlowStack`.

    The base's loc and log-scale are learnable unless ``learn_base=False`` (then N(0, I)),
    so that even volume-preserving families (Householder) can fit scale.

    Args:
        dim, family, depth, hidden, direction, count_bins, bound: as for :class:`FlowStack`.
        learn_base: learn the base Gaussian's loc and scale.

    Example::

        flow = Flow(2, "spline", 8, direction="score")      # a density model
        loss = -flow.log_prob(x).mean()
    """

    def __init__(self, dim: int, family: str = "spline", depth: int = 4, *, hidden: Sequence[int] | None = None,
                 direction: str = "sample", learn_base: bool = True, count_bins: int = 8, bound: float = 5.0):
        super().__init__()
        self.dim = int(dim)
        self.stack = FlowStack(family, dim, depth, hidden=hidden, direction=direction, count_bins=count_bins,
                               bound=bound)
        self.loc = nn.Parameter(torch.zeros(dim), requires_grad=learn_base)
        self.log_scale = nn.Parameter(torch.zeros(dim), requires_grad=learn_base)

    @property
    def family(self) -> str:
        return self.stack.family

    def distribution(self) -> dist.TransformedDistribution:
        """The flow as a Pyro distribution with event shape (dim,)."""
        base = dist.Normal(self.loc, self.log_scale.exp()).to_event(1)
        return dist.TransformedDistribution(base, self.stack.transforms())

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log q(x) for rows of x (needs ``direction="score"`` unless x is the latest draw of :meth:`sample`
        or :meth:`rsample_and_log_prob`, which the layers cache)."""
        if x.shape[-1] != self.dim:
            raise ValueError(f"x has {x.shape[-1]} columns, the flow has dim {self.dim}")
        return self.distribution().log_prob(x)

    def rsample_and_log_prob(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n reparameterized draws and their log densities, from one pass of the layers."""
        d = self.distribution()
        z = d.rsample((n,))
        return z, d.log_prob(z)  # the layers' caches make this exact without inverting

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """n draws from the flow, (n, dim), without gradients."""
        return self.distribution().sample((n,))


def conditional_flow_distribution(stack: FlowStack, loc: torch.Tensor, scale: torch.Tensor,
                                  context: torch.Tensor) -> dist.TorchDistribution:
    """q(z | x) for an amortized flow guide: N(loc, scale) pushed through ``stack`` given ``context``."""
    return dist.TransformedDistribution(dist.Normal(loc, scale).to_event(1), stack.transforms(context))


class FlowGuide(AutoContinuous):
    """A global flow guide for every continuous latent of a model (like Pyro's AutoNormalizingFlow).

    All latent sites are packed into one unconstrained vector (``AutoContinuous``);
    q is a diagonal Gaussian (loc, scale learnable, initialized at the prior median)
    pushed through ``depth`` layers of ``family``. The layers are submodules, so
    :func:`pyro_gen.fit` trains them with the guide's other parameters.

    ``family`` may also be a zuko flow instance (``zuko.flows.NSF(features=D)``, D the
    number of unconstrained latent dimensions): q is then that flow, wrapped for Pyro by
    ``pyro.contrib.zuko.ZukoToPyro``.

    References:
        Rezende & Mohamed (2015); Kingma et al. (2016); Pyro's ``AutoNormalizingFlow``.
    """

    def __init__(self, model, family: str | nn.Module = "iaf", depth: int = 4, *, hidden: Sequence[int] | None = None,
                 init_scale: float = 0.1, init_loc_fn=init_to_median, **flow_kwargs):
        if not isinstance(family, nn.Module):  # else a zuko flow, registered once the guide exists (below)
            check_family(family, what="guide")
        if init_scale <= 0:
            raise ValueError(f"init_scale must be positive, got {init_scale}")
        self._family = None if isinstance(family, nn.Module) else family
        self._depth, self._hidden, self._init_scale = depth, hidden, init_scale
        self._flow_kwargs = flow_kwargs
        zuko_flow = family if isinstance(family, nn.Module) else None
        super().__init__(model, init_loc_fn=init_loc_fn)
        self.zuko_flow = zuko_flow

    def _setup_prototype(self, *args, **kwargs):
        super()._setup_prototype(*args, **kwargs)
        if self.zuko_flow is not None:
            features = self.zuko_flow().event_shape[-1]
            if features != self.latent_dim:
                raise ValueError(f"the zuko flow has {features} features, the model has {self.latent_dim} "
                                 "unconstrained latent dimensions")
            self.loc = nn.Parameter(self._init_loc())  # unused by q; kept so get_base_dist has a device
            self.loc.requires_grad_(False)
            return
        self.loc = nn.Parameter(self._init_loc())
        self.log_scale = nn.Parameter(torch.full_like(self.loc, math.log(self._init_scale)))
        self.stack = FlowStack(self._family, self.latent_dim, self._depth, hidden=self._hidden,
                               **self._flow_kwargs).to(self.loc.device)

    def get_base_dist(self):
        return dist.Normal(torch.zeros_like(self.loc), 1.0).to_event(1)

    def get_posterior(self, *args, **kwargs):
        if self.zuko_flow is not None:
            from pyro.contrib.zuko import ZukoToPyro

            return ZukoToPyro(self.zuko_flow())
        base = dist.Normal(self.loc, self.log_scale.exp()).to_event(1)
        return dist.TransformedDistribution(base, self.stack.transforms())


def flow_guide(model, family: str | nn.Module = "iaf", depth: int = 4, **kwargs) -> FlowGuide:
    """One line: a flow guide over every continuous latent of ``model``.

    Example::

        guide = flow_guide(model, "iaf", depth=4)
        fit(model, guide, data, objective="trace")

    Args:
        model: a Pyro model (function or ``PyroModule`` method).
        family: one of :data:`FAMILIES`, ``"zuko:NAME"``, or a zuko flow instance.
        depth: number of flow layers.
        **kwargs: ``hidden``, ``init_scale``, ``init_loc_fn``, ``count_bins``, ``bound``.
    """
    return FlowGuide(model, family, depth, **kwargs)
