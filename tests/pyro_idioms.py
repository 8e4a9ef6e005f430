"""Pyro's tutorial idioms, run as Pyro's tutorials write them; prints their losses and posteriors
as one JSON line. ``python tests/pyro_idioms.py [--import-pyro-gen]``: the test runs it in two
fresh processes, with and without ``import pyro_gen`` first, and compares the two outputs.

(a) Bayesian regression: PyroModule[nn.Linear], PyroSample, AutoDiagonalNormal, SVI + pyro.optim;
(b) the VAE tutorial: nn.Modules registered with pyro.module, trained by SVI;
(c) plain functions with pyro.param;
(d) a Gaussian mixture with TraceEnum_ELBO and an enumerated assignment;
(e) pyro.infer.Predictive on each.
"""

import json
import sys

if "--import-pyro-gen" in sys.argv:
    import pyro_gen  # noqa: F401
    import pyro_gen.diagnostics  # noqa: F401
    import pyro_gen.infer  # noqa: F401

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO, TraceEnum_ELBO, config_enumerate
from pyro.infer.autoguide import AutoDiagonalNormal, AutoDelta
from pyro.nn import PyroModule, PyroSample
from torch import nn

STEPS = 30


def train(model, guide, elbo, *args, lr=0.03):
    svi = SVI(model, guide, pyro.optim.Adam({"lr": lr}), elbo)
    return [svi.step(*args) for _ in range(STEPS)]


def summary(samples: dict) -> dict:
    return {k: [round(float(v.mean()), 10), round(float(v.std()), 10)] for k, v in sorted(samples.items())}


def regression():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)

    class BayesianRegression(PyroModule):
        def __init__(self):
            super().__init__()
            self.linear = PyroModule[nn.Linear](3, 1)
            self.linear.weight = PyroSample(dist.Normal(0.0, 1.0).expand([1, 3]).to_event(2))
            self.linear.bias = PyroSample(dist.Normal(0.0, 10.0).expand([1]).to_event(1))

        def forward(self, x, y=None):
            sigma = pyro.sample("sigma", dist.Uniform(0.0, 10.0))
            mean = self.linear(x).squeeze(-1)
            with pyro.plate("data", x.shape[0]):
                return pyro.sample("obs", dist.Normal(mean, sigma), obs=y)

    x = torch.randn(50, 3)
    y = x @ torch.tensor([1.0, -1.0, 2.0]) + 0.5 * torch.randn(50)
    model = BayesianRegression()
    guide = AutoDiagonalNormal(model)
    losses = train(model, guide, Trace_ELBO(), x, y)
    post = Predictive(model, guide=guide, num_samples=20, return_sites=("linear.weight", "obs", "_RETURN"))(x)
    return {"losses": losses, "posterior": summary(post)}


def vae():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc21, self.fc22 = nn.Linear(8, 16), nn.Linear(16, 2), nn.Linear(16, 2)

        def forward(self, x):
            h = nn.functional.softplus(self.fc1(x))
            return self.fc21(h), torch.exp(self.fc22(h))

    encoder, decoder = Encoder(), nn.Sequential(nn.Linear(2, 16), nn.Softplus(), nn.Linear(16, 8), nn.Sigmoid())

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("latent", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("obs", dist.Bernoulli(decoder(z), validate_args=False).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("latent", dist.Normal(*encoder(x)).to_event(1))

    x = (torch.rand(32, 8) < 0.3).float()
    losses = train(model, guide, Trace_ELBO(), x, lr=1e-2)
    post = Predictive(model, guide=guide, num_samples=5)(x)
    return {"losses": losses, "posterior": summary(post)}


def plain_params():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)

    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def guide(x):
        loc = pyro.param("loc", torch.tensor(0.0))
        scale = pyro.param("scale", torch.tensor(1.0), constraint=dist.constraints.positive)
        pyro.sample("mu", dist.Normal(loc, scale))

    x = 3.0 + torch.randn(40)
    losses = train(model, guide, Trace_ELBO(), x, lr=0.1)
    post = Predictive(model, guide=guide, num_samples=50)(x)
    return {"losses": losses, "posterior": summary(post),
            "params": {k: v.tolist() for k, v in sorted(pyro.get_param_store().items())}}


def mixture():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    data = torch.tensor([0.0, 1.0, 10.0, 11.0, 12.0])

    @config_enumerate
    def model(data):
        weights = pyro.sample("weights", dist.Dirichlet(0.5 * torch.ones(2)))
        scale = pyro.sample("scale", dist.LogNormal(0.0, 2.0))
        with pyro.plate("components", 2):
            locs = pyro.sample("locs", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(data)):
            assignment = pyro.sample("assignment", dist.Categorical(weights))
            pyro.sample("obs", dist.Normal(locs[assignment], scale), obs=data)

    guide = AutoDelta(pyro.poutine.block(model, expose=["weights", "locs", "scale"]))
    losses = train(model, guide, TraceEnum_ELBO(max_plate_nesting=1), data, lr=0.1)
    post = Predictive(model, guide=guide, num_samples=4, return_sites=("locs", "scale", "obs"))(data)
    return {"losses": losses, "posterior": summary(post)}


if __name__ == "__main__":
    torch.set_num_threads(1)
    out = {"a": regression(), "b": vae(), "c": plain_params(), "d": mixture()}
    print(json.dumps(out))
