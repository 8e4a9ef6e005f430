"""Simulation-based calibration passes for exact inference and fails for a miscalibrated one."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_gen.diagnostics import sbc as S
from tests.exact import A, B, beta_bernoulli_data, beta_bernoulli_model, normal_normal_data, normal_normal_model, \
    normal_normal_posterior


def _normal_infer(scale_factor=1.0, shift=0.0, draws=99):
    def infer(x):
        loc, sd, _ = normal_normal_posterior(x)
        return {"z": loc + shift * sd + scale_factor * sd * torch.randn(draws)}

    return infer


def test_exact_posterior_passes_and_halved_scale_fails():
    x = normal_normal_data(8)
    good = S.sbc(normal_normal_model, _normal_infer(), x, num_simulations=200, seed=0)
    bad = S.sbc(normal_normal_model, _normal_infer(scale_factor=0.5), x, num_simulations=200, seed=0)
    assert good.ranks["z"].shape == (200,) and good.num_draws == 99
    assert good.ranks["z"].min() >= 0 and good.ranks["z"].max() <= 99
    assert good.passed() and good.p_values()["z"] > 0.01
    # a guide half as wide piles ranks at both ends: the check can fail, and does
    assert not bad.passed() and bad.p_values()["z"] < 1e-6
    # halving the scale is symmetric: VSBC (a test of asymmetry) does not flag it ...
    assert bad.vsbc_p_values()["z"] > 0.01
    # ... but a biased posterior it does, as does the rank test
    biased = S.sbc(normal_normal_model, _normal_infer(shift=1.0), x, num_simulations=200, seed=0)
    assert biased.vsbc_p_values()["z"] < 1e-6 and not biased.passed()


def test_conjugate_beta_bernoulli_posterior_is_calibrated():
    x = beta_bernoulli_data()

    def infer(x):
        heads = x.sum()
        return {"p": dist.Beta(A + heads, B + len(x) - heads).sample((63,))}

    res = S.sbc(beta_bernoulli_model, infer, x, num_simulations=160, seed=1)
    assert res.bins() == 16  # divides L + 1 = 64 and keeps 10 expected ranks a bin
    assert res.passed(), res.summary()


def test_guide_draws_and_vector_sites():
    def model(x):
        w = pyro.sample("w", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(x.new_zeros(x.shape[0]) + w.sum(), 1.0), obs=x[:, 0])

    def infer(x):
        # the exact posterior of w: Gaussian with precision I + n 11^T
        n, s = x.shape[0], x.sum()
        precision = torch.eye(3) + n * torch.ones(3, 3)
        cov = torch.linalg.inv(precision)
        mean = cov @ torch.full((3,), s.item())
        return {"w": torch.distributions.MultivariateNormal(mean, cov).sample((49,))}

    res = S.sbc(model, infer, torch.zeros(5, 1), num_simulations=100, seed=2)
    assert res.ranks["w"].shape == (100, 3)
    assert set(res.p_values()) == {"w[0]", "w[1]", "w[2]"} and res.passed()

    def guide(x):
        pyro.sample("w", dist.Normal(torch.zeros(3), 1.0).to_event(1))

    draws = S.guide_draws(guide, torch.zeros(5, 1), num_samples=7)
    assert draws["w"].shape == (7, 3)


def test_figures_are_written(tmp_path):
    x = normal_normal_data(8)
    res = S.sbc(normal_normal_model, _normal_infer(), x, num_simulations=40, seed=0)
    for f in (res.rank_histogram(tmp_path / "ranks.png"), res.ecdf_plot(tmp_path / "ecdf.png")):
        assert f.stat().st_size > 5000


def test_bad_input_is_named():
    x = normal_normal_data(8)
    with pytest.raises(ValueError, match="num_simulations must be an integer >= 10"):
        S.sbc(normal_normal_model, _normal_infer(), x, num_simulations=3)
    with pytest.raises(ValueError, match="infer returned \\['z'\\], the model's latents are"):
        S.sbc(normal_normal_model, _normal_infer(), x, num_simulations=10, sites=["w"])
    with pytest.raises(ValueError, match="draws have shape \\(9, 2\\), expected \\(L, \\)"):
        S.sbc(normal_normal_model, lambda x: {"z": torch.zeros(9, 2)}, x, num_simulations=10)
    with pytest.raises(ValueError, match="pass data_from="):
        S.sbc(normal_normal_model, _normal_infer(), torch.zeros(3, 2), num_simulations=10)


def test_sbc_of_a_variational_procedure_runs_end_to_end():
    x = normal_normal_data(8)
    res = S.sbc(normal_normal_model, S.vi_procedure(normal_normal_model, steps=150, num_draws=19), x,
                num_simulations=12, seed=3)
    assert res.ranks["z"].shape == (12,) and res.num_draws == 19
    # on a conjugate model a Gaussian guide is exact: the ranks show no gross miscalibration
    assert res.p_values()["z"] > 1e-3
