"""Every objective against exact conjugate posteriors (Normal-Normal, Beta-Bernoulli), and each
objective's value against the bound it claims."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_gen import fit, objectives
from tests.exact import A, B, beta_bernoulli_data, beta_bernoulli_guide, beta_bernoulli_model, normal_normal_data, normal_normal_guide, normal_normal_model, normal_normal_posterior


ALL = ["trace", "meanfield", "iwae:5", "dreg:5", "renyi:0.5", "graph", "rws:5"]


def _param(name):
    return pyro.param(name).item()


@pytest.mark.parametrize("objective", ALL)
def test_normal_normal_posterior_recovered(objective):
    x = normal_normal_data()
    loc, scale, _ = normal_normal_posterior(x)
    fit(normal_normal_model, normal_normal_guide, x, objective=objective, epochs=4000, batch_size=len(x),
        lr=0.02, lr_schedule="step:1333:0.3", progress=False)
    assert _param("loc") == pytest.approx(loc, abs=0.03)
    assert _param("scale") == pytest.approx(scale, abs=0.03)


def _score_function_beta_guide(x):
    """The Beta guide with its reparameterized sampler switched off: only score-function
    gradients (with a decaying-average baseline) can train it."""
    a = pyro.param("a", torch.tensor(1.0), constraint=torch.distributions.constraints.positive)
    b = pyro.param("b", torch.tensor(1.0), constraint=torch.distributions.constraints.positive)
    q = dist.Beta(a, b)
    q.has_rsample = False
    pyro.sample("p", q, infer={"baseline": {"use_decaying_avg_baseline": True}})


@pytest.mark.parametrize(
    "objective, guide",
    [(name, beta_bernoulli_guide) for name in ALL]
    + [("graph", _score_function_beta_guide), ("rws:5", _score_function_beta_guide)],
    ids=ALL + ["graph-score-function", "rws-score-function"],
)
def test_beta_bernoulli_posterior_recovered(objective, guide):
    x = beta_bernoulli_data()
    a_post, b_post = A + x.sum().item(), B + len(x) - x.sum().item()
    fit(beta_bernoulli_model, guide, x, objective=objective, epochs=2500, batch_size=len(x),
        lr=0.05, lr_schedule="step:800:0.3", progress=False)
    a, b = _param("a"), _param("b")
    # compare the posterior's mean and standard deviation (the natural scale of the fit)
    mean, post_mean = a / (a + b), a_post / (a_post + b_post)
    sd = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    post_sd = math.sqrt(a_post * b_post / ((a_post + b_post) ** 2 * (a_post + b_post + 1)))
    assert mean == pytest.approx(post_mean, abs=0.02)
    assert sd == pytest.approx(post_sd, abs=0.02)


def test_value_of_each_objective_is_its_bound():
    x = normal_normal_data()
    _, _, log_evidence = normal_normal_posterior(x)
    loc, scale, _ = normal_normal_posterior(x)
    pyro.param("loc", torch.tensor(loc))
    pyro.param("scale", torch.tensor(scale), constraint=torch.distributions.constraints.positive)
    # with the exact posterior as guide, every importance weight is p(x): each bound equals log p(x)
    for name in ALL:
        if name == "meanfield":
            continue
        value = -objectives.get(name).differentiable_loss(normal_normal_model, normal_normal_guide, x).item()
        assert value == pytest.approx(log_evidence, abs=1e-3), name
    # the mean-field estimator splits log w into E[log p(x|z)] - KL, so only its expectation is exact
    value = -objectives.meanfield(20_000).differentiable_loss(normal_normal_model, normal_normal_guide, x).item()
    assert value == pytest.approx(log_evidence, abs=0.02)
