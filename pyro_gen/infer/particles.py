"""Particles vectorized where the model broadcasts, one at a time where it does not.

pyro_gen draws its k particles (IWAE-k, evaluation, diagnostics) in one pass, along a
particle dimension left of every plate. A model that does not broadcast over that extra
dimension (Pyro's Bayesian-regression tutorial: ``nn.Linear`` given a batch of sampled
weights) fails there; Pyro's own ``Predictive`` draws one sample at a time by default for
this reason. :func:`with_particles` tries the vectorized pass, and on such a failure logs
one line, remembers the model, and draws the particles in turn from then on: the same
estimator, slower.
"""

from __future__ import annotations

import logging
import weakref
from typing import Callable, TypeVar

__all__ = ["VECTORIZE_ERRORS", "with_particles"]

#: What a model that does not broadcast over a particle dimension raises, shape errors from torch
#: ("t() expects a tensor with <= 2 dimensions", "mat1 and mat2 shapes cannot be multiplied"),
#: Pyro's shape checks, indexing with a batch of values. :func:`with_particles` falls back to one
#: particle at a time on these.
VECTORIZE_ERRORS = (RuntimeError, ValueError, IndexError)

_LOG = logging.getLogger("pyro_gen")
_SEQUENTIAL: "weakref.WeakKeyDictionary[object, bool]" = weakref.WeakKeyDictionary()

T = TypeVar("T")


def _key(model: Callable):
    """What identifies a model across calls: its owner for a bound method, else the function."""
    owner = getattr(model, "__self__", None)
    return owner if owner is not None else model


def with_particles(model: Callable, k: int, what: str, vectorized: Callable[[], T], sequential: Callable[[], T]) -> T:
    """``vectorized()``, or ``sequential()`` when ``model`` does not broadcast over particles."""
    key = _key(model)
    try:
        known = _SEQUENTIAL.get(key, False)
    except TypeError:  # not weak-referenceable
        key, known = None, False
    if known:
        return sequential()
    try:
        return vectorized()
    except VECTORIZE_ERRORS as e:
        if k <= 1:
            raise
        first = str(e).splitlines()[0][:200] if str(e) else ""
        _LOG.warning("%s: the model does not broadcast over a vectorized particle dimension (%s: %s); drawing "
                     "the %d particles one at a time for this model from now on (same estimator, slower)",
                     what, type(e).__name__, first, k)
        result = sequential()  # raises, with its own message, if the model fails here too
        if key is not None:
            _SEQUENTIAL[key] = True
        return result
