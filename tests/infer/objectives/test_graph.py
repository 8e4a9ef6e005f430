"""GraphELBO (pyro_gen.infer.objectives.graph): its differentiable loss has the value and the
gradient of Pyro's TraceGraph_ELBO, which only offers loss_and_grads."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceGraph_ELBO

from pyro_gen import objectives


def _model(x):
    p = pyro.sample("p", dist.Beta(2.0, 2.0))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Bernoulli(p), obs=x)


def _guide(x):  # a Beta guide sampled without reparameterization: score-function gradients
    a = pyro.param("a", torch.tensor(3.0), constraint=dist.constraints.positive)
    b = pyro.param("b", torch.tensor(1.5), constraint=dist.constraints.positive)
    pyro.sample("p", dist.Beta(a, b), infer={"reparam": False})


def _grads(run):
    pyro.clear_param_store()
    pyro.set_rng_seed(7)
    loss = run()
    store = pyro.get_param_store()
    return loss, [store.get_param(n).unconstrained().grad.clone() for n in ("a", "b")]


def test_graph_loss_and_gradient_equal_pyros_trace_graph_elbo():
    x = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])

    def ours():
        pyro.param("a", torch.tensor(3.0), constraint=dist.constraints.positive)
        pyro.param("b", torch.tensor(1.5), constraint=dist.constraints.positive)
        loss = objectives.graph().differentiable_loss(_model, _guide, x)
        loss.backward()
        return loss.item()

    def pyros():
        return TraceGraph_ELBO().loss_and_grads(_model, _guide, x)

    loss, grads = _grads(ours)
    ref_loss, ref_grads = _grads(pyros)
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, rtol=1e-5, atol=1e-7)
