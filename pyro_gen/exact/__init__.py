"""Exact answers that tests and benchmarks check pyro_gen against.

- :mod:`.linear_gaussian`: probabilistic PCA in closed form (ML solution, log-likelihood,
  posterior, ELBO gap).
- :mod:`.hmm`: hand-written HMM recursions (forward, forward-backward, Viterbi) and
  :class:`ForwardHMM`.
- :mod:`.rbm`: a binary RBM's free energy and log Z by enumeration.
"""

from . import hmm, linear_gaussian, rbm
from .hmm import ForwardHMM, forward_backward, forward_log_likelihood, nll_per_step, sample_hmm, viterbi
from .linear_gaussian import elbo_gap, exact_log_likelihood, exact_posterior, max_log_likelihood, ml_solution, \
    subspace_angle
from .rbm import rbm_free_energy, rbm_log_partition

__all__ = ["hmm", "linear_gaussian", "ForwardHMM", "forward_log_likelihood", "forward_backward", "viterbi", "sample_hmm",
           "nll_per_step", "ml_solution", "max_log_likelihood", "exact_log_likelihood", "exact_posterior", "elbo_gap",
           "subspace_angle", "rbm", "rbm_free_energy", "rbm_log_partition"]
