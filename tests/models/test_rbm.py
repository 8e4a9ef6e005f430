"""The RBM: a normalized distribution once log Z is known, clear errors, and the uses of a trained one."""

import itertools

import pyro
import pytest
import torch

from models.rbm import RBM, BinaryRBM


@pytest.fixture
def rbm():
    pyro.clear_param_store()
    torch.manual_seed(0)
    return RBM(6, hidden=5, image_shape=(1, 2, 3), init_scale=1.0)


def test_log_likelihood_is_normalized_over_every_visible_state(rbm):
    states = torch.tensor(list(itertools.product([0.0, 1.0], repeat=6)))
    total = torch.logsumexp(rbm.log_likelihood(states), 0)
    assert total.item() == pytest.approx(0.0, abs=1e-6)
    # and the Pyro model scores a batch with the same numbers once log Z is stored
    trace = pyro.poutine.trace(rbm.model).get_trace(states)
    trace.compute_log_prob()
    assert torch.allclose(trace.nodes["x"]["log_prob"].double(), rbm.log_likelihood(states), atol=1e-4)


def test_log_prob_is_nan_until_log_z_is_known():
    pyro.clear_param_store()
    big = RBM(30, hidden=30)
    x = torch.zeros(2, 30)
    assert torch.isnan(big.distribution((2,)).log_prob(x)).all()  # never a silent Z = 1
    with pytest.raises(ValueError, match="log Z of this RBM is unknown: estimate it first"):
        big.log_likelihood(x)
    est = big.estimate_log_partition(torch.bernoulli(torch.full((50, 30), 0.3)), steps=200, chains=20, seed=0)
    assert est.se > 0 and big.log_z.item() == est.log_z  # AIS: both layers above the enumerable size
    assert torch.isfinite(big.log_likelihood(x)).all()


def test_gibbs_samples_and_figures_have_the_right_shapes(rbm):
    s = rbm.sample(7, steps=20)
    assert s.shape == (7, 6) and ((s >= 0) & (s <= 1)).all()
    f = rbm.filters()
    assert f.shape == (5, 6) and f.min() == 0 and f.max() == 1
    x = torch.bernoulli(torch.full((4, 6), 0.5))
    assert rbm.reconstruct(x).shape == (4, 6)
    d = rbm.distribution((4,))
    assert d.sample().shape == (4, 6) and d.sample((3,)).shape == (3, 4, 6)
    assert isinstance(d.expand((2, 4)), BinaryRBM) and d.expand((2, 4)).batch_shape == (2, 4)
    flipped = d.flip_one(x)
    assert ((flipped != x).sum(-1) == 1).all()


def test_bad_data_is_named(rbm):
    with pytest.raises(ValueError, match="a binary RBM needs binary data \\(0/1\\); these values lie in \\[0, 0.5\\]"):
        rbm.check_data(torch.full((3, 6), 0.5).index_fill(0, torch.tensor([0]), 0.0))
    with pytest.raises(ValueError, match="has 5 columns but the model expects 6"):
        rbm.check_data(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="hidden >= 1"):
        RBM(6, hidden=0)


def test_log_z_keeps_the_largest_of_its_ais_starts():
    pyro.clear_param_store()
    torch.manual_seed(0)
    big = RBM(24, hidden=24, init_scale=0.3)
    data = torch.bernoulli(torch.full((200, 24), 0.3))
    est = big.estimate_log_partition(data, steps=300, chains=20, seed=0)
    assert set(est.runs) == {"data", "model"} and est.log_z == max(v[0] for v in est.runs.values())
    assert big.log_z.item() == est.log_z
    only = big.estimate_log_partition(data, steps=300, chains=20, seed=0, starts=("data",))
    assert set(only.runs) == {"data"} and only.log_z == est.runs["data"][0]
    with pytest.raises(ValueError, match="unknown AIS start\\(s\\) \\['prior'\\]; valid choices: data, model"):
        big.estimate_log_partition(data, starts=("prior",))
