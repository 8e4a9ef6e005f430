"""Probabilistic PCA (Tipping & Bishop 1999) with an amortized Gaussian guide.

Generative model, for each data point x_n (d dimensions, q latents)::

    z_n ~ Normal(0, I_q)
    x_n ~ Normal(W z_n + mu, sigma^2 I_d)             W: (d, q), mu and sigma learned

Amortized guide::

    q(z_n | x_n) = Normal(encoder(x_n - mu), Sigma)

The exact posterior is N(M^-1 W^T (x - mu), sigma^2 M^-1) with M = W^T W + sigma^2 I: its
mean is linear in x and its covariance is the same for every x. So a *linear* encoder
with a *full* shared covariance contains the exact posterior and closes the ELBO gap;
a diagonal Sigma or an MLP encoder are the approximations to compare against it. The
encoder sees x - mu, as the exact posterior mean does: on raw inputs far from 0 (Frey
faces' 560 pixels average 0.5) one Adam step on every weight moves the output by
``lr * sum |x|``. In notebook 03's Frey-faces run (100 epochs, lr 0.03) the centred encoder
ended 3.2 degrees from PCA's subspace and raw inputs 41 degrees.

Bayesian PCA (``ard=True``, Bishop 1999): W becomes a latent with an automatic
relevance determination prior on its columns, w_j ~ Normal(0, alpha_j^-1 I_d), a
mean-field Gaussian guide over W, and the precisions alpha_j fitted by maximizing the
ELBO (type-II maximum likelihood). Columns the data do not need are driven to zero
(alpha_j grows), which switches the matching latent dimension off.

Exact answers for this model (closed-form ML solution, log p(x), posterior, ELBO gap)
are in :mod:`pyro_gen.exact.linear_gaussian`.

References:
    Tipping & Bishop (1999), Probabilistic Principal Component Analysis.
    Bishop (1999), Bayesian PCA, NIPS 11.
    Baldi & Hornik (1989), Neural networks and principal component analysis: learning
    from examples without local minima (the linear autoencoder).
"""

from __future__ import annotations

from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, pyro_method
from torch import nn
from torch.distributions import constraints, transform_to

from pyro_gen.data import check_data
from pyro_gen.exact import linear_gaussian

__all__ = ["PPCA", "ENCODERS", "COVARIANCES", "LinearAutoencoder", "fit_linear_autoencoder", "synthetic_data",
           "examples"]

#: The guide's encoders of the mean of z, ``"linear"`` (contains the exact posterior mean) or ``"mlp"``.
ENCODERS = ("linear", "mlp")
#: The guide's covariances (shared by every x), ``"full"`` (contains the exact posterior covariance)
#: or ``"diagonal"``.
COVARIANCES = ("full", "diagonal")


def _choice(what: str, value: str, valid: Sequence[str]) -> str:
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid choices: {', '.join(valid)}")
    return value


class PPCA(PyroModule):
    """Probabilistic PCA with an amortized Gaussian guide, optionally Bayesian (ARD on W's columns).

    Args:
        x_dim: d, observed dimensions.
        z_dim: q, latent dimensions (an upper bound on the useful ones with ``ard=True``).
        encoder: ``"linear"`` (contains the exact posterior mean) or ``"mlp"``.
        covariance: the guide's covariance, shared by all x: ``"full"`` (contains the
            exact posterior covariance) or ``"diagonal"``.
        hidden: hidden widths of the MLP encoder.
        ard: Bayesian PCA: W is a latent with an ARD prior, see the module docstring.
        guide_flow: push the guide's Gaussian through ``flow_depth`` layers of this
            flow family (one of :data:`pyro_gen.flows.FAMILIES`, shared by all x), e.g.
            ``"iaf"``; None for the Gaussian guide alone.
        num_data: size of the training set; with ``ard=True`` and minibatches the
            global W terms are weighted by batch/num_data so each batch's loss is an
            unbiased share of the full-data ELBO (default: the batch is the data set).
    """

    def __init__(self, x_dim: int, z_dim: int = 2, encoder: str = "linear", covariance: str = "full",
                 hidden: Sequence[int] = (64,), ard: bool = False, num_data: int | None = None,
                 guide_flow: str | None = None, flow_depth: int = 2):
        super().__init__()
        if not 1 <= z_dim < x_dim:
            raise ValueError(f"need 1 <= z_dim < x_dim, got z_dim={z_dim}, x_dim={x_dim}")
        if num_data is not None and num_data < 1:
            raise ValueError(f"num_data must be a positive count of training points, got {num_data}")
        self.x_dim, self.z_dim, self.ard, self.num_data = int(x_dim), int(z_dim), bool(ard), num_data
        self.hidden = tuple(hidden)
        self.encoder_kind = _choice("encoder", encoder, ENCODERS)
        self.covariance = _choice("covariance", covariance, COVARIANCES)

        # the model's parameters
        self.mu = nn.Parameter(torch.zeros(x_dim))
        self.log_sigma = nn.Parameter(torch.zeros(()))
        if ard:
            self.log_alpha = nn.Parameter(torch.zeros(z_dim))          # ARD precisions, type-II ML
            self.W_loc = nn.Parameter(0.1 * torch.randn(x_dim, z_dim))  # q(W), mean field
            self.W_log_scale = nn.Parameter(torch.full((x_dim, z_dim), -3.0))
        else:
            self.W = nn.Parameter(0.1 * torch.randn(x_dim, z_dim))

        # the guide's parameters
        if encoder == "linear":
            self.encoder = nn.Linear(x_dim, z_dim)
        else:
            sizes = [x_dim, *hidden]
            layers: list[nn.Module] = []
            for a, b in zip(sizes[:-1], sizes[1:]):
                layers += [nn.Linear(a, b), nn.Tanh()]
            self.encoder = nn.Sequential(*layers, nn.Linear(sizes[-1], z_dim))
        # the exact posterior covariance does not depend on x, so neither does the guide's
        if covariance == "full":
            self.scale_tril_raw = nn.Parameter(torch.zeros(z_dim, z_dim))
        else:
            self.log_scale = nn.Parameter(torch.zeros(z_dim))
        self.flow = None
        if guide_flow is not None:
            from pyro_gen.flows import FlowStack

            self.flow = FlowStack(guide_flow, z_dim, flow_depth)

    # --- the two Pyro programs -------------------------------------------------------

    def check_data(self, x: torch.Tensor) -> None:
        """Data this model can score, checked once before training or evaluation: (N, x_dim) rows."""
        check_data(x, "data", self.x_dim)

    @pyro_method
    def model(self, x: torch.Tensor) -> None:
        """The generative model of a batch of rows.

        In the plate ``"data"``, samples ``"z"`` ~ Normal(0, I_q) and observes ``"x"`` ~
        Normal(W z + mu, sigma^2 I_d). With ``ard=True``, W is first sampled at site ``"W"``
        from the ARD prior :meth:`ard_prior` (its log density scaled by N / ``num_data``).

        Args:
            x: the observed batch, (N, d).
        """
        W = self._sample_W(x, self.ard_prior()) if self.ard else self.W
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            # a batched product: with vectorized particles a sampled W carries (k, 1, ...) batch dims
            Wz = (W @ z.unsqueeze(-1)).squeeze(-1)
            pyro.sample("x", dist.Normal(Wz + self.mu, self.sigma).to_event(1), obs=x)

    @pyro_method
    def guide(self, x: torch.Tensor) -> None:
        """The amortized guide over the latents of :meth:`model`.

        In the plate ``"data"``, samples ``"z"`` ~ Normal(encoder(x - mu), Sigma), Sigma full or
        diagonal and shared by every x, pushed through the guide flow if there is one
        (:meth:`posterior_approx`). With ``ard=True``, also samples ``"W"`` from a mean-field
        Normal (loc ``W_loc``, log-scale ``W_log_scale``), scaled as in the model.

        Args:
            x: the observed batch, (N, d).
        """
        if self.ard:
            self._sample_W(x, dist.Normal(self.W_loc, self.W_log_scale.exp()).to_event(2))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.posterior_approx(self.guide_loc(x)))

    # --- pieces of the model -----------------------------------------------------------

    @property
    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp()

    def ard_prior(self) -> dist.TorchDistribution:
        """p(W | alpha): column j ~ Normal(0, alpha_j^-1 I_d) (Bishop 1999)."""
        scale = self.log_alpha.mul(-0.5).exp().expand(self.x_dim, self.z_dim)
        return dist.Normal(torch.zeros_like(scale), scale).to_event(2)

    def _sample_W(self, x: torch.Tensor, fn: dist.TorchDistribution) -> torch.Tensor:
        share = x.shape[0] / self.num_data if self.num_data else 1.0
        with pyro.poutine.scale(scale=share):
            return pyro.sample("W", fn)

    def guide_loc(self, x: torch.Tensor) -> torch.Tensor:
        """The guide's mean of z: the encoder applied to x - mu."""
        return self.encoder(x - self.mu)

    def scale_tril(self) -> torch.Tensor:
        """The guide's Cholesky factor, (q, q), shared by every x."""
        if self.covariance == "full":
            return transform_to(constraints.lower_cholesky)(self.scale_tril_raw)
        return torch.diag(self.log_scale.exp())

    def posterior_approx(self, loc: torch.Tensor) -> dist.TorchDistribution:
        """q(z | x) given the encoder's output."""
        if self.covariance == "full":
            q = dist.MultivariateNormal(loc, scale_tril=self.scale_tril())
        else:
            q = dist.Normal(loc, self.log_scale.exp()).to_event(1)
        return q if self.flow is None else dist.TransformedDistribution(q, self.flow.transforms())

    def weights(self) -> torch.Tensor:
        """W, or its posterior mean under the guide with ``ard=True``."""
        return self.W_loc if self.ard else self.W

    # --- exact answers at the current parameters (W's posterior mean with ard) ----------

    @torch.no_grad()
    def exact_log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x_n) per row, float64 (with ``ard=True``: plugging in W's posterior mean)."""
        return linear_gaussian.exact_log_likelihood(x, self.weights(), self.mu, self.sigma)

    @torch.no_grad()
    def elbo_gap(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x_n) - ELBO(x_n) = KL(q(z | x_n) || p(z | x_n)) per row, exactly (W fixed; Gaussian guides)."""
        if self.flow is not None:
            raise ValueError("the exact ELBO gap needs a Gaussian guide; with a flow, estimate it: "
                             "exact_log_likelihood(x) - pyro_gen.evaluate.elbo(...)")
        return linear_gaussian.elbo_gap(x, self.guide_loc(x), self.scale_tril(), self.weights(), self.mu, self.sigma)

    @torch.no_grad()
    def set_exact_guide(self) -> "PPCA":
        """Make the guide the exact posterior (linear encoder, full covariance only)."""
        if self.encoder_kind != "linear" or self.covariance != "full" or self.flow is not None:
            raise ValueError("only the linear encoder with full covariance (and no flow) can hold the exact "
                             f"posterior; this guide is {self.encoder_kind}/{self.covariance}"
                             + (f" with a {self.flow.family} flow" if self.flow is not None else ""))
        W, s2 = self.weights().double(), self.sigma.double() ** 2
        M = W.T @ W + s2 * torch.eye(self.z_dim, dtype=W.dtype)
        A = torch.linalg.solve(M, W.T)  # posterior mean M^-1 W^T (x - mu)
        self.encoder.weight.copy_(A)
        self.encoder.bias.zero_()  # the encoder's input is already x - mu
        L = torch.linalg.cholesky(s2 * torch.linalg.inv(M))
        self.scale_tril_raw.copy_(transform_to(constraints.lower_cholesky).inv(L))
        return self

    @torch.no_grad()
    def for_evaluation(self) -> "PPCA":
        """A PPCA whose W is a parameter, for per-point evaluation (one local latent per point).

        ``self`` unless ``ard=True``; then a copy with W fixed at its posterior mean (a
        plug-in estimate: the ARD prior and q(W) drop out) and the same mu, sigma and guide.
        """
        if not self.ard:
            return self
        plain = PPCA(self.x_dim, self.z_dim, self.encoder_kind, self.covariance, self.hidden)
        state = {k: v for k, v in self.state_dict().items() if k not in ("log_alpha", "W_loc", "W_log_scale")}
        plain.load_state_dict({**state, "W": self.W_loc})
        return plain.to(self.mu.device).train(self.training)

    # --- uses of a trained model ---------------------------------------------------------

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The guide's mean of z and its marginal standard deviations, each (N, q)
        (of the Gaussian before the flow, for a flow guide)."""
        loc = self.guide_loc(x)
        std = self.scale_tril().pow(2).sum(-1).sqrt()
        return loc, std.expand_as(loc)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """E[x | z] = W z + mu."""
        return z @ self.weights().T + self.mu

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | z] at the guide's mean of z (before any flow) for each row of x: (N, d)."""
        return self.decode(self.encode(x)[0])

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True) -> torch.Tensor:
        """n draws of x (or of E[x | z] with ``mean=True``) with z from the prior."""
        z = torch.randn(n, self.z_dim, device=self.mu.device)
        x = self.decode(z)
        return x if mean else x + self.sigma * torch.randn_like(x)


class LinearAutoencoder(nn.Module):
    """x -> A x + a -> B (A x + a) + b, trained on squared error: no probabilities at all.

    Its optimum spans the principal subspace (Baldi & Hornik 1989), the same one pPCA's
    ML W spans; the columns need not be the principal axes themselves.
    """

    def __init__(self, x_dim: int, z_dim: int):
        super().__init__()
        self.encoder = nn.Linear(x_dim, z_dim)
        self.decoder = nn.Linear(z_dim, x_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def fit_linear_autoencoder(x: torch.Tensor, z_dim: int, steps: int = 200, seed: int = 0) -> LinearAutoencoder:
    """Minimize the mean squared reconstruction error of a :class:`LinearAutoencoder` with full-batch L-BFGS.

    References:
        Baldi & Hornik (1989): every local minimum of this loss is global and spans the
        principal subspace.
    """
    torch.manual_seed(seed)
    ae = LinearAutoencoder(x.shape[1], z_dim)
    opt = torch.optim.LBFGS(ae.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        loss = (ae(x) - x).pow(2).sum(-1).mean()
        loss.backward()
        return loss

    opt.step(closure)
    return ae


def synthetic_data(n: int, x_dim: int = 10, z_dim: int = 2, sigma: float = 0.5, seed: int = 0):
    """n draws from a pPCA with known parameters: returns ``(x, {"W", "mu", "sigma"})``.

    The true W has orthogonal columns of decreasing length (3, 2.5, 2, ...) so the
    principal subspace is well separated from the noise.
    """
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(x_dim, z_dim, generator=g))
    W = basis * torch.linspace(3.0, 3.0 - 0.5 * (z_dim - 1), z_dim)
    mu = torch.randn(x_dim, generator=g)
    z = torch.randn(n, z_dim, generator=g)
    x = z @ W.T + mu + sigma * torch.randn(n, x_dim, generator=g)
    return x, {"W": W, "mu": mu, "sigma": torch.tensor(sigma)}


def examples(seed: int = 0) -> dict[str, tuple[PPCA, torch.Tensor]]:
    """Small instances with matching data, for the contract test over every model.

    Bayesian PCA (``ard=True``) is left out: its W is a global latent, so the per-point
    importance weights the contract evaluates do not exist; tests/models/test_ppca.py checks it.
    """
    x, _ = synthetic_data(16, 6, 2, seed=seed)
    torch.manual_seed(seed)
    return {
        "linear-full": (PPCA(6, 2), x),
        "linear-diagonal": (PPCA(6, 2, covariance="diagonal"), x),
        "mlp-full": (PPCA(6, 2, encoder="mlp", hidden=(8,)), x),
        "mlp-diagonal": (PPCA(6, 3, encoder="mlp", covariance="diagonal", hidden=(8,)), x),
        "linear-diagonal-iaf": (PPCA(6, 2, covariance="diagonal", guide_flow="iaf"), x),
    }


# --- the command line: python -m inference.fit ppca (see models/__init__.py) --------------------


def cli_options(parser) -> None:
    g = parser.add_argument_group("probabilistic PCA")
    g.add_argument("--latent-dim", type=int, default=50)
    g.add_argument("--hidden", type=int, nargs="+", default=[400], help="widths of the mlp encoder's layers")
    g.add_argument("--ppca-encoder", default="linear", choices=ENCODERS, help="amortized encoder of the guide's mean")
    g.add_argument("--ppca-covariance", default="full", choices=COVARIANCES,
                   help="the guide's covariance (full contains the exact posterior)")
    g.add_argument("--ppca-ard", action="store_true", help="Bayesian PCA: ARD prior on W's columns")


def from_cli(args, ds) -> PPCA:
    return PPCA(x_dim=ds.dim, z_dim=args.latent_dim, encoder=args.ppca_encoder, covariance=args.ppca_covariance,
                hidden=args.hidden, ard=args.ppca_ard, num_data=len(ds.train))
