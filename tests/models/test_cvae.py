"""The CVAE and its baseline: only the hidden quadrants are scored, the baseline's bound is its exact
log-likelihood, completions vary with z, clear errors, and the command line."""

import json

import pyro
import pytest
import torch
from torch.nn import functional as F

from inference import fit as fit_cli
from models.cvae import CVAE, MaskedBaseline, quadrant_mask
from pyro_gen import evaluate


@pytest.mark.parametrize("visible, shown", [(1, 196), (2, 392), (3, 588)])
def test_quadrant_masks(visible, shown):
    mask = quadrant_mask(visible).reshape(28, 28)
    assert mask.sum() == shown and mask[0, 0] and not mask[27, 27]
    assert mask[:14, :14].all() and (visible < 2 or mask[:14, 14:].all()) and (visible < 3 or mask[14:, :14].all())


def test_only_hidden_pixels_are_scored_and_the_baseline_is_exact():
    pyro.clear_param_store()
    torch.manual_seed(0)
    base = MaskedBaseline(64, (1, 8, 8), visible=1, hidden=(16,))
    x = torch.bernoulli(torch.full((5, 64), 0.4))
    trace = pyro.poutine.trace(base.model).get_trace(x)
    trace.compute_log_prob()
    logits = base.net(base.inputs(x))
    hidden = ~quadrant_mask(1, (1, 8, 8))
    exact = -F.binary_cross_entropy_with_logits(logits, x, reduction="none")[:, hidden].sum(-1)
    assert torch.allclose(trace.nodes["y"]["log_prob"], exact, atol=1e-5)
    # the visible quadrant's pixels do not enter the likelihood: changing them changes x_v only
    assert torch.equal(base.inputs(x)[:, hidden], torch.full((5, int(hidden.sum())), -1.0))
    ll = evaluate.log_likelihood(base.model, base.guide, x, k=7)
    assert ll.mean == pytest.approx(exact.mean().item(), abs=1e-4)  # no latent: IWAE-k is exact


def test_cvae_completions_vary_and_keep_the_visible_pixels():
    pyro.clear_param_store()
    torch.manual_seed(0)
    cvae = CVAE(64, (1, 8, 8), visible=2, z_dim=3, hidden=(16,))
    with torch.no_grad():
        for p in [*cvae.prior_net.parameters(), *cvae.generation_net.parameters()]:
            p.mul_(3)
    x = torch.bernoulli(torch.full((4, 64), 0.4))
    c = cvae.complete(x, n=6)
    shown = quadrant_mask(2, (1, 8, 8))
    assert torch.equal(c[:, :, shown], x[:, shown].expand(6, -1, -1))
    spread = c[:, :, ~shown].std(0)
    assert (spread > 0).all() and spread.mean() > 5e-3  # z drawn from p(z | x_v): diverse completions
    base = MaskedBaseline(64, (1, 8, 8), visible=2, hidden=(16,))
    assert (base.complete(x, n=6).std(0) == 0).all()  # the deterministic network: one completion
    assert torch.equal(cvae.complete(x, 3)[:, :, shown], x[:, shown].expand(3, -1, -1))


def test_bad_input_is_named(tmp_path):
    with pytest.raises(ValueError, match="visible must be 1, 2 or 3 quadrants, got 0"):
        CVAE(784, visible=0)
    with pytest.raises(ValueError, match="has 784 pixels but x_dim is 64"):
        CVAE(64, (1, 28, 28))
    with pytest.raises(ValueError, match="MaskedBaseline \\(image completion\\): binary data \\(0 or 1\\) expected"):
        MaskedBaseline(64, (1, 8, 8)).check_data(torch.full((2, 64), 0.5))
    with pytest.raises(SystemExit):
        fit_cli.main(["cvae", "--visible", "4", "--out", str(tmp_path)])


def test_fit_cli_cvae_and_baseline(tmp_path):
    for extra in ([], ["--baseline"]):
        out = tmp_path / ("base" if extra else "cvae")
        fit_cli.main(["cvae", "--data", "digits", "--visible", "3", "--latent-dim", "3", "--hidden", "16",
                      "--epochs", "1", "--eval-k", "5", "--eval-n", "30", "--no-progress", "--out", str(out), *extra])
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["test"]["visible"] == 3 and metrics["test"]["log_likelihood"] < 0
        assert (out / "completions.png").stat().st_size > 1000
