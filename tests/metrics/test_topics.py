"""pyro_gen.metrics.topics against hand computations on tiny corpora."""

import math

import pytest
import torch

from pyro_gen.metrics import topics as T

# Four documents over four words; counts above 1 must not change document frequencies.
CORPUS = torch.tensor([[2., 1., 0., 0.],   # w0 w1
                       [1., 3., 1., 0.],   # w0 w1 w2
                       [5., 0., 0., 0.],   # w0
                       [0., 0., 1., 1.]])  # w2 w3


def _topics(*orders):
    """Topics whose word ranking is the given order (probabilities 0.4, 0.3, 0.2, 0.1)."""
    rows = []
    for order in orders:
        row = torch.zeros(4)
        row[list(order)] = torch.tensor([0.4, 0.3, 0.2, 0.1])
        rows.append(row)
    return torch.stack(rows)


def test_npmi_matches_hand_computation():
    # p(w0)=3/4, p(w1)=1/2, p(w2)=1/2, p(w0,w1)=1/2, p(w0,w2)=1/4, p(w1,w2)=1/4, p(w1,w3)=0
    n01 = math.log((1 / 2) / (3 / 4 * 1 / 2)) / -math.log(1 / 2)
    n02 = math.log((1 / 4) / (3 / 4 * 1 / 2)) / -math.log(1 / 4)
    n12 = math.log((1 / 4) / (1 / 2 * 1 / 2)) / -math.log(1 / 4)  # independent: 0
    got = T.npmi(_topics([0, 1, 2, 3], [1, 3, 0, 2], [0, 2, 1, 3]), CORPUS, n=2)
    assert torch.allclose(got, torch.tensor([n01, -1.0, n02], dtype=torch.float64), atol=1e-12)
    three = T.npmi(_topics([0, 1, 2, 3]), CORPUS, n=3)
    assert three.item() == pytest.approx((n01 + n02 + n12) / 3, abs=1e-12)
    assert n12 == pytest.approx(0.0, abs=1e-12)


def test_npmi_of_words_in_every_document_is_one():
    corpus = torch.tensor([[1., 1., 0.], [2., 1., 1.]])
    assert T.npmi(torch.tensor([[0.5, 0.4, 0.1]]), corpus, n=2).item() == 1.0


def test_top_words_table_and_figure(tmp_path):
    vocab = ["apple", "bread", "cheese", "dates"]
    topics = _topics([2, 0, 1, 3], [3, 1, 0, 2])
    assert T.top_words(topics, vocab, n=2) == [["cheese", "apple"], ["dates", "bread"]]
    table = T.top_words_table(topics, vocab, n=2, scores=torch.tensor([0.5, -0.25]))
    assert table.splitlines()[2] == "| 0 | 0.500 | cheese apple |"
    assert table.splitlines()[3] == "| 1 | -0.250 | dates bread |"
    path = T.plot_top_words(topics, vocab, tmp_path / "top.png", n=3, ncols=2, scores=torch.tensor([0.5, -0.25]))
    assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match="vocab has 3 words but the topics have 4"):
        T.top_words(topics, vocab[:3])


def test_hellinger_and_recovery_undo_a_permutation():
    p = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    d = T.hellinger(p, p)
    # H(delta, uniform)^2 = 1 - sqrt(0.5)
    assert d[0, 1].item() == pytest.approx(math.sqrt(1 - math.sqrt(0.5)), abs=1e-6)
    assert torch.allclose(d.diagonal(), torch.zeros(2, dtype=torch.float64), atol=1e-6)
    true = T.synthetic_corpus(n_docs=2, vocab_size=50, num_topics=6, seed=3).topics
    perm = torch.tensor([4, 2, 0, 5, 1, 3])
    extra = torch.full((1, 50), 1 / 50)
    rec = T.topic_recovery(torch.cat([true[perm], extra]), true)
    assert rec.mean_hellinger == pytest.approx(0.0, abs=1e-3)
    assert [perm[m].item() for m in rec.matches] == list(range(6))
    assert T.topic_recovery(true.flip(-1), true).mean_hellinger > 0.3
    with pytest.raises(ValueError, match="cannot cover"):
        T.topic_recovery(true[:3], true)


def test_synthetic_corpus_follows_the_lda_process():
    c = T.synthetic_corpus(n_docs=4000, vocab_size=20, num_topics=3, doc_length=50, alpha=0.5, eta=0.3, seed=1)
    assert c.counts.shape == (4000, 20) and c.topics.shape == (3, 20) and c.theta.shape == (4000, 3)
    assert torch.equal(c.counts, T.synthetic_corpus(4000, 20, 3, 50, 0.5, 0.3, seed=1).counts)
    assert (c.counts == c.counts.round()).all() and (c.counts.sum(1) >= 1).all()
    assert c.counts.sum(1).mean().item() == pytest.approx(50, rel=0.02)  # 1 + Poisson(49)
    # E[x_d / N_d] = E[theta_d] @ beta = mean of the topics under a symmetric alpha
    freq = (c.counts / c.counts.sum(1, keepdim=True)).mean(0)
    assert torch.allclose(freq, (c.theta @ c.topics).mean(0), atol=5e-3)
    assert torch.allclose(c.theta.mean(0), torch.full((3,), 1 / 3), atol=0.02)


def test_bow_log_normalizer_counts_word_orders():
    x = torch.tensor([[2., 1., 0.], [0., 0., 3.]])
    assert torch.allclose(T.bow_log_normalizer(x), torch.tensor([math.log(3), 0.0], dtype=torch.float64))


@pytest.mark.parametrize("bad, message", [
    (torch.tensor([[1.0, -1.0]]), "non-negative whole"),
    (torch.tensor([[1.5, 1.0]]), "non-negative whole"),
    (torch.tensor([[float("nan"), 1.0]]), "NaN"),
    (torch.ones(3), "shape"),
    ([[1, 2]], "torch.Tensor"),
])
def test_bad_counts_are_named(bad, message):
    with pytest.raises((ValueError, TypeError), match=message):
        T.npmi(torch.tensor([[0.5, 0.5]]), bad, n=2)


def test_bad_topics_and_arguments_are_named():
    with pytest.raises(ValueError, match="distribution over words"):
        T.npmi(torch.tensor([[0.5, 0.7]]), torch.ones(2, 2), n=2)
    with pytest.raises(ValueError, match="has 2 columns but the model expects 3"):
        T.npmi(torch.full((1, 3), 1 / 3), torch.ones(2, 2), n=2)
    with pytest.raises(ValueError, match="n must be between 1 and the vocabulary size 2"):
        T.npmi(torch.tensor([[0.5, 0.5]]), torch.ones(2, 2), n=10)
    with pytest.raises(ValueError, match="pairs of words"):
        T.npmi(torch.tensor([[0.5, 0.5]]), torch.ones(2, 2), n=1)
    with pytest.raises(ValueError, match="num_topics must be a positive integer"):
        T.synthetic_corpus(num_topics=0)
    with pytest.raises(ValueError, match="alpha and eta must be positive"):
        T.synthetic_corpus(alpha=-1.0)
    with pytest.raises(ValueError, match="different vocabularies"):
        T.hellinger(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0, 0.0]]))
