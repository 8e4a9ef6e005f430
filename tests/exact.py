"""Small models with exact answers, shared by the tests."""

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch.distributions import constraints

SIGMA = 0.5  # observation noise of the Normal-Normal model


def normal_normal_data(n=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (0.7 + SIGMA * torch.randn(n, 1, generator=g)).double().float()


def normal_normal_posterior(x):
    """z ~ N(0, 1), x_i ~ N(z, SIGMA^2): the posterior of z and the log evidence."""
    n = x.shape[0]
    precision = 1.0 + n / SIGMA**2
    loc = x.sum().item() / SIGMA**2 / precision
    cov = SIGMA**2 * torch.eye(n, dtype=torch.float64) + 1.0
    log_evidence = torch.distributions.MultivariateNormal(torch.zeros(n, dtype=torch.float64), cov).log_prob(
        x.double().flatten()).item()
    return loc, math.sqrt(1.0 / precision), log_evidence


def normal_normal_model(x):
    z = pyro.sample("z", dist.Normal(0.0, 1.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(z, SIGMA), obs=x[:, 0])


def normal_normal_guide(x):
    loc = pyro.param("loc", torch.tensor(0.0))
    scale = pyro.param("scale", torch.tensor(1.0), constraint=constraints.positive)
    pyro.sample("z", dist.Normal(loc, scale))


def beta_bernoulli_data():
    return torch.tensor([1.0, 1, 1, 0, 1, 0, 1, 1, 1, 0]).unsqueeze(-1)


A, B = 2.0, 3.0


def beta_bernoulli_model(x):
    p = pyro.sample("p", dist.Beta(A, B))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Bernoulli(p), obs=x[:, 0])


def beta_bernoulli_guide(x):
    a = pyro.param("a", torch.tensor(1.0), constraint=constraints.positive)
    b = pyro.param("b", torch.tensor(1.0), constraint=constraints.positive)
    pyro.sample("p", dist.Beta(a, b))


class LinearGaussian(PyroModule):
    """z ~ N(0, I_q), x ~ N(W z + b, s^2 I_d), with an amortized linear-Gaussian guide.

    With ``exact_guide()`` the guide is the exact posterior, so every importance
    weight equals p(x) and each bound equals the exact log-likelihood.
    """

    def __init__(self, d=5, q=2, s=0.6, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = torch.nn.Parameter(torch.randn(d, q, generator=g))
        self.b = torch.nn.Parameter(torch.randn(d, generator=g))
        self.s = s
        self.A = torch.nn.Parameter(0.1 * torch.randn(q, d, generator=g))
        self.c = torch.nn.Parameter(torch.zeros(q))
        self.log_scale = torch.nn.Parameter(torch.zeros(q))
        self.q = q

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.q), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.s).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x @ self.A.T + self.c, self.log_scale.exp()).to_event(1))

    def exact_guide(self):
        """Set the guide to the exact posterior: N(M^-1 W^T (x - b), s^2 M^-1), M = W^T W + s^2 I.

        Exact only when M is diagonal; the columns of W are made orthogonal first."""
        with torch.no_grad():
            qmat, _ = torch.linalg.qr(self.W)
            self.W.copy_(qmat * torch.arange(1, self.q + 1, dtype=qmat.dtype))
            M = self.W.T @ self.W + self.s**2 * torch.eye(self.q)
            Minv = torch.linalg.inv(M)
            self.A.copy_(Minv @ self.W.T)
            self.c.copy_(-(Minv @ self.W.T @ self.b))
            self.log_scale.copy_(0.5 * torch.log(self.s**2 * torch.diagonal(Minv)))
        return self

    def exact_log_likelihood(self, x):
        cov = self.W @ self.W.T + self.s**2 * torch.eye(self.W.shape[0])
        return torch.distributions.MultivariateNormal(self.b, cov).log_prob(x).detach()

    def sample_data(self, n, seed=0):
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            z = torch.randn(n, self.q, generator=g)
            return z @ self.W.T + self.b + self.s * torch.randn(n, self.W.shape[0], generator=g)


def replicated_gradients(objective, n, x0=1.5, loc0=0.3, scale0=0.7):
    """n independent copies of one data point, each with its own guide parameters: the
    gradient with respect to loc[i] is the i-th independent draw of the estimator."""
    pyro.clear_param_store()
    x = torch.full((n, 1), x0)

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x[:, 0])

    def guide(x):
        loc = pyro.param("loc", torch.full((len(x),), loc0))
        log_scale = pyro.param("log_scale", torch.full((len(x),), math.log(scale0)))
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(loc, log_scale.exp()))

    loss = objective.differentiable_loss(model, guide, x)
    loss.backward()
    store = dict(pyro.get_param_store().named_parameters())
    return store["loc"].grad.clone(), store["log_scale"].grad.clone()
