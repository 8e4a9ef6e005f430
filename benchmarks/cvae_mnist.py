"""Image completion on binarized MNIST: the conditional VAE against a deterministic network of the same size.

What is measured (the task of Pyro's CVAE tutorial, on static binarized MNIST: train 50,000,
valid 10,000, test 10,000): for 1, 2 and 3 visible quadrants, ``CVAE(784, visible, z_dim=200,
hidden=(500, 500))`` and ``MaskedBaseline(784, visible, hidden=(500, 500))``, both trained by
:func:`pyro_gen.fit` (objective ``trace``; for the baseline, which has no latent, that is
maximum likelihood) for the same epochs, Adam lr 1e-3, batch 128, keeping the best
validation epoch. Reported: the conditional negative log-likelihood of the hidden pixels,
``-log p(y | x_v)`` in nats per image, on ``--eval-n`` test images: for the CVAE its IWAE-k
bound with the recognition network as proposal (k = ``--eval-k``), for the baseline its exact
value. ``OUT/completions_<v>.png`` shows several completions of the same inputs by both.

Run from the repository root::

    PYRO_GEN_DATA=/path/to/shared/data python benchmarks/cvae_mnist.py
    python benchmarks/cvae_mnist.py --smoke        # seconds, for CI

Writes ``OUT/results.json``; the last line on stdout is one JSON object
``{"visible": {"1": {"cvae": {"nll": x, "se": s, "seconds": t}, "baseline": {...}}, "2": ..., "3": ...}}``.
Without the data files it exits with status 2 naming every folder it looked in.
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

from models.cvae import CVAE, MaskedBaseline, completions_figure  # noqa: E402
from pyro_gen import evaluate, fit  # noqa: E402
from pyro_gen.data import DataNotFoundError, load, random_subset  # noqa: E402
from pyro_gen.infer.checkpoint import write_json  # noqa: E402

BATCH, LR, SEED, EVAL_SEED = 128, 1e-3, 0, 1234


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--visible", default="1,2,3", help="comma-separated numbers of visible quadrants")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--eval-k", type=int, default=100, help="importance samples per test image (CVAE)")
    p.add_argument("--eval-n", type=int, default=None, help="score a seeded random subset of N test images")
    p.add_argument("--latent-dim", type=int, default=200)
    p.add_argument("--hidden", type=int, nargs="+", default=[500, 500])
    p.add_argument("--smoke", action="store_true", help="1 epoch on 1,000 images, small nets, 100 test images (CI)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", default="runs/bench_cvae")
    return p


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        visible = [int(v) for v in args.visible.split(",") if v]
    except ValueError:
        visible = []
    if not visible or any(v not in (1, 2, 3) for v in visible):
        parser.error(f"--visible takes numbers of quadrants among 1, 2, 3; got {args.visible!r}")
    if args.smoke:
        args.epochs, args.eval_k, args.latent_dim, args.hidden = 1, 10, 8, [64]
        args.eval_n = args.eval_n or 100
    try:
        ds = load("binarized-mnist")
    except DataNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    train, val = (ds.train[:1000], ds.val[:500]) if args.smoke else (ds.train, ds.val)
    test = ds.test[random_subset(len(ds.test), args.eval_n, EVAL_SEED)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log(f"binarized-mnist: train {len(train)}, test {len(test)}; {args.epochs} epochs; torch threads "
        f"{torch.get_num_threads()}")
    summary: dict[str, dict] = {"visible": {}}
    runs: dict[str, dict] = {}
    picks = test[torch.randperm(len(test), generator=torch.Generator().manual_seed(1))[:6]]
    for v in visible:
        summary["visible"][str(v)], runs[str(v)] = {}, {}
        nets = {}
        for name in ("cvae", "baseline"):
            pyro.clear_param_store()
            torch.manual_seed(SEED)
            net = (CVAE(784, (1, 28, 28), v, z_dim=args.latent_dim, hidden=args.hidden) if name == "cvae"
                   else MaskedBaseline(784, (1, 28, 28), v, hidden=args.hidden))
            log(f"{v} visible: training {name}")
            result = fit(net.model, net.guide, train, val_data=val, epochs=args.epochs, batch_size=BATCH, lr=LR,
                         seed=SEED, progress=not args.no_progress)
            net.eval()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(EVAL_SEED)
                ll = evaluate.log_likelihood(net.model, net.guide, test, k=args.eval_k if name == "cvae" else 1)
            r = {"nll": -ll.mean, "se": ll.se, "seconds": result.seconds, "best_epoch": result.best_epoch,
                 "history": result.history}
            runs[str(v)][name], nets[name] = r, net
            summary["visible"][str(v)][name] = {"nll": round(r["nll"], 3), "se": round(r["se"], 3),
                                                "seconds": round(r["seconds"], 1)}
            log(f"{v} visible, {name}: -log p(y | x_v) {r['nll']:.2f} ± {r['se']:.2f} nats, {r['seconds']:.0f} s")
        torch.manual_seed(EVAL_SEED)
        for name, net in nets.items():
            completions_figure(net, picks, out / f"completions_{v}_{name}.png",
                               title=f"{name}, {v} visible: input (grey hidden), truth, 6 completions")
        write_json({"settings": vars(args), "summary": summary, "runs": runs}, out / "results.json")
    log(f"wrote {out / 'results.json'} and the figures in {out}")
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
