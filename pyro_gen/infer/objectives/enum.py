"""The ELBO with discrete model sites summed out exactly: Pyro's ``TraceEnum_ELBO``.

Estimator: ``EnumELBO`` (Obermeyer et al. 2019). What Pyro lacks is small: its
``differentiable_loss`` refuses to answer under ``torch.no_grad()``, which validation
and evaluation need.

References:
    Obermeyer et al. (2019), Tensor Variable Elimination for Plated Factor Graphs.
"""

from __future__ import annotations

import torch
from pyro.infer import TraceEnum_ELBO

__all__ = ["EnumELBO", "marked_for_enumeration"]


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


def marked_for_enumeration(model_trace, guide_trace) -> list[str]:
    """The model's latent sample sites marked ``infer={"enumerate": ...}`` that the guide does not
    sample: the sites ``TraceEnum_ELBO`` sums out, and any other estimator would sample instead."""
    guide_sites = {name for name, site in guide_trace.nodes.items() if site["type"] == "sample"}
    return [name for name, site in model_trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"] and site["infer"].get("enumerate")
            and name not in guide_sites]
