"""Topic models on 20 Newsgroups: ProdLDA and amortized LDA against scikit-learn's LDA.

    python benchmarks/topics_20ng.py                 # about 25 minutes on 2 shared cores under load; less idle
    python benchmarks/topics_20ng.py --seeds 3       # means and SDs over 3 seeds (splits included), paired test
    python benchmarks/topics_20ng.py --smoke         # seconds: tiny budget, for CI

For each number of topics (20 and 50) it fits three models on the 6,487 training
documents of ``pyro_gen.data.load("20newsgroups")`` (ProdLDA's preprocessing, 1,995
words) and reports:

- ``npmi``: mean NPMI of each topic's top-10 words, by document co-occurrence over the
  whole corpus (all 7,487 documents), as in Srivastava & Sutton (2017);
- ``perplexity``: exp(- sum_d log p(w_d) / sum_d N_d) on the 500 held-out test documents,
  log p(w_d) by IWAE-k (``--eval-k``) for all three models alike: each model's own
  document-topic prior, and its own posterior as the proposal (the encoder for the two
  Pyro models; scikit-learn's variational Dirichlet(gamma_d) for its LDA, whose topics
  are the posterior means of its topic-word Dirichlets). scikit-learn's own
  ``perplexity()`` (from its variational bound, a different and looser estimate) is
  saved beside it in ``results.json`` as ``sklearn_bound_perplexity``;
- ``seconds``: training wall-clock seconds.

The last stdout line is one JSON object::

    {"20": {"prodlda": {"npmi": .., "perplexity": .., "seconds": ..}, "lda": {..}, "sklearn": {..}}, "50": {..}}

With ``--seeds N`` (N > 1) each figure is the mean over seeds with its ``_sd``, each number of
topics gains ``prodlda_minus_sklearn_npmi`` (mean, sd, p of a paired t-test over seeds, and a
verdict: "ProdLDA higher", "scikit-learn higher" or "not distinguishable" at p >= 0.05), and
``"seeds"`` lists them.

Top-words figures and tables are written beside ``results.json`` in ``--out``.

References:
    Srivastava & Sutton (2017), Autoencoding Variational Inference for Topic Models.
    Hoffman, Blei & Bach (2010), Online Learning for Latent Dirichlet Allocation (scikit-learn's LDA).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.lda import AmortizedLDA, ProdLDA, lda_model  # noqa: E402
from pyro_gen import data as data_lib  # noqa: E402
from pyro_gen import fit  # noqa: E402
from pyro_gen.metrics import topics as T  # noqa: E402
from pyro_gen.data import DataNotFoundError  # noqa: E402

# The two Pyro models with their Adam learning rates and batch sizes. ProdLDA: the paper's lr 2e-3
# with batch 200 is only ~1,300 steps in 40 epochs of these 6,487 documents, and left its
# topics at NPMI 0.137 (20 topics); batch 64 at lr 5e-3 (~4,000 steps) reached 0.245 in the
# same 40 epochs. Amortized LDA's Dirichlet guide reached higher NPMI in 20 epochs at 1e-2
# than at the paper's rate.
NEURAL = {"prodlda": (ProdLDA, 5e-3, 64), "lda": (AmortizedLDA, 1e-2, 200)}


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--topics", type=int, nargs="+", default=[20, 50])
    p.add_argument("--epochs", type=int, default=40, help="epochs of each Pyro model")
    p.add_argument("--batch-size", type=int, default=None,
                   help="documents per step for both Pyro models (default: 64 for ProdLDA, 200 for LDA)")
    p.add_argument("--sklearn-iter", type=int, default=30, help="max_iter of scikit-learn's batch variational LDA")
    p.add_argument("--eval-k", type=int, default=100, help="importance samples per held-out document")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="the first seed (split and initialization)")
    p.add_argument("--seeds", type=int, default=1,
                   help="seeds seed..seed+N-1; with N > 1 the figures are means and SDs over seeds, and ProdLDA's "
                        "NPMI against scikit-learn's gets a paired test")
    p.add_argument("--out", default=str(ROOT / "runs" / "topics_20ng"))
    p.add_argument("--smoke", action="store_true", help="tiny budget: 1 epoch, 2 sklearn iterations, k=5, 200 training and 50 test documents, NPMI over those")
    args = p.parse_args(argv)
    if args.smoke:
        args.epochs, args.sklearn_iter, args.eval_k = 1, 2, 5
    return args


def fit_pyro(name: str, k: int, train: torch.Tensor, args, seed: int) -> tuple[object, float]:
    cls, lr, batch = NEURAL[name]
    torch.manual_seed(seed)
    net = cls(train.shape[1], k)
    t0 = time.perf_counter()
    fit(net.model, net.guide, train, objective="meanfield", epochs=args.epochs, batch_size=args.batch_size or batch,
        lr=lr, seed=seed, progress=False)
    seconds = time.perf_counter() - t0
    net.eval()
    return net, seconds


def fit_sklearn(k: int, train: torch.Tensor, args, seed: int):
    from sklearn.decomposition import LatentDirichletAllocation

    lda = LatentDirichletAllocation(n_components=k, learning_method="batch", max_iter=args.sklearn_iter,
                                    random_state=seed, n_jobs=1)
    t0 = time.perf_counter()
    lda.fit(train.numpy())
    return lda, time.perf_counter() - t0


def sklearn_pair(lda):
    """scikit-learn's fitted LDA as a Pyro model/guide pair: its topics (posterior means) and
    document prior in :func:`models.lda.lda_model`, its variational Dirichlet(gamma_d) as the guide."""
    topics = torch.as_tensor(lda.components_ / lda.components_.sum(1, keepdims=True), dtype=torch.float32)
    alpha = torch.full((lda.n_components,), float(lda.doc_topic_prior_))

    def guide(x):
        gamma = torch.as_tensor(lda._unnormalized_transform(x.reshape(-1, x.shape[-1]).numpy()),
                                dtype=torch.float32).reshape(*x.shape[:-1], -1)
        with pyro.plate("documents", x.shape[0]):
            pyro.sample("theta", dist.Dirichlet(gamma))

    return topics, partial(lda_model, topics=topics, alpha=alpha), guide


def run_seed(args, seed: int, out: Path) -> tuple[dict, dict, list[str]]:
    """One split and initialization (``seed``): every model at every number of topics."""
    ds = data_lib.load("20newsgroups", seed=seed)
    train, test = ds.train, ds.test
    corpus = torch.cat([ds.train, ds.val, ds.test])
    if args.smoke:
        train, test = train[:200], test[:50]
        corpus = torch.cat([train, test])
    test = test[test.sum(1) > 0]
    print(f"20 Newsgroups, seed {seed}: {len(train)} training and {len(test)} test documents, {train.shape[1]} "
          f"words; NPMI over {len(corpus)} documents; IWAE-{args.eval_k} perplexity; {args.epochs} epochs; "
          f"{args.threads} threads", file=sys.stderr)
    results, details, tables = {}, {}, []
    for k in args.topics:
        row, extra = {}, {}
        for name in ("prodlda", "lda", "sklearn"):
            if name == "sklearn":
                lda, seconds = fit_sklearn(k, train, args, seed)
                topics, model, guide = sklearn_pair(lda)
                bound = {"sklearn_bound_perplexity": float(lda.perplexity(test.numpy()))}
            else:
                net, seconds = fit_pyro(name, k, train, args, seed)
                topics, model, guide = net.topic_word().detach(), net.model, net.guide
                bound = {}
            pyro.set_rng_seed(seed)
            ppl = T.perplexity(model, guide, test, k=args.eval_k)
            report = T.topic_report(topics, ds.vocab, corpus, out, name=f"{name}_{k}_seed{seed}_")
            row[name] = {"npmi": round(report["npmi"], 4), "perplexity": round(ppl.perplexity, 2),
                         "seconds": round(seconds, 2)}
            extra[name] = {"npmi_per_topic": report["npmi_per_topic"], "top_words": report["top_words"], **bound}
            print(f"seed {seed} K={k} {name}: {row[name]}", file=sys.stderr, flush=True)
            tables.append(Path(report["table"]).read_text())
        results[str(k)] = row
        details[str(k)] = extra
    return results, details, tables


def across_seeds(per_seed: list[dict]) -> dict:
    """Mean and SD over seeds of every figure, and ProdLDA's NPMI against scikit-learn's: the paired
    difference over seeds (splits included) with a two-sided paired t-test; "not distinguishable"
    where p >= 0.05."""
    from scipy import stats

    out = {}
    for k in per_seed[0]:
        row = {}
        for name in per_seed[0][k]:
            row[name] = {}
            for metric in per_seed[0][k][name]:
                vals = torch.tensor([r[k][name][metric] for r in per_seed], dtype=torch.float64)
                row[name][metric] = round(vals.mean().item(), 4)
                row[name][f"{metric}_sd"] = round(vals.std().item(), 4) if len(vals) > 1 else float("nan")
        diff = [r[k]["prodlda"]["npmi"] - r[k]["sklearn"]["npmi"] for r in per_seed]
        p = float(stats.ttest_1samp(diff, 0.0).pvalue) if len(diff) > 1 and len(set(diff)) > 1 else float("nan")
        mean = sum(diff) / len(diff)
        verdict = ("not distinguishable" if not p < 0.05 else
                   "ProdLDA higher" if mean > 0 else "scikit-learn higher")
        row["prodlda_minus_sklearn_npmi"] = {"mean": round(mean, 4),
                                             "sd": round(float(torch.tensor(diff).std()), 4) if len(diff) > 1 else None,
                                             "p": round(p, 4) if p == p else None, "verdict": verdict,
                                             "per_seed": [round(d, 4) for d in diff]}
        out[k] = row
    return out


def main(argv=None) -> dict:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(range(args.seed, args.seed + args.seeds))
    per_seed, details, tables = [], {}, []
    for seed in seeds:
        r, d, t = run_seed(args, seed, out)
        per_seed.append(r)
        details[str(seed)] = d
        tables += t
    results = per_seed[0] if len(seeds) == 1 else {**across_seeds(per_seed), "seeds": seeds}
    (out / "top_words.md").write_text("\n".join(tables))
    saved = {"results": results, "per_seed": dict(zip(map(str, seeds), per_seed)), "extra": details,
             "config": vars(args), "neural": {name: {"lr": lr, "batch_size": args.batch_size or batch}
                                              for name, (_, lr, batch) in NEURAL.items()}}
    (out / "results.json").write_text(json.dumps(saved, indent=2))
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    try:
        main()
    except DataNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
