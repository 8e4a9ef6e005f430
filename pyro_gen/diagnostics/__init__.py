"""Posterior diagnostics, in ArviZ's terms, and the tools that compare inference algorithms.

- :mod:`.posterior`: PSIS k-hat, ``arviz.InferenceData``, R-hat across restarts, posterior
  predictive checks.
- :mod:`.sbc`: simulation-based calibration.
- :mod:`.mcmc`: Pyro's NUTS beside VI.
- :mod:`.compare`: every objective with every guide under one budget, with a report.

The top layer of pyro_gen: it may use every other subpackage; none uses it.
"""

import importlib
from typing import Any

from .posterior import PSISResult, joint_log_weights, khat_figure, load_inference_data, posterior_draws, \
    posterior_predictive_check, psis, psis_khat, restart_convergence, save_inference_data, to_inference_data

__all__ = ["PSISResult", "joint_log_weights", "psis_khat", "psis", "posterior_draws", "to_inference_data",
           "save_inference_data", "load_inference_data", "restart_convergence", "posterior_predictive_check",
           "khat_figure", "posterior", "sbc", "mcmc", "compare"]


def __getattr__(name: str) -> Any:
    # sbc, mcmc and compare load on first use: they pull in the trainer, flows and figures.
    if name in ("sbc", "mcmc", "compare"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
