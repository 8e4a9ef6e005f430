"""Honest evaluation of a fitted model/guide pair on held-out data.

- :mod:`.estimates`: the ELBO and the IWAE-k log-likelihood with standard errors, active
  units, KL per latent dimension.
- :mod:`.bounds`: the check ELBO <= IWAE-k <= log p(x) where log p(x) is known.
"""

from .bounds import BoundCheck, check_bounds
from .estimates import Estimate, active_units, elbo, kl_per_dim, log_likelihood, log_weights, per_point_log_weights, \
    plate_nesting

__all__ = ["Estimate", "elbo", "log_likelihood", "active_units", "kl_per_dim", "log_weights", "per_point_log_weights", "plate_nesting",
           "BoundCheck", "check_bounds"]
