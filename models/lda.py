"""Topic models of bags of words: ProdLDA and amortized LDA (Srivastava & Sutton 2017).

Both read a document as word counts x_d (a row of V counts) and share one story::

    theta_d ~ p(theta)                              (document-topic proportions, K topics)
    x_d     ~ Multinomial(N_d, p(w | theta_d))      (the bag of words)

and both infer theta_d with an amortized guide, an encoder network of the counts.

**Amortized LDA** (Blei et al. 2003, with an encoder for the posterior)::

    theta_d ~ Dirichlet(alpha)
    p(w | theta_d) = sum_k theta_dk beta_kw        (a mixture of the K topics beta_k)
    q(theta_d | x_d) = Dirichlet(encoder(x_d))     (reparameterized Dirichlet, Jankowiak & Obermeyer 2018)

The word-topic assignments z_dn are summed out analytically: given theta_d the
words are independent draws from sum_k theta_dk beta_k, so the whole document is
one Multinomial over the mixture. This is exact, costs one (K x V) product per
document instead of a (N_d x K) table per document, works for every objective in
``pyro_gen.objectives`` (IWAE, DReG and Renyi bounds included, which Pyro's
enumeration, ``TraceEnum_ELBO``, does not serve), and needs no ragged token
lists. ``tests/models/test_lda.py`` checks it against Pyro's enumeration of z.

**ProdLDA** (Srivastava & Sutton 2017) replaces the mixture by a product of
experts and the Dirichlet by its Laplace approximation in the softmax basis::

    log theta_d ~ Normal(mu(alpha), sigma(alpha)^2)           (Laplace approximation of Dirichlet(alpha))
    theta_d = softmax(log theta_d)
    p(w | theta_d) = softmax(BatchNorm(sum_k theta_dk beta_k))_w   (beta_k unnormalized: a product of experts)
    q(log theta_d | x_d) = Normal(mu(x_d), diag sigma(x_d)^2)

Topics are point estimates (maximum likelihood), as in both papers' neural
variants. Minibatches work as for a VAE: the documents' plate covers the batch,
and no global latent needs rescaling.

References:
    Blei, Ng & Jordan (2003), Latent Dirichlet Allocation.
    Srivastava & Sutton (2017), Autoencoding Variational Inference for Topic Models.
    Jankowiak & Obermeyer (2018), Pathwise Derivatives Beyond the Reparameterization Trick.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, pyro_method
from torch import nn

__all__ = ["ProdLDA", "AmortizedLDA", "Encoder", "laplace_dirichlet_prior", "lda_model", "examples", "OBJECTIVES"]

#: The objective names these models train with (used by the contract test over every model). Every
#: objective applies, since all latents are reparameterized.
OBJECTIVES = ["trace", "meanfield", "iwae:3", "dreg:3", "renyi:0.5", "graph"]


def laplace_dirichlet_prior(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of the Laplace approximation of Dirichlet(alpha) in the softmax basis.

    mu_k = log alpha_k - mean_i log alpha_i,
    sigma_k^2 = (1 - 2/K) / alpha_k + sum_i (1 / alpha_i) / K^2.

    References:
        Srivastava & Sutton (2017), eq. 3 (after MacKay 1998 and Hennig et al. 2012).
    """
    k = alpha.shape[-1]
    loc = alpha.log() - alpha.log().mean(-1, keepdim=True)
    var = (1.0 - 2.0 / k) / alpha + (1.0 / alpha).sum(-1, keepdim=True) / k**2
    return loc, var.sqrt()


def _check_topic_args(vocab_size: int, num_topics: int, alpha: float, hidden: int, dropout: float) -> None:
    if vocab_size < 2 or num_topics < 2 or hidden < 1:
        raise ValueError(f"need vocab_size >= 2, num_topics >= 2 and hidden >= 1, "
                         f"got {vocab_size}, {num_topics}, {hidden}")
    if not alpha > 0:
        raise ValueError(f"alpha (the Dirichlet concentration per topic) must be positive, got {alpha}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


def _bag_of_words(probs: torch.Tensor | None = None, logits: torch.Tensor | None = None) -> dist.Multinomial:
    # torch's Multinomial.log_prob counts each document's own length (value.sum(-1)), so one
    # distribution scores documents of any length; total_count matters only for sampling.
    return dist.Multinomial(total_count=1, probs=probs, logits=logits, validate_args=False)


def lda_model(x: torch.Tensor, topics: torch.Tensor, alpha: torch.Tensor) -> None:
    """LDA's model with z summed out: theta_d ~ Dirichlet(alpha), x_d ~ Multinomial(theta_d @ topics).

    A plain Pyro function, so any (K, V) topics can be scored (e.g. scikit-learn's).
    """
    with pyro.plate("documents", x.shape[0]):
        theta = pyro.sample("theta", dist.Dirichlet(alpha.expand(x.shape[0], -1)))
        pyro.sample("words", _bag_of_words(probs=theta @ topics), obs=x)


class Encoder(nn.Module):
    """Word counts -> ``heads`` batch-normalized outputs of size K, through two softplus layers.

    The batch norm on the outputs is ProdLDA's remedy for component collapse.
    """

    def __init__(self, vocab_size: int, num_topics: int, hidden: int = 100, dropout: float = 0.2, heads: int = 1):
        super().__init__()
        self.heads = heads
        self.body = nn.Sequential(nn.Linear(vocab_size, hidden), nn.Softplus(),
                                  nn.Linear(hidden, hidden), nn.Softplus(), nn.Dropout(dropout),
                                  nn.Linear(hidden, heads * num_topics))
        self.bn = nn.BatchNorm1d(heads * num_topics, affine=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        batch = x.shape[:-1]
        out = self.bn(self.body(x.reshape(-1, x.shape[-1])))
        return out.reshape(*batch, -1).chunk(self.heads, dim=-1)


class _TopicModel(PyroModule):
    """What the two topic models share: sizes, the prior's alpha, sampling and reading topics."""

    def __init__(self, vocab_size: int, num_topics: int, alpha: float | None, hidden: int, dropout: float,
                 heads: int):
        super().__init__()
        alpha = 1.0 if alpha is None else float(alpha)
        _check_topic_args(vocab_size, num_topics, alpha, hidden, dropout)
        self.vocab_size, self.num_topics = int(vocab_size), int(num_topics)
        self.register_buffer("alpha", torch.full((num_topics,), alpha))
        self.encoder = Encoder(vocab_size, num_topics, hidden, dropout, heads)

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 2 or x.shape[-1] != self.vocab_size:
            raise ValueError(f"documents must be word counts of shape (N, {self.vocab_size}), got {tuple(x.shape)}")

    def check_data(self, x: torch.Tensor) -> None:
        """Word counts this model can score, checked once before training or evaluation."""
        self._check(x)
        if (x < 0).any() or (x != x.round()).any():
            raise ValueError("documents must hold non-negative whole word counts")

    def word_probs(self, theta: torch.Tensor) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def _theta_mean(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    @torch.no_grad()
    def document_topics(self, x: torch.Tensor) -> torch.Tensor:
        """The guide's mean topic proportions of each document, (N, K) (evaluation mode)."""
        self._check(x)
        was = self.training
        self.eval()
        try:
            return self._theta_mean(x)
        finally:
            self.train(was)

    @torch.no_grad()
    def sample(self, n: int, doc_length: int = 100) -> torch.Tensor:
        """n documents of ``doc_length`` words from the model (theta from the prior), as counts (n, V)."""
        was = self.training
        self.eval()
        try:
            theta = self.prior_theta(n)
            return dist.Multinomial(doc_length, probs=self.word_probs(theta)).sample()
        finally:
            self.train(was)

    def prior_theta(self, n: int) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError


class AmortizedLDA(_TopicModel):
    """LDA with a Dirichlet document-topic latent, z summed out, and a Dirichlet encoder guide.

    Args:
        vocab_size: V, the number of distinct words.
        num_topics: K.
        alpha: the symmetric Dirichlet concentration of theta (default 1/K, scikit-learn's).
        hidden: width of the encoder's two hidden layers.
        dropout: dropout on the encoder's last hidden layer while training.
    """

    def __init__(self, vocab_size: int, num_topics: int = 20, alpha: float | None = None,
                 hidden: int = 100, dropout: float = 0.2):
        super().__init__(vocab_size, num_topics, 1.0 / num_topics if alpha is None else alpha, hidden, dropout, 1)
        self.topic_logits = nn.Parameter(0.1 * torch.randn(num_topics, vocab_size))

    # --- the two Pyro programs -------------------------------------------------------

    @pyro_method
    def model(self, x: torch.Tensor) -> None:
        """LDA's generative model with the current topics (:func:`lda_model`).

        In the plate ``"documents"``, samples ``"theta"`` ~ Dirichlet(alpha) and observes
        ``"words"`` ~ Multinomial(theta_d @ topics), the word-topic assignments summed out.

        Args:
            x: word counts, (N, V).
        """
        self._check(x)
        lda_model(x, self.topics(), self.alpha)

    @pyro_method
    def guide(self, x: torch.Tensor) -> None:
        """The amortized Dirichlet guide: in the plate ``"documents"``, samples ``"theta"`` ~
        Dirichlet(:meth:`concentration` of x), reparameterized.

        Args:
            x: word counts, (N, V).
        """
        with pyro.plate("documents", x.shape[0]):
            pyro.sample("theta", dist.Dirichlet(self.concentration(x)))

    # --- pieces ------------------------------------------------------------------------

    def topics(self) -> torch.Tensor:
        """beta: each topic's distribution over words, (K, V)."""
        return self.topic_logits.softmax(-1)

    topic_word = topics

    def concentration(self, x: torch.Tensor) -> torch.Tensor:
        """The guide's Dirichlet concentrations of theta for each document, (N, K): the
        encoder's output through a softplus, plus a floor of 0.01."""
        # The floor keeps the Dirichlet's pathwise gradients finite for tiny concentrations.
        (a,) = self.encoder(x)
        return nn.functional.softplus(a) + 1e-2

    def word_probs(self, theta: torch.Tensor) -> torch.Tensor:
        """p(w | theta): the mixture of the topics, theta @ beta, (..., V)."""
        return theta @ self.topics()

    def prior_theta(self, n: int) -> torch.Tensor:
        """n draws of the topic proportions from the prior Dirichlet(alpha), (n, K)."""
        return dist.Dirichlet(self.alpha).sample((n,))

    def _theta_mean(self, x: torch.Tensor) -> torch.Tensor:
        c = self.concentration(x)
        return c / c.sum(-1, keepdim=True)


class ProdLDA(_TopicModel):
    """ProdLDA: a logistic-normal (Laplace-approximated Dirichlet) latent and a product-of-experts decoder.

    Args:
        vocab_size: V.
        num_topics: K.
        alpha: the symmetric Dirichlet concentration that the Gaussian prior approximates (default 1).
        hidden: width of the encoder's two hidden layers (100 in the paper).
        dropout: dropout on the encoder and on theta before decoding, while training (0.2 in the paper).
    """

    def __init__(self, vocab_size: int, num_topics: int = 20, alpha: float | None = None,
                 hidden: int = 100, dropout: float = 0.2):
        super().__init__(vocab_size, num_topics, alpha, hidden, dropout, 2)
        self.beta = nn.Linear(num_topics, vocab_size, bias=False)
        self.bn = nn.BatchNorm1d(vocab_size, affine=False)
        self.drop = nn.Dropout(dropout)
        loc, scale = laplace_dirichlet_prior(self.alpha)
        self.register_buffer("prior_loc", loc)
        self.register_buffer("prior_scale", scale)

    # --- the two Pyro programs -------------------------------------------------------

    @pyro_method
    def model(self, x: torch.Tensor) -> None:
        """ProdLDA's generative model.

        In the plate ``"documents"``, samples ``"log_theta"`` ~ Normal(prior_loc, prior_scale),
        the Laplace approximation of Dirichlet(alpha), and observes ``"words"`` ~ Multinomial
        with logits :meth:`word_logits` of theta = softmax(log_theta).

        Args:
            x: word counts, (N, V).
        """
        self._check(x)
        with pyro.plate("documents", x.shape[0]):
            log_theta = pyro.sample("log_theta", dist.Normal(self.prior_loc, self.prior_scale).to_event(1))
            pyro.sample("words", _bag_of_words(logits=self.word_logits(log_theta.softmax(-1))), obs=x)

    @pyro_method
    def guide(self, x: torch.Tensor) -> None:
        """The amortized logistic-normal guide: in the plate ``"documents"``, samples
        ``"log_theta"`` ~ Normal(loc, diag scale^2), loc and scale from the encoder
        (:meth:`posterior`).

        Args:
            x: word counts, (N, V).
        """
        loc, scale = self.posterior(x)
        with pyro.plate("documents", x.shape[0]):
            pyro.sample("log_theta", dist.Normal(loc, scale).to_event(1))

    # --- pieces ------------------------------------------------------------------------

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The guide's mean and standard deviation of log theta."""
        loc, log_var = self.encoder(x)
        return loc, (0.5 * log_var).exp()

    def word_logits(self, theta: torch.Tensor) -> torch.Tensor:
        """The product-of-experts word logits for topic proportions theta, (..., V): dropout on
        theta while training, the unnormalized topics beta, then a batch norm over documents."""
        batch = theta.shape[:-1]
        h = self.beta(self.drop(theta)).reshape(-1, self.vocab_size)
        return self.bn(h).reshape(*batch, self.vocab_size)

    def word_probs(self, theta: torch.Tensor) -> torch.Tensor:
        """p(w | theta): the softmax of :meth:`word_logits`, (..., V)."""
        return self.word_logits(theta).softmax(-1)

    def topic_word(self) -> torch.Tensor:
        """Each topic's word distribution softmax(beta_k), (K, V): the weights that the paper reads top words from.

        (The batch norm rescales each word's logit over documents; it is left out here, as in the paper.)
        """
        return self.beta.weight.t().softmax(-1)

    def prior_theta(self, n: int) -> torch.Tensor:
        """n draws of the topic proportions from the prior: softmax of Normal(prior_loc, prior_scale), (n, K)."""
        return dist.Normal(self.prior_loc, self.prior_scale).sample((n,)).softmax(-1)

    def _theta_mean(self, x: torch.Tensor) -> torch.Tensor:
        return self.posterior(x)[0].softmax(-1)


def examples(seed: int = 0) -> dict[str, tuple[_TopicModel, torch.Tensor]]:
    """Small instances with matching word counts, for the contract test over every model."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.poisson(torch.rand(16, 30, generator=g) * 2.0, generator=g)
    counts[:, 0] += 1  # no empty documents
    torch.manual_seed(seed)
    return {
        "prodlda": (ProdLDA(30, 4, hidden=16), counts),
        "amortized-lda": (AmortizedLDA(30, 4, hidden=16, alpha=0.5), counts),
    }



# --- the command line: python -m inference.fit prodlda|lda (see models/__init__.py) -------------


def cli_options(parser) -> None:
    g = parser.add_argument_group("topic model (e.g. --data 20newsgroups)")
    g.add_argument("--topics", type=int, default=20, help="number of topics K")
    g.add_argument("--alpha", type=float, default=None,
                   help="Dirichlet concentration of the topic proportions (default: 1 for prodlda, 1/K for lda)")
    g.add_argument("--topic-hidden", type=int, default=100, help="width of the encoder's two hidden layers")
    g.add_argument("--dropout", type=float, default=0.2, help="encoder dropout while training")


def from_cli(args, ds, variant: str) -> _TopicModel:
    """The topic model ``variant`` (``"ProdLDA"`` or ``"AmortizedLDA"``) for the vocabulary of ``ds``."""
    cls = {c.__name__: c for c in (ProdLDA, AmortizedLDA)}[variant]
    return cls(ds.dim, args.topics, alpha=args.alpha, hidden=args.topic_hidden, dropout=args.dropout)
