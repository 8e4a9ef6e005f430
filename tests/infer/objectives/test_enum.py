"""EnumELBO (pyro_gen.infer.objectives.enum) against an exact answer: a Gaussian mixture whose
assignment is summed out has loss exactly -log p(x), with gradients and under no_grad."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_gen import objectives

LOCS = torch.tensor([-2.0, 0.5, 3.0])


def _mixture(x):
    weights = pyro.param("weights", torch.tensor([0.2, 0.5, 0.3]), constraint=dist.constraints.simplex)
    with pyro.plate("data", len(x)):
        c = pyro.sample("c", dist.Categorical(weights), infer={"enumerate": "parallel"})
        pyro.sample("x", dist.Normal(LOCS[c], 1.0), obs=x)


def _empty_guide(x):
    pass


def _exact_log_p(x, weights):
    comp = dist.Normal(LOCS, 1.0).log_prob(x.unsqueeze(-1)) + weights.log()
    return torch.logsumexp(comp, -1).sum()


def test_enum_loss_is_minus_the_exact_log_likelihood_with_its_gradient():
    x = torch.tensor([-1.5, 0.0, 2.5, 4.0])
    elbo = objectives.get("enum")
    loss = elbo.differentiable_loss(_mixture, _empty_guide, x)
    unconstrained = pyro.get_param_store().get_param("weights").unconstrained()
    (grad,) = torch.autograd.grad(loss, unconstrained)

    u = unconstrained.detach().clone().requires_grad_()
    exact = -_exact_log_p(x, torch.distributions.transform_to(dist.constraints.simplex)(u))
    (exact_grad,) = torch.autograd.grad(exact, u)
    assert loss.item() == pytest.approx(exact.item(), rel=1e-6)
    assert torch.allclose(grad, exact_grad, atol=1e-6)


def test_enum_answers_under_no_grad_where_pyro_refuses():
    x = torch.tensor([0.3, 2.0])
    with torch.no_grad():
        value = objectives.enum().differentiable_loss(_mixture, _empty_guide, x)
    weights = torch.tensor([0.2, 0.5, 0.3])
    assert value.item() == pytest.approx(-_exact_log_p(x, weights).item(), rel=1e-6)
    assert math.isfinite(value.item())
