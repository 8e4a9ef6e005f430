"""Objectives against exact answers: conjugate posteriors, the IWAE bound's order in k,
and the DReG gradient's bias and variance."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_gen import fit, objectives
from tests.exact import (
    A,
    B,
    beta_bernoulli_data,
    beta_bernoulli_guide,
    beta_bernoulli_model,
    normal_normal_data,
    normal_normal_guide,
    normal_normal_model,
    normal_normal_posterior,
)

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


def test_iwae_bound_rises_with_k_and_stays_below_log_evidence():
    x = normal_normal_data()
    _, _, log_evidence = normal_normal_posterior(x)
    # a deliberately poor guide, so that the bounds are visibly apart
    pyro.param("loc", torch.tensor(-0.3))
    pyro.param("scale", torch.tensor(0.8), constraint=torch.distributions.constraints.positive)
    means, ses = [], []
    for k in (1, 5, 50, 500):
        bound = objectives.iwae(k) if k > 1 else objectives.trace()
        vals = torch.tensor([-bound.loss(normal_normal_model, normal_normal_guide, x) for _ in range(300)])
        means.append(vals.mean().item())
        ses.append(vals.std().item() / math.sqrt(len(vals)))
    for (m1, s1), (m2, s2) in zip(zip(means, ses), zip(means[1:], ses[1:])):
        assert m2 > m1 + 2 * math.hypot(s1, s2), (means, ses)
    assert means[-1] < log_evidence + 3 * ses[-1]
    assert log_evidence - means[-1] < 0.1 * (log_evidence - means[0])  # and it gets close


def _replicated_gradients(objective, n, x0=1.5, loc0=0.3, scale0=0.7):
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


def test_dreg_gradient_is_unbiased_and_has_lower_variance():
    k = 5
    ref_loc, ref_scale = _replicated_gradients(objectives.iwae(k), 400_000)
    dreg_loc, dreg_scale = _replicated_gradients(objectives.dreg(k), 100_000)
    iwae_loc, iwae_scale = _replicated_gradients(objectives.iwae(k), 100_000)
    for dreg_g, ref_g in ((dreg_loc, ref_loc), (dreg_scale, ref_scale)):
        se = math.hypot(dreg_g.std().item() / math.sqrt(len(dreg_g)), ref_g.std().item() / math.sqrt(len(ref_g)))
        assert abs(dreg_g.mean().item() - ref_g.mean().item()) < 4 * se
    # the reference is not zero: the check above is about a real signal
    assert abs(ref_loc.mean().item()) > 10 * ref_loc.std().item() / math.sqrt(len(ref_loc))
    assert dreg_loc.var() < 0.5 * iwae_loc.var()
    assert dreg_scale.var() < 0.5 * iwae_scale.var()


def test_dreg_model_gradient_equals_iwae_model_gradient_in_expectation():
    # model parameters get the plain IWAE gradient; check on a learnable prior mean
    n = 100_000
    x = torch.full((n, 1), 1.5)

    def model(x):
        mu = pyro.param("mu", torch.tensor(0.2))
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(mu, 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x[:, 0])

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(0.8, 0.6))

    grads = {}
    for name in ("iwae:5", "dreg:5"):
        pyro.clear_param_store()
        pyro.set_rng_seed(3)
        objectives.get(name).differentiable_loss(model, guide, x).backward()
        grads[name] = pyro.param("mu").grad.item() / n
    assert grads["dreg:5"] == pytest.approx(grads["iwae:5"], rel=0.05)


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


def test_get_parses_names_and_rejects_bad_ones():
    assert objectives.get("iwae:7").num_particles == 7
    assert objectives.get("iwae", particles=3).num_particles == 3
    assert objectives.get("renyi:0.25").alpha == 0.25
    assert isinstance(objectives.get("iwae-dreg:4"), objectives.DReG_ELBO)
    elbo = objectives.trace()
    assert objectives.get(elbo) is elbo
    with pytest.raises(ValueError, match="valid choices: trace, meanfield, iwae"):
        objectives.get("elbo2")
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        objectives.iwae(0)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        objectives.get("iwae:-2")
    with pytest.raises(ValueError, match="k >= 2"):
        objectives.dreg(1)
    with pytest.raises(ValueError, match="alpha"):
        objectives.renyi(1.0)
    with pytest.raises(TypeError):
        objectives.get(3)


def test_iwae_refuses_a_non_reparameterized_guide():
    def model(x):
        c = pyro.sample("c", dist.Bernoulli(0.5))
        pyro.sample("x", dist.Normal(c, 1.0), obs=x[0, 0])

    def guide(x):
        pyro.sample("c", dist.Bernoulli(pyro.param("p", torch.tensor(0.5))))

    with pytest.raises(ValueError, match="not reparameterizable.*graph"):
        objectives.iwae(3).differentiable_loss(model, guide, torch.zeros(1, 1))


def test_latent_scale_weights_only_latent_sites():
    x = normal_normal_data()
    pyro.param("loc", torch.tensor(0.1))
    pyro.param("scale", torch.tensor(0.5), constraint=torch.distributions.constraints.positive)
    mf = objectives.meanfield()

    def loss(weight):
        pyro.set_rng_seed(1)  # the same z in each call
        with objectives.LatentScale(weight):
            return mf.differentiable_loss(normal_normal_model, normal_normal_guide, x).item()

    full, recon, double = loss(1.0), loss(0.0), loss(2.0)
    kl = full - recon
    assert kl > 0
    assert double == pytest.approx(recon + 2 * kl, rel=1e-5)


def test_dreg_guide_gradient_vanishes_at_the_exact_posterior_even_for_an_autoguide():
    # AutoNormal samples an auxiliary z_unconstrained, then z from it: the latents depend on
    # each other. At the exact posterior every log weight is log p(x) whatever z is, so the
    # pathwise DReG gradient is exactly zero; the plain IWAE guide gradient is not.
    from pyro.infer.autoguide import AutoNormal

    x = normal_normal_data()
    loc, scale, _ = normal_normal_posterior(x)
    guide = AutoNormal(normal_normal_model)
    guide(x)
    guide.locs.z = torch.tensor(loc)
    guide.scales.z = torch.tensor(scale)
    grads = {}
    for name in ("dreg:5", "iwae:5"):
        guide.zero_grad()
        objectives.get(name).differentiable_loss(normal_normal_model, guide, x).backward()
        grads[name] = max(p.grad.abs().max().item() for p in guide.parameters())
    assert grads["dreg:5"] < 1e-5
    assert grads["iwae:5"] > 1e-3


def test_detached_parameters_restores_modules_listed_twice():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    before = list(net.parameters())
    with objectives.detached_parameters([net, net, net[0]]):
        assert not any(p.requires_grad for p in (net[0].weight, net[1].bias))
    after = list(net.parameters())
    assert all(a is b for a, b in zip(before, after)) and all(isinstance(p, torch.nn.Parameter) for p in after)


def test_rws_value_is_the_iwae_bound_and_weights_stay_per_data_point():
    x = normal_normal_data()
    pyro.param("loc", torch.tensor(0.2))
    pyro.param("scale", torch.tensor(0.5), constraint=torch.distributions.constraints.positive)
    pyro.set_rng_seed(3)
    a = objectives.rws(7).loss(normal_normal_model, normal_normal_guide, x)
    pyro.set_rng_seed(3)
    b = objectives.iwae(7).loss(normal_normal_model, normal_normal_guide, x)
    assert a == pytest.approx(b, rel=1e-6)

    # With many particles the guide gradient of each data point is that of the inclusive
    # KL(p(z | x) || q(z)): d/dloc = -(m - loc) / s^2 and d/dlog s = 1 - (v + (m - loc)^2) / s^2,
    # with the posterior N(m, v) = N(1.2, 0.2) of x = 1.5 (each copy weighted on its own).
    loc_g, scale_g = _replicated_gradients(objectives.rws(2000), 200)
    m, v, loc0, s0 = 1.2, 0.2, 0.3, 0.7
    assert loc_g.mean().item() == pytest.approx(-(m - loc0) / s0**2, rel=0.05)
    assert scale_g.mean().item() == pytest.approx(1 - (v + (m - loc0) ** 2) / s0**2, rel=0.05)


def test_rws_refuses_a_single_particle():
    with pytest.raises(ValueError, match="k >= 2"):
        objectives.get("rws:1")


def test_dreg_names_a_guide_it_cannot_rescore():
    from models.vae import VAE

    # an amortized planar flow builds its layers anew for each batch, so nothing can invert them
    vae = VAE(16, 2, (8,), guide_flow="planar", flow_depth=2)
    x = (torch.rand(5, 16) < 0.3).float()
    objectives.iwae(3).differentiable_loss(vae.model, vae.guide, x)  # the IWAE bound itself is fine
    with pytest.raises(ValueError, match="DReG rescores the guide's samples.*invertible flow"):
        objectives.dreg(3).differentiable_loss(vae.model, vae.guide, x)
