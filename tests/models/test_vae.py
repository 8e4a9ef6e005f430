"""The VAE itself: it learns real digits better than the best pixel-independent model,
beta acts only while training, and bad configurations are named."""

import pytest
import torch

from models.vae import VAE
from pyro_gen import data, evaluate, fit


def test_vae_beats_the_best_independent_pixel_model_on_held_out_digits():
    ds = data.load("digits")
    p = ds.train.mean(0).clamp(1e-3, 1 - 1e-3)  # the maximum-likelihood factorized Bernoulli
    baseline = torch.distributions.Bernoulli(p).log_prob(ds.test).sum(-1).mean().item()
    torch.manual_seed(0)
    vae = VAE(64, 8, (128,))
    fit(vae.model, vae.guide, ds.train, objective="trace", epochs=60, batch_size=64, val_data=ds.val,
        progress=False)
    ll = evaluate.log_likelihood(vae.model, vae.guide, ds.test, k=200)
    assert ll.mean > baseline + 5.0, (ll, baseline)


def test_beta_weighs_the_kl_only_in_training_mode():
    x = (torch.rand(8, 64) < 0.3).float()
    torch.manual_seed(0)
    a, b = VAE(64, 3, (16,), beta=1.0), VAE(64, 3, (16,), beta=4.0)
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    torch.manual_seed(1)
    ea = evaluate.per_point_log_weights(a.model, a.guide, x, 1)
    torch.manual_seed(1)
    eb = evaluate.per_point_log_weights(b.model, b.guide, x, 1)
    assert torch.equal(ea, eb)
    b.train()
    torch.manual_seed(1)
    assert not torch.equal(evaluate.per_point_log_weights(b.model, b.guide, x, 1), ea)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"likelihood": "poisson"}, "valid choices: bernoulli, continuous-bernoulli, gaussian"),
        ({"network": "resnet"}, "valid choices: mlp, conv"),
        ({"network": "conv"}, "image_shape"),
        ({"activation": "gelu2"}, "valid choices: relu"),
        ({"beta": 0.0}, "beta must be positive"),
    ],
)
def test_bad_configurations_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VAE(64, 2, (8,), **kwargs)
