"""The HMM against exact answers: brute-force sums over every path, the hand-written forward,
forward-backward and Viterbi recursions, and known parameters on synthetic data."""

import itertools
import math

import pytest
import pyro.distributions as dist
import torch
from scipy.optimize import linear_sum_assignment

from models.hmm import HMM, synthetic
from pyro_gen import fit, objectives
from pyro_gen.evaluate import log_likelihood as iwae_log_likelihood
from pyro_gen.data import time_mask
from pyro_gen.exact.hmm import ForwardHMM, forward_backward, forward_log_likelihood, viterbi



pytestmark = pytest.mark.usefixtures("one_thread")

def _random_hmm(K=3, D=4, emission="bernoulli", method="markov", seed=0, **kw):
    torch.manual_seed(seed)
    net = HMM(K, D, emission, method=method, **kw)
    with torch.no_grad():  # far from uniform, so that a wrong recursion shows
        net.init_logits.normal_(0, 1.5)
        net.trans_logits.normal_(0, 1.5)
    return net


def _data(D=4, N=5, T=6, emission="bernoulli", seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(N, T, D, generator=g) < 0.4).float() if emission == "bernoulli" else torch.randn(N, T, D, generator=g)
    lengths = torch.tensor([T, 1, 3, T - 1, 2][:N])
    return x * time_mask(lengths, T).unsqueeze(-1), lengths


def _brute_force(log_init, log_trans, log_emit, length):
    """log p(x) and the best path of one sequence by listing all K^T paths."""
    K = log_init.shape[0]
    scores = {}
    for path in itertools.product(range(K), repeat=length):
        s = log_init[path[0]] + log_emit[0, path[0]]
        for t in range(1, length):
            s = s + log_trans[path[t - 1], path[t]] + log_emit[t, path[t]]
        scores[path] = s
    values = torch.stack(list(scores.values()))
    return torch.logsumexp(values, 0), max(scores, key=lambda p: scores[p].item()), scores


@pytest.mark.parametrize("emission", ["bernoulli", "gaussian"])
def test_hand_written_recursions_match_brute_force(emission):
    net = _random_hmm(emission=emission)
    x, lengths = _data(emission=emission)
    li, lt, le = (t.double() for t in net.log_terms(x))
    ll = forward_log_likelihood(li, lt, le, lengths)
    post = forward_backward(li, lt, le, lengths)
    best = viterbi(li, lt, le, lengths)
    for n, L in enumerate(lengths.tolist()):
        exact, path, scores = _brute_force(li, lt, le[n], L)
        assert ll[n].item() == pytest.approx(exact.item(), rel=1e-10)
        assert tuple(best[n, :L].tolist()) == path and (best[n, L:] == 0).all()
        for t in range(L):  # p(z_t = k | x) = sum of the paths through k, normalized
            for k in range(3):
                mass = torch.logsumexp(torch.stack([s for p, s in scores.items() if p[t] == k]), 0)
                assert post[n, t, k].item() == pytest.approx((mass - exact).exp().item(), abs=1e-10)
        assert (post[n, L:] == 0).all()


@pytest.mark.parametrize("method", ["markov", "vectorized", "forward"])
@pytest.mark.parametrize("emission", ["bernoulli", "gaussian"])
def test_enumerated_log_likelihood_equals_forward_algorithm(method, emission):
    net = _random_hmm(D=4, emission=emission, method=method)
    x, lengths = _data(emission=emission)
    exact = forward_log_likelihood(*net.log_terms(x), lengths)
    loss = objectives.get("enum").differentiable_loss(net.model, net.guide, x, lengths)  # -sum_n log p(x_n)
    assert -loss.item() == pytest.approx(exact.sum().item(), rel=1e-4)
    assert torch.allclose(net.log_likelihood(x, lengths), exact, rtol=1e-4)
    # one sequence at a time: padded steps past a sequence's end change nothing
    for n in range(len(x)):
        alone = objectives.get("enum").differentiable_loss(net.model, net.guide, x[n:n + 1], lengths[n:n + 1])
        assert -alone.item() == pytest.approx(exact[n].item(), rel=1e-4)


@pytest.mark.parametrize("method", ["vectorized", "forward"])
def test_markov_and_one_site_forms_have_the_same_gradients(method):
    markov = _random_hmm(method="markov")
    other = _random_hmm(method=method)
    other.load_state_dict(markov.state_dict())
    x, lengths = _data()
    for net in (markov, other):
        objectives.get("enum").differentiable_loss(net.model, net.guide, x, lengths).backward()
    for (name, a), (_, b) in zip(markov.named_parameters(), other.named_parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-5), name


@pytest.mark.parametrize("trans_shape", [(3, 3), (7, 3, 3), (2, 7, 3, 3), (1, 3, 3)])
def test_forward_hmm_equals_discrete_hmm(trans_shape):
    """ForwardHMM replaces only DiscreteHMM's log_prob: same values (and gradients) for every
    broadcasting of the transition logits, batched initial logits and a Gaussian emission."""
    g = torch.Generator().manual_seed(0)
    init = torch.randn(2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    trans = torch.randn(*trans_shape, generator=g, dtype=torch.float64, requires_grad=True)
    obs = dist.Normal(torch.randn(7, 3, 2, generator=g, dtype=torch.float64), 1.5).to_event(1)
    x = torch.randn(5, 2, 7, 2, generator=g, dtype=torch.float64)  # sample (5,) + batch (2,) + event (7, 2)
    ours, pyros = ForwardHMM(init, trans, obs), dist.DiscreteHMM(init, trans, obs)
    assert ours.batch_shape == pyros.batch_shape == (2,) and ours.event_shape == (7, 2)
    lp, ref = ours.log_prob(x), pyros.log_prob(x)
    assert lp.shape == (5, 2) and torch.allclose(lp, ref, rtol=1e-10)
    ga = torch.autograd.grad(lp.sum(), (init, trans))
    gb = torch.autograd.grad(ref.sum(), (init, trans))
    assert all(torch.allclose(a, b, rtol=1e-8, atol=1e-10) for a, b in zip(ga, gb))
    wide = ours.expand((4, 2))  # used by plates: keeps the class, so keeps the recursion
    assert isinstance(wide, ForwardHMM) and wide.batch_shape == (4, 2)
    assert torch.allclose(wide.log_prob(x[:4]), ref[:4], rtol=1e-10)


@pytest.mark.parametrize("params", ["point", "variational"])
def test_infer_discrete_viterbi_and_marginals_match_the_recursions(params):
    net = _random_hmm(K=3, D=2, emission="gaussian", params=params)
    x, lengths = _data(D=2, emission="gaussian")
    li, lt, le = net.log_terms(x)
    assert torch.equal(net.viterbi(x, lengths), viterbi(li, lt, le, lengths))
    assert torch.allclose(net.marginals(x, lengths), forward_backward(li, lt, le, lengths), atol=1e-5)


def test_posterior_samples_follow_the_marginals():
    net = _random_hmm(K=2, D=2, emission="gaussian")
    x, lengths = _data(D=2, N=2, T=4, emission="gaussian")
    freq = net.marginals(x, lengths, num_samples=2000)  # frequencies among infer_discrete draws
    exact = forward_backward(*net.log_terms(x), lengths)
    assert (freq - exact).abs().max() < 0.045  # 4 standard errors at n=2000
    assert (freq[~time_mask(lengths, 4)] == 0).all()


def test_amortized_guide_iwae_bound_approaches_the_exact_log_likelihood():
    # An untrained guide is a poor proposal: its ELBO sits well below log p(x), and the
    # importance-weighted bound must close that gap as k grows (Burda et al. 2016).
    net = _random_hmm(K=2, D=3, guide="amortized", hidden=8)
    x, lengths = _data(D=3, N=4, T=4)
    x, lengths = x.repeat(10, 1, 1), lengths.repeat(10)  # 40 sequences: a steadier mean
    exact = forward_log_likelihood(*net.log_terms(x), lengths).mean().item()
    bounds = {k: iwae_log_likelihood(net.model, net.guide, (x, lengths), k=k).mean for k in (1, 10, 100, 3000)}
    gaps = [exact - bounds[k] for k in (1, 10, 100, 3000)]
    assert gaps[0] > 0.5 and all(a > b for a, b in zip(gaps, gaps[1:])), gaps
    assert abs(gaps[-1]) < 0.02, gaps


@pytest.mark.slow
def test_fitted_gaussian_hmm_recovers_the_true_parameters():
    x, lengths, truth = synthetic(n=30, length=50, seed=0)
    torch.manual_seed(0)
    net = HMM(3, 2, "gaussian").init_from_data(x, lengths, seed=1)
    fit(net.model, net.guide, (x, lengths), objective="enum", epochs=120, batch_size=30, lr=0.1, progress=False)
    est = net.point_estimates()
    # match states up to permutation (Hungarian method on the distance between means)
    cost = torch.cdist(truth["loc"], est["loc"])
    rows, perm = linear_sum_assignment(cost.numpy())
    perm = torch.as_tensor(perm)
    assert torch.allclose(est["loc"][perm], truth["loc"], atol=0.15)
    assert torch.allclose(est["scale"][perm], truth["scale"], atol=0.1)
    assert torch.allclose(est["trans"][perm][:, perm], truth["trans"], atol=0.04)
    # and the fitted log-likelihood is at least that of the true parameters (it is the maximum)
    true_ll = forward_log_likelihood(truth["init"].log(), truth["trans"].log(),
                                     torch.distributions.Normal(truth["loc"], truth["scale"])
                                     .log_prob(x.unsqueeze(-2)).sum(-1), lengths).sum()
    assert net.log_likelihood(x, lengths).sum() >= true_ll - 1e-3 * abs(true_ll)
    # the Viterbi path finds the true states
    agree = (perm.argsort()[net.viterbi(x, lengths)] == truth["states"]).float().mean()
    assert agree > 0.95


def test_variational_parameters_train_and_their_elbo_is_below_the_plug_in_likelihood():
    x, lengths, _ = synthetic(n=10, length=20, seed=1)
    torch.manual_seed(0)
    net = HMM(3, 2, "gaussian", params="variational", method="vectorized").init_from_data(x, lengths)
    result = fit(net.model, net.guide, (x, lengths), objective="enum", epochs=60, batch_size=10, lr=0.05,
                 progress=False)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    elbo = -objectives.get("enum").loss(net.model, net.guide, x, lengths)
    # log p(x) >= ELBO for the Bayesian model; the plug-in likelihood at the posterior mean is
    # not a bound, but on 200 frames it is close to log p(x) and cannot sit below the ELBO by much
    assert elbo < net.log_likelihood(x, lengths).sum().item()


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="unknown emission 'poisson'; valid choices: bernoulli, gaussian"):
        HMM(3, 4, "poisson")
    with pytest.raises(ValueError, match="valid choices: markov, vectorized, forward"):
        HMM(3, 4, method="scan")
    with pytest.raises(ValueError, match="states and dim"):
        HMM(0, 4)
    with pytest.raises(ValueError, match="variational"):
        HMM(3, 4, params="variational", guide="amortized")
    net = HMM(3, 4)
    x, lengths = _data()
    with pytest.raises(ValueError, match="shape \\(N, T, D\\)"):
        net.log_likelihood(x[0], lengths)
    with pytest.raises(ValueError, match="4 features.*expects 4|has 3 features"):
        net.log_likelihood(x[..., :3], lengths)
    with pytest.raises(ValueError, match="lengths must lie in \\[1, T=6\\]"):
        net.log_likelihood(x, lengths + 5)
    with pytest.raises(TypeError, match="integer tensor"):
        net.viterbi(x, lengths.float())
    bad = x.clone()
    bad[2, 1, 0] = math.nan
    with pytest.raises(ValueError, match="NaN or inf values in 1 sequence\\(s\\), first at 2"):
        net.marginals(bad, lengths)
    with pytest.raises(ValueError, match="train_data lengths must have shape \\(5,\\)"):
        fit(net.model, net.guide, (x, lengths[:3]), objective="enum", epochs=1, progress=False)


def test_cli_fits_an_hmm_on_jsb_and_reports_the_exact_test_nll(tmp_path, shared_data):
    from inference import fit as fit_cli

    out = tmp_path / "hmm"
    m = fit_cli.main(["hmm", "--data", "jsb-chorales", "--data-root", str(shared_data), "--states", "3",
                      "--epochs", "3", "--batch-size", "229", "--lr", "0.05", "--eval-n", "10", "--out", str(out),
                      "--no-progress"])
    assert m["config"]["objective"] == "enum" and len(m["history"]) == 3
    assert m["test"]["exact"] and m["test"]["n"] == 10
    assert 3 < m["test"]["nll_per_step"] < 61  # below 88 log 2 / 1: better than coin flips per key
    assert (out / "states.png").stat().st_size > 0 and (out / "checkpoint.pt").is_file()


def test_cli_refuses_an_hmm_on_data_that_are_not_sequences(tmp_path):
    from inference import fit as fit_cli

    with pytest.raises(ValueError, match="needs sequence data; valid choices for --data: jsb-chorales"):
        fit_cli.main(["hmm", "--data", "digits", "--out", str(tmp_path / "x"), "--no-progress"])


def test_enum_objective_by_name_and_under_no_grad():
    net = _random_hmm(method="markov")
    x, lengths = _data()
    elbo = objectives.get("enum")
    assert isinstance(elbo, objectives.EnumELBO) and "enum" in objectives.names()
    with torch.no_grad():  # what fit's validation does; Pyro's TraceEnum_ELBO refuses this
        value = elbo.differentiable_loss(net.model, net.guide, x, lengths)
    assert value.item() == pytest.approx(-forward_log_likelihood(*net.log_terms(x), lengths).sum().item(), rel=1e-5)
    assert objectives.get("enum:2").num_particles == 2
