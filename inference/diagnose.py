"""Diagnose a fitted run folder written by ``python -m inference.fit``.

Usage::

    python -m inference.diagnose runs/x [--n 500] [--k 500] [--draws 200] [--out runs/x/diagnostics]

Rebuilds the model from ``metrics.json``, loads the best parameters from
``checkpoint.pt`` (tensors only, never arbitrary pickles), and on held-out data writes:

- ``psis.json`` and ``khat.png``: PSIS k-hat of the guide per data point, with the
  share above 0.5 and 0.7, and ``worst_points.png`` (the inputs it fits worst);
- ``posterior.nc``: ``arviz.InferenceData`` (guide draws, log p / log q per draw,
  per-point log-likelihood, posterior predictive, observed data);
- ``ppc.json`` and ``ppc.png``: a posterior predictive check;
- ``diagnostics.json``: all of the above in one file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from inference import run_cli
from pyro_gen import data as data_lib
from pyro_gen import diagnostics
from pyro_gen.infer.checkpoint import CheckpointError, load_checkpoint, write_json
from pyro_gen.infer.params import load_state, modules_of

__all__ = ["build_parser", "load_run", "main"]


def load_run(run_dir: str | Path, data_root=None):
    """The fitted model of a run folder (best parameters loaded) and its data set."""
    from inference.fit import MODELS

    run_dir = Path(run_dir)
    metrics_path, ckpt_path = run_dir / "metrics.json", run_dir / "checkpoint.pt"
    for p in (metrics_path, ckpt_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found: {run_dir} is not a finished `python -m inference.fit` run")
    config = json.loads(metrics_path.read_text()).get("config", {})
    if "model" not in config or config["model"] not in MODELS:
        raise ValueError(f"{metrics_path}: config names model {config.get('model')!r}; known models: "
                         f"{', '.join(sorted(MODELS))}")
    args = argparse.Namespace(**config)
    ds = data_lib.load(config["data"], data_root=data_root or config.get("data_root"), seed=config.get("seed", 0))
    if config.get("binarize") == "dynamic":  # held-out splits binarized once with the run's seed, as fit did
        from inference.fit import _binarize

        _binarize(argparse.Namespace(**config), ds)
    model_obj = MODELS[config["model"]](args, ds)
    ck = load_checkpoint(ckpt_path, map_location="cpu")
    state = ck.get("best") or ck["state"]
    modules = modules_of(model_obj.model, model_obj.guide)
    try:
        load_state(modules, state)
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(f"{ckpt_path} does not fit the model rebuilt from {metrics_path}: {e}") from e
    # a model with global latents (Bayesian PCA) is diagnosed per point at their posterior mean
    model_obj = model_obj.for_evaluation() if hasattr(model_obj, "for_evaluation") else model_obj
    model_obj.eval()
    return model_obj, ds, config


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser: the run folder, the numbers of points, importance samples and
    draws, and where to write."""
    p = argparse.ArgumentParser(prog="python -m inference.diagnose", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run", help="a run folder written by python -m inference.fit")
    p.add_argument("--n", type=int, default=500, help="held-out points to diagnose")
    p.add_argument("--k", type=int, default=500, help="importance samples per point for PSIS")
    p.add_argument("--draws", type=int, default=200, help="posterior draws in the InferenceData")
    p.add_argument("--data-root", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="folder for the results (default: RUN/diagnostics)")
    return p


def main(argv: list[str] | None = None) -> dict:
    """Run ``python -m inference.diagnose``: PSIS k-hat per held-out point, the InferenceData and a
    posterior predictive check of a fitted run, written to ``--out`` (default ``RUN/diagnostics``).

    Args:
        argv: the command-line arguments (None: ``sys.argv[1:]``).

    Returns:
        The summary written to ``diagnostics.json``.
    """
    import pyro

    args = build_parser().parse_args(argv)
    for name in ("n", "k", "draws"):
        if getattr(args, name) < 10:
            raise ValueError(f"--{name} must be at least 10, got {getattr(args, name)}")
    model_obj, ds, config = load_run(args.run, args.data_root)
    out = Path(args.out) if args.out else Path(args.run) / "diagnostics"
    out.mkdir(parents=True, exist_ok=True)
    subset = data_lib.random_subset(len(ds.test), args.n, args.seed)  # across the split, not its head
    x = ds.test[subset]
    pyro.set_rng_seed(args.seed)
    with torch.no_grad():
        ps = diagnostics.psis(model_obj.model, model_obj.guide, x, num_samples=args.k, per_point=True)
        summary = {"psis": ps.summary(), "figures": {"khat": str(diagnostics.khat_figure(ps, out / "khat.png"))}}
        if ds.image_shape is not None:
            from pyro_gen.figures.plots import image_grid

            worst = torch.as_tensor(ps.worst(20).copy())
            summary["figures"]["worst_points"] = str(image_grid(
                x[worst], ds.image_shape, out / "worst_points.png",
                title="held-out points with the largest k-hat (worst first)"))
        idata = diagnostics.to_inference_data(model_obj.model, model_obj.guide, x[:min(len(x), 100)],  # random too
                                              num_samples=args.draws, include_local=True)
    summary["inference_data"] = str(diagnostics.save_inference_data(idata, out / "posterior.nc"))
    ppc = diagnostics.posterior_predictive_check(idata, out / "ppc.png")
    summary["figures"]["ppc"] = ppc.pop("figure")
    summary["ppc"] = ppc
    summary.update(run=str(args.run), model=config["model"], data=config["data"], n=len(x), k=args.k,
                   subset={"n": len(x), "of": len(ds.test), "seed": args.seed})
    write_json(summary["psis"], out / "psis.json")
    write_json(ppc, out / "ppc.json")
    write_json(summary, out / "diagnostics.json")
    s = summary["psis"]
    print(f"PSIS k-hat over {len(x)} held-out points: median {s['khat_median']:.2f}, "
          f"{s['share_above_0.5']:.0%} above 0.5, {s['share_above_0.7']:.0%} above 0.7; wrote {out}", file=sys.stderr)
    return summary


if __name__ == "__main__":
    sys.exit(run_cli(main))
