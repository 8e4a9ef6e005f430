"""Importance weights of models whose discrete sites are summed out by enumeration.

A model may mark discrete sites ``infer={"enumerate": "parallel"}`` and leave them out of its
guide (a mixture's component, an HMM's states): ``TraceEnum_ELBO`` then sums them out exactly.
An importance-weighted estimate must do the same, w_i = sum_c p(x, z_i, c) / q(z_i | x); drawing
c from its prior instead gives a looser, wrong number (IWAE below the ELBO). What Pyro lacks is
the per-particle, per-data-point form: ``TraceEnum_ELBO`` returns the ELBO summed over the data.
This module builds it from Pyro's own pieces: the enumerated traces of ``TraceEnum_ELBO``, its
factorization of the model (``_compute_model_factors``) and tensor variable elimination
(``pyro.ops.contract.contract_to_tensor``) down to the plates that every site shares.

References:
    Obermeyer et al. (2019), Tensor Variable Elimination for Plated Factor Graphs.
"""

from __future__ import annotations

from typing import Callable

import pyro
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO
from pyro.ops import packed
from pyro.ops.contract import contract_to_tensor

from ..infer.objectives import marked_for_enumeration

__all__ = ["enumerated_sites", "enumerated_log_weights"]


def enumerated_sites(model: Callable, guide: Callable, batch: tuple) -> list[str]:
    """The model's sample sites marked for enumeration that the guide does not sample (from one
    run on two data points, with the random-number state put back afterwards)."""
    rows = tuple(t[:2] for t in batch)
    with torch.random.fork_rng(devices=[]), pyro.validation_enabled(False), torch.no_grad(), poutine.block():
        guide_trace = poutine.trace(guide).get_trace(*rows)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*rows)
    return marked_for_enumeration(model_trace, guide_trace)


def enumerated_log_weights(model: Callable, guide: Callable, batch: tuple, k: int, max_plate_nesting: int,
                           vectorize: bool = True) -> torch.Tensor:
    """log sum_c p(x, z_i, c) - log q(z_i | x) for k draws z_i of the guide, the enumerated sites c
    summed out: shape ``(k, *plates)`` over the plates that every site shares, e.g. (k, N) for one local
    latent per point."""
    from pyro.infer.traceenum_elbo import _compute_model_factors  # Pyro's own factorization of the model

    if not vectorize and k > 1:
        return torch.stack([enumerated_log_weights(model, guide, batch, 1, max_plate_nesting, False)[0]
                            for _ in range(k)])
    vectorize = vectorize and k > 1
    elbo = TraceEnum_ELBO(num_particles=k, max_plate_nesting=max_plate_nesting, vectorize_particles=vectorize)
    ((model_trace, guide_trace),) = list(elbo._get_traces(model, guide, batch, {}))
    marginal_costs, log_factors, ordering, sum_dims, scale = _compute_model_factors(model_trace, guide_trace)
    target = frozenset.intersection(*(ordering[n] for n, s in model_trace.nodes.items() if s["type"] == "sample"))
    terms = [t for costs in marginal_costs.values() for t in costs]
    if log_factors:
        terms.append(packed.scale_and_mask(contract_to_tensor(log_factors, sum_dims, target_ordinal=target),
                                           scale=scale))
    terms += [packed.neg(s["packed"]["log_prob"]) for s in guide_trace.nodes.values() if s["type"] == "sample"]
    keep = set(target)  # the plate symbols every site shares
    symbol_to_dim = {**model_trace.symbol_to_dim, **guide_trace.symbol_to_dim}
    total = 0.0
    for term in terms:  # each down to the shared plates: sum over every other plate dimension
        drop = [i for i, d in enumerate(term._pyro_dims) if d not in keep]
        if drop:
            dims = "".join(d for d in term._pyro_dims if d in keep)
            term = term.sum(drop)
            term._pyro_dims = dims
        total = total + packed.unpack(term, symbol_to_dim)
    total = torch.as_tensor(total)
    # Dimensions: the particle plate (when vectorized) left of the model's max_plate_nesting plates.
    dims = max_plate_nesting + (1 if vectorize else 0)
    total = total.reshape((1,) * max(0, dims - total.dim()) + tuple(total.shape))
    if not vectorize:
        total = total.unsqueeze(0)
    flat = total.expand((k,) + tuple(total.shape[1:])).reshape(k, -1)
    return flat[:, 0] if flat.shape[1] == 1 else flat
