"""Score-function gradients with Rao-Blackwellization and baselines, as a differentiable loss.

Estimator: ``GraphELBO``, Pyro's :class:`pyro.infer.TraceGraph_ELBO` (Schulman et al.
2015) with the ``differentiable_loss`` that Pyro lacks (it has only ``loss_and_grads``).

References:
    Schulman, Heess, Weber & Abbeel (2015), Gradient Estimation Using Stochastic
    Computation Graphs.
"""

from __future__ import annotations

import torch
from pyro.infer import TraceGraph_ELBO

__all__ = ["GraphELBO"]


class GraphELBO(TraceGraph_ELBO):
    """:class:`pyro.infer.TraceGraph_ELBO` (score-function gradients with Rao-Blackwellized
    downstream costs and optional baselines for non-reparameterizable sites), with a
    ``differentiable_loss``.

    References:
        Schulman, Heess, Weber & Abbeel (2015), Gradient Estimation Using Stochastic
        Computation Graphs.
    """

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """A scalar whose value is the negative ELBO and whose gradient is that of Pyro's surrogate
        loss (score-function terms with Rao-Blackwellized costs and baselines)."""
        elbo, surrogate = self._loss_and_surrogate_loss(model, guide, args, kwargs)
        value = -torch.as_tensor(elbo).detach()
        return surrogate + (value - surrogate.detach())
