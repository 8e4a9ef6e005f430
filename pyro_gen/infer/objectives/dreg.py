"""IWAE-k with doubly reparameterized gradients for the guide (DReG).

Estimator: ``DReG_ELBO`` (Tucker et al. 2019). Pyro has no DReG estimator at all;
``detached_parameters`` (the guide rescored with its parameters held fixed) is the
piece it needs.

References:
    Tucker, Lawson, Gu & Maddison (2019), Doubly Reparameterized Gradient Estimators
    for Monte Carlo Objectives.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Callable, Iterator

import pyro
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger

from .common import check_particles, log_weight
from .renyi import RenyiBound

__all__ = ["DReG_ELBO", "detached_parameters"]


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
        # Under module_local_params=False a PyroModule re-registers its submodules with
        # pyro.module, which warns about every (detached, so requires_grad=False) parameter.
        with _DetachParams(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*was not registered in the param store because requires_grad=False")
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
        if check_particles(num_particles) < 2:
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
        """A scalar whose value is the negative IWAE-k bound summed over the data points, and whose
        gradient is IWAE's for the model's parameters and DReG's for the guide's.

        Raises:
            ValueError: if the guide cannot score an arbitrary z (a planar, radial or Sylvester flow).
        """
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
        log_w = log_weight(model_trace, guide_fixed)  # gradients: model params directly, guide params via z
        path = log_weight(model_fixed, guide_fixed)  # gradients: guide params via z only
        weights = torch.softmax(log_w.detach(), dim=0)
        bound = torch.logsumexp(log_w.detach(), dim=0) - math.log(self.num_particles)
        surrogate = (weights * log_w).sum() + ((weights**2 - weights) * path).sum()
        return -bound.sum() - (surrogate - surrogate.detach())
