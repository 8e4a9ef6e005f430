"""Reweighted wake-sleep (pyro_gen.infer.objectives.rws): its value is IWAE-k, per data point."""

import pyro
import pytest
import torch

from pyro_gen import objectives
from tests.exact import replicated_gradients, normal_normal_data, normal_normal_guide, normal_normal_model


def test_rws_value_is_the_iwae_bound_and_weights_stay_per_data_point():
    x = normal_normal_data()
    pyro.param("loc", torch.tensor(0.2))
    pyro.param("scale", torch.tensor(0.5), constraint=torch.distributions.constraints.positive)
    pyro.set_rng_seed(3)
    a = objectives.rws(7).loss(normal_normal_model, normal_normal_guide, x)
    pyro.set_rng_seed(3)
    b = objectives.iwae(7).loss(normal_normal_model, normal_normal_guide, x)
    assert a == pytest.approx(b, rel=1e-6)

    # With many particles the guide gradient of each data point is that of the inclusive
    # KL(p(z | x) || q(z)): d/dloc = -(m - loc) / s^2 and d/dlog s = 1 - (v + (m - loc)^2) / s^2,
    # with the posterior N(m, v) = N(1.2, 0.2) of x = 1.5 (each copy weighted on its own).
    loc_g, scale_g = replicated_gradients(objectives.rws(2000), 200)
    m, v, loc0, s0 = 1.2, 0.2, 0.3, 0.7
    assert loc_g.mean().item() == pytest.approx(-(m - loc0) / s0**2, rel=0.05)
    assert scale_g.mean().item() == pytest.approx(1 - (v + (m - loc0) ** 2) / s0**2, rel=0.05)


def test_rws_refuses_a_single_particle():
    with pytest.raises(ValueError, match="k >= 2"):
        objectives.get("rws:1")
