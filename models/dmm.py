"""The deep Markov model (Krishnan, Shalit & Sontag 2017): a nonlinear state-space model.

Generative model, for each sequence x_{1:T}::

    z_t ~ Normal(loc(z_{t-1}), scale(z_{t-1}))     (gated transition, z_init learned)
    x_t ~ Bernoulli(emitter(z_t))                   (88 piano keys, factorized)

Guide (the paper's "structured" ST-R inference network)::

    h_t = RNN(x_{T:t})                                (a GRU run backwards in time)
    q(z_t | z_{t-1}, x_{t:T}) = Normal(combiner(z_{t-1}, h_t)), optionally pushed
                                through K inverse autoregressive flows

The ELBO is trained with ``pyro_gen.fit`` (objective ``"trace"``; ``kl_anneal`` ramps the
weight of the latent terms from 0, as in the paper). Padded steps past each sequence's
length are masked out of model and guide alike. Pyro's ``examples/dmm`` was the
reference; this is a fresh, smaller write-up of the same model.

References:
    Krishnan, Shalit & Sontag (2017), Structured Inference Networks for Nonlinear State
    Space Models.
    Kingma et al. (2016), Improved Variational Inference with Inverse Autoregressive Flow.
"""

from __future__ import annotations

import copy

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.transforms import affine_autoregressive
from pyro.nn import PyroModule, pyro_method
from torch import nn

from models import SEQUENCE_DATA, need_sequences
from pyro_gen.data import check_sequences, time_mask
from pyro_gen.infer.params import rename_on_load

__all__ = ["DMM", "Emitter", "GatedTransition", "Combiner", "reverse_sequences", "examples", "OBJECTIVES"]

#: The objective names this model trains with (used by the contract test over every model).
OBJECTIVES = ("trace", "meanfield", "iwae:3")


class Emitter(nn.Module):
    """z_t -> Bernoulli logits of x_t."""

    def __init__(self, x_dim: int, z_dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, x_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class GatedTransition(nn.Module):
    """z_{t-1} -> (loc, scale) of z_t: a gate mixes a linear (identity-initialized) path with a
    nonlinear proposal, so the prior can stay close to linear dynamics where that fits."""

    def __init__(self, z_dim: int, hidden: int):
        super().__init__()
        self.gate = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, z_dim), nn.Sigmoid())
        self.proposal = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, z_dim))
        self.linear = nn.Linear(z_dim, z_dim)
        self.scale = nn.Linear(z_dim, z_dim)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(z_dim))
            self.linear.bias.zero_()

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gate, proposed = self.gate(z), self.proposal(z)
        loc = (1 - gate) * self.linear(z) + gate * proposed
        return loc, nn.functional.softplus(self.scale(torch.relu(proposed))) + 1e-4


class Combiner(nn.Module):
    """(z_{t-1}, h_t) -> (loc, scale) of q(z_t | z_{t-1}, x_{t:T})."""

    def __init__(self, z_dim: int, rnn_dim: int):
        super().__init__()
        self.from_z = nn.Linear(z_dim, rnn_dim)
        self.loc = nn.Linear(rnn_dim, z_dim)
        self.scale = nn.Linear(rnn_dim, z_dim)

    def forward(self, z: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        combined = 0.5 * (torch.tanh(self.from_z(z)) + h)
        return self.loc(combined), nn.functional.softplus(self.scale(combined)) + 1e-4


def reverse_sequences(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each padded sequence within its own length (padding stays at the end).
    Its own inverse."""
    T = x.shape[1]
    t = torch.arange(T, device=x.device)
    idx = torch.where(t < lengths.unsqueeze(-1), lengths.unsqueeze(-1) - 1 - t, t)  # (N, T)
    return x.gather(1, idx.unsqueeze(-1).expand_as(x))



class DMM(PyroModule):
    """A deep Markov model over binary vectors (piano rolls).

    Args:
        x_dim: observation size (88 keys).
        z_dim: latent state size.
        emission_dim, transition_dim: hidden widths of the emitter and the transition.
        rnn_dim: GRU width of the guide.
        num_iafs: inverse autoregressive flows on top of each q(z_t | ...) (0: Gaussian guide).
        iaf_dim: hidden width of each IAF's autoregressive network.
    """

    def __init__(self, x_dim: int = 88, z_dim: int = 32, emission_dim: int = 64, transition_dim: int = 64,
                 rnn_dim: int = 128, num_iafs: int = 0, iaf_dim: int = 64):
        super().__init__()
        if min(x_dim, z_dim, emission_dim, transition_dim, rnn_dim, iaf_dim) < 1 or num_iafs < 0:
            raise ValueError("DMM sizes must be >= 1 and num_iafs >= 0")
        self.x_dim, self.z_dim = int(x_dim), int(z_dim)
        self.emitter = Emitter(x_dim, z_dim, emission_dim)
        self.transition = GatedTransition(z_dim, transition_dim)
        self.combiner = Combiner(z_dim, rnn_dim)
        self.rnn = nn.GRU(x_dim, rnn_dim, batch_first=True)
        self.iafs = nn.ModuleList([affine_autoregressive(z_dim, hidden_dims=[iaf_dim]) for _ in range(num_iafs)])
        # The states before the first step (named apart from the sample sites z_0, z_1, ...,
        # since a PyroModule's parameters are Pyro param sites too).
        self.z_init = nn.Parameter(torch.zeros(z_dim))  # the model's
        self.z_q_init = nn.Parameter(torch.zeros(z_dim))  # the guide's
        rename_on_load(self, {"z_0": "z_init", "z_q_0": "z_q_init"})  # checkpoints from before the rename

    def check_data(self, x: torch.Tensor, lengths: torch.Tensor) -> None:
        """Padded sequences this model can score, checked once before training or evaluation."""
        check_sequences(x, lengths, "x", self.x_dim)

    @pyro_method
    def model(self, x: torch.Tensor, lengths: torch.Tensor) -> None:
        """The deep Markov model over a batch of padded sequences.

        In the plate ``"sequences"``, for t = 0, 1, ...: ``"z_t"`` ~ Normal(loc, scale) of the
        :class:`GatedTransition` of z_{t-1} (of the learned ``z_init`` at the first step), and
        ``"x_t"`` ~ Bernoulli(logits of the :class:`Emitter` of z_t) observed; steps past a
        sequence's length are masked out.

        Args:
            x: binary frames, (N, T, x_dim), padded past each length.
            lengths: the sequences' lengths, (N,).
        """
        N, T, _ = x.shape
        mask = time_mask(lengths, T)
        with pyro.plate("sequences", N, dim=-1):
            z = self.z_init.expand(N, self.z_dim)
            for t in pyro.markov(range(T)):
                with poutine.mask(mask=mask[:, t]):
                    z = pyro.sample(f"z_{t}", dist.Normal(*self.transition(z)).to_event(1))
                    pyro.sample(f"x_{t}", dist.Bernoulli(logits=self.emitter(z), validate_args=False).to_event(1),
                                obs=x[:, t])

    @pyro_method
    def guide(self, x: torch.Tensor, lengths: torch.Tensor) -> None:
        """The structured guide (ST-R): q(z_t | z_{t-1}, x_{t:T}).

        A GRU runs backwards over each sequence, so that h_t summarizes x_{t:T}; in the plate
        ``"sequences"``, each ``"z_t"`` is sampled from the Normal that the :class:`Combiner` makes
        of (z_{t-1}, h_t) (from the learned ``z_q_init`` at the first step), pushed through
        ``num_iafs`` IAF layers if any; steps past a sequence's length are masked out.

        Args:
            x: binary frames, (N, T, x_dim), padded past each length.
            lengths: the sequences' lengths, (N,).
        """
        N, T, _ = x.shape
        mask = time_mask(lengths, T)
        h = reverse_sequences(self.rnn(reverse_sequences(x, lengths))[0], lengths)  # h_t summarizes x_{t:T}
        with pyro.plate("sequences", N, dim=-1):
            z = self.z_q_init.expand(N, self.z_dim)
            for t in pyro.markov(range(T)):
                loc, scale = self.combiner(z, h[:, t])
                q = dist.Normal(loc, scale).to_event(1)
                if len(self.iafs):
                    # Each step gets shallow copies of the IAF layers (the same networks and parameters)
                    # with a cache of their own: Pyro scores z_t after the whole guide has run, and by then
                    # a shared layer's one-entry cache holds the last step's (x, y), so log q(z_t) would
                    # invert the autoregressive transform, z_dim network passes per layer (7x per step).
                    q = dist.TransformedDistribution(dist.Normal(loc, scale), [copy.copy(f) for f in self.iafs])
                with poutine.mask(mask=mask[:, t]):
                    z = pyro.sample(f"z_{t}", q)

    # --- uses of a fitted model ------------------------------------------------------------

    def log_likelihood(self, x: torch.Tensor, lengths: torch.Tensor, k: int = 1) -> torch.Tensor:
        """The IWAE-k estimate of log p(x_n) for each sequence (N,) (k=1: the ELBO)."""
        from pyro_gen.evaluate import per_point_log_weights

        check_sequences(x, lengths, "x", self.x_dim)
        lw = per_point_log_weights(self.model, self.guide, (x, lengths), k, max_plate_nesting=1)
        return torch.logsumexp(lw, 0) - torch.log(torch.tensor(float(k)))

    @torch.no_grad()
    def sample(self, n: int, length: int = 160) -> torch.Tensor:
        """n piano rolls of ``length`` steps from the model, (n, length, x_dim) in {0, 1}."""
        z, out = self.z_init.expand(n, self.z_dim), []
        for _ in range(length):
            z = dist.Normal(*self.transition(z)).sample()
            out.append(torch.bernoulli(torch.sigmoid(self.emitter(z))))
        return torch.stack(out, 1)


def examples(seed: int = 0) -> dict[str, tuple[DMM, tuple[torch.Tensor, torch.Tensor]]]:
    """Small instances with matching (x, lengths) data, for the contract test over every model."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(3, 5, 6, generator=g) < 0.3).float()
    lengths = torch.tensor([5, 2, 4])
    torch.manual_seed(seed)
    return {
        "gaussian-guide": (DMM(6, 2, 8, 8, 8), (x, lengths)),
        "iaf-guide": (DMM(6, 2, 8, 8, 8, num_iafs=1, iaf_dim=8), (x, lengths)),
    }


# --- the command line: python -m inference.fit dmm (see models/__init__.py) ---------------------

SEQUENCES = True


def cli_options(parser) -> None:
    g = parser.add_argument_group(f"deep Markov model (data: {', '.join(SEQUENCE_DATA)})")
    g.add_argument("--latent-dim", type=int, default=50)
    g.add_argument("--rnn-dim", type=int, default=128, help="GRU width of the guide")
    g.add_argument("--emission-dim", type=int, default=64, help="emitter hidden width")
    g.add_argument("--transition-dim", type=int, default=64, help="gated transition hidden width")
    g.add_argument("--num-iafs", type=int, default=0, help="inverse autoregressive flows in the guide")


def default_objective(args) -> str:
    return "trace"


def from_cli(args, ds) -> DMM:
    need_sequences(args, ds)
    if not ds.binary:
        raise ValueError(f"the DMM has Bernoulli emissions: it needs binary sequences, and {ds.name} is not binary")
    return DMM(ds.train.shape[-1], z_dim=args.latent_dim, emission_dim=args.emission_dim,
               transition_dim=args.transition_dim, rnn_dim=args.rnn_dim, num_iafs=args.num_iafs)
