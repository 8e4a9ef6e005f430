"""Semi-supervised MNIST with M2 (Kingma et al. 2014): test error at 100, 600, 1000 and 3000 labels.

What is measured: torchvision's MNIST (train 50,000 / valid 10,000 / test 10,000 by
``pyro_gen.data.load("mnist")``), ``SSVAE(784, 10, z_dim=50, hidden=(500, 500), alpha=50)``
trained by :func:`pyro_gen.fit` with the ``enum`` objective (y summed out for the unlabeled
points). For each number of labels, that many training points keep their label, the same
number from every class (seeded), the rest are unlabeled; the labeled points are repeated to
about ``--labeled-fraction`` of the training set so that minibatches hold some. Adam from
lr 3e-3, batch 100, for ``--minutes`` of training per setting (or ``--epochs``). The test
error of q(y | x) on all 10,000 test images is recorded after every epoch (``error_curve``,
against training seconds); the figures are the error against time, the analogies (style z of
test images decoded with every class) and the latent space coloured by class.

The defaults are the recipe measured on the benchmarks page (a sweep at equal epochs chose
them over the paper's one hidden layer and lr 1e-3): ``--binarize dynamic`` trains on a fresh
Bernoulli draw of every image at each step (:class:`pyro_gen.data.DynamicBinarize`: new inputs
for the classifier every epoch) and scores the test images binarized once, seeded (``none``:
grey levels scored by the Bernoulli cross-entropy, as Kingma et al. did). ``--lr-decay F``
lowers the learning rate geometrically over the budget, to F times its start at the end
(stepped after every epoch, by the fraction of ``--minutes`` spent, or of ``--epochs`` without
a time limit; 0.03 by default, 1 keeps it constant).
``--device cuda`` trains there (the figures are drawn on the CPU).

Anchor (Kingma et al. 2014, Table 1, M2): 11.97 / 4.94 / 3.60 / 3.92 % test error at
100 / 600 / 1000 / 3000 labels.

Run from the repository root::

    PYRO_GEN_DATA=/path/to/shared/data python benchmarks/ssvae_mnist.py --minutes 60
    python benchmarks/ssvae_mnist.py --labels 600 --minutes 10
    python benchmarks/ssvae_mnist.py --smoke          # seconds, for CI

Writes ``OUT/results.json`` and the figures; the last line on stdout is one JSON object
``{"labels": {"100": {"error": pct, "seconds": s}, "600": {...}, ...}}``. Without the data
files it exits with status 2 naming every folder it looked in.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pyro  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

from models.ssvae import SSVAE  # noqa: E402
from pyro_gen import fit  # noqa: E402
from pyro_gen.data import (DataNotFoundError, DynamicBinarize, Transformed, balanced_label_mask, load,  # noqa: E402
                           oversample_labeled)
from pyro_gen.figures.plots import image_grid, latent_scatter  # noqa: E402
from pyro_gen.infer.checkpoint import write_json  # noqa: E402

ANCHOR = {100: 11.97, 600: 4.94, 1000: 3.60, 3000: 3.92}
BATCH, SEED = 100, 0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(n_labels: int, ds, args) -> tuple[SSVAE, dict]:
    y = ds.labels["train"]
    mask = balanced_label_mask(y, n_labels, seed=SEED)
    idx = oversample_labeled(mask, args.labeled_fraction, seed=SEED)
    train = (ds.train[idx], y[idx], mask[idx])
    test_x, test_y = ds.test, ds.labels["test"]
    if args.binarize == "dynamic":  # a fresh binarization of every image at every step; the test set binarized once
        train = Transformed(TensorDataset(*train), DynamicBinarize())
        test_x = torch.bernoulli(ds.test, generator=torch.Generator().manual_seed(SEED + 1))
    test_x, test_y = test_x.to(args.device), test_y.to(args.device)
    pyro.clear_param_store()
    torch.manual_seed(SEED)
    m2 = SSVAE(ds.dim, 10, z_dim=args.latent_dim, hidden=tuple(args.hidden), alpha=args.alpha)
    curve: list[dict] = []
    budget_s = args.minutes * 60 if args.minutes else None

    def track(row: dict) -> None:
        m2.eval()
        curve.append({"epoch": row["epoch"], "seconds": row["seconds"], "lr": row["lr"],
                      "error": m2.error(test_x, test_y)})
        m2.train()
        log(f"  {n_labels} labels, epoch {row['epoch']}: {row['seconds']:.0f} s, test error {curve[-1]['error']:.2f}%")

    result = fit(m2.model, m2.guide, train, objective="enum", epochs=args.epochs, batch_size=BATCH, lr=args.lr,
                 lr_schedule=decay_over_budget(args.lr_decay, budget_s, args.epochs), max_seconds=budget_s, seed=SEED,
                 progress=not args.no_progress, callback=track, device=args.device)
    m2.eval()
    error = m2.error(test_x, test_y)
    m2.cpu()  # the figures are drawn on the CPU
    return m2, {"error": error, "seconds": result.seconds, "epochs": len(result.history), "steps": result.steps,
                "anchor_m2": ANCHOR.get(n_labels), "error_curve": curve, "train_size": len(idx)}


def decay_over_budget(final: float, budget_s: float | None, epochs: int):
    """For ``fit``'s ``lr_schedule``: the lr times ``final ** fraction of the budget spent`` after every epoch
    (seconds since the scheduler was made against ``budget_s``, else epochs against ``epochs``); None at 1."""
    if final == 1.0:
        return None

    def make(optimizer):
        t0 = time.perf_counter()

        def factor(epoch: int) -> float:
            spent = (time.perf_counter() - t0) / budget_s if budget_s else epoch / epochs
            return final ** min(1.0, spent)

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    return make


def figures(models: dict, runs: dict, ds, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (n, r) in enumerate(runs.items()):
        ax.plot([c["seconds"] for c in r["error_curve"]], [c["error"] for c in r["error_curve"]], color=f"C{i}",
                marker="o", ms=2, label=f"{n} labels")
        if r["anchor_m2"] is not None:
            ax.axhline(r["anchor_m2"], color=f"C{i}", ls=":", lw=1)
    ax.set(xlabel="training seconds", ylabel="test error (%)", yscale="log",
           title="M2 test error (dotted: Kingma et al. 2014)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "error_vs_time.png", dpi=110)
    plt.close(fig)
    n, m2 = max(models.items(), key=lambda kv: int(kv[0]))
    picks = ds.test[torch.randperm(len(ds.test), generator=torch.Generator().manual_seed(1))[:8]]
    grid = torch.cat([picks.unsqueeze(1), m2.analogies(picks)], 1).reshape(-1, ds.dim)
    image_grid(grid, (1, 28, 28), out / "analogies.png", nrow=11,
               title=f"{n} labels. Left: test image; right: its style z decoded with classes 0-9")
    sub = torch.randperm(len(ds.test), generator=torch.Generator().manual_seed(2))[:2000]
    latent_scatter(m2.encode(ds.test[sub])[0], ds.labels["test"][sub], out / "latent.png",
                   title=f"style z of test images (PCA), coloured by class; {n} labels")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--labels", default="100,600,1000,3000", help="comma-separated numbers of labels")
    p.add_argument("--minutes", type=float, default=60.0, help="training minutes per setting (0: no limit)")
    p.add_argument("--epochs", type=int, default=1000, help="epochs per setting (the time limit usually ends it)")
    p.add_argument("--alpha", type=float, default=50.0, help="weight of log q(y|x) per labeled point")
    p.add_argument("--labeled-fraction", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--lr-decay", type=float, default=0.03,
                   help="the lr falls geometrically to this fraction of --lr over the budget (1: constant)")
    p.add_argument("--latent-dim", type=int, default=50)
    p.add_argument("--hidden", type=int, nargs="+", default=[500, 500])
    p.add_argument("--binarize", default="dynamic", choices=["none", "dynamic"],
                   help="dynamic (the default): train on a fresh Bernoulli draw of each image at every step, test on "
                        "one seeded binarization; none: grey levels")
    p.add_argument("--device", default="cpu", help="where to train: cpu, cuda, cuda:1, ...")
    p.add_argument("--smoke", action="store_true", help="2,000 training images, 1 epoch, labels 100,600 (CI)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", default="runs/bench_ssvae")
    return p


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        labels = [int(s) for s in args.labels.split(",") if s]
    except ValueError:
        parser.error(f"--labels must be comma-separated integers, got {args.labels!r}")
    if not 0 < args.lr_decay <= 1:
        parser.error(f"--lr-decay must be in (0, 1], got {args.lr_decay}")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        parser.error(f"--device must name a torch device (cpu, cuda, cuda:1, mps), got {args.device!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch finds no CUDA device on this machine")
    bad = [n for n in labels if n < 10 or n % 10]
    if bad or not labels:
        parser.error(f"--labels must be positive multiples of 10 (balanced over the classes), got {args.labels!r}")
    if args.smoke:
        args.epochs, args.minutes, args.hidden, args.latent_dim = 1, 0, [64], 8
        labels = labels if args.labels != parser.get_default("labels") else [100, 600]
    try:
        ds = load("mnist")
    except DataNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if args.smoke:
        ds.train, ds.labels["train"] = ds.train[:2000], ds.labels["train"][:2000]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log(f"mnist: train {len(ds.train)}, test {len(ds.test)}; labels {labels}; {args.minutes or 'no'} minutes and at "
        f"most {args.epochs} epochs each; torch threads {torch.get_num_threads()}")
    runs, models = {}, {}
    for n in labels:
        t0 = time.perf_counter()
        models[str(n)], runs[str(n)] = run(n, ds, args)
        r = runs[str(n)]
        log(f"{n} labels: test error {r['error']:.2f}% after {r['epochs']} epochs, {r['seconds']:.0f} s "
            f"(anchor M2 {r['anchor_m2']}%); wall {time.perf_counter() - t0:.0f} s")
        write_json({"settings": vars(args), "runs": runs}, out / "results.json")
    figures(models, runs, ds, out)
    summary = {"labels": {n: {"error": round(r["error"], 2), "seconds": round(r["seconds"], 1)} for n, r in runs.items()}}
    log(f"wrote {out / 'results.json'} and the figures in {out}")
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
