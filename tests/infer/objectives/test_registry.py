"""objectives.get: names, arguments, and clear errors for bad ones."""

import pytest

from pyro_gen import objectives


def test_get_parses_names_and_rejects_bad_ones():
    assert objectives.get("iwae:7").num_particles == 7
    assert objectives.get("iwae", particles=3).num_particles == 3
    assert objectives.get("renyi:0.25").alpha == 0.25
    assert isinstance(objectives.get("iwae-dreg:4"), objectives.DReG_ELBO)
    elbo = objectives.trace()
    assert objectives.get(elbo) is elbo
    with pytest.raises(ValueError, match="valid choices: trace, meanfield, iwae"):
        objectives.get("elbo2")
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        objectives.iwae(0)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        objectives.get("iwae:-2")
    with pytest.raises(ValueError, match="k >= 2"):
        objectives.dreg(1)
    with pytest.raises(ValueError, match="alpha"):
        objectives.renyi(1.0)
    with pytest.raises(TypeError):
        objectives.get(3)
