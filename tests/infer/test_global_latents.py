"""Global latents under minibatches: Pyro's ``pyro.plate("data", N, subsample=...)`` convention.

A batch's local terms weigh N/batch, so its loss is an unbiased estimate of the whole data set's;
fit reads N from the plate and reports the loss per data point.
"""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_gen.infer.train import fit

NOISE = 0.5


def _data(n=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    return x, x @ torch.tensor([1.0, -2.0, 0.5]) + NOISE * torch.randn(n, generator=g)


def make_model(num_data: int | None):
    """Bayesian linear regression, weights w ~ N(0, I) shared by every point (a global latent)."""

    def model(x, y):
        w = pyro.sample("w", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        subsample = torch.arange(len(x)) if num_data is not None else None
        with pyro.plate("data", num_data or len(x), subsample=subsample):
            pyro.sample("y", dist.Normal(x @ w, NOISE), obs=y)

    return model


def guide(x, y):
    loc = pyro.param("w_loc", torch.zeros(3))
    scale = pyro.param("w_scale", torch.full((3,), 0.1), constraint=dist.constraints.positive)
    pyro.sample("w", dist.Normal(loc, scale).to_event(1))


def exact_posterior(x, y):
    """The posterior mean, and the scales of the best factorized Gaussian (1 / sqrt of the precision's diagonal)."""
    precision = torch.eye(3) + x.T @ x / NOISE**2
    return torch.linalg.solve(precision, x.T @ y / NOISE**2), precision.diagonal().rsqrt()


def test_the_minibatch_elbo_averages_to_the_full_batch_elbo():
    x, y = _data()
    with pyro.get_param_store().scope():
        guide(x, y)
        pyro.param("w_loc").data = torch.tensor([0.5, -1.0, 0.2])
        elbo = Trace_ELBO()
        for seed in range(3):
            torch.manual_seed(seed)
            full = elbo.differentiable_loss(make_model(None), guide, x, y)
            batches = []
            for idx in torch.randperm(128, generator=torch.Generator().manual_seed(seed)).split(16):
                torch.manual_seed(seed)  # the same draw of w: only the data term is estimated
                batches.append(elbo.differentiable_loss(make_model(128), guide, x[idx], y[idx]))
            # over a random partition into batches, the mean of the batch estimates is the full loss
            assert torch.stack(batches).mean().item() == pytest.approx(full.item(), rel=1e-5)
            # and each batch on its own is a noisy but unscaled estimate of it
            assert min(b.item() for b in batches) < full.item() < max(b.item() for b in batches)


def test_fit_with_minibatches_finds_the_conjugate_posterior_and_reports_the_loss_per_point():
    x, y = _data()
    mean, sd = exact_posterior(x, y)
    with pyro.get_param_store().scope():
        result = fit(make_model(128), guide, (x, y), epochs=250, batch_size=16, lr=0.03, progress=False,
                     val_data=(x, y),
                     lr_schedule="cosine")
        loc, scale = pyro.param("w_loc").detach(), pyro.param("w_scale").detach()
        torch.manual_seed(0)
        per_point = Trace_ELBO(num_particles=200).loss(make_model(None), guide, x, y) / 128
    assert torch.allclose(loc, mean, atol=0.02), (loc, mean)
    # without the N/batch weight the data would count 8 times less: scales sqrt(8) times these
    assert torch.allclose(scale, sd, rtol=0.25), (scale, sd)
    last = sum(r["train_loss"] for r in result.history[-20:]) / 20
    assert last == pytest.approx(per_point, rel=0.05)
    assert result.history[-1]["val_loss"] == pytest.approx(per_point, rel=0.05)  # validation too


def test_shards_of_a_batch_as_large_as_the_data_are_scaled_like_the_batch():
    # N = 16 rows in one batch of 16: each shard of 8 is weighted 16/8 by the plate, and fit takes it out again
    x, y = _data(16)
    losses = {}
    for accumulate in (1, 2, 4):
        with pyro.get_param_store().scope():
            result = fit(make_model(16), guide, (x, y), epochs=1, batch_size=16, accumulate=accumulate, progress=False)
            losses[accumulate] = result.history[0]["train_loss"]
    # the same loss per point up to the Monte Carlo draw of w (0.3 wide): not 2 or 4 times it
    assert losses[2] == pytest.approx(losses[1], rel=0.3) and losses[4] == pytest.approx(losses[1], rel=0.3)
