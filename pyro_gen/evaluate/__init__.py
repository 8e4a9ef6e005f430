"""Honest evaluation of a fitted model/guide pair on held-out data.

- :mod:`.estimates`: the ELBO and the IWAE-k log-likelihood with standard errors, active
  units, KL per latent dimension.
- :mod:`.bounds`: the check ELBO <= IWAE-k <= log p(x) where log p(x) is known.
- :mod:`.annealed`: annealed importance sampling (a tighter stochastic lower bound) and
  bidirectional Monte Carlo (lower and upper bounds on simulated data).
- :mod:`.partition`: log Z of a binary RBM by AIS from a base-rate RBM.
- :mod:`.gradients`: the variance and signal-to-noise ratio of an objective's gradient estimates.
"""

from .annealed import AISResult, BDMCResult, ais, annealing_schedule, bdmc
from .bounds import BoundCheck, check_bounds
from .gradients import GradientNoise, gradient_variance
from .partition import LogPartition, base_rate_biases, rbm_ais_log_partition
from .estimates import Estimate, active_units, elbo, kl_per_dim, log_likelihood, log_weights, per_point_log_weights, \
    plate_nesting

__all__ = ["Estimate", "elbo", "log_likelihood", "active_units", "kl_per_dim", "log_weights", "per_point_log_weights", "plate_nesting",
           "BoundCheck", "check_bounds", "ais", "bdmc", "annealing_schedule", "AISResult", "BDMCResult",
           "rbm_ais_log_partition", "base_rate_biases", "LogPartition", "GradientNoise", "gradient_variance"]
