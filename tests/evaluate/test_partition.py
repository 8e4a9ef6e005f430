"""log Z of a binary RBM: exact enumeration against brute force, AIS against exact enumeration."""

import itertools

import pytest
import torch

from pyro_gen.evaluate import base_rate_biases, rbm_ais_log_partition
from pyro_gen.exact import rbm_free_energy, rbm_log_partition


def _brute_force(W, b_v, b_h):
    D, H = W.shape
    energies = [b_v @ v + b_h @ h + v @ W @ h
                for v in map(torch.tensor, itertools.product([0.0, 1.0], repeat=D))
                for h in map(torch.tensor, itertools.product([0.0, 1.0], repeat=H))]
    return torch.logsumexp(torch.stack(energies).double(), 0).item()


@pytest.mark.parametrize("D, H", [(5, 3), (3, 6)])  # either layer may be the smaller one
def test_enumeration_matches_the_sum_over_every_joint_state(D, H):
    g = torch.Generator().manual_seed(D * H)
    W, b_v, b_h = torch.randn(D, H, generator=g), torch.randn(D, generator=g), torch.randn(H, generator=g)
    assert rbm_log_partition(W, b_v, b_h).item() == pytest.approx(_brute_force(W, b_v, b_h), abs=1e-5)
    # chunks of states add up to the same
    assert rbm_log_partition(W, b_v, b_h, chunk=2).item() == pytest.approx(_brute_force(W, b_v, b_h), abs=1e-5)
    # the free energy sums h out: sum_v exp(-F(v)) = Z
    vs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=D)))
    assert torch.logsumexp(-rbm_free_energy(vs, W, b_v, b_h).double(), 0).item() == \
        pytest.approx(_brute_force(W, b_v, b_h), abs=1e-5)


def test_ais_log_z_is_within_005_nats_of_the_exact_sum_for_16_hidden_units():
    g = torch.Generator().manual_seed(0)
    D, H = 100, 16
    data = torch.bernoulli(torch.full((500, D), 0.2), generator=g)
    W, b_v, b_h = 0.3 * torch.randn(D, H, generator=g), torch.randn(D, generator=g) - 1, torch.randn(H, generator=g)
    exact = rbm_log_partition(W, b_v, b_h).item()
    est = rbm_ais_log_partition(W, b_v, b_h, steps=3000, chains=100, base_visible_bias=base_rate_biases(data),
                                seed=0)
    assert abs(est.log_z - exact) < 0.05, (est, exact)
    assert 0 < est.se < 0.05 and est.log_weights.shape == (100,)
    rough = rbm_ais_log_partition(W, b_v, b_h, steps=10, chains=100, seed=0)
    assert rough.se > 10 * est.se and abs(rough.log_z - exact) > abs(est.log_z - exact)  # few steps: noisier


def test_leaves_the_global_rng_alone_and_bad_input_is_named():
    W, b_v, b_h = torch.zeros(4, 2), torch.zeros(4), torch.zeros(2)
    before = torch.get_rng_state()
    a = rbm_ais_log_partition(W, b_v, b_h, steps=5, chains=3, seed=1)
    assert torch.equal(torch.get_rng_state(), before)
    assert a.log_z == pytest.approx(6 * torch.log(torch.tensor(2.0)).item())  # no weights: Z = 2^(D+H), exactly
    with pytest.raises(ValueError, match="needs b_v of shape \\(4,\\) and b_h of shape \\(2,\\)"):
        rbm_ais_log_partition(W, b_h, b_h)
    with pytest.raises(ValueError, match="chains must be an integer >= 1"):
        rbm_ais_log_partition(W, b_v, b_h, chains=0)
    with pytest.raises(ValueError, match="out of reach.*AIS"):
        rbm_log_partition(torch.zeros(30, 30), torch.zeros(30), torch.zeros(30))


def test_the_clipped_base_rate_reaches_units_the_data_never_turn_on(shared_data):
    """A CD-1-trained RBM on binarized MNIST puts mass on border pixels the data never turn on: an
    unclipped base rate starts them at log(1/50,001) and AIS misses that mass by nats (40 nats after more
    training, in benchmarks/ais_eval.py); the
    default (clipped at +-4) does not. 16 hidden units: log Z is enumerated."""
    import pyro

    from models.rbm import RBM
    from pyro_gen import data as data_lib
    from pyro_gen import fit

    train = data_lib.load("binarized-mnist", data_root=shared_data).train
    pyro.clear_param_store()
    torch.manual_seed(0)
    rbm = RBM(784, hidden=16)
    fit(rbm.model, rbm.guide, train[:20000], objective="cd:1", epochs=2, batch_size=100, lr=0.05, optimizer="sgd",
        progress=False)
    W, b_v, b_h = rbm.W.detach(), rbm.b_v.detach(), rbm.b_h.detach()
    exact = rbm_log_partition(W, b_v, b_h).item()
    clipped = rbm_ais_log_partition(W, b_v, b_h, steps=3000, chains=100, base_visible_bias=base_rate_biases(train),
                                    seed=0)
    unclipped = rbm_ais_log_partition(W, b_v, b_h, steps=3000, chains=100, seed=0,
                                      base_visible_bias=base_rate_biases(train, limit=None))
    assert abs(clipped.log_z - exact) < 0.1, (clipped, exact)
    assert exact - unclipped.log_z > 2.0, (unclipped, exact)  # about 5 nats, with an SE of 0.65
    assert base_rate_biases(train).abs().max() == 4.0 and base_rate_biases(train, limit=None).min() < -10
