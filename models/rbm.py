"""The binary restricted Boltzmann machine (Smolensky 1986; Hinton 2002), trained by contrastive divergence.

An undirected model over binary visibles v (D) and hiddens h (H)::

    p(v, h) = exp(b_v.v + b_h.h + v^T W h) / Z

Summing h out gives p(v) = exp(-F(v)) / Z with the free energy
F(v) = -b_v.v - sum_j softplus(b_h_j + (v W)_j). So the model is a plain Pyro program
with no latent site: it observes each row through :class:`BinaryRBM`, an
:class:`~pyro_gen.infer.objectives.EnergyDistribution`, and the guide is empty. Z is
intractable: it is not needed to train (``objective="cd:k"`` or ``"pcd:k"``, contrastive
divergence, through :func:`pyro_gen.fit` like every model), and it is estimated for the
test log-likelihood by annealed importance sampling from a base-rate RBM
(:meth:`RBM.estimate_log_partition`; exact enumeration when a layer has at most 20 units).

References:
    Hinton (2002), Training Products of Experts by Minimizing Contrastive Divergence.
    Tieleman (2008), Training Restricted Boltzmann Machines using Approximations to the
    Likelihood Gradient.
    Salakhutdinov & Murray (2008), On the Quantitative Analysis of Deep Belief Networks.
"""

from __future__ import annotations

import math
from typing import Sequence

import pyro
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam, pyro_method

from pyro_gen.data import check_data
from pyro_gen.evaluate.partition import LogPartition, base_rate_biases, rbm_ais_log_partition
from pyro_gen.exact.rbm import rbm_free_energy, rbm_log_partition
from pyro_gen.infer.objectives import EnergyDistribution

__all__ = ["BinaryRBM", "RBM", "OBJECTIVES", "EXACT_UNITS", "examples"]

#: The objectives that train an RBM (the model contract runs each).
OBJECTIVES = ["cd:1", "pcd:1"]
#: Layers up to this size get log Z by exact enumeration instead of AIS.
EXACT_UNITS = 20


class BinaryRBM(EnergyDistribution):
    """p(v) = exp(-F(v)) / Z of a binary RBM with weights ``W`` (D, H) and biases ``b_v``, ``b_h``.

    ``log_partition`` is log Z where known (NaN otherwise: ``log_prob`` is then NaN).
    :meth:`sample` runs ``sample_steps`` Gibbs sweeps from uniform noise.
    """

    arg_constraints = {}
    support = constraints.independent(constraints.boolean, 1)

    def __init__(self, W: torch.Tensor, b_v: torch.Tensor, b_h: torch.Tensor, batch_shape=torch.Size(),
                 log_partition=math.nan, sample_steps: int = 1000, validate_args=None):
        self.W, self.b_v, self.b_h, self.sample_steps = W, b_v, b_h, sample_steps
        super().__init__(torch.Size(batch_shape), torch.Size([W.shape[0]]), log_partition, validate_args)

    def expand(self, batch_shape, _instance=None):
        """The same RBM with another batch shape."""
        return BinaryRBM(self.W, self.b_v, self.b_h, batch_shape, self.log_partition, self.sample_steps)

    def free_energy(self, x: torch.Tensor) -> torch.Tensor:
        """F(v), shape ``x.shape[:-1]``."""
        return rbm_free_energy(x, self.W, self.b_v, self.b_h)

    def hidden_probs(self, v: torch.Tensor) -> torch.Tensor:
        """p(h_j = 1 | v)."""
        return torch.sigmoid(v @ self.W + self.b_h)

    def visible_probs(self, h: torch.Tensor) -> torch.Tensor:
        """p(v_i = 1 | h)."""
        return torch.sigmoid(h @ self.W.T + self.b_v)

    def gibbs(self, v: torch.Tensor, steps: int) -> torch.Tensor:
        """``steps`` sweeps h ~ p(h | v), v ~ p(v | h), from ``v``."""
        for _ in range(steps):
            v = torch.bernoulli(self.visible_probs(torch.bernoulli(self.hidden_probs(v))))
        return v

    def flip_one(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with one uniformly chosen unit per row flipped."""
        idx = torch.randint(x.shape[-1], x.shape[:-1] + (1,), device=x.device)
        return x.scatter(-1, idx, 1 - x.gather(-1, idx))

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """Visibles after ``sample_steps`` Gibbs sweeps from uniform noise (approximate draws)."""
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            return self.gibbs(torch.bernoulli(torch.full(shape, 0.5, dtype=self.W.dtype, device=self.W.device)),
                              self.sample_steps)


class RBM(PyroModule):
    """A binary-binary RBM as a model/guide pair (the guide is empty: h is summed out in F).

    Args:
        x_dim: visible units D.
        hidden: hidden units H.
        image_shape: the shape of one image, for figures (filters, samples).
        init_scale: W starts as N(0, init_scale^2), the biases at 0 (Hinton 2010's guide).

    Examples:
        >>> import torch
        >>> from models.rbm import RBM
        >>> x = torch.bernoulli(torch.full((8, 6), 0.3))
        >>> rbm = RBM(6, hidden=4)
        >>> rbm.log_likelihood(x).shape   # log Z by enumeration: 4 hidden units
        torch.Size([8])
    """

    def __init__(self, x_dim: int, hidden: int = 500, image_shape: Sequence[int] | None = None,
                 init_scale: float = 0.01):
        super().__init__()
        if hidden < 1 or x_dim < 1:
            raise ValueError(f"an RBM needs x_dim >= 1 and hidden >= 1 units, got x_dim={x_dim}, hidden={hidden}")
        self.x_dim, self.hidden, self.image_shape = x_dim, hidden, image_shape
        self.W = PyroParam(init_scale * torch.randn(x_dim, hidden))
        self.b_v = PyroParam(torch.zeros(x_dim))
        self.b_h = PyroParam(torch.zeros(hidden))
        # log Z once estimated (NaN until then); a buffer, so checkpoints carry it with the weights
        self.register_buffer("log_z", torch.tensor(math.nan, dtype=torch.float64))

    def check_data(self, x: torch.Tensor) -> None:
        """Binary rows (N, x_dim) of 0s and 1s, checked once before training or evaluation."""
        check_data(x, "data", self.x_dim)
        if not ((x == 0) | (x == 1)).all():
            raise ValueError(f"a binary RBM needs binary data (0/1); these values lie in [{x.min().item():g}, "
                             f"{x.max().item():g}]: binarize them first (python -m inference.fit ... --binarize "
                             "dynamic, or data sets that are binary, such as binarized-mnist)")

    def distribution(self, batch_shape=torch.Size()) -> BinaryRBM:
        """p(v) as a distribution (with log Z where known)."""
        return BinaryRBM(self.W, self.b_v, self.b_h, batch_shape, self.log_z)

    @pyro_method
    def model(self, x: torch.Tensor) -> None:
        """Observes each row ``"x"`` through :class:`BinaryRBM` in the plate ``"data"``."""
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", self.distribution((x.shape[0],)), obs=x)

    @pyro_method
    def guide(self, x: torch.Tensor) -> None:
        """Nothing to infer: the hidden units are summed out in the free energy."""

    # --- the uses of a trained RBM ------------------------------------------------------------

    def free_energy(self, x: torch.Tensor) -> torch.Tensor:
        """F(v) per row."""
        return rbm_free_energy(x, self.W, self.b_v, self.b_h)

    @torch.no_grad()
    def sample(self, n: int, steps: int = 1000, start: torch.Tensor | None = None) -> torch.Tensor:
        """p(v = 1 | h) after ``steps`` Gibbs sweeps of ``n`` chains (from uniform noise, or ``start``):
        the probabilities of the last sweep, which show a sample without its pixel noise."""
        d = self.distribution()
        v = start if start is not None else torch.bernoulli(torch.full((n, self.x_dim), 0.5, device=self.W.device))
        v = d.gibbs(v, steps - 1) if steps > 1 else v
        return d.visible_probs(torch.bernoulli(d.hidden_probs(v)))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """p(v = 1 | h = E[h | x]): one mean-field pass up and down."""
        d = self.distribution()
        return d.visible_probs(d.hidden_probs(x))

    @torch.no_grad()
    def filters(self) -> torch.Tensor:
        """Each hidden unit's weights scaled to [0, 1], shape (H, D), for an image grid."""
        w = self.W.T
        lo, hi = w.min(1, keepdim=True).values, w.max(1, keepdim=True).values
        return (w - lo) / (hi - lo).clamp_min(1e-12)

    def estimate_log_partition(self, data: torch.Tensor | None = None, steps: int = 10000, chains: int = 100,
                               seed: int | None = 0, progress: bool = False,
                               starts: Sequence[str] = ("data", "model")) -> LogPartition:
        """log Z, stored in the ``log_z`` buffer: by exact enumeration where a layer has at most
        :data:`EXACT_UNITS` units (SE 0), else by AIS (Salakhutdinov & Murray 2008; ``steps``
        intermediate distributions, ``chains`` runs) from each base-rate RBM in ``starts``:

        - ``"data"``: the log-odds of the units' means over ``data`` (clipped, see
          :func:`~pyro_gen.evaluate.partition.base_rate_biases`);
        - ``"model"``: the log-odds of the model's own marginals, from ``chains`` Gibbs chains of
          1000 sweeps started at ``data`` (at noise without data).

        Each AIS estimate is a stochastic lower bound on log Z, so the largest is kept (the
        conservative choice for a test log-likelihood); the others are in ``runs``.
        """
        unknown = sorted(set(starts) - {"data", "model"})
        if unknown or not starts:
            raise ValueError(f"unknown AIS start(s) {unknown}; valid choices: data, model")
        with torch.no_grad():
            if min(self.x_dim, self.hidden) <= EXACT_UNITS:
                est = LogPartition(rbm_log_partition(self.W, self.b_v, self.b_h).item(), 0.0, torch.zeros(0))
            else:
                runs = {}
                for start in starts:
                    runs[start] = rbm_ais_log_partition(self.W, self.b_v, self.b_h, steps=steps, chains=chains,
                                                        base_visible_bias=self._base(start, data, chains),
                                                        seed=seed, progress=progress)
                est = max(runs.values(), key=lambda r: r.log_z)
                est.runs = {k: (r.log_z, r.se) for k, r in runs.items()}
            self.log_z.fill_(est.log_z)
        return est

    def _base(self, start: str, data: torch.Tensor | None, chains: int) -> torch.Tensor | None:
        if start == "data":
            return base_rate_biases(data).to(self.W.dtype) if data is not None else None
        v = data[torch.randperm(len(data))[:chains]] if data is not None else \
            torch.bernoulli(torch.full((chains, self.x_dim), 0.5, device=self.W.device))
        p = self.distribution().gibbs(v.to(self.W), 1000).mean(0)
        p = (p + 1e-3) / (1 + 2e-3)
        return (torch.log(p) - torch.log1p(-p)).clamp(-4, 4)

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """log p(v) = -F(v) - log Z per row (float64), with the stored log Z; for a small RBM
        whose log Z has not been computed, it is enumerated first.

        Raises:
            ValueError: log Z is unknown and the RBM is too large to enumerate.
        """
        if torch.isnan(self.log_z):
            if min(self.x_dim, self.hidden) > EXACT_UNITS:
                raise ValueError("log Z of this RBM is unknown: estimate it first with "
                                 "rbm.estimate_log_partition(train_data) (AIS)")
            self.estimate_log_partition()
        return -self.free_energy(x).double() - self.log_z

    def evaluate(self, test: torch.Tensor, train: torch.Tensor | None = None, steps: int = 10000,
                 chains: int = 100, seed: int = 0, progress: bool = False) -> dict:
        """The test log-likelihood per point with its SE, from log Z (AIS from the base rate of
        ``train``, or exact): the dictionary ``python -m inference.fit rbm`` records."""
        est = self.estimate_log_partition(train, steps=steps, chains=chains, seed=seed, progress=progress)
        ll = self.log_likelihood(test)
        return {"n": len(test), "log_likelihood": ll.mean().item(),
                "log_likelihood_se": (ll.std() / math.sqrt(len(ll))).item() if len(ll) > 1 else math.nan,
                "log_z": est.log_z, "log_z_se": est.se, "log_z_runs": est.runs,
                "log_z_method": "exact" if est.se == 0.0 else f"AIS, {steps} steps, {chains} chains"}


def examples(seed: int = 0) -> dict[str, tuple[RBM, torch.Tensor]]:
    """A small RBM with binary data, for the contract test over every model (log Z enumerable)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.bernoulli(torch.full((16, 6), 0.4), generator=g)
    torch.manual_seed(seed)
    return {"binary": (RBM(6, hidden=5, init_scale=0.5), x)}


# --- the command line: python -m inference.fit rbm (see models/__init__.py) ---------------------


def cli_options(parser) -> None:
    g = parser.add_argument_group("restricted Boltzmann machine")
    g.add_argument("--hidden", type=int, default=500, help="hidden units")
    g.add_argument("--ais-steps", type=int, default=10000, help="AIS steps for log Z (Salakhutdinov & Murray 2008)")
    g.add_argument("--ais-chains", type=int, default=100, help="AIS chains for log Z")


def default_objective(args) -> str:
    """Persistent contrastive divergence (Tieleman 2008)."""
    return "pcd"


def from_cli(args, ds) -> RBM:
    if not ds.binary:
        raise ValueError(f"model 'rbm' is a binary RBM: {ds.name} is not binary; use binarized-mnist, or "
                         "--binarize dynamic for grey levels")
    return RBM(x_dim=ds.dim, hidden=args.hidden, image_shape=ds.image_shape)
