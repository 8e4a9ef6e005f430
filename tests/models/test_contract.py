"""One contract over every model in models/: each file's ``examples()`` instances take an
SVI step under every objective, give every parameter a gradient, round-trip through a
checkpoint and sample with the right shapes.

An example's data is a tensor ``x`` (called as ``model(x)``) or a tuple such as padded
sequences ``(x, lengths)`` (called as ``model(x, lengths)``) or partly labeled data
``(x, y, mask)``. The objectives come from the
instance's ``objectives`` attribute, else the module's ``OBJECTIVES``, else all of them;
models whose latents are summed out (``enum``) or are sequences expose ``log_likelihood``,
which the round trip compares instead of the per-point importance weights."""

import importlib
import io
import pkgutil

import pyro
import pytest
import torch

import models
from pyro_gen import objectives
from pyro_gen.evaluate import per_point_log_weights

OBJECTIVES = ["trace", "meanfield", "iwae:3", "dreg:3", "renyi:0.5", "graph", "rws:3"]


def _model_files():
    return sorted(m.name for m in pkgutil.iter_modules(models.__path__))


def _cases():
    for name in _model_files():
        module = importlib.import_module(f"models.{name}")
        assert hasattr(module, "examples"), f"models/{name}.py must define examples() for the contract test"
        for example in module.examples():
            yield pytest.param(name, example, id=f"{name}-{example}")


@pytest.mark.parametrize("file, example", list(_cases()))
def test_contract(file, example):
    module = importlib.import_module(f"models.{file}")
    net, data = module.examples()[example]
    batch = data if isinstance(data, tuple) else (data,)
    x = batch[0]
    supported = getattr(net, "objectives", getattr(module, "OBJECTIVES", OBJECTIVES))
    for objective in supported:
        elbo = objectives.get(objective)
        net.zero_grad()
        loss = elbo.differentiable_loss(net.model, net.guide, *batch)
        assert loss.shape == () and torch.isfinite(loss)
        loss.backward()
        for pname, p in net.named_parameters():
            assert p.grad is not None, f"{objective}: {pname} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{objective}: {pname} has a non-finite gradient"
            assert p.grad.abs().sum() > 0, f"{objective}: {pname} got a zero gradient"

    # save/load round trip: a fresh instance with other weights becomes the same model
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    buf.seek(0)
    other, _ = module.examples(seed=1)[example]
    other.load_state_dict(torch.load(buf, weights_only=True))
    if hasattr(net, "log_likelihood"):
        pyro.set_rng_seed(5)
        a = net.log_likelihood(*batch)
        pyro.set_rng_seed(5)
        b = other.log_likelihood(*batch)
        assert torch.equal(a, b) and a.shape == (len(x),) and torch.isfinite(a).all()
    else:
        pyro.set_rng_seed(5)
        a = per_point_log_weights(net.model, net.guide, x, 2)
        pyro.set_rng_seed(5)
        b = per_point_log_weights(other.model, other.guide, x, 2)
        assert torch.equal(a, b) and a.shape == (2, len(x))

    # the uses of a trained model
    if getattr(module, "SEQUENCES", False):  # sequences: sample as many steps as the data has
        assert net.sample(5, length=x.shape[1]).shape == (5, *x.shape[1:])
    else:
        assert net.sample(5).shape == (5, x.shape[1])
    if hasattr(net, "reconstruct"):
        assert net.reconstruct(x).shape == x.shape
    if hasattr(net, "encode"):
        loc, scale = net.encode(x)
        assert loc.shape == scale.shape == (len(x), net.z_dim)
        # a point posterior (an autoencoder) says so, and its scale is 0; every other guide's is positive
        assert (scale == 0).all() if getattr(net, "point_posterior", False) else (scale > 0).all()


@pytest.mark.parametrize("file, example", list(_cases()))
def test_pyro_svi_trains_every_model(file, example):
    """Pyro's own SVI with pyro.optim trains pyro_gen's models as Pyro's examples train theirs:
    model and guide are PyroModule methods (pyro_method), so Pyro sees every parameter."""
    from pyro.infer import SVI, Predictive

    module = importlib.import_module(f"models.{file}")
    net, data = module.examples()[example]
    batch = data if isinstance(data, tuple) else (data,)
    supported = getattr(net, "objectives", getattr(module, "OBJECTIVES", OBJECTIVES))
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    svi = SVI(net.model, net.guide, pyro.optim.Adam({"lr": 0.01}), objectives.get(supported[0]))
    for _ in range(2):
        assert torch.isfinite(torch.as_tensor(svi.step(*batch)))
    unchanged = [n for n, p in net.named_parameters() if torch.equal(p.detach(), before[n])]
    assert not unchanged, f"SVI left these parameters untouched: {unchanged}"

    samples = Predictive(net.model, guide=net.guide, num_samples=2)(*batch)
    observed = [n for n, s in pyro.poutine.trace(net.model).get_trace(*batch).nodes.items()
                if s["type"] == "sample" and s["is_observed"]]
    assert observed and all(samples[n].shape[0] == 2 for n in observed if n in samples)
