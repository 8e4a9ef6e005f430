"""A discrete-state hidden Markov model with the hidden states summed out exactly.

Generative model, for each sequence x_{1:T} (padded sequences carry their ``lengths``)::

    z_1 ~ Categorical(pi)                         (K states)
    z_t ~ Categorical(A[z_{t-1}])                 (transition matrix A, K x K)
    x_t ~ p(x | z_t)                              (88 factorized Bernoulli keys, or a diagonal Gaussian)

Parameters pi, A and the emission parameters are either point estimates (maximum
likelihood, ``params="point"``) or have priors with a mean-field variational posterior
(``params="variational"``: Dirichlet rows for pi and A, Beta for Bernoulli keys,
Normal / LogNormal for Gaussian means and scales).

Inference over z, two ways:

- ``guide="enum"``: no guide over z at all. ``TraceEnum_ELBO`` (objective ``"enum"``)
  sums z out exactly, so the ELBO equals log p(x) for point estimates. The model is
  written twice, the same numbers either way: ``method="markov"`` is the lecture-slide
  form (a Python loop over time with ``pyro.markov`` and parallel enumeration of each
  z_t), ``method="vectorized"`` hands the same HMM to ``pyro.distributions.DiscreteHMM``
  (a parallel-scan forward algorithm, much faster for long sequences) and
  ``method="forward"`` to :class:`pyro_gen.exact.hmm.ForwardHMM` (the same site with
  time eliminated left to right: less work than the scan on a CPU once K is more than a
  few states; ``benchmarks/hmm_jsb.py`` times all three).
- ``guide="amortized"``: an inference network q(z_t | z_{t-1}, x_{1:T}) (a bidirectional
  GRU over x, autoregressive over z) samples the states; trained with score-function
  gradients (``TraceGraph_ELBO``, objective ``"graph"``). Its importance-weighted bound
  tightens toward the exact log p(x) as k grows.

The most likely state path and posterior state samples come from Pyro's
``infer_discrete`` on the ``markov`` form; posterior marginals p(z_t | x) exactly from
``TraceEnum_ELBO.compute_marginals``, or estimated from ``infer_discrete`` draws.

References:
    Rabiner (1989), A Tutorial on Hidden Markov Models and Selected Applications in
    Speech Recognition.
    Obermeyer et al. (2019), Tensor Variable Elimination for Plated Factor Graphs
    (Pyro's enumeration and ``examples/hmm.py``).
    Boulanger-Lewandowski, Bengio & Vincent (2012), Modeling Temporal Dependencies in
    High-Dimensional Sequences (the JSB chorales).
"""

from __future__ import annotations

import warnings

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO, infer_discrete
from pyro.nn import PyroModule, pyro_method
from torch import nn
from torch.distributions import constraints

from models import SEQUENCE_DATA, need_sequences
from pyro_gen.data import check_sequences, time_mask
from pyro_gen.exact.hmm import ForwardHMM, sample_hmm
from pyro_gen.infer.params import rename_on_load

__all__ = ["HMM", "StateEncoder", "KeyEmissions", "EMISSIONS", "synthetic", "examples", "OBJECTIVES"]

#: The emission distributions, ``"bernoulli"`` (binary frames) or ``"gaussian"`` (real-valued frames).
EMISSIONS = ("bernoulli", "gaussian")
_PARAMS = ("point", "variational")
_GUIDES = ("enum", "amortized")
_METHODS = ("markov", "vectorized", "forward")

# The vectorized model sums the states out inside DiscreteHMM, so TraceEnum_ELBO finds nothing
# left to enumerate and says so on every step; that is expected here.
warnings.filterwarnings("ignore", message="TraceEnum_ELBO found no sample sites configured for enumeration")


def _choice(value: str, valid: tuple[str, ...], what: str) -> str:
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid choices: {', '.join(valid)}")
    return value


class KeyEmissions(dist.TorchDistribution):
    """Factorized Bernoulli emissions of every state at once: batch (K,), event (D,).

    Scores an observation (..., 1, D) under all K states with one matrix product,
    log p(x | k) = x . l_k - sum_d softplus(l_kd), instead of broadcasting (..., K, D)
    Bernoulli terms: the same numbers, about D times less memory traffic. Only for
    ``DiscreteHMM``'s use (``torch.distributions`` has no such shortcut).
    """

    arg_constraints = {"logits": constraints.real}
    support = constraints.independent(constraints.boolean, 1)

    def __init__(self, logits: torch.Tensor):
        self.logits = logits
        super().__init__(batch_shape=logits.shape[:-1], event_shape=logits.shape[-1:], validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if value.dim() < 2 or value.shape[-2] != 1:
            raise ValueError(f"KeyEmissions scores values of shape (..., 1, D), got {tuple(value.shape)}")
        return value.squeeze(-2) @ self.logits.T - nn.functional.softplus(self.logits).sum(-1)

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            return torch.bernoulli(torch.sigmoid(self.logits).expand(self.shape(sample_shape)))


def _stay(states: int, like: torch.Tensor) -> torch.Tensor:
    """Log transition matrix of "stay in the same state": 0 on the diagonal, -1e4 (probability
    exp(-1e4) = 0 in floating point) elsewhere; finite, so gradients stay finite."""
    eye = torch.eye(states, dtype=like.dtype, device=like.device)
    return (1.0 - eye) * -1e4


def _where(live: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a`` for the sequences still running at this step (``live``: (N,)), ``b`` past their end."""
    return torch.where(live.unsqueeze(-1), a, b)


class StateEncoder(nn.Module):
    """x_{1:T} -> logits of q(z_t | z_{t-1}, x_{1:T}): a bidirectional GRU summarizes the
    whole sequence at each step, and an embedding of the previous state shifts the logits."""

    def __init__(self, dim: int, states: int, hidden: int = 32):
        super().__init__()
        self.rnn = nn.GRU(dim, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, states)
        self.previous = nn.Embedding(states + 1, states)  # row `states` stands for "no previous state"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, D) -> (N, T, K) per-step logits before the previous-state term."""
        return self.head(self.rnn(x)[0])


class HMM(PyroModule):
    """A K-state HMM over D-dimensional observations.

    Args:
        states: number of hidden states K.
        dim: observation size D (88 piano keys for JSB).
        emission: ``"bernoulli"`` (binary data, factorized) or ``"gaussian"`` (diagonal).
        params: ``"point"`` (maximum likelihood) or ``"variational"`` (priors and a
            mean-field posterior over pi, A and the emission parameters).
        guide: ``"enum"`` (z summed out; objective ``"enum"``) or ``"amortized"`` (a neural
            guide over z; objective ``"graph"``).
        method: ``"markov"`` (loop over time, ``pyro.markov``), ``"vectorized"``
            (``DiscreteHMM``, a parallel scan) or ``"forward"`` (:class:`ForwardHMM`, the
            forward recursion) for the enumerated model.
        hidden: GRU width of the amortized guide.
    """

    def __init__(self, states: int = 8, dim: int = 88, emission: str = "bernoulli", params: str = "point",
                 guide: str = "enum", method: str = "forward", hidden: int = 32):
        super().__init__()
        if isinstance(states, bool) or not isinstance(states, int) or states < 1 or dim < 1:
            raise ValueError(f"states and dim must be integers >= 1, got states={states!r}, dim={dim!r}")
        self.states, self.dim = states, int(dim)
        self.emission = _choice(emission, EMISSIONS, "emission")
        self.params = _choice(params, _PARAMS, "params")
        self.guide_type = _choice(guide, _GUIDES, "guide")
        self.method = _choice(method, _METHODS, "method")
        if self.params == "variational" and self.guide_type == "amortized":
            raise ValueError("params='variational' goes with guide='enum'; the amortized guide uses point estimates")
        K, D = states, self.dim
        # Point estimates, or the variational posterior's parameters (unconstrained).
        self.init_logits = nn.Parameter(0.1 * torch.randn(K))
        self.trans_logits = nn.Parameter(0.1 * torch.randn(K, K) + 2.0 * torch.eye(K))  # start "sticky"
        if self.emission == "bernoulli":
            self.emit_logits = nn.Parameter(torch.randn(K, D) - 2.0)  # notes are sparse
        else:
            # (named apart from the sample sites "loc" and "scale" of the variational form)
            self.emit_loc = nn.Parameter(torch.randn(K, D))
            self.emit_log_scale = nn.Parameter(torch.zeros(K, D))
            rename_on_load(self, {"loc": "emit_loc", "log_scale": "emit_log_scale"})
        if self.params == "variational":  # log-concentration spreads of the posterior
            self.spread = nn.ParameterDict({"init": nn.Parameter(torch.full((K,), 3.0)),
                                            "trans": nn.Parameter(torch.full((K, K), 3.0)),
                                            "emit": nn.Parameter(torch.full((K, D), 3.0))})
        if self.guide_type == "amortized":
            self.encoder = StateEncoder(D, K, hidden)
        # Objectives that fit this configuration: enumeration sums z out; the amortized guide
        # samples z, so it needs score-function gradients (enum also handles those, by dice).
        self.objectives = ("enum",) if self.guide_type == "enum" else ("graph", "enum")

    # --- global parameters ------------------------------------------------------------

    def _priors(self) -> dict[str, dist.TorchDistribution]:
        K, D, ref = self.states, self.dim, self.init_logits
        priors = {"init": dist.Dirichlet(ref.new_ones(K)),
                  "trans": dist.Dirichlet(ref.new_ones(K, K)).to_event(1)}
        if self.emission == "bernoulli":
            priors["emit"] = dist.Beta(ref.new_ones(K, D), ref.new_ones(K, D)).to_event(2)
        else:
            priors["loc"] = dist.Normal(ref.new_zeros(K, D), 3.0).to_event(2)
            priors["scale"] = dist.LogNormal(ref.new_zeros(K, D), 1.0).to_event(2)
        return priors

    def _posteriors(self) -> dict[str, dist.TorchDistribution]:
        """Mean-field q over the globals, centred on the point-estimate parameters."""
        s = {k: v.exp() for k, v in self.spread.items()}
        q = {"init": dist.Dirichlet(self.init_logits.softmax(-1) * s["init"].sum() + 1e-3),
             "trans": dist.Dirichlet(self.trans_logits.softmax(-1) * s["trans"].sum(-1, keepdim=True) + 1e-3)
             .to_event(1)}
        if self.emission == "bernoulli":
            p = self.emit_logits.sigmoid()
            q["emit"] = dist.Beta(p * s["emit"] + 1e-3, (1 - p) * s["emit"] + 1e-3).to_event(2)
        else:
            q["loc"] = dist.Normal(self.emit_loc, 1.0 / s["emit"]).to_event(2)
            q["scale"] = dist.LogNormal(self.emit_log_scale, 1.0 / s["emit"]).to_event(2)
        return q

    def _globals(self) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
        """log pi (K,), log A (K, K) and the emission parameters, inside model or guide."""
        if self.params == "point":
            return (self.init_logits.log_softmax(-1), self.trans_logits.log_softmax(-1), self._point_emission())
        g = {name: pyro.sample(name, prior) for name, prior in self._priors().items()}
        if self.emission == "bernoulli":
            emit = (torch.logit(g["emit"].clamp(1e-6, 1 - 1e-6)),)
        else:
            emit = (g["loc"], g["scale"])
        return g["init"].clamp_min(1e-30).log(), g["trans"].clamp_min(1e-30).log(), emit

    def _point_emission(self) -> tuple[torch.Tensor, ...]:
        if self.emission == "bernoulli":
            return (self.emit_logits,)
        return (self.emit_loc, self.emit_log_scale.exp())

    def _observation(self, emit: tuple[torch.Tensor, ...], z=None) -> dist.TorchDistribution:
        """p(x_t | z_t) for the states z (or for every state, batch shape (K,), when z is None)."""
        pick = (lambda p: p) if z is None else (lambda p: p[z])
        if self.emission == "bernoulli":
            return dist.Bernoulli(logits=pick(emit[0]), validate_args=False).to_event(1)
        return dist.Normal(pick(emit[0]), pick(emit[1])).to_event(1)

    # --- the Pyro programs ----------------------------------------------------------------

    def check_data(self, x: torch.Tensor, lengths: torch.Tensor) -> None:
        """Padded sequences this model can score, checked once before training or evaluation."""
        check_sequences(x, lengths, "x", self.dim)

    @pyro_method
    def model(self, x: torch.Tensor, lengths: torch.Tensor) -> None:
        """The HMM over a batch of padded sequences.

        With ``params="variational"`` the globals are first sampled from their priors:
        ``"init"`` (pi) ~ Dirichlet(1), ``"trans"`` (the rows of A) ~ Dirichlet(1), and
        ``"emit"`` ~ Beta(1, 1) (Bernoulli) or ``"loc"`` ~ Normal(0, 3) and ``"scale"`` ~
        LogNormal(0, 1) (Gaussian); with ``params="point"`` they are parameters. Then, in the
        plate ``"sequences"``, z_0 ~ pi, z_t ~ A[z_{t-1}] and x_t ~ p(x | z_t), masked past each
        sequence's length. With ``method="markov"`` or the amortized guide this is
        :meth:`model_markov` (sites ``"z_0"``, ``"x_0"``, ``"z_1"``, ...; the states enumerated
        in parallel); otherwise :meth:`model_vectorized` (one site ``"x"``, the states summed out).

        Args:
            x: binary or real frames, (N, T, D), padded past each length.
            lengths: the sequences' lengths, (N,).
        """
        if self.method != "markov" and self.guide_type == "enum":
            return self.model_vectorized(x, lengths)
        return self.model_markov(x, lengths)

    @pyro_method
    def model_markov(self, x: torch.Tensor, lengths: torch.Tensor) -> None:
        """The HMM as a loop over time: each z_t is enumerated in parallel, and
        ``pyro.markov`` tells the enumerator that z_t only talks to z_{t-1} and z_{t+1}."""
        log_init, log_trans, emit = self._globals()
        N, T, _ = x.shape
        mask = time_mask(lengths, T)
        stay = _stay(self.states, log_trans)
        with pyro.plate("sequences", N, dim=-1):
            z = None
            for t in pyro.markov(range(T)):
                # Past a sequence's end the state stays put with probability one, so that the
                # padded steps neither add to the sum over paths nor change the best path.
                logits = log_init if z is None else _where(mask[:, t], log_trans[z], stay[z])
                z = pyro.sample(f"z_{t}", dist.Categorical(logits=logits), infer={"enumerate": "parallel"})
                with poutine.mask(mask=mask[:, t]):
                    pyro.sample(f"x_{t}", self._observation(emit, z), obs=x[:, t])

    @pyro_method
    def model_vectorized(self, x: torch.Tensor, lengths: torch.Tensor) -> None:
        """The same HMM as one ``DiscreteHMM`` site. ``DiscreteHMM`` draws its first state by a
        transition out of ``initial_logits``; a first transition whose rows all equal log pi
        makes z_1 ~ pi exactly."""
        log_init, log_trans, emit = self._globals()
        N, T, _ = x.shape
        K = self.states
        trans = torch.cat([log_init.expand(1, K, K), log_trans.expand(T - 1, K, K)])
        obs = KeyEmissions(emit[0]) if self.emission == "bernoulli" else self._observation(emit)
        obs = obs.mask(time_mask(lengths, T).unsqueeze(-1))  # batch (N, T, K)
        hmm = (dist.DiscreteHMM if self.method == "vectorized" else ForwardHMM)(log_init.new_zeros(K), trans, obs)
        with pyro.plate("sequences", N, dim=-1):
            pyro.sample("x", hmm, obs=x)

    @pyro_method
    def guide(self, x: torch.Tensor, lengths: torch.Tensor) -> None:
        """The guide over the latents of :meth:`model`.

        With ``params="variational"``, a mean-field posterior over the globals centred on the
        point-estimate parameters: Dirichlets at ``"init"`` and ``"trans"``, and a Beta at
        ``"emit"`` or a Normal at ``"loc"`` and a LogNormal at ``"scale"``. With
        ``guide="amortized"``, the states ``"z_0"``, ``"z_1"``, ... in order from
        q(z_t | z_{t-1}, x_{1:T}) of the :class:`StateEncoder` (not reparameterizable). With
        ``guide="enum"`` and ``params="point"`` it samples nothing: the states are summed out.

        Args:
            x: binary or real frames, (N, T, D), padded past each length.
            lengths: the sequences' lengths, (N,).
        """
        if self.params == "variational":
            for name, q in self._posteriors().items():
                pyro.sample(name, q)
        if self.guide_type == "amortized":
            self._state_guide(x, lengths)

    def _state_guide(self, x: torch.Tensor, lengths: torch.Tensor) -> None:
        """q(z_{1:T} | x) = prod_t q(z_t | z_{t-1}, x_{1:T}), sampled (not reparameterizable)."""
        N, T, _ = x.shape
        logits = self.encoder(x)
        mask = time_mask(lengths, T)
        stay = _stay(self.states, logits)
        with pyro.plate("sequences", N, dim=-1):
            z = None
            for t in pyro.markov(range(T)):
                if z is None:
                    step = logits[:, 0] + self.encoder.previous.weight[-1]
                else:  # past the end, copy the last state, as the model does
                    step = _where(mask[:, t], logits[:, t] + self.encoder.previous(z), stay[z])
                z = pyro.sample(f"z_{t}", dist.Categorical(logits=step))

    # --- uses of a fitted model ------------------------------------------------------------

    @torch.no_grad()
    def point_estimates(self) -> dict[str, torch.Tensor]:
        """pi, A and the emission parameters (the posterior means for ``params="variational"``)."""
        if self.params == "point":
            out = {"init": self.init_logits.softmax(-1), "trans": self.trans_logits.softmax(-1)}
            if self.emission == "bernoulli":
                out["emit"] = self.emit_logits.sigmoid()
            else:
                out["loc"], out["scale"] = self.emit_loc.clone(), self.emit_log_scale.exp()
            return out
        return {name: q.mean for name, q in self._posteriors().items()}

    @torch.no_grad()
    def log_terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log pi, log A, log p(x_t | z_t = k) of shape (N, T, K)) at the point estimates:
        the inputs of the hand-written forward algorithm."""
        p = self.point_estimates()
        if self.params == "point":
            emit = self._point_emission()
        elif self.emission == "bernoulli":
            emit = (torch.logit(p["emit"].clamp(1e-6, 1 - 1e-6)),)
        else:
            emit = (p["loc"], p["scale"])
        obs = KeyEmissions(emit[0]) if self.emission == "bernoulli" else self._observation(emit)
        return p["init"].log(), p["trans"].log(), obs.log_prob(x.unsqueeze(-2))

    def _fixed(self, fn):
        """``fn`` with the global parameters fixed at their point estimates (no global sites)."""
        if self.params == "point":
            return fn
        return poutine.condition(fn, data=self.point_estimates())

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Exact log p(x_n) for each sequence (N,), z summed out by the forward algorithm
        (:class:`ForwardHMM`; ``DiscreteHMM``'s scan for ``method="vectorized"``), at the point
        estimates (posterior means for ``params="variational"``)."""
        check_sequences(x, lengths, "x", self.dim)
        tr = poutine.trace(self._fixed(self.model_vectorized)).get_trace(x, lengths)
        return tr.nodes["x"]["fn"].log_prob(x)

    def _discrete(self, x, lengths, temperature):
        check_sequences(x, lengths, "x", self.dim)
        model = infer_discrete(self._fixed(self.model_markov), first_available_dim=-2, temperature=temperature)
        tr = poutine.trace(model).get_trace(x, lengths)
        return torch.stack([tr.nodes[f"z_{t}"]["value"] for t in range(x.shape[1])], dim=-1)

    @torch.no_grad()
    def viterbi(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The most likely state path argmax_z p(z | x), (N, T), by ``infer_discrete(temperature=0)``."""
        return self._discrete(x, lengths, 0) * time_mask(lengths, x.shape[1])

    @torch.no_grad()
    def sample_states(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """One draw z ~ p(z | x), (N, T), by ``infer_discrete(temperature=1)`` (forward filter, backward sample)."""
        return self._discrete(x, lengths, 1) * time_mask(lengths, x.shape[1])

    @torch.no_grad()
    def marginals(self, x: torch.Tensor, lengths: torch.Tensor, num_samples: int | None = None) -> torch.Tensor:
        """Posterior marginals p(z_t = k | x), (N, T, K) (zeros past each length).

        Exact by default, from ``TraceEnum_ELBO.compute_marginals``; that contracts the whole
        chain once per time step, O(T^2), which takes seconds for a 100-step chorale. With
        ``num_samples`` it is the frequency of each state among that many posterior paths
        drawn by ``infer_discrete`` (O(T) each, all in one batch): standard error at most
        0.5 / sqrt(num_samples).
        """
        check_sequences(x, lengths, "x", self.dim)
        if num_samples is not None:
            N, T, _ = x.shape
            draws = self.sample_states(x.repeat(num_samples, 1, 1), lengths.repeat(num_samples))
            one_hot = nn.functional.one_hot(draws.reshape(num_samples, N, T), self.states).double().mean(0)
            return one_hot.to(x.dtype) * time_mask(lengths, T).unsqueeze(-1)
        if len(x) == 1:  # Pyro's compute_marginals fails on a plate of size 1 (KeyError); pad it to 2
            return self.marginals(x.expand(2, -1, -1), lengths.expand(2))[:1]
        model = self._fixed(self.model_markov)
        marg = TraceEnum_ELBO(max_plate_nesting=1).compute_marginals(model, lambda *a: None, x, lengths)
        K = torch.arange(self.states).unsqueeze(-1)
        probs = torch.stack([marg[f"z_{t}"].log_prob(K).exp().T for t in range(x.shape[1])], dim=1)
        return probs * time_mask(lengths, x.shape[1]).unsqueeze(-1)

    @torch.no_grad()
    def sample(self, n: int, length: int = 160) -> torch.Tensor:
        """n sequences of ``length`` steps from the model (at its point estimates), (n, length, D)."""
        p = self.point_estimates()
        if self.emission == "bernoulli":
            return sample_hmm(p["init"], p["trans"], lambda z: torch.bernoulli(p["emit"][z]), n, length)[0]
        return sample_hmm(p["init"], p["trans"], lambda z: torch.normal(p["loc"][z], p["scale"][z]), n, length)[0]

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor, lengths: torch.Tensor, seed: int = 0) -> "HMM":
        """Start the emission parameters near the data (EM's usual start): Gaussian means at
        K distinct observed frames, scales at the data's; Bernoulli logits at each key's
        frequency with noise to break the symmetry between states."""
        check_sequences(x, lengths, "x", self.dim)
        frames = x[time_mask(lengths, x.shape[1])]
        g = torch.Generator().manual_seed(seed)
        if self.emission == "gaussian":
            pick = torch.randperm(len(frames), generator=g)[: self.states]
            self.emit_loc.copy_(frames[pick])
            self.emit_log_scale.copy_(frames.std(0).clamp_min(1e-3).log().expand_as(self.emit_log_scale))
        else:
            freq = frames.mean(0).clamp(1e-3, 1 - 1e-3)
            self.emit_logits.copy_(torch.logit(freq) + 0.5 * torch.randn(self.states, self.dim, generator=g))
        return self


#: The objective names for the contract test over every model (an instance's own ``objectives``,
#: which depend on its guide, take precedence).
OBJECTIVES = ("enum",)


def synthetic(n: int = 40, length: int = 50, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Gaussian-HMM sequences with known parameters (3 sticky states in 2-D, well separated).

    Returns ``(x, lengths, truth)`` with ``truth`` holding ``init``, ``trans``, ``loc``,
    ``scale`` and the true ``states``.
    """
    g = torch.Generator().manual_seed(seed)
    init = torch.tensor([0.5, 0.3, 0.2])
    trans = torch.tensor([[0.90, 0.07, 0.03], [0.05, 0.90, 0.05], [0.10, 0.10, 0.80]])
    loc = torch.tensor([[-3.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    scale = torch.tensor([[1.0, 0.6], [0.7, 1.0], [0.8, 0.8]])
    x, z = sample_hmm(init, trans, lambda z: loc[z] + scale[z] * torch.randn(*z.shape, 2, generator=g), n, length,
                      generator=g)
    truth = {"init": init, "trans": trans, "loc": loc, "scale": scale, "states": z}
    return x, torch.full((n,), length), truth


def examples(seed: int = 0) -> dict[str, tuple[HMM, tuple[torch.Tensor, torch.Tensor]]]:
    """Small instances with matching (x, lengths) data, for the contract test over every model."""
    g = torch.Generator().manual_seed(seed)
    binary = (torch.rand(4, 6, 5, generator=g) < 0.3).float()
    real = torch.randn(4, 6, 2, generator=g)
    lengths = torch.tensor([6, 3, 5, 1])
    torch.manual_seed(seed)
    return {
        "bernoulli-markov": (HMM(3, 5, method="markov"), (binary, lengths)),
        "bernoulli-vectorized": (HMM(3, 5, method="vectorized"), (binary, lengths)),
        "bernoulli-forward": (HMM(3, 5, method="forward"), (binary, lengths)),
        "gaussian-variational": (HMM(3, 2, "gaussian", params="variational", method="markov"), (real, lengths)),
        "bernoulli-amortized": (HMM(3, 5, guide="amortized", hidden=8), (binary, lengths)),
    }


# --- the command line: python -m inference.fit hmm (see models/__init__.py) ---------------------

SEQUENCES = True


def cli_options(parser) -> None:
    g = parser.add_argument_group(f"hidden Markov model (data: {', '.join(SEQUENCE_DATA)})",
                                  "default objective: enum, or graph with --hmm-guide amortized")
    g.add_argument("--states", type=int, default=16, help="number of hidden states")
    g.add_argument("--hmm-method", default="forward", choices=["forward", "vectorized", "markov"],
                   help="the forward recursion (ForwardHMM), DiscreteHMM's parallel scan, or a "
                        "pyro.markov loop over time (same numbers)")
    g.add_argument("--hmm-params", default="point", choices=["point", "variational"],
                   help="maximum-likelihood parameters, or priors with a variational posterior")
    g.add_argument("--hmm-guide", default="enum", choices=["enum", "amortized"],
                   help="sum the states out, or sample them from a neural guide")
    g.add_argument("--rnn-dim", type=int, default=128, help="GRU width of the amortized guide")


def default_objective(args) -> str:
    """Exact enumeration of the states; an amortized guide samples them (score-function gradients)."""
    return "graph" if args.hmm_guide == "amortized" else "enum"


def from_cli(args, ds) -> HMM:
    need_sequences(args, ds)
    return HMM(args.states, ds.train.shape[-1], emission="bernoulli" if ds.binary else "gaussian",
               params=args.hmm_params, guide=args.hmm_guide, method=args.hmm_method, hidden=args.rnn_dim)
