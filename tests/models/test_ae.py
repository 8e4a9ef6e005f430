"""Autoencoders as Pyro programs: the loss is the reconstruction term, the DAE corrupts only while
training, sampling comes from a Gaussian fitted to the codes, and no likelihood is claimed."""

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

from models.ae import Autoencoder, parse_noise
from pyro_gen import evaluate


@pytest.fixture
def x():
    return (torch.rand(32, 64, generator=torch.Generator().manual_seed(0)) < 0.3).float()


def test_every_objective_is_the_reconstruction_loss(x):
    torch.manual_seed(0)
    ae = Autoencoder(64, 3, (16,))
    loss = Trace_ELBO().differentiable_loss(ae.model, ae.guide, x)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(ae.decoder(ae.encoder(x)), x, reduction="sum")
    torch.testing.assert_close(loss, bce)
    torch.testing.assert_close(ae.reconstruction_error(x).sum(), bce.detach())


def test_the_dae_corrupts_its_input_only_while_training(x):
    torch.manual_seed(0)
    dae = Autoencoder(64, 3, (16,), noise="mask:0.5")
    ones = torch.ones(2000, 64)
    kept = dae.corrupt(ones)
    assert kept.mean().item() == pytest.approx(0.5, abs=0.01)  # masking noise: each pixel zeroed with p = 0.5
    pyro.set_rng_seed(1)
    a = Trace_ELBO().differentiable_loss(dae.model, dae.guide, x)
    b = Trace_ELBO().differentiable_loss(dae.model, dae.guide, x)
    assert a != b  # a fresh corruption each call
    clean = Trace_ELBO().differentiable_loss(dae.model, dae.guide, x).detach()
    dae.eval()
    assert torch.equal(dae.corrupt(x), x)
    e1, e2 = (Trace_ELBO().differentiable_loss(dae.model, dae.guide, x) for _ in range(2))
    assert e1 == e2 and e1 != clean
    salt = Autoencoder(64, 3, noise="saltpepper:1e-9").train().corrupt(x)
    assert torch.equal(salt, x)


def test_samples_come_from_a_gaussian_fitted_to_the_codes(x):
    torch.manual_seed(0)
    ae = Autoencoder(64, 2, (16,))
    codes = ae.code(x)
    ae.fit_codes(x)
    torch.testing.assert_close(ae.code_mean, codes.mean(0))
    torch.testing.assert_close(ae.code_scale_tril @ ae.code_scale_tril.T, torch.cov(codes.T), atol=1e-4, rtol=1e-3)
    assert ae.sample(7).shape == (7, 64)


def test_no_likelihood_is_claimed_and_bad_options_are_named(x):
    ae = Autoencoder(64, 3, (16,))
    for estimate in (evaluate.elbo, evaluate.log_likelihood):
        with pytest.raises(ValueError, match="site 'z' has an improper .* prior.*no likelihood"):
            estimate(ae.model, ae.guide, x)
    assert torch.isnan(pyro.poutine.trace(ae.model).get_trace(x).nodes["z"]["value"]).all()  # nothing to draw
    assert parse_noise("gaussian:0.3") == ("gaussian", 0.3) and parse_noise(None) is None
    with pytest.raises(ValueError, match=r"level must be in \(0, 1\) for mask"):
        parse_noise("mask:1.5")
    with pytest.raises(ValueError, match="noise scale must be > 0"):
        parse_noise("gaussian:0")
