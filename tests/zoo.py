"""Every kind of model/guide a Pyro user writes, small, for the interoperability tests.

Each builder returns ``(model, guide, data)`` with ``data`` a tensor or a tuple passed as
``model(*data)``. Build them inside the module_local_params setting under test: a
PyroModule reads the setting when its parameters are accessed.
"""

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import autoguide
from pyro.nn import PyroModule, PyroParam, PyroSample
from torch import nn
from torch.distributions import constraints

from tests.exact import normal_normal_data, normal_normal_guide, normal_normal_model


class BayesianRegression(PyroModule):
    """Pyro's Bayesian-regression tutorial: PyroModule[nn.Linear] with PyroSample weights; the
    noise scale is a PyroParam. ``forward(x, y)``; ``forward(xy)`` with y as the last column."""

    def __init__(self, d: int = 3):
        super().__init__()
        self.linear = PyroModule[nn.Linear](d, 1)
        self.linear.weight = PyroSample(dist.Normal(0.0, 1.0).expand([1, d]).to_event(2))
        self.linear.bias = PyroSample(dist.Normal(0.0, 5.0).expand([1]).to_event(1))
        self.sigma = PyroParam(torch.tensor(0.5), constraint=constraints.positive)

    def forward(self, x, y=None):
        if y is None and x.shape[-1] == self.linear.in_features + 1:
            x, y = x[..., :-1], x[..., -1]
        mean = self.linear(x).squeeze(-1)
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("obs", dist.Normal(mean, self.sigma), obs=y)


def regression_data(n: int = 24, d: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3 + 0.5 * torch.randn(n, generator=g)
    return x, y


def _guide_list(model):
    guide = autoguide.AutoGuideList(model)
    guide.append(autoguide.AutoDelta(poutine.block(model, expose=["linear.bias"])))
    guide.append(autoguide.AutoDiagonalNormal(poutine.block(model, hide=["linear.bias"])))
    return guide


AUTOGUIDES = {
    "AutoNormal": autoguide.AutoNormal,
    "AutoDiagonalNormal": autoguide.AutoDiagonalNormal,
    "AutoMultivariateNormal": autoguide.AutoMultivariateNormal,
    "AutoLowRankMultivariateNormal": lambda m: autoguide.AutoLowRankMultivariateNormal(m, rank=2),
    "AutoDelta": autoguide.AutoDelta,
    "AutoIAFNormal": lambda m: autoguide.AutoIAFNormal(m, hidden_dim=[8]),
    "AutoGuideList": _guide_list,
}


def regression(guide_name: str):
    model = BayesianRegression()
    if guide_name == "flow_guide(iaf)":
        from pyro_gen.flows import flow_guide
        guide = flow_guide(model, "iaf", depth=2)
    else:
        guide = AUTOGUIDES[guide_name](model)
    return model, guide, regression_data()


class _Encoder(nn.Module):
    def __init__(self, x_dim=6, z_dim=2):
        super().__init__()
        self.fc, self.loc, self.scale = nn.Linear(x_dim, 8), nn.Linear(8, z_dim), nn.Linear(8, z_dim)

    def forward(self, x):
        h = torch.tanh(self.fc(x))
        return self.loc(h), nn.functional.softplus(self.scale(h)) + 1e-3


class TutorialVAE(nn.Module):
    """Pyro's VAE tutorial: plain nn.Modules registered with pyro.module inside model and guide."""

    def __init__(self, x_dim=6, z_dim=2):
        super().__init__()
        self.z_dim = z_dim
        self.encoder = _Encoder(x_dim, z_dim)
        self.decoder = nn.Sequential(nn.Linear(z_dim, 8), nn.Tanh(), nn.Linear(8, x_dim))

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(*self.encoder(x)).to_event(1))


def binary_data(n=16, d=6, seed=0):
    return (torch.rand(n, d, generator=torch.Generator().manual_seed(seed)) < 0.4).float()


def tutorial_vae(_=None):
    torch.manual_seed(0)
    vae = TutorialVAE()
    # plain functions, as the tutorial passes them to SVI (not bound methods of a known module)
    return (lambda x: vae.model(x)), (lambda x: vae.guide(x)), binary_data()


def plain_params(_=None):
    return normal_normal_model, normal_normal_guide, normal_normal_data()


def pyro_gen_vae(_=None):
    from models.vae import VAE

    torch.manual_seed(0)
    vae = VAE(6, 2, (8,))
    return vae.model, vae.guide, binary_data()


ZOO = {
    **{f"PyroModule+{g}": (regression, g) for g in [*AUTOGUIDES, "flow_guide(iaf)"]},
    "pyro.module": (tutorial_vae, None),
    "pyro.param": (plain_params, None),
    "pyro_gen VAE": (pyro_gen_vae, None),
}


def build(name: str):
    builder, arg = ZOO[name]
    return builder(arg)
