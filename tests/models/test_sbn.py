"""The sigmoid belief network: exact log p(x) by enumeration, training towards it with each
estimator for discrete guides, clear errors, and the command line."""

import itertools
import json

import pyro
import pytest
import torch

from inference import fit as fit_cli
from models.sbn import SBN
from pyro_gen import evaluate, fit
from pyro_gen.data import load


def _brute_log_likelihood(sbn, x):
    total = []
    for bits in itertools.product((0.0, 1.0), repeat=sbn.z_dim):
        z = torch.tensor(bits)
        log_p = sbn.prior().log_prob(z) + torch.distributions.Bernoulli(logits=sbn.decoder(z)).log_prob(x).sum(-1)
        total.append(log_p)
    return torch.logsumexp(torch.stack(total), 0)


def test_enumerated_log_likelihood_is_normalized_and_matches_a_loop():
    pyro.clear_param_store()
    torch.manual_seed(0)
    sbn = SBN(x_dim=5, z_dim=3, hidden=(4,))
    states = torch.tensor(list(itertools.product((0.0, 1.0), repeat=5)))
    ll = sbn.enumerate_log_likelihood(states)
    assert torch.logsumexp(ll, 0).item() == pytest.approx(0.0, abs=1e-5)  # sums to one over every x
    with torch.no_grad():
        assert torch.allclose(ll, _brute_log_likelihood(sbn, states), atol=1e-5)


@pytest.mark.parametrize("objective", ["vimco:5", "rws:5", "graph"])
def test_each_estimator_raises_the_exact_log_likelihood(objective):
    """Data from an SBN with 4 latents; a fresh SBN trained by each estimator gains on the exact
    held-out log-likelihood, and its IWAE bound stays below the exact value."""
    pyro.clear_param_store()
    torch.manual_seed(1)
    truth = SBN(x_dim=12, z_dim=4)
    with torch.no_grad():
        truth.decoder[0].weight.mul_(4.0)
        data = truth.sample(800, mean=False)
    train, test = data[:600], data[600:]
    pyro.clear_param_store()
    torch.manual_seed(2)
    sbn = SBN(x_dim=12, z_dim=4)
    before = sbn.enumerate_log_likelihood(test).mean().item()
    fit(sbn.model, sbn.guide, train, objective=objective, epochs=10, batch_size=100, lr=0.05, progress=False)
    after = sbn.enumerate_log_likelihood(test).mean().item()
    oracle = truth.enumerate_log_likelihood(test).mean().item()
    assert after > before + 1.0 and after > oracle - 0.5, (before, after, oracle)
    iwae = evaluate.log_likelihood(sbn.model, sbn.guide, test, k=50, seed=0)
    assert iwae.mean <= after + 3 * iwae.se


def test_bad_input_is_named():
    sbn = SBN(x_dim=6, z_dim=20)
    with pytest.raises(ValueError, match="the sigmoid belief network: binary data \\(0 or 1\\) expected, but these values lie in \\[0.5, 0.5\\]"):
        sbn.check_data(torch.full((2, 6), 0.5))
    with pytest.raises(ValueError, match="has 5 columns but the model expects 6"):
        sbn.check_data(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="z_dim=20 is more than 16"):
        sbn.enumerate_log_likelihood(torch.zeros(2, 6))
    with pytest.raises(ValueError, match="x_dim and z_dim must be positive"):
        SBN(x_dim=6, z_dim=0)
    with pytest.raises(ValueError, match="not reparameterizable.*use objective 'graph'"):
        fit(sbn.model, sbn.guide, torch.zeros(4, 6), objective="iwae:3", epochs=1, progress=False)


def test_fit_cli_trains_and_scores_an_sbn(tmp_path):
    out = tmp_path / "run"
    fit_cli.main(["sbn", "--data", "digits", "--latent-dim", "10", "--epochs", "1", "--eval-k", "20",
                  "--eval-n", "50", "--no-progress", "--out", str(out)])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["objective"] == "vimco:5"  # the family's default
    assert metrics["test"]["log_likelihood"] < 0 and (out / "samples.png").stat().st_size > 0
    grey = load("digits")
    grey.binary, grey.name = False, "grey digits"
    with pytest.raises(ValueError, match="grey digits is not binary: pass --binarize dynamic"):
        fit_cli.MODELS["sbn"](fit_cli._parse(["sbn", "--out", str(tmp_path)]), grey)
