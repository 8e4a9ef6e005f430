"""Discrete latents on binarized MNIST: gradient estimators at equal steps, scored by IWAE-k.

What is measured (static binarized MNIST, train 50,000 / test 10,000):

- ``sbn``: the sigmoid belief network ``SBN(784, 200)`` with linear encoder and decoder (a
  one-layer Helmholtz machine, Mnih & Rezende 2016's "SBN 200"), trained from the same
  initial weights for the same number of optimizer steps by
  ``graph`` (Pyro's single-sample score-function estimator, Rao-Blackwellized, no baseline),
  ``vimco`` (``vimco:k``) and ``rws`` (``rws:k``, wake-theta and wake-phi).
- ``categorical``: ``CategoricalVAE(784, 20 x 10, hidden 512-256)`` (Jang et al. 2017)
  trained by ``concrete`` (the Concrete / Gumbel-softmax relaxation, objective ``trace``,
  temperature from 1 annealed per epoch to 0.5), ``vimco`` (``vimco:k``) and ``graph``.

Every run uses Adam (lr 1e-3), batch 100 and no validation (the last parameters are
scored). The test NLL is ``-mean log p(x)`` by IWAE-``--eval-k`` with the trained guide on
the discrete model (for ``concrete`` too: not the relaxed one), with its standard error, on
``--eval-n`` test points (a seeded random subset, 2,000 by default: IWAE-1000 on all 10,000 takes
several minutes per model on 2 cores). ``seconds`` is training time.
Along training (after every epoch) the variance of the guide's gradient is measured on one
fixed batch of 100 training points (20 draws, :func:`pyro_gen.evaluate.gradient_variance`),
and ``OUT/gradient_variance.png`` plots it for each estimator.

Run from the repository root::

    PYRO_GEN_DATA=/path/to/shared/data python benchmarks/discrete_mnist.py
    python benchmarks/discrete_mnist.py --parts sbn --steps 20000
    python benchmarks/discrete_mnist.py --smoke        # a few steps on 500 points, for CI

Writes ``OUT/results.json``, the gradient-variance figure, training curves and samples; the
last line on stdout is one JSON object
``{"sbn": {"graph": {"nll": x, "seconds": s}, "vimco": {...}, "rws": {...}},
"categorical": {"concrete": {...}, "vimco": {...}, "graph": {...}}}`` (each entry also has
``se``). Without the data files it exits with status 2 naming every folder it looked in.
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

from models.catvae import CategoricalVAE  # noqa: E402
from models.sbn import SBN  # noqa: E402
from pyro_gen import evaluate, fit, objectives  # noqa: E402
from pyro_gen.data import DataNotFoundError, load, random_subset  # noqa: E402
from pyro_gen.figures.plots import image_grid, training_curves  # noqa: E402
from pyro_gen.infer.checkpoint import write_json  # noqa: E402

PARTS = ("sbn", "categorical")
BATCH, LR, SEED, EVAL_SEED = 100, 1e-3, 0, 1234


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def methods(part: str, k: int) -> dict[str, tuple[dict, str]]:
    """The runs of a part: name -> (model keyword arguments, objective)."""
    if part == "sbn":
        return {"graph": ({}, "graph"), "vimco": ({}, f"vimco:{k}"), "rws": ({}, f"rws:{k}")}
    return {"concrete": ({"relaxed": True}, "trace"), "vimco": ({}, f"vimco:{k}"), "graph": ({}, "graph")}


def build(part: str, smoke: bool, **kwargs):
    pyro.clear_param_store()
    torch.manual_seed(SEED)  # every estimator starts from the same weights
    if part == "sbn":
        return SBN(784, 20 if smoke else 200, **kwargs)
    return CategoricalVAE(784, 4 if smoke else 20, 10, hidden=(64,) if smoke else (512, 256), **kwargs)


def train_one(part: str, name: str, kwargs: dict, objective: str, train, probe, args) -> tuple[torch.nn.Module, dict]:
    net = build(part, args.smoke, **kwargs)
    noise_objective = objectives.get(objective)
    noise: list[dict] = []

    def measure(row: dict | None) -> None:
        """The guide gradient's variance on the probe batch (after each epoch; before training with None)."""
        result = evaluate.gradient_variance(noise_objective, net.model, net.guide, probe,
                                            parameters=net.encoder.parameters(), draws=args.noise_draws)
        noise.append({"step": 0 if row is None else row["step"], **result.as_dict()})
        if row is not None and hasattr(net, "anneal"):
            net.anneal(row)

    measure(None)
    t0 = time.perf_counter()
    result = fit(net.model, net.guide, train, objective=objective, epochs=10**6, max_steps=args.steps,
                 batch_size=BATCH, lr=LR, seed=SEED, progress=not args.no_progress, callback=measure)
    wall = time.perf_counter() - t0
    net.eval()
    return net, {"objective": objective, "steps": result.steps, "seconds": result.seconds, "wall_seconds": wall,
                 "history": result.history, "gradient_noise": noise,
                 "temperature": net.temperature.item() if hasattr(net, "temperature") else None}


def gradient_figure(runs: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [p for p in PARTS if p in runs]
    fig, axes = plt.subplots(1, len(parts), figsize=(5 * len(parts), 3.6), squeeze=False)
    for ax, part in zip(axes[0], parts):
        for name, r in runs[part].items():
            steps = [row["step"] for row in r["gradient_noise"]]
            ax.semilogy(steps, [row["variance"] for row in r["gradient_noise"]], marker="o", ms=3, label=name)
        ax.set(title=f"{part}: variance of the guide's gradient", xlabel="optimizer step",
               ylabel="total variance (20 draws, one batch)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated: {', '.join(PARTS)}")
    p.add_argument("--steps", type=int, default=10000, help="optimizer steps of every run (batch 100)")
    p.add_argument("--k", type=int, default=5, help="samples of vimco:k and rws:k")
    p.add_argument("--eval-k", type=int, default=1000, help="importance samples per test point")
    p.add_argument("--eval-n", type=int, default=None,
                   help="score a seeded random subset of N test points (default 2000; 0: all 10,000)")
    p.add_argument("--noise-draws", type=int, default=20, help="gradient draws for each variance measurement")
    p.add_argument("--train-n", type=int, default=None, help="train on the first N points (default all)")
    p.add_argument("--smoke", action="store_true",
                   help="steps 20, eval-k 10, train-n 500, eval-n 100, small models, unless given (CI)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", default="runs/bench_discrete", help="folder for results.json and the figures")
    return p


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    parts = [s for s in args.parts.split(",") if s]
    unknown = [s for s in parts if s not in PARTS]
    if unknown or not parts:
        parser.error(f"unknown part(s) {', '.join(unknown) or '(none)'}; valid choices: {', '.join(PARTS)}")
    if args.smoke:
        args.steps, args.eval_k = 20, 10
        args.train_n, args.eval_n = args.train_n or 500, 100 if args.eval_n is None else args.eval_n
    elif args.eval_n is None:
        args.eval_n = 2000
    least = {"k": 2, "noise_draws": 2, "eval_n": 0}
    for flag in ("steps", "k", "eval_k", "eval_n", "train_n", "noise_draws"):
        value = getattr(args, flag)
        if value is not None and value < least.get(flag, 1):
            parser.error(f"--{flag.replace('_', '-')} must be >= {least.get(flag, 1)}, got {value}")
    try:
        ds = load("binarized-mnist")
    except DataNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    train = ds.train[:args.train_n]
    test = ds.test[random_subset(len(ds.test), args.eval_n or None, EVAL_SEED)]
    probe = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(EVAL_SEED))[:BATCH]]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log(f"binarized-mnist: train {len(train)}, test {len(test)}; {args.steps} steps of batch {BATCH}, "
        f"eval IWAE-{args.eval_k}; torch threads {torch.get_num_threads()}")

    runs: dict[str, dict] = {}
    summary: dict[str, dict] = {}
    for part in parts:
        runs[part], summary[part] = {}, {}
        samples = []
        for name, (kwargs, objective) in methods(part, args.k).items():
            log(f"{part}/{name}: training with {objective}")
            net, r = train_one(part, name, kwargs, objective, train, probe, args)
            t0 = time.perf_counter()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(EVAL_SEED)
                ll = evaluate.log_likelihood(net.model, net.guide, test, k=args.eval_k, progress=not args.no_progress)
                samples.append(net.sample(10))
            r.update(nll=-ll.mean, se=ll.se, eval_seconds=time.perf_counter() - t0)
            runs[part][name] = r
            summary[part][name] = {"nll": round(r["nll"], 3), "se": round(r["se"], 3), "seconds": round(r["seconds"], 1)}
            log(f"{part}/{name}: NLL {r['nll']:.2f} ± {r['se']:.2f} nats after {r['steps']} steps, "
                f"{r['seconds']:.0f} s; guide-gradient variance {r['gradient_noise'][0]['variance']:.3g} -> "
                f"{r['gradient_noise'][-1]['variance']:.3g}")
        image_grid(torch.cat(samples), (1, 28, 28), out / f"{part}_samples.png", nrow=10,
                   title=f"{part}: pixel means of prior samples; rows: {', '.join(runs[part])}")
        training_curves({name: r["history"] for name, r in runs[part].items()}, out / f"{part}_training_curves.png")
        write_json({"settings": {**vars(args), "batch_size": BATCH, "lr": LR, "train_n": len(train),
                                 "eval_n": len(test)}, "summary": summary, "runs": runs}, out / "results.json")
    gradient_figure(runs, out / "gradient_variance.png")
    log(f"wrote {out / 'results.json'} and the figures in {out}")
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
