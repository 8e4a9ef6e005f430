"""M2: the enumerated objective against the exact sum over classes, labeled and unlabeled points in
one batch, the classification term, training through fit, clear errors and the command line."""

import json

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from inference import fit as fit_cli
from models.ssvae import SSVAE
from pyro_gen import fit, objectives
from pyro_gen.data import balanced_label_mask, load, oversample_labeled


def _small(alpha=0.0):
    pyro.clear_param_store()
    torch.manual_seed(0)
    m2 = SSVAE(x_dim=6, num_classes=3, z_dim=2, hidden=(5,), alpha=alpha)
    x = torch.bernoulli(torch.full((5, 6), 0.4))
    y = torch.tensor([2, 0, 1, 1, 0])
    mask = torch.tensor([True, False, False, True, False])
    return m2, x, y, mask


def test_enumerated_objective_is_the_exact_sum_over_classes():
    """With the guide's z draws fixed, enum's loss is -(sum over labeled points of L(x, y) + sum over
    unlabeled points of sum_y q(y|x) [L(x, y) - log q(y|x)]), the M2 objective of Kingma et al."""
    m2, x, y, mask = _small()
    pyro.set_rng_seed(0)
    loss = objectives.enum(max_plate_nesting=1).differentiable_loss(m2.model, m2.guide, x, y, mask)
    pyro.set_rng_seed(0)
    guide_trace = poutine.trace(poutine.enum(m2.guide, first_available_dim=-2)).get_trace(x, y, mask)
    z_l, z_u = guide_trace.nodes["z_labeled"]["value"], guide_trace.nodes["z_unlabeled"]["value"]
    assert z_u.shape == (3, 3, 2)  # (classes, unlabeled points, z_dim): every class at once, no loop

    def elbo_term(xs, ys, z):
        log_p = (torch.log(torch.tensor(1 / 3)) + dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
                 + dist.Bernoulli(logits=m2.decoder(torch.cat([z, torch.nn.functional.one_hot(ys, 3).float()], -1)))
                 .log_prob(xs).sum(-1))
        return log_p - m2.posterior(xs, ys).log_prob(z)

    labeled = elbo_term(x[mask], y[mask], z_l).sum()
    x_u = x[~mask]
    ks = torch.arange(3).unsqueeze(-1).expand(3, len(x_u))
    q_y = torch.softmax(m2.classifier(x_u), -1).T  # (3, N_u)
    unlabeled = (q_y * (elbo_term(x_u, ks, z_u) - q_y.log())).sum()
    assert torch.allclose(-loss, labeled + unlabeled, atol=1e-4), (-loss.item(), (labeled + unlabeled).item())


def test_classification_term_only_while_training_and_only_labeled():
    m2, x, y, mask = _small(alpha=7.0)
    trace = poutine.trace(m2.model).get_trace(x, y, mask)
    site = trace.nodes["classify"]
    log_q = dist.Categorical(logits=m2.classifier(x[mask])).log_prob(y[mask])
    assert torch.allclose(site["fn"].log_prob(site["value"]), 7.0 * log_q)
    assert "classify" not in poutine.trace(m2.eval().model).get_trace(x, y, mask).nodes
    assert "classify" not in poutine.trace(m2.train().model).get_trace(x).nodes  # no labels, no term


def test_bad_labels_and_masks_are_named():
    m2, x, y, mask = _small()
    with pytest.raises(ValueError, match="labels must lie in 0..2; found 3"):
        m2.model(x, torch.tensor([3, 0, 0, 0, 0]), mask)
    with pytest.raises(ValueError, match="label mask must be a boolean tensor of shape \\(5,\\) matching the batch"):
        m2.model(x, y, mask[:4])
    with pytest.raises(ValueError, match="labels have 4 entries but the batch has 5 points"):
        m2.check_data(x, y[:4], mask)
    with pytest.raises(TypeError, match="labels must be an integer tensor"):
        m2.check_data(x, y.float(), mask)
    with pytest.raises(ValueError, match="but no labels were given"):
        m2.model(x, None, mask)
    with pytest.raises(ValueError, match="cannot be balanced over 10 classes"):
        balanced_label_mask(torch.arange(100) % 10, 15)
    with pytest.raises(ValueError, match="labels must lie in 0..2"):  # fit checks the whole data set up front
        fit(m2.model, m2.guide, (x, torch.full((5,), 9), torch.ones(5, dtype=torch.bool)), objective="enum",
            epochs=1, progress=False)


def test_m2_learns_to_classify_digits_from_few_labels():
    """scikit-learn's 8x8 digits, 100 labels (10 a class): M2 trained through fit with enum classifies
    the held-out digits far better than chance."""
    ds = load("digits")
    y = ds.labels["train"]
    mask = balanced_label_mask(y, 100, seed=0)
    assert mask.sum() == 100 and torch.bincount(y[mask]).tolist() == [10] * 10
    idx = oversample_labeled(mask, 0.3, seed=0)
    pyro.clear_param_store()
    torch.manual_seed(0)
    m2 = SSVAE(64, 10, z_dim=8, hidden=(64,), alpha=20.0)
    fit(m2.model, m2.guide, (ds.train[idx], y[idx], mask[idx]), objective="enum", epochs=12, batch_size=100,
        lr=3e-3, progress=False)
    assert m2.error(ds.test, ds.labels["test"]) < 25.0  # chance: 90; 15.6 seen (alpha 0: 25.2)
    assert m2.analogies(ds.test[:2]).shape == (2, 10, 64)


def test_fit_cli_writes_error_and_figures(tmp_path):
    out = tmp_path / "run"
    metrics = fit_cli.main(["ssvae", "--data", "digits", "--labels", "50", "--latent-dim", "4", "--hidden", "32",
                            "--epochs", "1", "--eval-k", "10", "--eval-n", "40", "--no-progress", "--out", str(out)])
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["config"]["objective"] == "enum" and 0 <= saved["test"]["error"] <= 100
    assert saved["test"]["labels"] == 50 and metrics["test"]["error"] == saved["test"]["error"]
    for fig in ("analogies.png", "latent.png"):
        assert (out / fig).stat().st_size > 1000, fig
    with pytest.raises(ValueError, match="needs labels; binarized-mnist has none"):
        fit_cli.MODELS["ssvae"](fit_cli._parse(["ssvae", "--out", str(tmp_path)]), _unlabeled())


def _unlabeled():
    ds = load("digits")
    ds.labels, ds.name = {}, "binarized-mnist"
    return ds
