"""Disentanglement metrics: functions of (representations, factors).

Each takes ``representations`` (N, L), a point code per data point (a guide's mean, an
autoencoder's code), and ``factors`` (N, K), the integer indices of the known factors of
variation of the same N points (``pyro_gen.data.Shapes`` gives both), and returns a number in
[0, 1], higher meaning more disentangled. They use scikit-learn's estimators and NumPy; Pyro
and ArviZ have none of them. Every random choice comes from its ``seed``: no global random
state is touched.

=================================  ===========================  ================================
metric                             function                     estimator
=================================  ===========================  ================================
MIG (Chen et al. 2018)             :func:`mig`                  histograms (20 bins per latent)
DCI (Eastwood & Williams 2018)     :func:`dci`                  random-forest regressors
FactorVAE score (Kim & Mnih 2018)  :func:`factorvae_score`      majority-vote classifier
SAP (Kumar et al. 2018)            :func:`sap`                  one 1-D tree per latent/factor
=================================  ===========================  ================================

A factor that takes one value in the sample carries no information and is left out of every
average (a warning is not raised: dSprites has one colour). A constant representation scores 0
on every metric.

References:
    Chen, Li, Grosse & Duvenaud (2018), Isolating Sources of Disentanglement in VAEs.
    Eastwood & Williams (2018), A Framework for the Quantitative Evaluation of Disentangled
    Representations. Kim & Mnih (2018), Disentangling by Factorising. Kumar, Sattigeri &
    Balakrishnan (2018), Variational Inference of Disentangled Latent Concepts from Unlabeled
    Observations. Locatello et al. (2019), Challenging Common Assumptions in the Unsupervised
    Learning of Disentangled Representations (the reference implementations' choices).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["mig", "mutual_information", "dci", "factorvae_score", "sap", "all_metrics", "check_inputs"]


def check_inputs(representations, factors) -> tuple[np.ndarray, np.ndarray]:
    """The two inputs as float64 (N, L) and int64 (N, K) arrays, checked.

    Raises:
        ValueError: for lengths that differ, arrays that are not 2-D (a 1-D array is one
            column), non-finite representations, or factors that are not integer indices.
    """
    z = np.asarray(representations.detach().cpu() if torch.is_tensor(representations) else representations)
    v = np.asarray(factors.detach().cpu() if torch.is_tensor(factors) else factors)
    z = z[:, None] if z.ndim == 1 else z
    v = v[:, None] if v.ndim == 1 else v
    if z.ndim != 2 or v.ndim != 2:
        raise ValueError(f"representations and factors must be 2-D (N, L) and (N, K), got shapes {z.shape} and {v.shape}")
    if len(z) != len(v):
        raise ValueError(f"representations and factors must have one row per data point, got {len(z)} "
                         f"representations and {len(v)} factor rows")
    if len(z) < 10:
        raise ValueError(f"need at least 10 data points, got {len(z)}")
    if not np.issubdtype(z.dtype, np.number) or not np.isfinite(z).all():
        raise ValueError("representations must be finite numbers (found NaN or inf)")
    if not (np.issubdtype(v.dtype, np.integer) or np.issubdtype(v.dtype, np.bool_)):
        if not np.issubdtype(v.dtype, np.floating) or not np.all(np.isfinite(v)) or np.any(v != np.round(v)):
            raise ValueError(f"factors must be integer indices of the factors' values, got dtype {v.dtype}")
    return z.astype(np.float64), v.astype(np.int64)


def _entropy(p: np.ndarray, base: float) -> np.ndarray:
    """Entropy of the rows of p (each summing to 1), in units of ``log(base)``."""
    p = np.clip(p, 1e-12, 1.0)
    return -(p * np.log(p)).sum(-1) / np.log(base)


def _discretize(z: np.ndarray, bins: int) -> np.ndarray:
    """Each column cut into ``bins`` equal-width bins between its min and max (a constant column: one bin)."""
    out = np.zeros(z.shape, dtype=np.int64)
    for j in range(z.shape[1]):
        lo, hi = z[:, j].min(), z[:, j].max()
        if hi > lo:
            out[:, j] = np.digitize(z[:, j], np.linspace(lo, hi, bins + 1)[1:-1])
    return out


def _varying(v: np.ndarray) -> list[int]:
    """The factors that take more than one value."""
    return [k for k in range(v.shape[1]) if len(np.unique(v[:, k])) > 1]


def mutual_information(representations, factors, bins: int = 20) -> np.ndarray:
    """The mutual information between each factor and each latent over the factor's entropy,
    shape (K, L), each entry in [0, 1]: which latents carry which factor (the matrix that MIG
    summarizes). Latents discretized as in :func:`mig`; a factor that takes one value gets a row
    of zeros."""
    from sklearn.metrics import mutual_info_score

    z, v = check_inputs(representations, factors)
    zd = _discretize(z, bins)
    out = np.zeros((v.shape[1], z.shape[1]))
    for k in _varying(v):
        entropy = mutual_info_score(v[:, k], v[:, k])
        out[k] = [mutual_info_score(v[:, k], zd[:, j]) / entropy for j in range(z.shape[1])]
    return out


def mig(representations, factors, bins: int = 20) -> float:
    """The Mutual Information Gap: for each factor, the gap between the two latents that carry
    most information about it, over the factor's entropy, averaged over factors.

    Each latent is discretized into ``bins`` equal-width bins and the mutual information is
    the plug-in estimate (``sklearn.metrics.mutual_info_score``), as in Chen et al. (2018)'s
    and Locatello et al. (2019)'s implementations. Needs at least 2 latents.
    :func:`mutual_information` gives the whole matrix.
    """
    z, v = check_inputs(representations, factors)
    if z.shape[1] < 2:
        raise ValueError(f"MIG compares the two most informative latents: need at least 2, got {z.shape[1]}")
    info = mutual_information(z, v, bins)
    gaps = [np.diff(np.sort(info[k])[-2:])[0] for k in _varying(v)]
    return float(np.mean(gaps)) if gaps else 0.0


def _split(n: int, train_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    cut = int(round(train_fraction * n))
    return perm[:cut], perm[cut:]


def dci(representations, factors, train_fraction: float = 0.8, n_estimators: int = 50, seed: int = 0) -> dict:
    """DCI: disentanglement, completeness and informativeness from an importance matrix.

    One ``sklearn.ensemble.RandomForestRegressor`` per factor predicts the factor (its index, an
    ordinal) from all latents on a ``train_fraction`` split; its impurity importances make row k
    of R (latents x factors). Disentanglement is the importance-weighted mean over latents of
    ``1 - H_K(R_j / sum_k R_jk)``; completeness the mean over factors of
    ``1 - H_L(R_k / sum_j R_jk)``; informativeness the mean test R^2 of the regressors
    (clipped at 0; Eastwood & Williams report the error, 1 - R^2 is its square).

    Returns:
        ``{"disentanglement": d, "completeness": c, "informativeness": i, "importance": R}``
        (R as a nested list, latents by factors).
    """
    from sklearn.ensemble import RandomForestRegressor

    z, v = check_inputs(representations, factors)
    train, test = _split(len(z), train_fraction, seed)
    ks = _varying(v)
    importance = np.zeros((z.shape[1], len(ks)))
    scores = []
    for col, k in enumerate(ks):
        if np.ptp(z[train], axis=0).max() == 0:  # nothing to split on: no information, no importance
            scores.append(0.0)
            continue
        forest = RandomForestRegressor(n_estimators=n_estimators, min_samples_leaf=5, random_state=seed, n_jobs=1)
        forest.fit(z[train], v[train, k])
        importance[:, col] = forest.feature_importances_
        scores.append(max(0.0, float(forest.score(z[test], v[test, k]))))
    total = importance.sum()
    if total <= 0 or not ks:
        return {"disentanglement": 0.0, "completeness": 0.0, "informativeness": float(np.mean(scores)) if scores else 0.0,
                "importance": importance.tolist()}
    per_latent = importance.sum(1)
    active = per_latent > 0
    d_j = 1.0 - _entropy(importance[active] / per_latent[active, None], max(len(ks), 2))
    disentanglement = float((d_j * per_latent[active] / total).sum()) if len(ks) > 1 else 1.0
    per_factor = importance.sum(0)
    c_k = 1.0 - _entropy((importance[:, per_factor > 0] / per_factor[per_factor > 0]).T, max(z.shape[1], 2))
    completeness = float(c_k.sum() / len(ks)) if z.shape[1] > 1 else 1.0
    return {"disentanglement": disentanglement, "completeness": completeness,
            "informativeness": float(np.mean(scores)), "importance": importance.tolist()}


def factorvae_score(representations, factors, votes: int = 800, batch: int = 64, train_fraction: float = 0.5,
                    collapsed: float = 0.05, seed: int = 0) -> float:
    """The FactorVAE score: accuracy of a majority-vote classifier that names the fixed factor
    from the latent of least variance.

    Each vote draws a factor k and one of its values, then ``batch`` points (with replacement)
    among those with that value; the representations, each latent divided by its standard
    deviation over all points, vary least along one latent d: the vote is (d, k). Latents whose
    standard deviation is below ``collapsed`` times the largest one are left out, as Kim & Mnih
    leave out collapsed latents. The classifier maps each latent to its most frequent factor in
    the first ``train_fraction`` of the votes, and is scored on the rest. With a finite sample
    standing in for the generator, each factor value needs at least 2 points.
    """
    z, v = check_inputs(representations, factors)
    if votes < 4 or batch < 2:
        raise ValueError(f"votes must be >= 4 and batch >= 2, got votes={votes}, batch={batch}")
    scale = z.std(0)
    active = np.flatnonzero(scale > collapsed * scale.max()) if scale.max() > 0 else np.array([], dtype=int)
    ks = _varying(v)
    if len(active) == 0 or not ks:
        return 0.0
    zn = z[:, active] / scale[active]
    rng = np.random.default_rng(seed)
    rows_by_value = [{val: np.flatnonzero(v[:, k] == val) for val in np.unique(v[:, k])} for k in range(v.shape[1])]
    pairs = np.empty((votes, 2), dtype=np.int64)
    for i in range(votes):
        k = ks[rng.integers(len(ks))]
        values = list(rows_by_value[k])
        rows = rows_by_value[k][values[rng.integers(len(values))]]
        pick = rng.choice(rows, size=batch, replace=True)
        pairs[i] = (np.argmin(zn[pick].var(0)), k)
    cut = max(1, int(round(train_fraction * votes)))
    counts = np.zeros((len(active), v.shape[1]), dtype=np.int64)
    np.add.at(counts, (pairs[:cut, 0], pairs[:cut, 1]), 1)
    predicted = counts.argmax(1)
    test = pairs[cut:]
    return float(np.mean(predicted[test[:, 0]] == test[:, 1]))


def sap(representations, factors, train_fraction: float = 0.8, seed: int = 0) -> float:
    """The Separated Attribute Predictability score: for each factor, the gap between the test
    accuracies of the two latents that predict it best, each alone, averaged over factors.

    The predictor of factor k (discrete) from latent j alone is a classification tree on that
    one latent with at most two leaves per value of k (``sklearn.tree.DecisionTreeClassifier``):
    Kumar et al.'s threshold classifier, extended to factors of many values, which a linear SVM
    on one latent (Locatello et al. 2019's choice) cannot separate beyond the two extreme values.
    It is fit on a ``train_fraction`` split and scored by its test balanced accuracy adjusted for
    chance (``sklearn.metrics.balanced_accuracy_score(adjusted=True)``: 0 for a predictor that
    ignores the latent, 1 for a perfect one), so that a perfectly disentangled code scores near 1
    whatever the number of values per factor. A constant latent scores 0.
    """
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.tree import DecisionTreeClassifier

    z, v = check_inputs(representations, factors)
    train, test = _split(len(z), train_fraction, seed)
    sd = z[train].std(0)
    gaps = []
    for k in _varying(v):
        acc = []
        for j in range(z.shape[1]):
            if sd[j] == 0 or len(np.unique(v[train, k])) < 2:
                acc.append(0.0)
                continue
            tree = DecisionTreeClassifier(max_leaf_nodes=2 * len(np.unique(v[train, k])), min_samples_leaf=5,
                                          random_state=seed).fit(z[train, j:j + 1], v[train, k])
            predicted = tree.predict(z[test, j:j + 1])
            acc.append(max(0.0, float(balanced_accuracy_score(v[test, k], predicted, adjusted=True))))
        acc = np.sort(acc)[::-1]
        gaps.append(acc[0] - (acc[1] if len(acc) > 1 else 0.0))
    return float(np.mean(gaps)) if gaps else 0.0


def all_metrics(representations, factors, seed: int = 0) -> dict[str, float]:
    """MIG, DCI disentanglement/completeness/informativeness, the FactorVAE score and SAP, in one dict."""
    d = dci(representations, factors, seed=seed)
    return {"mig": mig(representations, factors), "dci": d["disentanglement"], "dci_completeness": d["completeness"],
            "dci_informativeness": d["informativeness"], "factorvae": factorvae_score(representations, factors, seed=seed),
            "sap": sap(representations, factors, seed=seed)}
