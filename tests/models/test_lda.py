"""models/lda.py against exact answers: Pyro's enumeration of the word topics, the exact
marginal likelihood of tiny documents, the Laplace approximation's closed form, and the
recovery of known topics."""

import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO

from models.lda import AmortizedLDA, ProdLDA, laplace_dirichlet_prior, lda_model
from pyro_gen import evaluate, fit
from pyro_gen.metrics import topics as T


def test_laplace_approximation_matches_its_closed_form():
    loc, scale = laplace_dirichlet_prior(torch.tensor([0.5, 2.0]))
    # K = 2: (1 - 2/K) vanishes; sum 1/alpha / K^2 = 2.5 / 4
    assert torch.allclose(loc, torch.tensor([-math.log(2), math.log(2)]))
    assert torch.allclose(scale, torch.full((2,), math.sqrt(0.625)))
    loc, scale = laplace_dirichlet_prior(torch.ones(50))
    assert torch.allclose(loc, torch.zeros(50)) and torch.allclose(scale**2, torch.full((50,), 1 - 1 / 50))


def test_summed_out_topics_equal_pyro_enumeration():
    """sum_n log sum_k theta_k beta_{k,w_n} (the analytic sum) == TraceEnum_ELBO over per-word z."""
    torch.manual_seed(0)
    lda = AmortizedLDA(vocab_size=7, num_topics=3)
    tokens = torch.tensor([0, 3, 3, 6, 1, 3])
    x = torch.bincount(tokens, minlength=7).float()[None]
    theta = torch.tensor([[0.2, 0.5, 0.3]])

    def enumerated(tokens):
        with pyro.plate("words", len(tokens)):
            z = pyro.sample("z", dist.Categorical(theta[0]), infer={"enumerate": "parallel"})
            pyro.sample("w", dist.Categorical(lda.topics()[z]), obs=tokens)

    enum_log_p = -TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(enumerated, lambda tokens: None, tokens)
    tr = poutine.trace(poutine.condition(lda.model, {"theta": theta})).get_trace(x)
    analytic = tr.nodes["words"]["fn"].log_prob(x) - T.bow_log_normalizer(x).float()
    assert analytic.item() == pytest.approx(enum_log_p.item(), rel=1e-5)


def _exact_log_p(doc: torch.Tensor, topics: torch.Tensor, alpha: torch.Tensor) -> float:
    """log p(w_1..w_N) under LDA by summing over every topic assignment z in K^N:
    E_Dirichlet[prod_k theta_k^m_k] = Gamma(A) / Gamma(A + N) prod_k Gamma(alpha_k + m_k) / Gamma(alpha_k)."""
    words = [w for w, n in enumerate(doc.long().tolist()) for _ in range(n)]
    k, a = len(alpha), alpha.double()
    terms = []
    for z in itertools.product(range(k), repeat=len(words)):
        m = torch.bincount(torch.tensor(z), minlength=k).double()
        log_e_theta = (torch.lgamma(a.sum()) - torch.lgamma(a.sum() + len(words))
                       + (torch.lgamma(a + m) - torch.lgamma(a)).sum())
        terms.append(log_e_theta + sum(math.log(topics[zi, w]) for zi, w in zip(z, words)))
    return torch.logsumexp(torch.stack(terms), 0).item()


def test_perplexity_matches_the_exact_marginal_of_tiny_documents():
    torch.manual_seed(1)
    lda = AmortizedLDA(vocab_size=6, num_topics=3, alpha=0.7)
    lda.topic_logits.data = 2.0 * torch.randn(3, 6)  # distinct topics, so theta matters
    docs = torch.tensor([[2., 0., 1., 0., 0., 1.], [0., 3., 0., 0., 1., 0.], [1., 1., 1., 1., 1., 0.],
                         [0., 0., 0., 4., 0., 0.]])
    topics = lda.topics().detach().double()
    exact = sum(_exact_log_p(d, topics, lda.alpha) for d in docs)
    exact_ppl = math.exp(-exact / docs.sum().item())
    pyro.set_rng_seed(0)
    got = T.perplexity(lda.model, lda.guide, docs, k=20000)
    assert got.words == 17 and got.k == 20000
    assert got.log_likelihood == pytest.approx(exact, abs=0.02)
    assert got.perplexity == pytest.approx(exact_ppl, rel=1e-3)
    # bounds in order: ELBO < IWAE-k, and IWAE-k below the exact value up to Monte Carlo error
    elbo = evaluate.elbo(lda.model, lda.guide, docs, num_samples=2000)
    elbo_words = elbo.mean * len(docs) - T.bow_log_normalizer(docs).sum().item()
    assert elbo_words < got.log_likelihood - 0.1
    assert got.log_likelihood <= exact + 0.01


def test_prodlda_iwae_agrees_with_prior_sampling():
    """No closed form for the logistic normal: a 200k-draw estimate from the prior is the reference."""
    torch.manual_seed(2)
    net = ProdLDA(vocab_size=8, num_topics=3, alpha=0.5).eval()
    net.beta.weight.data = 2.0 * torch.randn(8, 3)
    doc = torch.tensor([[3., 0., 1., 0., 0., 2., 0., 0.]])
    with torch.no_grad():
        theta = dist.Normal(net.prior_loc, net.prior_scale).sample((200_000,)).softmax(-1)
        reference = torch.logsumexp(dist.Multinomial(logits=net.word_logits(theta[:, None]), validate_args=False)
                                    .log_prob(doc), 0).item() - math.log(200_000)
    pyro.set_rng_seed(0)
    got = evaluate.log_likelihood(net.model, net.guide, doc, k=20000)
    assert got.mean == pytest.approx(reference, abs=0.02)


@pytest.mark.slow
def test_amortized_lda_recovers_known_topics(one_thread):
    corpus = T.synthetic_corpus(n_docs=500, vocab_size=30, num_topics=4, doc_length=80, alpha=0.2, eta=0.1, seed=0)
    torch.manual_seed(0)
    lda = AmortizedLDA(30, 4, hidden=32, dropout=0.0)
    fit(lda.model, lda.guide, corpus.counts, objective="meanfield", epochs=150, batch_size=100, lr=0.02,
        progress=False)
    rec = T.topic_recovery(lda.topic_word().detach(), corpus.topics)
    # scikit-learn's batch variational LDA (200 iterations) reaches 0.29 here; uniform topics 0.67
    assert rec.mean_hellinger < 0.25, rec
    assert sorted(rec.matches) == [0, 1, 2, 3]
    theta = lda.document_topics(corpus.counts)[:, rec.matches]
    assert (theta.argmax(1) == corpus.theta.argmax(1)).float().mean() > 0.85


def test_prodlda_learns_and_samples(one_thread):
    corpus = T.synthetic_corpus(n_docs=300, vocab_size=30, num_topics=4, doc_length=60, alpha=0.2, eta=0.1, seed=4)
    x = corpus.counts
    unigram = x.sum(0) / x.sum()
    unigram_ppl = math.exp(-(x * unigram.log()).sum().item() / x.sum().item())
    torch.manual_seed(0)
    net = ProdLDA(30, 4, hidden=32)
    pyro.set_rng_seed(0)
    before = T.perplexity(net.model, net.guide, x[:100], k=10).perplexity
    fit(net.model, net.guide, x, objective="meanfield", epochs=60, batch_size=50, lr=0.01, progress=False)
    after = T.perplexity(net.model, net.guide, x[:100], k=10).perplexity
    # The batch norm over each word's logit (the paper's remedy for component collapse) keeps
    # ProdLDA from fitting word frequencies exactly, so it ends near, not below, the unigram model.
    assert after < 0.75 * before and after < 1.3 * unigram_ppl, (before, unigram_ppl, after)
    docs = net.sample(7, doc_length=40)
    assert docs.shape == (7, 30) and (docs.sum(1) == 40).all()
    theta = net.document_topics(x[:5])
    assert theta.shape == (5, 4) and torch.allclose(theta.sum(1), torch.ones(5))
    assert net.topic_word().shape == (4, 30) and net.training


@pytest.mark.parametrize("cls", [ProdLDA, AmortizedLDA])
def test_bad_input_is_named(cls):
    net = cls(10, 3)
    with pytest.raises(ValueError, match=r"word counts of shape \(N, 10\), got \(4, 9\)"):
        net.model(torch.ones(4, 9))
    with pytest.raises(ValueError, match="alpha .* must be positive"):
        cls(10, 3, alpha=0.0)
    with pytest.raises(ValueError, match="num_topics >= 2"):
        cls(10, 1)
    with pytest.raises(ValueError, match="dropout"):
        cls(10, 3, dropout=1.0)
    with pytest.raises(ValueError, match="empty documents"):
        T.perplexity(net.model, net.guide, torch.zeros(2, 10), k=2)


def test_lda_model_scores_foreign_topics():
    """lda_model is a plain Pyro function: any (K, V) topics, e.g. scikit-learn's, can be scored."""
    topics = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    x = torch.tensor([[1., 1., 0.]])
    tr = poutine.trace(poutine.condition(lda_model, {"theta": torch.tensor([[1.0, 0.0]])})).get_trace(
        x, topics, torch.ones(2))
    assert tr.nodes["words"]["fn"].log_prob(x).item() == pytest.approx(math.log(2 * 0.25))


@pytest.mark.slow
def test_cli_fits_a_topic_model_and_reports_topics(tmp_path, one_thread):
    """Offline on the bundled digits (64 binary "words"); the benchmark smoke test covers 20 Newsgroups."""
    from inference.fit import main

    out = tmp_path / "run"
    metrics = main(["lda", "--data", "digits", "--topics", "5", "--epochs", "1", "--max-steps", "3",
                    "--eval-k", "3", "--eval-n", "40", "--out", str(out), "--no-progress"])
    topics = metrics["test"]["topics"]
    assert len(topics["npmi_per_topic"]) == 5 and len(topics["top_words"][0]) == 10
    assert -1 <= topics["npmi"] <= 1 and topics["perplexity"] > 1
    assert (out / "top_words.png").stat().st_size > 0 and "| topic |" in (out / "top_words.md").read_text()
    assert metrics["config"]["topics"] == 5 and metrics["steps"] == 3
