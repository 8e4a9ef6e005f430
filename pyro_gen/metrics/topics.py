"""Topic model metrics: coherence, held-out perplexity, recovery of known topics, top words.

- :func:`npmi`: normalized pointwise mutual information of each topic's top words,
  from document co-occurrence in a reference corpus (Lau et al. 2014; the measure
  ProdLDA reports). scikit-learn and gensim's ``CoherenceModel`` would need the text
  re-tokenized; this reads the count matrix directly.
- :func:`perplexity`: exp(- sum_d log p(w_d) / sum_d N_d) on held-out documents, with
  log p(w_d) the IWAE-k importance-weighted estimate (``pyro_gen.evaluate``) of the
  probability of the document's word sequence (the multinomial coefficient removed).
- :func:`synthetic_corpus`: documents drawn from LDA's generative process, with the
  true topics and proportions kept.
- :func:`topic_recovery`: learned topics matched to true ones by the Hungarian method
  (``scipy.optimize.linear_sum_assignment``) on Hellinger distances, and the mean
  distance of the matched pairs.
- :func:`top_words`, :func:`top_words_table`, :func:`plot_top_words`: what the topics say;
  :func:`topic_report` writes them for a run folder.

Topics are (K, V) tensors whose rows are distributions over the vocabulary; corpora
are (N, V) word-count tensors.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..data import check_data

__all__ = ["check_counts", "check_topics", "npmi", "top_word_ids", "top_words", "top_words_table", "plot_top_words",
           "hellinger", "topic_recovery", "Recovery", "synthetic_corpus", "SyntheticCorpus", "bow_log_normalizer",
           "perplexity", "perplexity_from", "Perplexity", "topic_report"]


# --- input checks --------------------------------------------------------------------------

def check_counts(x, what: str = "documents", vocab_size: int | None = None) -> torch.Tensor:
    """A word-count matrix (N, V) of finite, non-negative whole numbers (any dtype), returned as a float tensor."""
    if torch.is_tensor(x) and not torch.is_floating_point(x):
        x = x.float()
    x = check_data(x, what, dim=vocab_size)
    if (x < 0).any() or (x != x.round()).any():
        raise ValueError(f"{what} must hold non-negative whole word counts")
    return x


def check_topics(topics, what: str = "topics") -> torch.Tensor:
    """A (K, V) tensor whose rows are probability distributions (non-negative, summing to 1)."""
    if not torch.is_tensor(topics):
        raise TypeError(f"{what} must be a torch.Tensor (K, V), got {type(topics).__name__}")
    if topics.dim() != 2:
        raise ValueError(f"{what} must have shape (K, V), got {tuple(topics.shape)}")
    t = topics.detach().double()
    if not torch.isfinite(t).all() or (t < 0).any() or not torch.allclose(t.sum(-1), torch.ones(len(t),
                                                                                                 dtype=t.dtype), atol=1e-4):
        raise ValueError(f"each row of {what} must be a distribution over words (non-negative, summing to 1)")
    return t


# --- coherence -------------------------------------------------------------------------------

def top_word_ids(topics: torch.Tensor, n: int = 10) -> torch.Tensor:
    """Indices of each topic's n most probable words, (K, n), most probable first."""
    t = check_topics(topics)
    if not 1 <= n <= t.shape[1]:
        raise ValueError(f"n must be between 1 and the vocabulary size {t.shape[1]}, got {n}")
    return t.topk(n, dim=-1).indices


def npmi(topics: torch.Tensor, corpus: torch.Tensor, n: int = 10) -> torch.Tensor:
    """NPMI coherence of each topic's top-n words, (K,), from document co-occurrence in ``corpus``.

    For words i, j with document frequencies p(i), p(j) and joint frequency p(i, j)::

        NPMI(i, j) = log(p(i, j) / (p(i) p(j))) / -log p(i, j),

    -1 when the two never share a document, 1 when both are in every document;
    a topic's score is the mean over its n(n-1)/2 pairs. Average the result for the
    usual single figure.

    References:
        Bouma (2009), Normalized (Pointwise) Mutual Information in Collocation Extraction.
        Lau, Newman & Baldwin (2014), Machine Reading Tea Leaves.
    """
    if n < 2:
        raise ValueError(f"NPMI needs pairs of words: n must be >= 2, got {n}")
    ids = top_word_ids(topics, n)
    present = check_counts(corpus, "corpus", vocab_size=topics.shape[1]) > 0
    words, where = ids.unique(return_inverse=True)  # only the top words' columns are needed
    occ = present[:, words].double()
    p = occ.mean(0)
    joint = occ.t() @ occ / occ.shape[0]            # co-document frequencies of the top words
    i, j = torch.triu_indices(n, n, offset=1)
    scores = []
    for top in where:
        pij, pi, pj = joint[top[i], top[j]], p[top[i]], p[top[j]]
        val = torch.where(pij > 0, torch.log(pij / (pi * pj)) / -torch.log(pij), torch.full_like(pij, -1.0))
        val = torch.where(pij >= 1, torch.ones_like(pij), val)  # 0/0: both words in every document
        scores.append(val.mean())
    return torch.stack(scores)


# --- what the topics say ---------------------------------------------------------------------

def top_words(topics: torch.Tensor, vocab: Sequence[str], n: int = 10) -> list[list[str]]:
    """Each topic's n most probable words."""
    if len(vocab) != topics.shape[-1]:
        raise ValueError(f"vocab has {len(vocab)} words but the topics have {topics.shape[-1]}")
    return [[vocab[i] for i in row] for row in top_word_ids(topics, n).tolist()]


def top_words_table(topics: torch.Tensor, vocab: Sequence[str], n: int = 10,
                    scores: torch.Tensor | None = None) -> str:
    """A Markdown table: one row per topic with its top words (and its NPMI if ``scores`` given)."""
    words = top_words(topics, vocab, n)
    head = "| topic | " + ("NPMI | " if scores is not None else "") + "top words |"
    lines = [head, "|---|" + ("---|" if scores is not None else "") + "---|"]
    for k, row in enumerate(words):
        score = f"{float(scores[k]):.3f} | " if scores is not None else ""
        lines.append(f"| {k} | {score}{' '.join(row)} |")
    return "\n".join(lines)


def plot_top_words(topics: torch.Tensor, vocab: Sequence[str], path, n: int = 10, max_topics: int = 20,
                   ncols: int = 5, title: str | None = None, scores: torch.Tensor | None = None) -> Path:
    """The top-n words of (up to ``max_topics``) topics as small bar charts, one cell per topic, in a PNG.

    Bar length is the word's probability relative to the topic's top word. Drawn in one
    axes (a grid of subplots with tick labels takes seconds per figure to lay out).
    """
    from ..figures.plots import _plt, _save

    t = check_topics(topics)
    ids = top_word_ids(t, n)[:max_topics]
    plt = _plt()
    rows = math.ceil(len(ids) / ncols)
    fig, ax = plt.subplots(figsize=(2.4 * ncols, (0.17 * n + 0.45) * rows))
    height = n + 2  # rows of one cell: a title line and a gap
    for k, top in enumerate(ids.tolist()):
        col, row = k % ncols, k // ncols
        y0 = row * height
        probs = t[k, top]
        ax.barh([y0 + 1.5 + i for i in range(n)], (0.9 * probs / probs[0]).tolist(), left=col, height=0.8,
                color="#9ecae1")
        for i, w in enumerate(top):
            ax.text(col + 0.03, y0 + 1.5 + i, vocab[w], va="center", fontsize=7)
        label = f"topic {k}" + (f"  NPMI {float(scores[k]):.2f}" if scores is not None else "")
        ax.text(col + 0.02, y0 + 0.4, label, va="center", fontsize=8, fontweight="bold")
    ax.set_xlim(0, ncols)
    ax.set_ylim(rows * height, 0)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


# --- known topics ----------------------------------------------------------------------------

@dataclass
class SyntheticCorpus:
    """Documents drawn from LDA with the topics and proportions that made them."""

    counts: torch.Tensor   # (N, V) word counts, float
    topics: torch.Tensor   # (K, V) true word distributions
    theta: torch.Tensor    # (N, K) true document-topic proportions
    alpha: float
    eta: float


def synthetic_corpus(n_docs: int = 1000, vocab_size: int = 100, num_topics: int = 5, doc_length: int = 100,
                     alpha: float = 0.1, eta: float = 0.05, seed: int = 0) -> SyntheticCorpus:
    """Draw a corpus from LDA's generative process (Blei et al. 2003).

    beta_k ~ Dirichlet(eta), theta_d ~ Dirichlet(alpha), N_d ~ 1 + Poisson(doc_length - 1),
    then each of the N_d words picks a topic z ~ theta_d and a word w ~ beta_z (the counts
    are drawn as Multinomial(N_d, theta_d @ beta), which is the same distribution).

    References:
        Blei, Ng & Jordan (2003), Latent Dirichlet Allocation.
    """
    for name, value in (("n_docs", n_docs), ("vocab_size", vocab_size), ("num_topics", num_topics),
                        ("doc_length", doc_length)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not (alpha > 0 and eta > 0):
        raise ValueError(f"alpha and eta must be positive, got alpha={alpha}, eta={eta}")
    import numpy as np

    rng = np.random.default_rng(seed)  # numpy's Dirichlet stays accurate for concentrations << 1
    topics = rng.dirichlet(np.full(vocab_size, eta), size=num_topics)
    theta = rng.dirichlet(np.full(num_topics, alpha), size=n_docs)
    lengths = 1 + rng.poisson(doc_length - 1, size=n_docs)
    probs = theta @ topics
    counts = np.stack([rng.multinomial(n, p / p.sum()) for n, p in zip(lengths, probs)])
    as_tensor = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    return SyntheticCorpus(as_tensor(counts), as_tensor(topics), as_tensor(theta), float(alpha), float(eta))


def hellinger(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Pairwise Hellinger distances between the rows of p (K1, V) and q (K2, V), in [0, 1]."""
    sp, sq = check_topics(p, "p").sqrt(), check_topics(q, "q").sqrt()
    if sp.shape[1] != sq.shape[1]:
        raise ValueError(f"p and q are over different vocabularies: {sp.shape[1]} and {sq.shape[1]} words")
    return (torch.cdist(sp, sq) / math.sqrt(2.0)).clamp(0.0, 1.0)


@dataclass
class Recovery:
    """Learned topics matched to the true ones."""

    mean_hellinger: float
    distances: list[float]     # of each true topic to its match
    matches: list[int]         # learned topic matched to each true topic

    def as_dict(self) -> dict:
        """``{"mean_hellinger": ..., "distances": [...], "matches": [...]}``, e.g. for JSON."""
        return asdict(self)


def topic_recovery(learned: torch.Tensor, true: torch.Tensor) -> Recovery:
    """Match each true topic to a distinct learned one (Hungarian method on Hellinger distances).

    ``learned`` may have more topics than ``true``; the unmatched ones are ignored.
    """
    from scipy.optimize import linear_sum_assignment

    dist = hellinger(true, learned)
    if dist.shape[1] < dist.shape[0]:
        raise ValueError(f"{dist.shape[1]} learned topics cannot cover {dist.shape[0]} true ones")
    rows, cols = linear_sum_assignment(dist.numpy())
    d = dist[rows, cols]
    return Recovery(float(d.mean()), d.tolist(), [int(c) for c in cols])


# --- held-out perplexity ---------------------------------------------------------------------

def bow_log_normalizer(x: torch.Tensor) -> torch.Tensor:
    """log(N_d! / prod_w n_dw!): the log number of word orders of each bag of words, (N,)."""
    x = check_counts(x).double()
    return torch.lgamma(x.sum(-1) + 1) - torch.lgamma(x + 1).sum(-1)


@dataclass
class Perplexity:
    """Held-out perplexity and what it was computed from."""

    perplexity: float
    log_likelihood: float      # sum_d log p(w_d), nats (word sequences)
    words: int                 # sum_d N_d
    k: int                     # importance samples per document

    def as_dict(self) -> dict:
        """``{"perplexity": ..., "log_likelihood": ..., "words": ..., "k": ...}``, e.g. for JSON."""
        return asdict(self)


def perplexity(model: Callable, guide: Callable, docs: torch.Tensor, k: int = 100,
               batch_size: int = 100) -> Perplexity:
    """exp(- sum_d log p(w_d) / sum_d N_d), with log p(w_d) estimated by IWAE-k.

    ``model(x)`` must score a document's counts with a Multinomial (the bag of words);
    the multinomial coefficient is removed, so p(w_d) is the probability of the word
    sequence, as in Blei et al. (2003) and scikit-learn. The IWAE-k estimate is a lower
    bound in expectation, so the perplexity is an upper bound that tightens with k.

    References:
        Blei, Ng & Jordan (2003), Latent Dirichlet Allocation, sec. 7.1.
        Wallach, Murray, Salakhutdinov & Mimno (2009), Evaluation Methods for Topic Models.
        Burda, Grosse & Salakhutdinov (2016), Importance Weighted Autoencoders.
    """
    from ..evaluate import log_likelihood

    x = check_counts(docs).double()
    if (x.sum(-1) == 0).any():
        raise ValueError("docs contains empty documents; perplexity is per word, drop them first")
    return perplexity_from(log_likelihood(model, guide, docs, k=k, batch_size=batch_size).mean, x, k)


def perplexity_from(mean_log_likelihood: float, docs: torch.Tensor, k: int) -> Perplexity:
    """The perplexity of ``docs`` from their mean multinomial log-likelihood (e.g. from
    ``pyro_gen.evaluate.log_likelihood`` with k particles): the coefficient is removed here."""
    x = check_counts(docs).double()
    total = mean_log_likelihood * len(x) - bow_log_normalizer(x).sum().item()
    words = int(x.sum().item())
    return Perplexity(math.exp(-total / words), total, words, k)


def topic_report(topics: torch.Tensor, vocab: Sequence[str], corpus: torch.Tensor, out, name: str = "",
                 n: int = 10) -> dict:
    """NPMI of each topic's top-n words on ``corpus``, with the top-words figure and Markdown table
    written to ``out/{name}top_words.png`` and ``.md``. Returns the figures and file paths."""
    out = Path(out)
    scores = npmi(topics, corpus, n)
    label = name.rstrip("_") or "topics"
    figure = plot_top_words(topics, vocab, out / f"{name}top_words.png", n=n, scores=scores,
                            title=f"{label}, {len(scores)} topics: top words (NPMI per topic)")
    table = out / f"{name}top_words.md"
    table.write_text(f"## {label}, {len(scores)} topics (mean NPMI {scores.mean().item():.3f})\n\n"
                     + top_words_table(topics, vocab, n, scores=scores) + "\n")
    return {"npmi": scores.mean().item(), "npmi_per_topic": [round(v, 4) for v in scores.tolist()],
            "top_words": top_words(topics, vocab, n), "figure": str(figure), "table": str(table)}
