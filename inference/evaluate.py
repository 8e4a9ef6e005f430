"""Tighter evaluation of a fitted run folder: AIS (and BDMC) beside IWAE-k, or an RBM's log Z.

Usage::

    python -m inference.evaluate runs/x --ais [--n 100] [--steps 1000] [--chains 16] [--k 1000] [--bdmc]
    python -m inference.evaluate runs/rbm --ais --steps 14500 --chains 100

Rebuilds the model from ``metrics.json`` and loads the best parameters from ``checkpoint.pt``
(tensors only), as ``inference.diagnose`` does. For a model with latents, on ``--n`` held-out
points (a seeded random sample): the IWAE-``k`` bound and the AIS bound
(:func:`pyro_gen.evaluate.ais`, from the prior, or the guide with ``--from-guide``); with
``--bdmc``, on as many points simulated from the model, the BDMC lower and upper bounds
(:func:`pyro_gen.evaluate.bdmc`). For an energy-based model (``rbm``): log Z by AIS from the
training data's base rate, and the test log-likelihood. Writes ``RUN/ais.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inference import run_cli
from inference.diagnose import load_run
from pyro_gen import data as data_lib
from pyro_gen.evaluate import ais, bdmc, log_likelihood
from pyro_gen.infer.checkpoint import write_json

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser: the run folder, what to estimate, and its budget."""
    p = argparse.ArgumentParser(prog="python -m inference.evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run", help="a run folder written by python -m inference.fit")
    p.add_argument("--ais", action="store_true", help="estimate log p(x) by annealed importance sampling")
    p.add_argument("--bdmc", action="store_true", help="also the BDMC sandwich on data simulated from the model")
    p.add_argument("--from-guide", action="store_true", help="start the AIS chains at the guide, not the prior")
    p.add_argument("--n", type=int, default=100, help="held-out points (all of them for an RBM: 0)")
    p.add_argument("--steps", type=int, default=1000, help="AIS intermediate distributions")
    p.add_argument("--chains", type=int, default=16, help="AIS chains per point (per log Z for an RBM)")
    p.add_argument("--k", type=int, default=1000, help="importance samples of the IWAE bound beside it")
    p.add_argument("--data-root", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> dict:
    """Run ``python -m inference.evaluate``; returns what it writes to ``RUN/ais.json``.

    Args:
        argv: the command-line arguments (None: ``sys.argv[1:]``).
    """
    args = build_parser().parse_args(argv)
    if not args.ais:
        raise ValueError("say what to estimate: --ais (with --bdmc for the sandwich on simulated data)")
    for name in ("steps", "chains", "k"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.n < 0:
        raise ValueError(f"--n must be >= 0 (0: the whole test split), got {args.n}")
    model_obj, ds, config = load_run(args.run, args.data_root)
    subset = data_lib.random_subset(len(ds.test), args.n or None, args.seed)
    x = ds.test[subset]
    progress = not args.no_progress
    summary = {"run": str(args.run), "model": config["model"], "data": config["data"], "n": len(x),
               "steps": args.steps, "chains": args.chains,
               "subset": {"n": len(x), "of": len(ds.test), "seed": args.seed if len(x) < len(ds.test) else None}}
    if hasattr(model_obj, "estimate_log_partition"):
        if args.bdmc or args.from_guide:
            raise ValueError(f"--bdmc and --from-guide are for models with latents; {config['model']} is "
                             "energy-based: its AIS estimates log Z")
        summary.update(model_obj.evaluate(x, ds.train, steps=args.steps, chains=args.chains, seed=args.seed,
                                          progress=progress))
        line = (f"log Z {summary['log_z']:.2f} ± {summary['log_z_se']:.2f} ({summary['log_z_method']}); test "
                f"log-likelihood {summary['log_likelihood']:.2f} ± {summary['log_likelihood_se']:.2f} nats")
    else:
        start = model_obj.guide if args.from_guide else "prior"
        iwae = log_likelihood(model_obj.model, model_obj.guide, x, k=args.k, seed=args.seed, progress=progress)
        est = ais(model_obj.model, start, x, steps=args.steps, chains=args.chains, seed=args.seed, progress=progress)
        summary.update(start="guide" if args.from_guide else "prior", k=args.k, iwae=iwae.as_dict(),
                       ais=est.estimate.as_dict(), acceptance=est.acceptance)
        line = (f"on {len(x)} held-out points: IWAE-{args.k} {iwae:.2f}, AIS ({args.steps} steps, {args.chains} "
                f"chains) {est:.2f} nats")
        if args.bdmc:
            sandwich = bdmc(model_obj.model, start, x, steps=args.steps, chains=args.chains, seed=args.seed + 1,
                            progress=progress)
            sim_iwae = log_likelihood(model_obj.model, model_obj.guide, sandwich.data, k=args.k, seed=args.seed)
            summary["bdmc"] = {"lower": sandwich.lower.estimate.as_dict(), "upper": sandwich.upper.estimate.as_dict(),
                               "gap": sandwich.gap, "iwae_simulated": sim_iwae.as_dict()}
            line += (f"; on {len(x)} simulated points: BDMC {sandwich.lower:.2f} .. {sandwich.upper:.2f} "
                     f"(gap {sandwich.gap:.2f}), IWAE-{args.k} {sim_iwae:.2f}")
    out = Path(args.run) / "ais.json"
    write_json(summary, out)
    print(f"{line}; wrote {out}", file=sys.stderr)
    return summary


if __name__ == "__main__":
    sys.exit(run_cli(main))
