"""DReG (pyro_gen.infer.objectives.dreg) against exact answers: unbiased with lower variance,
the IWAE model gradient, a zero guide gradient at the exact posterior."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_gen import objectives
from tests.exact import replicated_gradients, normal_normal_data, normal_normal_model, normal_normal_posterior


def test_dreg_gradient_is_unbiased_and_has_lower_variance():
    k = 5
    ref_loc, ref_scale = replicated_gradients(objectives.iwae(k), 400_000)
    dreg_loc, dreg_scale = replicated_gradients(objectives.dreg(k), 100_000)
    iwae_loc, iwae_scale = replicated_gradients(objectives.iwae(k), 100_000)
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


def test_dreg_names_a_guide_it_cannot_rescore():
    from models.vae import VAE

    # an amortized planar flow builds its layers anew for each batch, so nothing can invert them
    vae = VAE(16, 2, (8,), guide_flow="planar", flow_depth=2)
    x = (torch.rand(5, 16) < 0.3).float()
    objectives.iwae(3).differentiable_loss(vae.model, vae.guide, x)  # the IWAE bound itself is fine
    with pytest.raises(ValueError, match="DReG rescores the guide's samples.*invertible flow"):
        objectives.dreg(3).differentiable_loss(vae.model, vae.guide, x)
