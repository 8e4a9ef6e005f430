"""The deep Markov model: the guide sees x_{t:T} only, padding is invisible, and the
importance-weighted bound converges to log p(x) computed by quadrature on a tiny model."""

import math

import pytest
import torch

from models.dmm import DMM, reverse_sequences
from pyro_gen import fit, objectives
from pyro_gen.evaluate import log_likelihood as iwae_log_likelihood
from pyro_gen.evaluate import per_point_log_weights



pytestmark = pytest.mark.usefixtures("one_thread")

def _data(N=3, T=6, D=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([T, 2, 4][:N])
    x = (torch.rand(N, T, D, generator=g) < 0.3).float()
    return x * (torch.arange(T) < lengths.unsqueeze(-1)).unsqueeze(-1), lengths


def test_reverse_sequences_reverses_within_each_length_and_is_its_own_inverse():
    x = torch.arange(12.0).reshape(2, 6, 1)
    lengths = torch.tensor([6, 3])
    r = reverse_sequences(x, lengths)
    assert r[0, :, 0].tolist() == [5, 4, 3, 2, 1, 0]
    assert r[1, :, 0].tolist() == [8, 7, 6, 9, 10, 11]  # the padding stays where it was
    assert torch.equal(reverse_sequences(r, lengths), x)


def _guide_locs(net, x, lengths):
    """The guide's q(z_t | z_{t-1}, h_t) means at z_{t-1} fixed to zero, for every t."""
    h = reverse_sequences(net.rnn(reverse_sequences(x, lengths))[0], lengths)
    return net.combiner(torch.zeros(len(x), net.z_dim), h.transpose(0, 1))[0].transpose(0, 1)


def test_guide_state_at_t_depends_on_the_future_only():
    torch.manual_seed(0)
    net = DMM(5, 2, 8, 8, 8)
    x, lengths = _data()
    base = _guide_locs(net, x, lengths)
    changed = x.clone()
    changed[0, 3] = 1 - changed[0, 3]  # flip step 3 of the first sequence
    moved = (_guide_locs(net, changed, lengths) - base).abs().sum(-1)
    assert (moved[0, :4] > 0).all() and (moved[0, 4:] == 0).all() and (moved[1:] == 0).all()


def test_padding_changes_nothing():
    torch.manual_seed(0)
    net = DMM(5, 2, 8, 8, 8, num_iafs=1, iaf_dim=8)
    x, lengths = _data()
    noisy = x.clone()
    noisy[1, 2:] = 1.0  # garbage past the end of sequence 1 (length 2)
    torch.manual_seed(3)
    a = per_point_log_weights(net.model, net.guide, (x, lengths), 4)
    torch.manual_seed(3)
    b = per_point_log_weights(net.model, net.guide, (noisy, lengths), 4)
    assert torch.equal(a, b)


def _quadrature_log_likelihood(net, x):
    """log p(x_1, x_2) of a DMM with z_dim=1 and T=2 by the trapezoid rule on a grid of (z_1, z_2)."""
    grid = torch.linspace(-8, 8, 801, dtype=torch.float64)
    dz = grid[1] - grid[0]
    net = net.double()
    with torch.no_grad():
        def step(z_prev):  # log p(z_t | z_prev) on the grid, (len(z_prev), G)
            loc, scale = net.transition(z_prev.unsqueeze(-1))
            return torch.distributions.Normal(loc, scale).log_prob(grid)

        def emit(xt):  # log p(x_t | z_t) on the grid, (N, G)
            logits = net.emitter(grid.unsqueeze(-1))  # (G, D)
            return -torch.nn.functional.binary_cross_entropy_with_logits(
                logits.expand(len(xt), -1, -1), xt.double().unsqueeze(1).expand(-1, len(grid), -1),
                reduction="none").sum(-1)

        first = step(net.z_init.double())[0] + emit(x[:, 0])  # (N, G): log p(z_1, x_1)
        second = step(grid) + 0  # (G, G): log p(z_2 | z_1)
        joint = first.unsqueeze(-1) + second.unsqueeze(0) + emit(x[:, 1]).unsqueeze(1)  # (N, G1, G2)
        out = torch.logsumexp(joint.flatten(1), -1) + 2 * dz.log()
    net.float()
    return out


@pytest.mark.slow
def test_iwae_converges_to_the_quadrature_log_likelihood():
    torch.manual_seed(0)
    net = DMM(4, 1, 8, 8, 8)
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(6, 2, 4, generator=g) < 0.5).float()
    lengths = torch.full((6,), 2)
    exact = _quadrature_log_likelihood(net, x).mean().item()
    bounds = {k: iwae_log_likelihood(net.model, net.guide, (x, lengths), k=k).mean for k in (1, 2000)}
    assert bounds[1] < exact - 0.05  # the untrained guide leaves a real gap
    assert abs(bounds[2000] - exact) < 0.02
    assert net.log_likelihood(x, lengths, k=1).shape == (6,)


def test_kl_annealing_and_training_through_fit():
    torch.manual_seed(0)
    net = DMM(5, 2, 16, 16, 16, num_iafs=1, iaf_dim=8)
    x, lengths = _data(N=3, T=6)
    x, lengths = x.repeat(4, 1, 1), lengths.repeat(4)
    result = fit(net.model, net.guide, (x, lengths), objective="trace", epochs=25, batch_size=12, lr=2e-2,
                 kl_anneal=10, progress=False)
    weights = [row["kl_weight"] for row in result.history]
    assert weights[0] < 0.2 and weights[-1] == 1.0 and all(a <= b for a, b in zip(weights, weights[1:]))
    before = DMM(5, 2, 16, 16, 16, num_iafs=1, iaf_dim=8)
    torch.manual_seed(1)
    trained = objectives.get("trace:8").loss(net.model, net.guide, x, lengths)
    torch.manual_seed(1)
    untrained = objectives.get("trace:8").loss(before.model, before.guide, x, lengths)
    assert trained < untrained - 5.0


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="sizes must be >= 1"):
        DMM(5, 0)
    net = DMM(5, 2, 8, 8, 8)
    x, lengths = _data()
    with pytest.raises(ValueError, match="shape \\(N, T, D\\)"):
        net.log_likelihood(x.flatten(1), lengths)
    with pytest.raises(ValueError, match="expects 5"):
        net.log_likelihood(x[..., :4], lengths)
    with pytest.raises(ValueError, match="lengths must lie in"):
        net.log_likelihood(x, lengths * 0)
    bad = x.clone()
    bad[0, 0, 0] = math.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        net.log_likelihood(bad, lengths)


def test_cli_fits_a_dmm_on_jsb_and_reports_an_iwae_test_nll(tmp_path, shared_data):
    from inference import fit as fit_cli

    out = tmp_path / "dmm"
    m = fit_cli.main(["dmm", "--data", "jsb-chorales", "--data-root", str(shared_data), "--latent-dim", "4",
                      "--rnn-dim", "16", "--emission-dim", "16", "--transition-dim", "16", "--num-iafs", "1",
                      "--epochs", "1", "--max-steps", "2", "--batch-size", "20", "--eval-k", "2", "--eval-n", "4",
                      "--out", str(out), "--no-progress"])
    assert m["config"]["objective"] == "trace" and m["stopped"] == "max_steps"
    assert not m["test"]["exact"] and m["test"]["k"] == 2 and m["test"]["n"] == 4
    assert 10 < m["test"]["nll_per_step"] < 200  # two steps in: near 88 log 2 = 61 nats per step


def test_iaf_guide_scores_its_samples_from_the_cache_without_inverting():
    """Pyro scores z_t after the guide has run; a shared IAF layer's cache would by then hold the
    last step only, and log q(z_t) would invert the autoregressive transform (z_dim network passes
    per layer and step: 7x slower on JSB). Each step's layers keep their own cache instead."""
    torch.manual_seed(0)
    net = DMM(6, 5, 8, 8, 8, num_iafs=2, iaf_dim=8)
    x = (torch.rand(3, 7, 6) < 0.3).float()
    lengths = torch.tensor([7, 4, 6])
    calls = []
    for iaf in net.iafs:
        iaf.arn.register_forward_hook(lambda *_: calls.append(1))
    loss = objectives.get("trace").differentiable_loss(net.model, net.guide, x, lengths)
    assert torch.isfinite(loss)
    assert len(calls) == 7 * 2  # one pass per layer and time step: sampling only, scoring from the cache
