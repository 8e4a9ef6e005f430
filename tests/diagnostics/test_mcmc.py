"""NUTS against conjugate posteriors, and the VI-against-NUTS comparison."""

import itertools
import math

import pytest
import torch

from pyro_gen.diagnostics import mcmc
from tests.exact import normal_normal_data, normal_normal_model, normal_normal_posterior


@pytest.fixture(scope="module")
def nuts_run():
    x = normal_normal_data(8)
    return x, mcmc.nuts(normal_normal_model, x, num_samples=400, warmup_steps=200, num_chains=2, seed=0)


def test_nuts_recovers_the_conjugate_posterior(nuts_run):
    x, res = nuts_run
    loc, sd, _ = normal_normal_posterior(x)
    z = res.draws["z"]
    assert z.shape == (800,)
    assert res.converged(r_hat_max=1.02, ess_min=200)
    assert abs(z.mean().item() - loc) < 4 * sd / math.sqrt(res.ess_bulk["z"])
    assert z.std().item() == pytest.approx(sd, rel=0.12)
    assert res.idata.posterior["z"].shape == (2, 400)


def test_compare_posteriors_measures_vi_against_nuts(nuts_run, tmp_path):
    x, res = nuts_run
    loc, sd, _ = normal_normal_posterior(x)
    g = torch.Generator().manual_seed(0)
    good = {"z": loc + sd * torch.randn(4000, generator=g)}
    narrow_shifted = {"z": loc + sd + 0.5 * sd * torch.randn(4000, generator=g)}
    (row_good,) = mcmc.compare_posteriors(good, res.draws)
    (row_bad,) = mcmc.compare_posteriors(narrow_shifted, res.draws)
    assert abs(row_good["z_mean"]) < 0.2 and row_good["sd_ratio"] == pytest.approx(1.0, abs=0.15)
    assert row_bad["z_mean"] == pytest.approx(1.0, abs=0.2) and row_bad["sd_ratio"] == pytest.approx(0.5, abs=0.1)
    path = mcmc.interval_plot({"NUTS": res.draws, "good": good, "bad": narrow_shifted}, tmp_path / "iv.png")
    assert path.stat().st_size > 5000
    with pytest.raises(ValueError, match="lack the sites \\['z'\\]"):
        mcmc.compare_posteriors({"w": good["z"]}, res.draws)


def test_nuts_rejects_bad_settings():
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        mcmc.nuts(normal_normal_model, normal_normal_data(3), num_samples=0)


def test_nuts_on_a_small_ppca_matches_the_exact_posterior_and_the_exact_guide():
    from models.ppca import PPCA, synthetic_data
    from pyro_gen.exact.linear_gaussian import exact_posterior

    x, truth = synthetic_data(6, x_dim=5, z_dim=2, seed=0)
    exact_net = PPCA(5, 2)
    with torch.no_grad():
        exact_net.W.copy_(truth["W"] @ torch.tensor([[0.8, 0.6], [-0.6, 0.8]]))  # rotated: a correlated posterior
        exact_net.mu.copy_(truth["mu"])
        exact_net.log_sigma.fill_(0.0)
    exact_net.set_exact_guide()
    res = mcmc.nuts(exact_net.model, x, num_samples=300, warmup_steps=200, num_chains=2, seed=1)
    post = exact_posterior(x, exact_net.W, exact_net.mu, 1.0)
    z = res.draws["z"].double()
    assert z.shape == (600, 6, 2) and res.converged(r_hat_max=1.05, ess_min=100)
    se = post.stddev / math.sqrt(res.ess_bulk["z"].min())
    assert ((z.mean(0) - post.mean).abs() < 4.5 * se).all()
    # the guide set to the exact posterior agrees with NUTS, parameter by parameter
    from pyro_gen.diagnostics.sbc import guide_draws

    good = guide_draws(exact_net.guide, x, num_samples=2000)
    rows = mcmc.compare_posteriors(good, res.draws)
    assert len(rows) == 12 and all(abs(r["z_mean"]) < 0.3 and abs(r["sd_ratio"] - 1) < 0.2 for r in rows)


@pytest.mark.slow
def test_nuts_with_enumerated_states_on_a_small_hmm_agrees_with_vi(one_thread):
    from models.hmm import HMM, synthetic
    from pyro_gen import fit
    from pyro_gen.diagnostics.sbc import guide_draws

    x, lengths, truth = synthetic(n=6, length=30, seed=0)
    net = HMM(3, 2, emission="gaussian", params="variational")
    fit(net.model, net.guide, (x, lengths), objective="enum", epochs=300, batch_size=6, lr=0.05, progress=False)
    vi = guide_draws(net.guide, x, lengths, num_samples=1000)
    start = {k: v.mean(0) for k, v in vi.items()}
    res = mcmc.nuts(net.model, x, lengths, num_samples=50, warmup_steps=50, num_chains=2, max_plate_nesting=1,
                    init_values=start, seed=0)
    # started on VI's labelling of the states, both chains stay on it
    assert res.r_hat["loc"].max() < 1.1
    rows = {r["param"]: r for r in mcmc.compare_posteriors({"loc": vi["loc"]}, {"loc": res.draws["loc"]})}
    # the emission means are well identified: VI's posterior means sit within a posterior SD of NUTS's
    assert all(abs(r["z_mean"]) < 1.0 for r in rows.values()), rows
    # and both recover the truth up to the state permutation
    loc = res.draws["loc"].mean(0)
    err = min((loc[list(p)] - truth["loc"]).abs().max().item() for p in itertools.permutations(range(3)))
    assert err < 0.3
