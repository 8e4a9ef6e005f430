"""NUTS against conjugate posteriors, and the VI-against-NUTS comparison."""

import math

import pytest
import torch

from pyro_gen import mcmc
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
