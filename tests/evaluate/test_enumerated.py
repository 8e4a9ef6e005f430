"""Held-out ELBO and IWAE-k sum enumerated sites out, as TraceEnum_ELBO does, checked against a
mixture small enough to compute exactly: ELBO <= IWAE-k <= exact log p(x), IWAE-k -> exact."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_gen import evaluate

W = torch.tensor([0.3, 0.7])
MU = torch.tensor([-2.0, 2.0])
S = 0.5
X = torch.tensor([[-2.5], [0.1], [1.7], [3.0]])


def mixture(x):  # component c summed out, no other latent
    with pyro.plate("data", len(x)):
        c = pyro.sample("c", dist.Categorical(W), infer={"enumerate": "parallel"})
        pyro.sample("x", dist.Normal(MU[c], 1.0), obs=x[:, 0])


def empty_guide(x):
    pass


def mixture_prior(x):  # z_n ~ sum_c w_c N(mu_c, 1), x_n ~ N(z_n, S): a VAE with a mixture prior, in one dimension
    with pyro.plate("data", len(x)):
        c = pyro.sample("c", dist.Categorical(W), infer={"enumerate": "parallel"})
        z = pyro.sample("z", dist.Normal(MU[c], 1.0))
        pyro.sample("x", dist.Normal(z, S), obs=x[:, 0])


def z_guide(x):
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(0.8 * x[:, 0], 0.6))


def test_an_empty_guide_with_an_enumerated_assignment_gives_the_exact_log_likelihood():
    exact = torch.logsumexp(W.log() + dist.Normal(MU, 1.0).log_prob(X), -1)
    for est in (evaluate.elbo(mixture, empty_guide, X), evaluate.log_likelihood(mixture, empty_guide, X, k=5),
                evaluate.elbo(mixture, empty_guide, X, num_samples=3)):
        assert est.mean == pytest.approx(exact.mean().item(), abs=1e-5) and est.n == len(X)
    lw = evaluate.per_point_log_weights(mixture, empty_guide, X, 3)
    assert torch.allclose(lw, exact.expand(3, -1), atol=1e-5)


def test_elbo_below_iwae_below_the_exact_log_likelihood_with_the_component_summed_out():
    exact = torch.logsumexp(W.log() + dist.Normal(MU, math.sqrt(1 + S**2)).log_prob(X), -1)
    pyro.set_rng_seed(0)
    elbo = evaluate.elbo(mixture_prior, z_guide, X, num_samples=500)
    iwae = evaluate.log_likelihood(mixture_prior, z_guide, X, k=5000)
    # a guide that is not the posterior leaves a clear gap; IWAE-5000 closes it to Monte Carlo error
    assert elbo.mean < iwae.mean - 0.1
    assert iwae.mean == pytest.approx(exact.mean().item(), abs=0.02)
    # per point too: sampling c from its prior instead would put IWAE-k below the ELBO
    lw = evaluate.per_point_log_weights(mixture_prior, z_guide, X, 2000).double()
    per_point = torch.logsumexp(lw, 0) - math.log(2000)
    assert (per_point - exact.double()).abs().max() < 0.05
    assert (lw.mean(0) < per_point).all()
