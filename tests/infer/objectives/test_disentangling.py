"""The disentangling objectives: beta-TCVAE's total correlation against the exact aggregate
posterior, FactorVAE's discriminator against a known total correlation, controlled capacity's
value and schedule, and each against the plain ELBO where they reduce to it."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from scipy.special import logsumexp
from scipy.stats import norm

from pyro_gen import objectives
from pyro_gen.infer.objectives import BetaTC_ELBO, CapacityELBO, FactorVAE_ELBO, permute_dims, total_correlation

N, D = 12, 3


@pytest.fixture
def pair():
    """A per-point Gaussian guide with its own (loc, scale) for each of N points, and a linear-Gaussian model."""
    pyro.clear_param_store()
    g = torch.Generator().manual_seed(0)
    loc0, scale0 = torch.randn(N, D, generator=g), 0.3 + torch.rand(N, D, generator=g)
    x = torch.randn(N, generator=g)

    def model(x):
        w = pyro.param("w", torch.ones(D))
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([D]).to_event(1))
            pyro.sample("x", dist.Normal(z @ w, 1.0), obs=x)

    def guide(x):
        loc = pyro.param("loc", loc0.clone())
        scale = pyro.param("scale", scale0.clone(), constraint=dist.constraints.positive)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    yield model, guide, x
    pyro.clear_param_store()


def _exact_tc(z, loc, scale):
    """log q(z_i) - sum_d log q(z_id) under the aggregate posterior q(z) = mean_j q(z | x_j), by loops."""
    n, d = z.shape
    out = []
    for i in range(n):
        per = np.array([[norm.logpdf(z[i, k], loc[j, k], scale[j, k]) for k in range(d)] for j in range(n)])
        joint = logsumexp(per.sum(1)) - math.log(n)
        marginals = sum(logsumexp(per[:, k]) - math.log(n) for k in range(d))
        out.append(joint - marginals)
    return np.array(out)


def test_total_correlation_is_exact_when_the_batch_is_the_data_set(pair):
    model, guide, x = pair
    tr = poutine.trace(guide).get_trace(x)
    tc = total_correlation(tr)
    z = tr.nodes["z"]["value"].detach().numpy()
    expected = _exact_tc(z, pyro.param("loc").detach().numpy(), pyro.param("scale").detach().numpy())
    np.testing.assert_allclose(tc.detach().numpy(), expected, rtol=1e-5, atol=1e-5)
    # from a larger data set, the same batch's estimate moves (the others' weights change)
    assert not torch.allclose(total_correlation(tr, dataset_size=10 * N), tc)


def test_beta_tc_is_the_elbo_plus_weighted_tc_with_the_same_draws(pair):
    model, guide, x = pair
    pyro.set_rng_seed(1)
    elbo = Trace_ELBO().differentiable_loss(model, guide, x)
    pyro.set_rng_seed(1)
    same = BetaTC_ELBO(beta=1.0).differentiable_loss(model, guide, x)
    torch.testing.assert_close(same, elbo)
    pyro.set_rng_seed(1)
    loss = BetaTC_ELBO(beta=6.0).differentiable_loss(model, guide, x)
    pyro.set_rng_seed(1)
    tc = total_correlation(poutine.trace(guide).get_trace(x))
    torch.testing.assert_close(loss, elbo + 5.0 * tc.sum())
    # and its gradient is that expression's: the TC term moves the guide
    (g_loss,) = torch.autograd.grad(loss, pyro.param("loc").unconstrained())
    pyro.set_rng_seed(1)
    (g_elbo,) = torch.autograd.grad(Trace_ELBO().differentiable_loss(model, guide, x), pyro.param("loc").unconstrained())
    assert not torch.allclose(g_loss, g_elbo)


def test_training_with_beta_tc_lowers_the_total_correlation():
    """Correlated codes are pushed towards independent ones: q's shared component shrinks."""
    pyro.clear_param_store()
    x = torch.linspace(-2, 2, 32)

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
            pyro.sample("x", dist.Normal(z.sum(-1), 0.3), obs=x)

    def guide(x):
        a = pyro.param("a", torch.tensor([0.5, 0.5]))
        s = pyro.param("s", torch.tensor([0.3, 0.3]), constraint=dist.constraints.positive)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(a * x[:, None], s).to_event(1))

    def tc_after(beta):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.02}), BetaTC_ELBO(beta))
        for _ in range(150):
            svi.step(x)
        with torch.no_grad():
            return torch.stack([total_correlation(poutine.trace(guide).get_trace(x)).mean() for _ in range(20)]).mean()

    plain, weighted = tc_after(1.0), tc_after(20.0)
    assert weighted < plain - 0.2, (plain, weighted)
    pyro.clear_param_store()


def test_beta_tc_refuses_guides_it_cannot_score(pair):
    model, _, x = pair

    def full_cov_guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.MultivariateNormal(torch.zeros(D), torch.eye(D)))

    with pytest.raises(ValueError, match="factorize over the latent dimensions.*'z' is MultivariateNormal"):
        BetaTC_ELBO(6).differentiable_loss(model, full_cov_guide, x)
    with pytest.raises(ValueError, match="beta must be a positive number"):
        objectives.get("betatc:0")
    with pytest.raises(ValueError, match="cannot come from a data set of 5"):
        BetaTC_ELBO(6, dataset_size=5).differentiable_loss(model, pair[1], x)


def test_capacity_value_and_schedule(pair):
    model, guide, x = pair
    elbo = CapacityELBO(capacity=4.0, gamma=10.0, steps=4)
    assert elbo.target == 0.0
    pyro.set_rng_seed(2)
    loss = elbo.differentiable_loss(model, guide, x)
    pyro.set_rng_seed(2)
    tr = poutine.trace(guide).get_trace(x)
    mtr = poutine.trace(poutine.replay(model, trace=tr)).get_trace(x)
    log_lik = mtr.nodes["x"]["fn"].log_prob(x).sum()
    kl = (tr.nodes["z"]["fn"].log_prob(tr.nodes["z"]["value"]) - mtr.nodes["z"]["fn"].log_prob(tr.nodes["z"]["value"]))
    torch.testing.assert_close(loss, -log_lik + 10.0 * N * (kl.mean() - 0.0).abs())
    assert elbo.target == 1.0  # one training call: C = 4 * 1/4
    with torch.no_grad():
        elbo.differentiable_loss(model, guide, x)
    assert elbo.target == 1.0  # evaluation is not a step
    for _ in range(10):
        elbo.differentiable_loss(model, guide, x)
    assert elbo.target == 4.0  # held at the capacity
    other = CapacityELBO(4.0, 10.0, 4)
    other.load_state_dict(elbo.state_dict())
    assert other.target == 4.0 and objectives.describe(other) == "CapacityELBO(capacity=4, gamma=10, steps=4)"
    assert objectives.get("capacity:12").capacity == 12.0


def test_permute_dims_keeps_each_marginal_and_breaks_the_dependence():
    torch.manual_seed(0)
    z = torch.randn(4000, 1).repeat(1, 2)  # perfectly correlated
    p = permute_dims(z)
    assert torch.equal(p[:, 0].sort().values, z[:, 0].sort().values)
    assert abs(np.corrcoef(p.T.numpy())[0, 1]) < 0.05


def test_factorvae_discriminator_estimates_a_known_total_correlation():
    """Codes from a correlated Gaussian (rho = 0.9): TC = -1/2 log(1 - rho^2) = 0.830 nats; the
    discriminator, trained by the objective's own steps, recovers it."""
    pyro.clear_param_store()
    rho = 0.9
    cov = torch.tensor([[1.0, rho], [rho, 1.0]])

    def model(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.MultivariateNormal(torch.zeros(2), cov))
            pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.MultivariateNormal(torch.zeros(2), cov))

    x = torch.zeros(512)
    torch.manual_seed(0)
    elbo = FactorVAE_ELBO(gamma=1.0, hidden=(64, 64), lr=3e-3, betas=(0.9, 0.999))
    for _ in range(600):
        elbo.differentiable_loss(model, guide, x)
    with torch.no_grad():
        z = dist.MultivariateNormal(torch.zeros(2), cov).sample((20000,))
        estimate = elbo.discriminator(z).mean().item()
    assert estimate == pytest.approx(-0.5 * math.log(1 - rho ** 2), abs=0.12)
    assert elbo.last_accuracy > 0.6
    pyro.clear_param_store()


def test_factorvae_gradients_stay_apart_and_state_round_trips(pair):
    model, guide, x = pair
    torch.manual_seed(0)
    elbo = FactorVAE_ELBO(gamma=5.0, hidden=(16,))
    loss = elbo.differentiable_loss(model, guide, x)  # builds D, takes one D step
    before = [p.detach().clone() for p in elbo.discriminator.parameters()]
    elbo.discriminator.zero_grad()
    loss.backward()
    assert all(p.grad is None or not p.grad.abs().sum() for p in elbo.discriminator.parameters())
    assert pyro.param("loc").unconstrained().grad.abs().sum() > 0
    assert all(torch.equal(a, b) for a, b in zip(before, elbo.discriminator.parameters()))
    # the state (weights and Adam's moments) round-trips, and loading draws no random numbers
    other = FactorVAE_ELBO(gamma=5.0, hidden=(16,))
    rng = torch.get_rng_state()
    other.load_state_dict(elbo.state_dict())
    assert torch.equal(torch.get_rng_state(), rng)
    torch.manual_seed(3)
    pyro.set_rng_seed(3)
    a = elbo.differentiable_loss(model, guide, x)
    pyro.set_rng_seed(3)
    b = other.differentiable_loss(model, guide, x)
    torch.testing.assert_close(a, b)
    assert objectives.describe(objectives.get("factorvae:10")) == "FactorVAE_ELBO(gamma=10)"
    with pytest.raises(ValueError, match="gamma must be positive"):
        objectives.get("factorvae:-1")


@pytest.mark.parametrize("objective", ["factorvae:5", "capacity:10", "betatc:4"])
def test_fit_trains_a_vae_with_each_and_a_resumed_run_continues_exactly(objective, tmp_path):
    """The discriminator (with its Adam state) and the capacity's step count are checkpointed with the run."""
    from models.vae import VAE
    from pyro_gen import data, fit

    x = data.load("digits").train[:200]

    def run(epochs, out, resume=False):
        pyro.clear_param_store()
        torch.manual_seed(0)
        vae = VAE(64, 3, (16,))
        elbo = objectives.get(objective)
        result = fit(vae.model, vae.guide, x, objective=elbo, epochs=epochs, batch_size=50, out=out, resume=resume,
                     progress=False, lr=1e-2)
        return vae, elbo, result

    whole, elbo_whole, r = run(3, tmp_path / "a")
    assert all(math.isfinite(h["train_loss"]) for h in r.history)
    run(1, tmp_path / "b")
    resumed, elbo_resumed, _ = run(3, tmp_path / "b", resume=True)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    if hasattr(elbo_whole, "state_dict"):  # factorvae, capacity: their state came back from the checkpoint
        assert elbo_resumed.state_dict().keys() == elbo_whole.state_dict().keys()
    pyro.clear_param_store()


def test_dipvae_covariance_is_the_aggregate_posteriors_and_its_penalty_the_papers(pair):
    model, guide, x = pair
    from pyro_gen.infer.objectives import DIPVAE_ELBO, aggregate_covariance

    tr = poutine.trace(guide).get_trace(x)
    loc, scale = pyro.param("loc").detach().numpy(), pyro.param("scale").detach().numpy()
    # Cov of the mixture (1/N) sum_n N(loc_n, diag scale_n^2), by the law of total covariance
    expected = np.cov(loc.T, bias=True) + np.diag((scale ** 2).mean(0))
    np.testing.assert_allclose(aggregate_covariance(tr).detach().numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(aggregate_covariance(tr, "i").detach().numpy(), np.cov(loc.T, bias=True), rtol=1e-5,
                               atol=1e-6)
    elbo = DIPVAE_ELBO(lambda_od=3.0)
    off = expected - np.diag(np.diag(expected))
    penalty = 3.0 * (off ** 2).sum() + 3.0 * ((np.diag(expected) - 1) ** 2).sum()
    assert elbo.penalty(tr).item() == pytest.approx(penalty, rel=1e-5)
    pyro.set_rng_seed(4)
    loss = elbo.differentiable_loss(model, guide, x)
    pyro.set_rng_seed(4)
    torch.testing.assert_close(loss, Trace_ELBO().differentiable_loss(model, guide, x) + N * elbo.penalty(tr))
    assert DIPVAE_ELBO(1.0, kind="i").lambda_d == 10.0
    with pytest.raises(ValueError, match="valid choices: i, ii"):
        DIPVAE_ELBO(1.0, kind="iii")
    assert objectives.describe(objectives.get("dipvae:5")) == "DIPVAE_ELBO(lambda_od=5, kind=ii)"
