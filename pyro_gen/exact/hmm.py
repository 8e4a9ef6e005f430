"""The exact HMM recursions that the sequence models are checked against.

- :func:`forward_log_likelihood`: the forward algorithm in log space, written out by hand,
  so that Pyro's enumeration (``TraceEnum_ELBO`` + ``pyro.markov``, ``DiscreteHMM``) can be
  tested against it and timed beside it.
- :func:`forward_backward`: posterior state marginals p(z_t | x), by hand, to check
  ``infer_discrete``-based marginals.
- :func:`viterbi`: the most likely state path, by hand, to check ``infer_discrete(temperature=0)``.
- :func:`sample_hmm`: sequences from a known HMM (synthetic data with ground truth).
- :class:`ForwardHMM`: Pyro's ``DiscreteHMM`` with time eliminated left to right (the
  forward algorithm) instead of by a parallel scan: the same distribution, less work on a CPU.

Pyro has all three recursions inside its enumeration machinery but not as plain
functions over (init, transition, emission) tensors, which is what a test needs.

References:
    Rabiner (1989), A Tutorial on Hidden Markov Models and Selected Applications in
    Speech Recognition.
"""

from __future__ import annotations

from typing import Callable

import pyro.distributions as dist
import torch

from ..data.checks import time_mask

__all__ = ["ForwardHMM", "forward_log_likelihood", "forward_backward", "viterbi", "sample_hmm", "nll_per_step"]


def forward_log_likelihood(log_init: torch.Tensor, log_trans: torch.Tensor, log_emit: torch.Tensor,
                           lengths: torch.Tensor | None = None) -> torch.Tensor:
    """log p(x_{1:T_n}) for each sequence by the forward recursion in log space.

    Args:
        log_init: (K,) log p(z_1).
        log_trans: (K, K) log p(z_t = j | z_{t-1} = i) at ``[i, j]``.
        log_emit: (N, T, K) log p(x_t | z_t = k) for every sequence, step and state.
        lengths: (N,) steps per sequence (default: all T); steps past a length are ignored.

    Returns:
        (N,) log-likelihoods.

    Examples:
        Two states, two steps: the recursion equals the sum over the four state paths.

        >>> import itertools, torch
        >>> init, trans = torch.tensor([0.6, 0.4]), torch.tensor([[0.9, 0.1], [0.2, 0.8]])
        >>> emit = torch.tensor([[[0.5, 0.1], [0.3, 0.7]]])  # p(x_t | z_t = k), (N=1, T=2, K=2)
        >>> paths = sum(init[a] * emit[0, 0, a] * trans[a, b] * emit[0, 1, b]
        ...             for a, b in itertools.product(range(2), repeat=2))
        >>> forward_log_likelihood(init.log(), trans.log(), emit.log()).exp()
        tensor([0.1268])
        >>> paths
        tensor(0.1268)
    """
    N, T, K = log_emit.shape
    if log_init.shape != (K,) or log_trans.shape != (K, K):
        raise ValueError(f"expected log_init ({K},) and log_trans ({K}, {K}) for {K} states, got "
                         f"{tuple(log_init.shape)} and {tuple(log_trans.shape)}")
    mask = time_mask(lengths, T) if lengths is not None else None
    alpha = log_init + log_emit[:, 0]  # (N, K): log p(x_1, z_1)
    for t in range(1, T):
        step = torch.logsumexp(alpha.unsqueeze(-1) + log_trans, dim=-2) + log_emit[:, t]
        alpha = step if mask is None else torch.where(mask[:, t:t + 1], step, alpha)
    return torch.logsumexp(alpha, dim=-1)


def forward_backward(log_init: torch.Tensor, log_trans: torch.Tensor, log_emit: torch.Tensor,
                     lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Posterior marginals p(z_t = k | x) as an (N, T, K) tensor (zeros past each length)."""
    N, T, K = log_emit.shape
    mask = time_mask(lengths, T) if lengths is not None else torch.ones(N, T, dtype=torch.bool)
    alphas = [log_init + log_emit[:, 0]]
    for t in range(1, T):
        alphas.append(torch.logsumexp(alphas[-1].unsqueeze(-1) + log_trans, dim=-2) + log_emit[:, t])
    beta = torch.zeros(N, K, dtype=log_emit.dtype)
    betas = [beta]
    for t in range(T - 1, 0, -1):
        step = torch.logsumexp(log_trans + (log_emit[:, t] + beta).unsqueeze(-2), dim=-1)
        beta = torch.where(mask[:, t:t + 1], step, beta)  # past the end, beta stays log 1
        betas.append(beta)
    log_post = torch.stack(alphas, 1) + torch.stack(betas[::-1], 1)
    post = torch.softmax(log_post, dim=-1)
    return post * mask.unsqueeze(-1)


def viterbi(log_init: torch.Tensor, log_trans: torch.Tensor, log_emit: torch.Tensor,
            lengths: torch.Tensor | None = None) -> torch.Tensor:
    """The most likely state path argmax_z p(z | x) for each sequence, (N, T) long (zeros past each length)."""
    N, T, K = log_emit.shape
    lengths = lengths if lengths is not None else torch.full((N,), T)
    delta = log_init + log_emit[:, 0]
    back = []
    for t in range(1, T):
        scores = delta.unsqueeze(-1) + log_trans  # (N, K_prev, K)
        best, arg = scores.max(dim=-2)
        back.append(arg)
        delta_new = best + log_emit[:, t]
        live = (t < lengths).unsqueeze(-1)
        delta = torch.where(live, delta_new, delta)
    path = torch.zeros(N, T, dtype=torch.long)
    state = delta.argmax(-1)
    for t in range(T - 1, -1, -1):
        live = t < lengths
        path[:, t] = torch.where(live, state, torch.zeros_like(state))
        if t > 0:
            prev = back[t - 1].gather(-1, state.unsqueeze(-1)).squeeze(-1)
            # only step back through time steps that exist; before the end, keep the final state
            state = torch.where(live, prev, state)
    return path


def sample_hmm(init: torch.Tensor, trans: torch.Tensor, emit: Callable[[torch.Tensor], torch.Tensor], n: int,
               length: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` sequences of ``length`` steps from an HMM with state probabilities ``init`` (K,),
    transition matrix ``trans`` (K, K) and ``emit(states) -> x`` drawing observations.

    Returns ``(x, z)``: x of shape (n, length, D) and the true states (n, length).
    """
    z = torch.empty(n, length, dtype=torch.long)
    z[:, 0] = torch.multinomial(init.expand(n, -1), 1, generator=generator).squeeze(-1)
    for t in range(1, length):
        z[:, t] = torch.multinomial(trans[z[:, t - 1]], 1, generator=generator).squeeze(-1)
    return emit(z), z


def nll_per_step(log_p: torch.Tensor, lengths: torch.Tensor) -> float:
    """Negative log-likelihood per time step: -sum_n log p(x_n) / sum_n T_n (the JSB convention)."""
    return (-log_p.double().sum() / lengths.double().sum()).item()


class ForwardHMM(dist.DiscreteHMM):
    """``pyro.distributions.DiscreteHMM`` whose ``log_prob`` eliminates time left to right.

    ``DiscreteHMM`` sums the hidden states out by a parallel scan: it multiplies K x K
    transition matrices pairwise, O(T K^3) work in log T sequential steps, which pays on a
    GPU. The forward algorithm carries a K-vector instead, O(T K^2) work in T steps; on a
    CPU with more than a few states that is the cheaper one (``benchmarks/hmm_jsb.py``
    times both). Everything else (arguments, ``sample``, ``filter``, shapes, masking of
    ``observation_dist``) is ``DiscreteHMM``'s: this subclass replaces only ``log_prob``,
    and its values equal ``DiscreteHMM.log_prob``'s to rounding (tested).
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        value = value.unsqueeze(-1 - self.observation_dist.event_dim)
        obs = self.observation_dist.log_prob(value)  # batch + (T, K)
        trans = self.transition_logits  # batch + (T or 1, K, K), or (K, K)
        if trans.dim() == 2:
            trans = trans.unsqueeze(-3)
        steps = obs.size(-2)
        alpha = self.initial_logits  # log p(z_0): the state before the first transition
        for t in range(steps):
            a = trans[..., t if trans.size(-3) > 1 else 0, :, :]
            alpha = torch.logsumexp(alpha.unsqueeze(-1) + a, dim=-2) + obs[..., t, :]
        return alpha.logsumexp(-1)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(ForwardHMM, _instance)
        return super().expand(batch_shape, _instance=new)
