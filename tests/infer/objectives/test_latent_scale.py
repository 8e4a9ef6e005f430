"""LatentScale (pyro_gen.infer.objectives.latent_scale): beta weights latent sites only."""

import pyro
import pytest
import torch

from pyro_gen import objectives
from tests.exact import normal_normal_data, normal_normal_guide, normal_normal_model


def test_latent_scale_weights_only_latent_sites():
    x = normal_normal_data()
    pyro.param("loc", torch.tensor(0.1))
    pyro.param("scale", torch.tensor(0.5), constraint=torch.distributions.constraints.positive)
    mf = objectives.meanfield()

    def loss(weight):
        pyro.set_rng_seed(1)  # the same z in each call
        with objectives.LatentScale(weight):
            return mf.differentiable_loss(normal_normal_model, normal_normal_guide, x).item()

    full, recon, double = loss(1.0), loss(0.0), loss(2.0)
    kl = full - recon
    assert kl > 0
    assert double == pytest.approx(recon + 2 * kl, rel=1e-5)
