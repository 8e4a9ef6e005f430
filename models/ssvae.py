"""The semi-supervised VAE, M2 of Kingma et al. (2014): labels as a partly observed latent.

Generative model, for each data point x_n with class y_n::

    y_n ~ Categorical(1/K)                    (observed where the label mask is set)
    z_n ~ Normal(0, I)                        (style)
    x_n ~ Bernoulli(decoder(z_n, y_n))

Guide::

    q(y_n | x_n)       = Categorical(classifier(x_n))     (for the unlabeled points)
    q(z_n | x_n, y_n)  = Normal(encoder(x_n, y_n))

One batch holds labeled and unlabeled points together: ``model(x, y, mask)``. The model
splits it by the mask into two plates, as the paper's objective does (L(x, y) for the
labeled points, U(x) for the others); the guide samples the unlabeled points' ``"y"`` with
``infer={"enumerate": "parallel"}``, so under the ``enum`` objective (``TraceEnum_ELBO``)
y is summed out exactly over the K classes, in parallel, with no loop over classes. The labeled points add the classification term
``alpha * log q(y | x)`` as a ``pyro.factor`` in the model, while training only (in
``eval()`` mode the model is M2 itself, so held-out bounds are true bounds).

References:
    Kingma, Rezende, Mohamed & Welling (2014), Semi-Supervised Learning with Deep Generative Models.
"""

from __future__ import annotations

import sys
from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, pyro_method
from torch import nn
from torch.nn import functional as F

from models import mlp
from pyro_gen.data import balanced_label_mask, check_data, check_labels, oversample_labeled

__all__ = ["SSVAE", "OBJECTIVES", "examples"]

#: The objective is ``enum`` (``TraceEnum_ELBO``), which sums y out by enumeration.
OBJECTIVES = ["enum"]



class SSVAE(PyroModule):
    """M2: a VAE whose latent is a class y (partly observed) and a style z.

    Args:
        x_dim: observed dimensions (binary, or grey levels in [0, 1] scored by the Bernoulli
            cross-entropy as Kingma et al. did).
        num_classes: K.
        z_dim: style dimensions (50 in Kingma et al.).
        hidden: hidden widths of the classifier, encoder and decoder (softplus; 500 in the paper).
        alpha: weight of the classification term ``alpha * log q(y | x)`` of each labeled point
            (the paper's alpha, which it sets to 0.1 N for the whole data set).

    Examples:
        >>> from pyro_gen import data, fit
        >>> ds = data.load("digits")
        >>> y = ds.labels["train"]
        >>> mask = data.balanced_label_mask(y, 100)
        >>> m2 = SSVAE(x_dim=64, num_classes=10, z_dim=4, hidden=(32,))
        >>> result = fit(m2.model, m2.guide, (ds.train, y, mask), objective="enum", epochs=1, progress=False)
        >>> m2.classify(ds.test[:4]).shape
        torch.Size([4])
        >>> m2.model(ds.test[:2], torch.tensor([3, 11]), torch.tensor([True, True]))
        Traceback (most recent call last):
        ...
        ValueError: labels must lie in 0..9; found 11 (1 label(s) outside)
    """

    def __init__(self, x_dim: int = 784, num_classes: int = 10, z_dim: int = 50, hidden: Sequence[int] = (500,),
                 alpha: float = 50.0):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.x_dim, self.num_classes, self.z_dim, self.alpha = int(x_dim), int(num_classes), int(z_dim), float(alpha)
        self.classifier = mlp([x_dim, *hidden, num_classes], "softplus")
        self.encoder = mlp([x_dim + num_classes, *hidden, 2 * z_dim], "softplus")
        self.decoder = mlp([z_dim + num_classes, *reversed(tuple(hidden)), x_dim], "softplus")

    # --- the two Pyro programs -------------------------------------------------------

    @pyro_method
    def model(self, x: torch.Tensor, y: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> None:
        """M2 for a batch. The labeled points (``mask`` True) form the plate ``"labeled"``, where
        ``"y_labeled"`` is observed; the others the plate ``"unlabeled"``, where ``"y"`` is latent. In
        each, ``"z"`` comes from Normal(0, I) and ``"x"`` from Bernoulli(decoder(z, y)); while training,
        the factor ``"classify"`` adds ``alpha * log q(y | x)`` for the labeled points. No labels
        (``y`` None): every point is unlabeled."""
        x_l, y_l, x_u = self._split(x, y, mask)
        prior = x.new_full((self.num_classes,), 1.0 / self.num_classes)
        if len(x_l):
            with pyro.plate("labeled", len(x_l)):
                pyro.sample("y_labeled", dist.Categorical(prior), obs=y_l)
                self._generate("labeled", x_l, y_l)
                if self.training and self.alpha > 0:
                    pyro.factor("classify", self.alpha * dist.Categorical(logits=self.classifier(x_l)).log_prob(y_l))
        if len(x_u):
            with pyro.plate("unlabeled", len(x_u)):
                y_u = pyro.sample("y", dist.Categorical(prior))
                self._generate("unlabeled", x_u, y_u)

    def _generate(self, part: str, x: torch.Tensor, y: torch.Tensor) -> None:
        z = pyro.sample(f"z_{part}", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
        logits = self.decoder(torch.cat([z, self._one_hot(y, z)], -1))
        pyro.sample(f"x_{part}", dist.Bernoulli(logits=logits, validate_args=False).to_event(1), obs=x)

    @pyro_method
    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> None:
        """q(z | x, y) for the labeled points; q(y | x) (``"y"``, enumerated in parallel under ``enum``)
        then q(z | x, y) for the unlabeled ones."""
        x_l, y_l, x_u = self._split(x, y, mask)
        if len(x_l):
            with pyro.plate("labeled", len(x_l)):
                pyro.sample("z_labeled", self.posterior(x_l, y_l))
        if len(x_u):
            with pyro.plate("unlabeled", len(x_u)):
                y_u = pyro.sample("y", dist.Categorical(logits=self.classifier(x_u)), infer={"enumerate": "parallel"})
                pyro.sample("z_unlabeled", self.posterior(x_u, y_u))

    def posterior(self, x: torch.Tensor, y: torch.Tensor) -> dist.TorchDistribution:
        """q(z | x, y), a diagonal Gaussian; y may carry extra leading (enumeration or particle) dimensions."""
        one_hot = self._one_hot(y, x)
        h = torch.cat([x.expand(*one_hot.shape[:-1], -1), one_hot], -1)
        loc, raw = self.encoder(h).chunk(2, -1)
        return dist.Normal(loc, F.softplus(raw) + 1e-5).to_event(1)

    def _split(self, x, y, mask) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x of the labeled points, their labels, x of the unlabeled ones), checked."""
        if y is None:
            if mask is not None and mask.any():
                raise ValueError("a label mask marks points as labeled, but no labels were given")
            return x[:0], x.new_zeros(0, dtype=torch.long), x
        if mask is None:
            mask = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        check_labels(y, mask, x.shape[0], self.num_classes)
        return x[mask], y[mask], x[~mask]

    def _one_hot(self, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """One-hot y broadcast against ``like``'s leading dimensions (enumeration gives y a dimension of K)."""
        one_hot = F.one_hot(y, self.num_classes).to(like.dtype)
        return one_hot.expand(*torch.broadcast_shapes(one_hot.shape[:-1], like.shape[:-1]), -1)

    def check_data(self, x: torch.Tensor, y: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> None:
        """Rows of x_dim values in [0, 1]; labels in 0..K-1 where the mask is set; a mask of the batch's length."""
        check_data(x, "data", self.x_dim)
        if x.min() < 0 or x.max() > 1:
            raise ValueError(f"the Bernoulli likelihood needs values in [0, 1], got [{x.min().item():g}, "
                             f"{x.max().item():g}]")
        if y is not None:
            check_labels(y, mask, x.shape[0], self.num_classes)

    # --- uses of a trained model ---------------------------------------------------------

    @torch.no_grad()
    def class_probs(self, x: torch.Tensor) -> torch.Tensor:
        """q(y | x) for each row: (N, K)."""
        return torch.softmax(self.classifier(x), -1)

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable class under q(y | x)."""
        return self.classifier(x).argmax(-1)

    @torch.no_grad()
    def error(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000) -> float:
        """The classification error of q(y | x) on labeled data, in percent."""
        wrong = sum((self.classify(x[i:i + batch_size]) != y[i:i + batch_size]).sum().item()
                    for i in range(0, len(x), batch_size))
        return 100.0 * wrong / len(x)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z | x, y)'s mean and standard deviation, with y the classifier's guess where not given."""
        y = self.classify(x) if y is None else y
        q = self.posterior(x, y).base_dist
        return q.loc, q.scale

    @torch.no_grad()
    def decode_class(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Pixel probabilities of p(x | z, y)."""
        return torch.sigmoid(self.decoder(torch.cat([z, F.one_hot(y, self.num_classes).to(z.dtype)], -1)))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """p(x | z, y)'s mean at the guide's mean z and most probable y."""
        y = self.classify(x)
        return self.decode_class(self.encode(x, y)[0], y)

    @torch.no_grad()
    def analogies(self, x: torch.Tensor) -> torch.Tensor:
        """Style against class: for each row of x, its style z (the guide's mean) decoded with every
        class in turn: (N, K, x_dim), Kingma et al.'s Figure 1."""
        z = self.encode(x)[0]
        ys = torch.arange(self.num_classes, device=x.device)
        return self.decode_class(z.unsqueeze(1).expand(-1, self.num_classes, -1), ys.expand(len(x), -1))

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True, y: torch.Tensor | None = None) -> torch.Tensor:
        """n draws: y uniform (or given), z from the prior, then pixel probabilities (or pixels)."""
        w = next(self.decoder.parameters())
        y = torch.randint(self.num_classes, (n,), device=w.device) if y is None else y
        probs = self.decode_class(torch.randn(n, self.z_dim, dtype=w.dtype, device=w.device), y)
        return probs if mean else torch.bernoulli(probs)


def examples(seed: int = 0) -> dict[str, tuple[SSVAE, tuple[torch.Tensor, ...]]]:
    """Small instances with matching data, for the contract test over every model."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(16, 20, generator=g) < 0.3).float()
    y = torch.randint(3, (16,), generator=g)
    mask = torch.arange(16) % 4 == 0
    torch.manual_seed(seed)
    return {"mixed-batch": (SSVAE(20, 3, 2, hidden=(12,)), (x, y, mask))}


# --- the command line: python -m inference.fit ssvae (see models/__init__.py) ---------------------


def cli_options(parser) -> None:
    """M2's flags."""
    g = parser.add_argument_group("semi-supervised VAE (M2)")
    g.add_argument("--labels", type=int, default=600, help="labeled training points, balanced over the classes")
    g.add_argument("--latent-dim", type=int, default=50)
    g.add_argument("--hidden", type=int, nargs="+", default=[500])
    g.add_argument("--alpha", type=float, default=50.0, help="weight of alpha * log q(y|x) per labeled point")
    g.add_argument("--labeled-fraction", type=float, default=0.1,
                   help="labeled points are repeated to make about this share of the training set")


def default_objective(args) -> str:
    return "enum"


def training_data(args, ds, train) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """``(x, y, mask)`` with ``--labels`` labels kept (balanced, seeded by ``--seed``) and the labeled
    points repeated to about ``--labeled-fraction`` of the set; validation with every label."""
    if not torch.is_tensor(train):
        raise ValueError("the semi-supervised VAE trains on tensors; --binarize dynamic is not supported for it")
    y = ds.labels["train"]
    mask = balanced_label_mask(y, args.labels, seed=args.seed)
    idx = oversample_labeled(mask, args.labeled_fraction, seed=args.seed)
    val_y = ds.labels["val"]
    return (train[idx], y[idx], mask[idx]), (ds.val, val_y, torch.ones(len(val_y), dtype=torch.bool))


def report(args, model: SSVAE, ds, test: torch.Tensor, out) -> tuple[dict, dict]:
    """The test error of q(y | x) (percent, all test points) and the analogies figure."""
    from pyro_gen.figures.plots import image_grid

    error = model.error(test, ds.labels["test"].to(test.device))
    shape = ds.image_shape or (1, 1, ds.dim)
    picks = test[torch.randperm(len(test), generator=torch.Generator().manual_seed(args.seed))[:8]]
    grid = torch.cat([picks.unsqueeze(1), model.analogies(picks)], 1).reshape(-1, ds.dim)
    path = image_grid(grid, shape, out / "analogies.png", nrow=model.num_classes + 1,
                      title="left: test image; right: its style z decoded with each class")
    print(f"test error of q(y|x): {error:.2f}% with {args.labels} labels", file=sys.stderr)
    return {"error": error, "labels": args.labels}, {"analogies": str(path)}


def from_cli(args, ds) -> SSVAE:
    """M2 for a labeled data set (mnist, fashion-mnist, digits)."""
    if "train" not in ds.labels:
        raise ValueError(f"the semi-supervised VAE needs labels; {ds.name} has none: use --data mnist, "
                         "fashion-mnist or digits")
    return SSVAE(x_dim=ds.dim, num_classes=int(ds.labels["train"].max()) + 1, z_dim=args.latent_dim,
                 hidden=args.hidden, alpha=args.alpha)
