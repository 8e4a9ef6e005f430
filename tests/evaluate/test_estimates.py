"""Evaluation against the exact log-likelihood of a linear-Gaussian model."""

import math

import pytest
import torch

from pyro_gen import evaluate
from tests.exact import LinearGaussian


@pytest.fixture
def lg():
    return LinearGaussian(d=5, q=2)


def test_exact_guide_gives_the_exact_log_likelihood(lg):
    lg.exact_guide()
    x = lg.sample_data(200)
    exact = lg.exact_log_likelihood(x).mean().item()
    ll = evaluate.log_likelihood(lg.model, lg.guide, x, k=20)
    el = evaluate.elbo(lg.model, lg.guide, x)
    assert ll.mean == pytest.approx(exact, abs=1e-4)
    assert el.mean == pytest.approx(exact, abs=1e-4)
    assert ll.n == 200 and ll.se > 0


def test_bounds_are_ordered_and_tighten_with_k(lg):
    x = lg.sample_data(200)  # the guide is untrained: a loose bound
    exact = lg.exact_log_likelihood(x)
    el = evaluate.elbo(lg.model, lg.guide, x, num_samples=50)
    lls = [evaluate.log_likelihood(lg.model, lg.guide, x, k=k) for k in (1, 10, 100, 5000)]
    assert el.mean == pytest.approx(lls[0].mean, abs=4 * lls[0].se)
    for a, b in zip(lls, lls[1:]):
        assert b.mean > a.mean
    assert lls[-1].mean < exact.mean().item()
    assert exact.mean().item() - lls[-1].mean < 0.25 * (exact.mean().item() - lls[0].mean)


def test_chunking_keeps_memory_bounded_and_agrees(lg):
    x = lg.sample_data(50)
    torch.manual_seed(0)
    whole = evaluate.log_likelihood(lg.model, lg.guide, x, k=5000, batch_size=50)
    chunked = evaluate.log_likelihood(lg.model, lg.guide, x, k=5000, batch_size=10, max_particles_per_pass=64)
    assert chunked.mean == pytest.approx(whole.mean, abs=3 * math.hypot(whole.se, chunked.se) / 5 + 0.05)


def test_per_point_weights_shape_and_bad_k(lg):
    x = lg.sample_data(7)
    assert evaluate.per_point_log_weights(lg.model, lg.guide, x, 3).shape == (3, 7)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        evaluate.log_likelihood(lg.model, lg.guide, x, k=0)
    with pytest.raises(ValueError, match="NaN"):
        evaluate.log_likelihood(lg.model, lg.guide, torch.full((2, 5), float("nan")), k=2)


def test_active_units_and_kl_per_dimension(lg):
    lg.exact_guide()
    with torch.no_grad():
        lg.A[1].zero_()  # the guide ignores x in dimension 1: its mean is constant
        lg.c[1] = 0.3
    x = lg.sample_data(300)
    au = evaluate.active_units(lg.model, lg.guide, x)
    assert au["active"] == 1 and au["total"] == 2 and au["variance"][1] == pytest.approx(0.0, abs=1e-10)
    kl = evaluate.kl_per_dim(lg.model, lg.guide, x)
    loc = x @ lg.A.T.detach() + lg.c.detach()
    var = (2 * lg.log_scale.detach()).exp()
    expected = 0.5 * (var + loc**2 - 1 - var.log()).mean(0)
    assert kl.tolist() == pytest.approx(expected.tolist(), rel=1e-4)
    with pytest.raises(ValueError, match="no latent site 'w'"):
        evaluate.active_units(lg.model, lg.guide, x, site="w")
