"""Probabilistic PCA against its exact answers: the closed-form ML solution (Tipping & Bishop
1999), scikit-learn's PCA, Bayes' rule for the posterior, and the bounds' ordering."""

import math

import pyro
import pytest
import torch
from sklearn.decomposition import PCA

from inference import fit as fit_cli
from models.ppca import PPCA, fit_linear_autoencoder, synthetic_data
from pyro_gen import data, fit
from pyro_gen.exact import linear_gaussian as lg
from pyro_gen.evaluate.bounds import check_bounds
from pyro_gen.evaluate import per_point_log_weights

D, Q = 10, 2


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These matrices are tiny: a second thread only adds synchronization, and on a busy
    # 2-core machine it made full-batch training ~9x slower (37.6 s against 4.2 s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def xs():
    return synthetic_data(2000, D, Q, sigma=0.5, seed=0)[0]


def _sklearn_params(pca: PCA):
    """pPCA parameters of a fitted sklearn PCA (its score uses exactly these)."""
    W = torch.as_tensor(pca.components_.T * (pca.explained_variance_ - pca.noise_variance_) ** 0.5)
    return W, torch.as_tensor(pca.mean_), math.sqrt(pca.noise_variance_)


def _train(x, covariance="full", encoder="linear", epochs=300, seed=0):
    torch.manual_seed(seed)
    m = PPCA(x.shape[1], Q, encoder=encoder, covariance=covariance, hidden=(32,))
    fit(m.model, m.guide, x, objective="trace", epochs=epochs, batch_size=len(x), lr=0.05, lr_schedule="cosine",
        seed=seed, progress=False)
    return m


# --- the closed forms ------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["synthetic", "digits"])
def test_ml_solution_is_the_maximum_and_matches_sklearn(source, xs):
    x = xs if source == "synthetic" else data.load("digits").train  # real digits: 64 pixels, some constant
    q = Q if source == "synthetic" else 8
    W, mu, sigma = lg.ml_solution(x, q)
    L = lg.exact_log_likelihood(x, W, mu, sigma)
    L_star = lg.max_log_likelihood(x, q)
    assert L.mean().item() == pytest.approx(L_star, rel=1e-10)

    # a maximum: scaling W or sigma lowers it, rotating W's columns leaves it unchanged
    assert lg.exact_log_likelihood(x, 1.02 * W, mu, sigma).mean() < L_star
    assert lg.exact_log_likelihood(x, W, mu, 1.02 * sigma).mean() < L_star
    assert lg.exact_log_likelihood(x, W, mu, 0.98 * sigma).mean() < L_star
    R, _ = torch.linalg.qr(torch.randn(q, q, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    assert lg.exact_log_likelihood(x, W @ R, mu, sigma).mean().item() == pytest.approx(L_star, rel=1e-10)

    # scikit-learn: same subspace; its score_samples is our log-likelihood at its (N-1) parameters
    x64 = x.double().numpy()
    pca = PCA(q).fit(x64)
    assert lg.subspace_angle(W, pca.components_.T) < 1e-6
    assert sigma.item() ** 2 == pytest.approx(pca.noise_variance_ * (len(x) - 1) / len(x), rel=1e-6)
    ours_at_sklearn = lg.exact_log_likelihood(x, *_sklearn_params(pca))
    assert torch.allclose(ours_at_sklearn, torch.as_tensor(pca.score_samples(x64)), rtol=1e-7, atol=1e-5)
    assert pca.score(x64) <= L_star + 1e-9  # its N-1 estimates are not quite the maximum


def test_exact_log_likelihood_equals_dense_gaussian():
    g = torch.Generator().manual_seed(3)
    W, mu, x = torch.randn(7, 3, generator=g), torch.randn(7, generator=g), torch.randn(20, 7, generator=g)
    C = W.double() @ W.double().T + 0.3**2 * torch.eye(7, dtype=torch.float64)
    dense = torch.distributions.MultivariateNormal(mu.double(), C).log_prob(x.double())
    assert torch.allclose(lg.exact_log_likelihood(x, W, mu, 0.3), dense, rtol=1e-12)


def test_exact_posterior_is_gaussian_conditioning():
    g = torch.Generator().manual_seed(4)
    W, mu, x, s = torch.randn(6, 2, generator=g).double(), torch.randn(6, generator=g).double(), \
        torch.randn(5, 6, generator=g), 0.7
    # joint (z, x) is Gaussian with Cov(z, x) = W^T, Cov(x) = C: condition the textbook way
    C = W @ W.T + s**2 * torch.eye(6, dtype=torch.float64)
    mean = (W.T @ torch.linalg.solve(C, (x.double() - mu).T)).T
    cov = torch.eye(2, dtype=torch.float64) - W.T @ torch.linalg.solve(C, W)
    post = lg.exact_posterior(x, W, mu, s)
    assert torch.allclose(post.loc, mean, atol=1e-12) and torch.allclose(post.covariance_matrix, cov, atol=1e-12)


def test_elbo_gap_is_log_p_minus_the_monte_carlo_elbo(xs):
    torch.manual_seed(0)
    m = PPCA(D, Q, covariance="diagonal")  # untrained: a large gap
    x = xs[:8]
    gap = m.elbo_gap(x)
    log_w = per_point_log_weights(m.model, m.guide, x, 20000).double()
    mc_gap = m.exact_log_likelihood(x) - log_w.mean(0)
    se = log_w.std(0) / math.sqrt(log_w.shape[0])
    assert (gap > 0.05).all()  # an untrained guide: a real gap to measure
    assert ((gap - mc_gap).abs() < 5 * se + 1e-4).all(), (gap, mc_gap, se)


def test_exact_guide_makes_every_weight_equal_to_p_x(xs):
    torch.manual_seed(0)
    m = PPCA(D, Q)
    with torch.no_grad():
        m.W.copy_(torch.randn(D, Q))  # not orthogonal: the posterior has correlations
        m.log_sigma.fill_(math.log(0.5))
    m.set_exact_guide()
    x = xs[:50]
    assert m.elbo_gap(x).abs().max() < 1e-5
    log_w = per_point_log_weights(m.model, m.guide, x, 16).double()
    assert torch.allclose(log_w, m.exact_log_likelihood(x).expand_as(log_w), rtol=1e-5)


# --- learning by SVI reaches the closed form ---------------------------------------------------


@pytest.fixture(scope="module")
def trained(xs):
    return {cov: _train(xs, cov) for cov in ("full", "diagonal")}


@pytest.mark.parametrize("covariance", ["full", "diagonal"])
def test_svi_reaches_the_ml_solution(covariance, trained, xs):
    m = trained[covariance]
    L_star = lg.max_log_likelihood(xs, Q)
    ll = m.exact_log_likelihood(xs).mean().item()
    assert ll <= L_star + 1e-9
    assert (L_star - ll) / abs(L_star) < 1e-3
    pca = PCA(Q).fit(xs.numpy())
    assert lg.subspace_angle(m.W, pca.components_.T) < 1.0
    assert abs(ll - pca.score(xs.numpy())) / abs(L_star) < 1e-3
    assert m.sigma.item() == pytest.approx(lg.ml_solution(xs, Q)[2].item(), rel=1e-2)


def test_linear_gaussian_guide_closes_the_gap(trained, xs):
    gap = trained["full"].elbo_gap(xs)
    assert gap.mean() < 5e-3 and gap.max() < 2e-2, gap.mean()


def test_diagonal_guide_makes_w_orthogonal(trained, xs):
    # The ELBO prefers, among the rotations W R of equal likelihood, the one whose posterior
    # its diagonal guide can represent: W^T W diagonal (Lucas et al. 2019). Its gap is then small.
    W = trained["diagonal"].W.detach().double()
    G = W.T @ W
    assert abs(G[0, 1]) / torch.sqrt(G[0, 0] * G[1, 1]) < 0.1  # 0.064 measured; it keeps falling with epochs
    assert trained["diagonal"].elbo_gap(xs).mean() < 5e-3


def test_bounds_ordered_and_the_check_can_fail(xs):
    m = _train(xs[:500], covariance="diagonal", encoder="mlp", epochs=10)  # an imperfect guide: a real gap
    x = xs[:200]
    exact = m.exact_log_likelihood(x)
    assert m.elbo_gap(x).mean() > 0.05  # 0.10 measured
    check = check_bounds(m.model, m.guide, x, exact, k=50, replicates=10)
    assert check.ordered, check.summary()
    assert check.elbo.mean() < check.iwae.mean() < exact.mean()  # the gap is far above the noise
    # IWAE-k tightens with k (in expectation; 10 replicates of 200 points make it clear)
    assert check_bounds(m.model, m.guide, x, exact, k=5, replicates=10).iwae.mean() < check.iwae.mean()
    # a reference 0.5 nats too low is caught
    assert not check_bounds(m.model, m.guide, x, exact - 0.5, k=50, replicates=10).ordered


def test_linear_autoencoder_spans_the_pca_subspace(xs):
    ae = fit_linear_autoencoder(xs, Q)
    pca = PCA(Q).fit(xs.numpy())
    assert lg.subspace_angle(ae.decoder.weight, pca.components_.T) < 1.0
    assert lg.subspace_angle(ae.encoder.weight.T, pca.components_.T) < 1.0


@pytest.mark.slow
def test_ard_switches_off_unused_columns(xs):
    # Five columns for two true dimensions. The ELBO's pressure to concentrate the signal in
    # few columns is weak (rotations of W keep the likelihood), so this needs ~1000 steps.
    x = xs[:500]
    torch.manual_seed(0)
    m = PPCA(D, 5, ard=True, num_data=len(x))
    fit(m.model, m.guide, x, objective="meanfield", epochs=1000, batch_size=len(x), lr=0.05, lr_schedule="cosine",
        progress=False)
    W = m.W_loc.detach()
    norms = W.norm(dim=0).sort(descending=True).values
    assert norms[1] > 1.5 and norms[2:].max() < 0.01 * norms[1], norms
    alpha = m.log_alpha.detach().exp().sort().values
    assert alpha[2:].min() > 100 * alpha[1], alpha
    keep = W.norm(dim=0).argsort(descending=True)[:2]  # the two live columns span the principal subspace
    assert lg.subspace_angle(W[:, keep], PCA(Q).fit(x.numpy()).components_.T) < 1.0


def test_ard_weights_the_global_w_by_the_batch_share():
    # each minibatch's loss must be batch/N of the full-data ELBO, so W's terms get scale B/N
    m = PPCA(6, 3, ard=True, num_data=40)
    x = synthetic_data(10, 6, 2)[0]
    guide_trace = pyro.poutine.trace(m.guide).get_trace(x)
    model_trace = pyro.poutine.trace(pyro.poutine.replay(m.model, trace=guide_trace)).get_trace(x)
    assert guide_trace.nodes["W"]["scale"] == model_trace.nodes["W"]["scale"] == pytest.approx(0.25)
    assert model_trace.nodes["z"]["scale"] == 1.0
    prior = m.ard_prior()
    assert torch.allclose(prior.base_dist.scale[0], m.log_alpha.exp() ** -0.5)


# --- the command line and bad input ------------------------------------------------------------


def test_fit_cli_ppca_reports_the_exact_log_likelihood(tmp_path):
    m = fit_cli.main(["ppca", "--data", "digits", "--latent-dim", "3", "--epochs", "2", "--lr", "0.01",
                      "--eval-k", "20", "--eval-n", "50", "--ppca-covariance", "diagonal", "--out", str(tmp_path),
                      "--no-progress"])
    test = m["test"]
    assert test["elbo"] < test["log_likelihood"] < test["exact_log_likelihood"] + 3 * test["exact_log_likelihood_se"]
    assert (tmp_path / "reconstructions.png").stat().st_size > 0


def test_fit_cli_bayesian_pca_is_evaluated_at_the_posterior_mean(tmp_path):
    m = fit_cli.main(["ppca", "--ppca-ard", "--data", "digits", "--latent-dim", "3", "--epochs", "1",
                      "--eval-k", "10", "--eval-n", "20", "--out", str(tmp_path), "--no-progress"])
    assert m["test"]["log_likelihood"] < m["test"]["exact_log_likelihood"] + 3 * m["test"]["exact_log_likelihood_se"]


def test_plug_in_model_scores_like_bayesian_pca():
    torch.manual_seed(0)
    bpca = PPCA(6, 3, encoder="mlp", hidden=(8,), ard=True)
    x = synthetic_data(20, 6, 2)[0]
    plain = bpca.for_evaluation()
    assert not plain.ard and torch.equal(plain.W, bpca.W_loc) and plain.hidden == (8,)
    assert torch.equal(plain.exact_log_likelihood(x), bpca.exact_log_likelihood(x))
    assert torch.equal(plain.encode(x)[0], bpca.encode(x)[0])
    assert plain.for_evaluation() is plain


def test_fit_cli_ppca_unknown_guide_lists_the_choices(capsys):
    with pytest.raises(SystemExit) as e:
        fit_cli.main(["ppca", "--ppca-encoder", "cnn", "--out", "unused"])
    assert e.value.code == 2 and "choose from 'linear', 'mlp'" in capsys.readouterr().err


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="valid choices: linear, mlp"):
        PPCA(5, 2, encoder="cnn")
    with pytest.raises(ValueError, match="valid choices: full, diagonal"):
        PPCA(5, 2, covariance="banded")
    with pytest.raises(ValueError, match="z_dim"):
        PPCA(5, 5)
    with pytest.raises(ValueError, match="exact posterior"):
        PPCA(5, 2, encoder="mlp").set_exact_guide()
    x = torch.randn(10, 5)
    with pytest.raises(ValueError, match="1 <= q < d=5"):
        lg.ml_solution(x, 5)
    with pytest.raises(ValueError, match="NaN"):
        lg.max_log_likelihood(torch.full((10, 5), float("nan")), 2)
    with pytest.raises(ValueError, match="5 columns but the model expects 4"):
        lg.exact_log_likelihood(x, torch.randn(4, 2), torch.zeros(4), 1.0)
    with pytest.raises(ValueError, match="sigma must be one positive"):
        lg.exact_log_likelihood(x, torch.randn(5, 2), torch.zeros(5), 0.0)
    with pytest.raises(TypeError, match="floating-point"):
        lg.ml_solution(x.long(), 2)
    m = PPCA(5, 2)
    with pytest.raises(ValueError, match=r"shape \(10,\)"):
        check_bounds(m.model, m.guide, x, torch.zeros(3))
