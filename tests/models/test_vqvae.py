"""VQ-VAE: the straight-through code, the training loss and the eval bound against their formulas,
the EMA codebook and dead-code restarts, and the autoregressive prior (a normalized, causal model)."""

import itertools
import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from models.vqvae import VQVAE, CodePrior
from pyro_gen import evaluate


@pytest.fixture
def x():
    return (torch.rand(24, 64, generator=torch.Generator().manual_seed(0)) < 0.3).float()


def _vq(**kw):
    torch.manual_seed(0)
    return VQVAE((1, 8, 8), codes=6, code_dim=3, channels=8, **kw)


def test_the_code_is_the_nearest_codebook_vector_with_a_straight_through_gradient(x):
    vq = _vq()
    vq.guide(x[:1])  # the first training call starts the codebook at encoder outputs
    tr = poutine.trace(vq.guide).get_trace(x)
    z = tr.nodes["z"]["value"]
    z_e = vq._encode(x)
    dists = ((z_e.detach().unsqueeze(-2) - vq.codebook.detach()) ** 2).sum(-1)
    torch.testing.assert_close(z, vq.codebook[dists.argmin(-1)], rtol=0, atol=1e-6)
    # quantization passes the gradient to the encoder as the identity would
    params = list(vq.encoder.parameters())
    for a, b in zip(torch.autograd.grad(z.sum(), params), torch.autograd.grad(z_e.sum(), params)):
        torch.testing.assert_close(a, b)


def test_training_loss_and_eval_bound_match_their_formulas(x):
    vq = _vq(commitment=0.25)
    vq.guide(x[:1])
    pyro.set_rng_seed(0)
    loss = Trace_ELBO().differentiable_loss(vq.model, vq.guide, x)
    z_e = vq._encode(x)
    e = vq.codebook[vq._nearest(z_e)]
    rec = vq.observation(vq._decode_logits(e)).log_prob(x)
    log_k = 2 * 2 * math.log(6)
    expected = (-rec + log_k + 1.25 * ((z_e - e) ** 2).sum((-3, -2, -1))).sum()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-3)
    vq.eval()
    bound = evaluate.elbo(vq.model, vq.guide, x)
    assert bound.mean == pytest.approx((rec - log_k).mean().item(), abs=1e-3)
    torch.testing.assert_close(vq.bits_per_dim(x), -(rec - log_k).detach() / (64 * math.log(2)))


def test_ema_codebook_moves_to_the_mean_of_its_assignments_and_dead_codes_restart(x):
    vq = _vq(ema=True, decay=0.5, restart=0.0)
    vq.guide(x)  # initialization and a first update
    before = vq.codebook.clone()
    count, total = vq.ema_count.clone(), vq.ema_sum.clone()
    z_e = vq._encode(x).detach()
    index = vq._nearest(z_e)
    vq.guide(x)
    flat, idx = z_e.reshape(-1, 3), index.reshape(-1)
    n_k = torch.bincount(idx, minlength=6).float()
    sums = torch.zeros(6, 3).index_add_(0, idx, flat)
    new_count, new_sum = 0.5 * count + 0.5 * n_k, 0.5 * total + 0.5 * sums
    smoothed = (new_count + 1e-5) / (new_count.sum() + 6e-5) * new_count.sum()
    torch.testing.assert_close(vq.codebook, new_sum / smoothed[:, None])
    assert not torch.equal(before, vq.codebook)

    vq = _vq(restart=0.5)
    vq.guide(x)
    vq.usage.zero_()  # every code looks dead
    vq.guide(x)
    outputs = vq._encode(x).detach().reshape(-1, 3)
    for code in vq.codebook.detach():
        assert ((outputs - code) ** 2).sum(-1).min() < 1e-10  # each restarted at an encoder output


def test_the_code_prior_is_a_normalized_autoregressive_model():
    torch.manual_seed(0)
    prior = CodePrior(3, (2, 2), channels=8, layers=2)
    grids = torch.tensor(list(itertools.product(range(3), repeat=4))).reshape(-1, 2, 2)
    total = torch.logsumexp(prior.log_prob(grids), 0)
    assert total.item() == pytest.approx(0.0, abs=1e-5)  # sums to one over all 81 grids
    # causal: the logits at a position do not depend on it or on later positions
    emb = prior.embed(grids[:1]).permute(0, 3, 1, 2).detach().requires_grad_(True)
    out = prior.net(emb)
    for i, j in itertools.product(range(2), range(2)):
        (g,) = torch.autograd.grad(out[0, :, i, j].sum(), emb, retain_graph=True)
        later = [(a, b) for a, b in itertools.product(range(2), range(2)) if (a, b) >= (i, j)]
        assert all(g[0, :, a, b].abs().sum() == 0 for a, b in later)
    assert prior.sample(5).shape == (5, 2, 2)


def test_fit_prior_and_bad_options(x):
    vq = _vq()
    vq.guide(x)
    vq.eval()
    uniform = vq.bits_per_dim(x)
    vq.fit_prior(x, epochs=30, batch_size=24)
    assert vq.bits_per_dim(x).mean() < uniform.mean()  # the learned prior beats log K per position on its data
    assert vq.sample(4).shape == (4, 64) and 1 <= vq.perplexity(x) <= 6
    with pytest.raises(ValueError, match="at least 2 codes"):
        VQVAE((1, 8, 8), codes=1)
    with pytest.raises(ValueError, match="valid choices: bernoulli, continuous-bernoulli"):
        VQVAE((1, 8, 8), likelihood="gaussian")


def test_fit_keeps_the_vqvae_off_the_fast_path_saying_why(x, caplog):
    """The EMA codebook and the restarts change buffers inside a step: a recording would replay stale ones."""
    import logging

    from pyro_gen.infer.run import Run

    vq = _vq(ema=True)
    with caplog.at_level(logging.WARNING, logger="pyro_gen"):
        run = Run(vq.model, vq.guide, x, objective="trace", epochs=1, batch_size=8, lr=1e-3, optimizer="adam",
                  weight_decay=0.0, val_data=None, val_batch_size=8, patience=None, beta=1.0, kl_anneal=0.0,
                  clip_norm=None, lr_schedule=None, seed=0, device="cpu", out=None, checkpoint_every=1, max_steps=None,
                  max_seconds=None, fast=True)
    assert run.fast is None
    assert any("VQVAE updates its own state while training" in r.getMessage() for r in caplog.records)
