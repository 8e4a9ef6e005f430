"""AIS and BDMC against exact log-likelihoods: pPCA, a global latent, a constrained latent."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from models.ppca import PPCA, synthetic_data
from pyro_gen.evaluate import ais, annealing_schedule, bdmc


@pytest.fixture(scope="module")
def ppca():
    """pPCA with its true parameters (6-d, 2 latents, sigma 0.5): exact log p(x) in closed form."""
    x, truth = synthetic_data(30, 6, 2, seed=0)
    torch.manual_seed(0)
    model = PPCA(6, 2)
    with torch.no_grad():
        model.W.copy_(truth["W"]), model.mu.copy_(truth["mu"]), model.log_sigma.fill_(truth["sigma"].log())
    return model, x


def test_ais_from_the_prior_is_within_005_nats_of_exact_ppca(ppca):
    model, x = ppca
    exact = model.exact_log_likelihood(x)
    result = ais(model.model, "prior", x, steps=300, chains=64, seed=0)
    err = (result.per_point - exact).mean().item()
    assert abs(err) < 0.05, err
    assert ((result.per_point - exact).abs() < 0.05 + 4 * result.se).all()  # each point, within its own SE
    assert result.log_weights.shape == (64, 30) and result.se.shape == (30,) and (result.se > 0).all()
    assert 0.5 < result.acceptance < 0.95  # the step size adapted towards 0.65
    assert result.estimate.n == 30 and result.estimate.mean == pytest.approx(result.per_point.mean().item())


def test_ais_tightens_with_steps_and_a_perfect_guide_needs_almost_none(ppca):
    model, x = ppca
    exact = model.exact_log_likelihood(x).mean().item()
    gaps = [exact - ais(model.model, "prior", x, steps=s, chains=16, seed=1).estimate.mean for s in (3, 30, 300)]
    assert gaps[0] > gaps[1] > abs(gaps[2]) and gaps[0] > 1.0
    exact_guide = PPCA(6, 2)
    exact_guide.load_state_dict(model.state_dict())
    exact_guide.set_exact_guide()
    # start = the exact posterior: every weight is p(x) exactly, whatever the moves
    res = ais(exact_guide.model, exact_guide.guide, x, steps=5, chains=4, seed=0)
    assert (res.per_point - exact_guide.exact_log_likelihood(x)).abs().max() < 1e-4


def test_bdmc_brackets_the_exact_value_and_tightens_with_steps(ppca):
    model, x = ppca
    sandwiches = {s: bdmc(model.model, "prior", x, steps=s, chains=8, seed=0) for s in (10, 100)}
    for s, b in sandwiches.items():
        exact = model.exact_log_likelihood(b.data[0]).mean().item()
        assert b.lower.estimate.mean < exact < b.upper.estimate.mean, (s, b.lower.estimate, exact, b.upper.estimate)
        assert b.data[0].shape == x.shape and not torch.equal(b.data[0], x)  # simulated, not the given data
    assert 0 < sandwiches[100].gap < 0.5 * sandwiches[10].gap


def test_chunks_of_chains_and_of_points_give_the_same_estimator(ppca):
    model, x = ppca
    whole = ais(model.model, "prior", x, steps=30, chains=16, seed=0)
    chunked = ais(model.model, "prior", x, steps=30, chains=16, seed=1, max_chains_per_pass=8, batch_size=15)
    assert chunked.log_weights.shape == (16, 30)
    se = math.hypot(whole.se.norm().item(), chunked.se.norm().item()) / 30  # of the difference of the means
    assert abs(chunked.estimate.mean - whole.estimate.mean) < 4 * se + 0.02


def test_a_global_latent_scores_the_whole_data_set():
    """loc ~ N(0, 1), x_n ~ N(loc, 1): log p(x_1..N) is a multivariate normal with covariance I + 11^T."""
    x = torch.tensor([[0.3], [1.1], [-0.4], [0.8]])

    def model(x):
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x[:, 0])

    exact = dist.MultivariateNormal(torch.zeros(4), torch.eye(4) + torch.ones(4, 4)).log_prob(x[:, 0]).item()
    result = ais(model, "prior", x, steps=200, chains=32, seed=0)
    assert result.per_point.shape == (1,) and result.log_weights.shape == (32, 1)
    assert result.estimate.mean == pytest.approx(exact / 4, abs=0.01)


def test_a_constrained_latent_moves_in_unconstrained_space():
    """rate ~ Gamma(2, 1), x ~ Poisson(rate): p(x) is negative binomial, exact."""
    x = torch.tensor([[0.0], [3.0], [7.0]])

    def model(x):
        with pyro.plate("data", len(x)):
            rate = pyro.sample("rate", dist.Gamma(2.0, 1.0))
            pyro.sample("x", dist.Poisson(rate), obs=x[:, 0])

    exact = dist.NegativeBinomial(total_count=2.0, probs=0.5).log_prob(x[:, 0])
    result = ais(model, "prior", x, steps=300, chains=64, seed=0)
    assert ((result.per_point - exact).abs() < 0.02 + 4 * result.se).all(), (result.per_point, exact, result.se)
    assert (result.se < 0.05).all()


def test_annealing_schedules():
    for name in ("sigmoid", "linear"):
        b = annealing_schedule(50, name)
        assert b[0] == 0 and b[-1] == 1 and (b.diff() > 0).all() and len(b) == 51
    sig = annealing_schedule(100, "sigmoid")
    assert sig[1] < 0.01 and 1 - sig[-2] < 0.01  # small steps at both ends
    with pytest.raises(ValueError, match="unknown schedule 'cosine'; valid choices: sigmoid, linear"):
        annealing_schedule(10, "cosine")


def test_bad_input_is_named():
    def discrete(x):
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(c, 1.0), obs=x[:, 0])

    x = torch.zeros(3, 1)
    with pytest.raises(ValueError, match="latent site 'c' is discrete.*enumeration"):
        ais(discrete, "prior", x, steps=5)
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got 0"):
        ais(discrete, "prior", x, steps=0)
    with pytest.raises(ValueError, match="chains must be an integer >= 1"):
        ais(discrete, "prior", x, chains=0)
    with pytest.raises(ValueError, match="'prior' \\(or None\\) or a guide"):
        ais(discrete, "posterior", x)

    def no_latents(x):
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(0.0, 1.0), obs=x[:, 0])

    with pytest.raises(ValueError, match="no latent sample sites"):
        ais(no_latents, "prior", x)
    with pytest.raises(ValueError, match="unknown option\\(s\\) leapfrogs; valid choices"):
        bdmc(no_latents, "prior", x, leapfrogs=3)


def test_leaves_the_global_rng_alone_when_seeded(ppca):
    model, x = ppca
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = ais(model.model, "prior", x[:3], steps=5, chains=2, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    b = ais(model.model, "prior", x[:3], steps=5, chains=2, seed=7)
    assert torch.equal(a.log_weights, b.log_weights)
    assert math.isfinite(a.estimate.mean)
