"""pyro_gen: deep generative models on Pyro.

The package is layered; each subpackage imports only the ones below it
(``make test`` checks this with import-linter, see ``pyproject.toml``):

===============  ===========================================================
``diagnostics``  PSIS, ArviZ InferenceData, SBC, MCMC, the compare harness
``metrics``      topic metrics; ``disentanglement``: MIG, DCI, FactorVAE score, SAP
``figures``      plots and run reports
``evaluate``     held-out ELBO, IWAE-k, bounds checks, AIS and BDMC
``infer``        objectives (one estimator per module) and the training loop
``flows``        flow families as guides, priors and density models
``exact``        closed forms and hand-written recursions to check against
``data``         data sets, loaders, input checks
===============  ===========================================================

Importing pyro_gen changes no global state of Pyro or torch (settings, param store,
validation flags, default dtype, RNG, threads), and its tools work under either value
of ``pyro.settings.get("module_local_params")``: that choice is the user's. ``import
pyro_gen`` stays light: subpackages load on first use (no matplotlib, ArviZ or torchvision until a plot,
a diagnostic or a torchvision data set is asked for).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any


#: The package version.
__version__ = "0.1.0"

_SUBPACKAGES = ("infer", "evaluate", "diagnostics", "flows", "data", "exact", "metrics", "figures", "disentanglement")

# Modules that moved into a subpackage: ``pyro_gen.objectives`` and the like keep working
# as attributes (``from pyro_gen import objectives``, ``pyro_gen.objectives.get("iwae:5")``).
_MOVED = {
    "objectives": "infer.objectives", "train": "infer.train", "checkpoint": "infer.checkpoint",
    "progress": "infer.progress", "bounds": "evaluate.bounds", "sbc": "diagnostics.sbc",
    "mcmc": "diagnostics.mcmc", "compare": "diagnostics.compare", "linear_gaussian": "exact.linear_gaussian",
    "sequences": "exact.hmm", "topics": "metrics.topics", "plots": "figures.plots", "report": "figures.report",
    "sequence_plots": "figures.sequences", "sylvester": "flows.sylvester", "density": "flows.density",
}

__all__ = ["fit", "FitResult", *_SUBPACKAGES, *_MOVED, "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from . import data, diagnostics, disentanglement, evaluate, exact, figures, flows, infer, metrics
    from .infer import objectives
    from .infer.train import FitResult, fit


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    if name in _MOVED:
        return importlib.import_module(f".{_MOVED[name]}", __name__)
    if name in ("fit", "FitResult"):
        return getattr(importlib.import_module(".infer.train", __name__), name)
    raise AttributeError(f"module 'pyro_gen' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
