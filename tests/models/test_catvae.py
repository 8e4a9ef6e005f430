"""The categorical VAE: the Concrete relaxation only while training, the discrete model whenever
it is scored, the annealed temperature checkpointed with the weights, and clear errors."""

import pyro
import pytest
import torch

from models.catvae import CategoricalVAE, ExpRelaxedCategorical
from pyro_gen import fit
from pyro_gen.data import load
from pyro_gen.evaluate import per_point_log_weights


def _pair():
    pyro.clear_param_store()
    torch.manual_seed(0)
    relaxed = CategoricalVAE(20, 3, 4, hidden=(12,), relaxed=True, temperature=0.7)
    discrete = CategoricalVAE(20, 3, 4, hidden=(12,))
    discrete.load_state_dict(relaxed.state_dict())
    return relaxed, discrete


def test_relaxed_while_training_discrete_when_scored():
    relaxed, discrete = _pair()
    x = torch.bernoulli(torch.full((5, 20), 0.3))
    site = pyro.poutine.trace(relaxed.guide).get_trace(x).nodes["z"]
    assert isinstance(site["fn"].base_dist, ExpRelaxedCategorical) and site["fn"].has_rsample
    assert torch.allclose(site["value"].exp().sum(-1), torch.ones(5, 3))  # a point of the simplex, in log space
    relaxed.eval()
    site = pyro.poutine.trace(relaxed.guide).get_trace(x).nodes["z"]
    assert not site["fn"].has_rsample and set(site["value"].unique().tolist()) == {0.0, 1.0}
    # evaluation sees exactly the discrete model with the same weights
    pyro.set_rng_seed(3)
    a = per_point_log_weights(relaxed.model, relaxed.guide, x, 4)
    pyro.set_rng_seed(3)
    b = per_point_log_weights(discrete.eval().model, discrete.guide, x, 4)
    assert torch.equal(a, b)


def test_annealed_temperature_resumes_exactly(tmp_path):
    x = load("digits").train[:300]

    def run(epochs, resume):
        pyro.clear_param_store()
        torch.manual_seed(0)
        vae = CategoricalVAE(64, 4, 5, hidden=(16,), relaxed=True, temperature=1.0, min_temperature=0.6,
                             anneal_rate=0.2)
        fit(vae.model, vae.guide, x, epochs=epochs, batch_size=100, callback=vae.anneal, progress=False,
            out=tmp_path / ("b" if resume else f"a{epochs}"), resume=resume, seed=1)
        return vae

    whole = run(3, resume=False)
    assert whole.temperature.item() == pytest.approx(max(0.6, torch.exp(torch.tensor(-0.6)).item()))
    run(2, resume=False)
    (tmp_path / "a2").rename(tmp_path / "b")
    resumed = run(3, resume=True)
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


def test_schedule_and_bad_input():
    vae = CategoricalVAE(10, 2, 3, hidden=(4,), relaxed=True, temperature=2.0, min_temperature=0.5, anneal_rate=0.5)
    vae.anneal(1)
    assert vae.temperature.item() == pytest.approx(2.0 * torch.exp(torch.tensor(-0.5)).item())
    vae.anneal({"epoch": 10})
    assert vae.temperature.item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="the temperature must be positive, got -1"):
        CategoricalVAE(10, relaxed=True, temperature=-1)
    with pytest.raises(ValueError, match="the min temperature must be positive"):
        CategoricalVAE(10, min_temperature=0)
    with pytest.raises(ValueError, match="n_classes >= 2 classes, got 2 and 1"):
        CategoricalVAE(10, n_vars=2, n_classes=1)
    with pytest.raises(ValueError, match="the categorical VAE: binary data \\(0 or 1\\) expected"):
        vae.check_data(torch.full((2, 10), 0.5))
    discrete = CategoricalVAE(10, 2, 3, hidden=(4,))
    with pytest.raises(ValueError, match="not reparameterizable"):  # the discrete model needs vimco, graph or rws
        fit(discrete.model, discrete.guide, torch.zeros(4, 10), objective="iwae:3", epochs=1, progress=False)
