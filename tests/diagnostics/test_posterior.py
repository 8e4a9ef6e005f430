"""PSIS k-hat, ArviZ InferenceData and restart R-hat against models with exact posteriors."""

import math
import warnings
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_gen import diagnostics as D
from tests.exact import LinearGaussian, normal_normal_data, normal_normal_model, normal_normal_posterior


def _fixed_guide(loc, scale):
    def guide(x):
        pyro.sample("z", dist.Normal(torch.tensor(float(loc)), torch.tensor(float(scale))))

    return guide


@pytest.fixture
def nn_data():
    x = normal_normal_data(8)
    return x, normal_normal_posterior(x)


def test_joint_log_weights_at_the_exact_posterior_equal_the_evidence(nn_data):
    x, (loc, sd, log_evidence) = nn_data
    pyro.set_rng_seed(0)
    log_p, log_q = D.joint_log_weights(normal_normal_model, _fixed_guide(loc, sd), x, num_samples=500)
    assert log_p.shape == log_q.shape == (500,)
    # every importance weight p(x, z) / q(z) equals p(x) when q is the posterior
    assert torch.allclose(log_p - log_q, torch.full((500,), log_evidence, dtype=torch.float64), atol=1e-4)
    # a wrong guide: weights vary and their mean is below the evidence (Jensen)
    log_p, log_q = D.joint_log_weights(normal_normal_model, _fixed_guide(loc + sd, sd), x, num_samples=500)
    assert (log_p - log_q).std() > 0.1 and (log_p - log_q).mean() < log_evidence


def test_psis_khat_separates_the_exact_guide_from_a_narrow_one(nn_data):
    x, (loc, sd, _) = nn_data
    pyro.set_rng_seed(1)
    exact = D.psis(normal_normal_model, _fixed_guide(loc, sd), x, num_samples=4000)
    narrow = D.psis(normal_normal_model, _fixed_guide(loc, sd / 4), x, num_samples=4000)
    assert not exact.per_point and exact.khat < 0.5
    assert narrow.khat > 0.7
    assert narrow.summary()["share_above_0.7"] == 1.0 and exact.summary()["share_above_0.5"] == 0.0


def test_psis_per_point_for_an_amortized_guide():
    net = LinearGaussian(d=5, q=2).exact_guide()
    x = net.sample_data(40)
    pyro.set_rng_seed(2)
    exact = D.psis(net.model, net.guide, x, num_samples=1000, per_point=True)
    assert exact.per_point and exact.khat.shape == (40,) and exact.share_above(0.5) == 0.0
    with torch.no_grad():
        net.log_scale -= math.log(4.0)  # every q(z | x_n) four times too narrow
    narrow = D.psis(net.model, net.guide, x, num_samples=1000, per_point=True)
    # the true k is 1 - 1/16 per point; estimates from 1000 draws scatter around it
    assert np.median(narrow.khat) > 0.7 and narrow.share_above(0.5) > 0.9
    assert list(narrow.worst(3)) == list(np.argsort(-narrow.khat)[:3])


def test_psis_rejects_bad_input(nn_data):
    x, (loc, sd, _) = nn_data
    with pytest.raises(ValueError, match="num_samples must be an integer >= 2"):
        D.psis(normal_normal_model, _fixed_guide(loc, sd), x, num_samples=1)
    with pytest.raises(ValueError, match="NaN or inf"):
        D.psis_khat(torch.tensor([0.0, float("nan")] * 10))
    with pytest.raises(ValueError, match="S >= 10"):
        D.psis_khat(torch.zeros(5))
    with pytest.raises(ValueError, match="only argument"):
        D.psis(normal_normal_model, _fixed_guide(loc, sd), x, x, per_point=True)


def test_inference_data_groups_shapes_and_netcdf_round_trip(nn_data, tmp_path):
    az = pytest.importorskip("arviz")
    x, (loc, sd, log_evidence) = nn_data
    pyro.set_rng_seed(3)
    idata = D.to_inference_data(normal_normal_model, _fixed_guide(loc, sd), x, num_samples=400)
    assert idata.posterior["z"].shape == (1, 400)
    idata = D.to_inference_data(normal_normal_model, _fixed_guide(loc, sd), x, num_samples=4000)
    assert set(idata.groups()) == {"posterior", "sample_stats", "log_likelihood", "posterior_predictive",
                                   "observed_data"}
    z = idata.posterior["z"].values
    assert abs(z.mean() - loc) < 4 * sd / math.sqrt(4000) and abs(z.std() - sd) < 0.05 * sd
    assert idata.log_likelihood["x"].shape == (1, 4000, 8)
    assert idata.posterior_predictive["x"].shape == (1, 4000, 8)
    np.testing.assert_allclose(idata.observed_data["x"].values, x[:, 0].numpy())
    # log-likelihood per point is log N(x_n | z, sigma) at each drawn z
    ll = torch.distributions.Normal(torch.as_tensor(z[0])[:, None], 0.5).log_prob(x[:, 0].double())
    np.testing.assert_allclose(idata.log_likelihood["x"].values[0], ll.numpy(), rtol=1e-5)
    lw = idata.sample_stats["log_weight"].values[0]
    np.testing.assert_allclose(lw, log_evidence, atol=1e-4)

    path = D.save_inference_data(idata, tmp_path / "run" / "posterior.nc")
    back = D.load_inference_data(path)
    np.testing.assert_array_equal(back.posterior["z"].values, z)
    assert not list(path.parent.glob(".*tmp*"))  # the temporary file is gone
    # PSIS-LOO from these draws against the exact leave-one-out predictive densities
    n, s2 = len(x), 0.5**2
    exact = 0.0
    for i in range(n):
        rest = torch.cat([x[:i, 0], x[i + 1:, 0]]).double()
        prec = 1.0 + (n - 1) / s2
        exact += torch.distributions.Normal(rest.sum() / s2 / prec, math.sqrt(1 / prec + s2)).log_prob(
            x[i, 0].double()).item()
    with warnings.catch_warnings():  # a large Pareto k on one of 8 points would only warn
        warnings.simplefilter("ignore", UserWarning)
        loo = az.loo(back)
    assert abs(loo.elpd_loo - exact) < 0.05, (loo.elpd_loo, exact)


def test_inference_data_local_latents_need_asking():
    net = LinearGaussian(d=5, q=2)
    x = net.sample_data(6)
    with pytest.raises(ValueError, match="include_local=True"):
        D.to_inference_data(net.model, net.guide, x, num_samples=10)
    idata = D.to_inference_data(net.model, net.guide, x, num_samples=10, include_local=True)
    assert idata.posterior["z"].shape == (1, 10, 6, 2)
    assert idata.log_likelihood["x"].shape == (1, 10, 6)


def test_missing_inference_data_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no InferenceData file at .*nope.nc"):
        D.load_inference_data(tmp_path / "nope.nc")


def test_restart_rhat_flags_restarts_that_disagree():
    g = torch.Generator().manual_seed(0)
    agree = [{"z": torch.randn(500, 2, generator=g)} for _ in range(4)]
    disagree = [{"z": torch.randn(500, 2, generator=g) + 3.0 * i} for i in range(4)]
    good, bad = D.restart_convergence(agree)["z"], D.restart_convergence(disagree)["z"]
    assert good["r_hat"].shape == (2,) and (good["r_hat"] < 1.01).all() and (good["ess_bulk"] > 1000).all()
    assert (bad["r_hat"] > 1.5).all() and (bad["ess_bulk"] < 50).all()
    with pytest.raises(ValueError, match="at least 2 restarts"):
        D.restart_convergence(agree[:1])
    with pytest.raises(ValueError, match="different shapes"):
        D.restart_convergence([{"z": torch.zeros(5, 2)}, {"z": torch.zeros(6, 2)}])
    with pytest.raises(ValueError, match="restart 1 has sites"):
        D.restart_convergence([{"z": torch.zeros(5)}, {"w": torch.zeros(5)}])


def test_posterior_predictive_check_flags_a_misfit(nn_data, tmp_path):
    x, (loc, sd, _) = nn_data
    pyro.set_rng_seed(4)
    good = D.posterior_predictive_check(D.to_inference_data(normal_normal_model, _fixed_guide(loc, sd), x,
                                                            num_samples=2000), tmp_path / "ppc.png")
    # a posterior far off the data: replicated means sit above the observed one
    bad = D.posterior_predictive_check(D.to_inference_data(normal_normal_model, _fixed_guide(loc + 2.0, sd), x,
                                                           num_samples=2000))
    assert 0.2 < good["x:mean"]["p_value"] < 0.8
    assert bad["x:mean"]["p_value"] > 0.99
    assert Path(good["figure"]).stat().st_size > 5000 and "figure" not in bad


def test_diagnostics_take_a_torch_dataset_or_dataloader_as_the_data():
    from torch.utils.data import DataLoader, TensorDataset

    net = LinearGaussian(d=5, q=2).exact_guide()
    x = net.sample_data(40)
    results = []
    for data in (x, TensorDataset(x), DataLoader(TensorDataset(x), batch_size=16)):
        pyro.set_rng_seed(2)
        results.append(D.psis(net.model, net.guide, data, num_samples=200, per_point=True).khat)
    assert np.array_equal(results[0], results[1]) and np.array_equal(results[0], results[2])
    draws = D.posterior_draws(net.model, net.guide, DataLoader(TensorDataset(x), batch_size=16), num_samples=10,
                              include_local=True)
    assert draws["z"].shape[:2] == (10, 40)
