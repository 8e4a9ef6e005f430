"""Fit one model to one data set from the command line.

    python -m inference.fit vae --data binarized-mnist --objective iwae --particles 5 \\
        --epochs 10 --out runs/x
    python -m inference.fit vae ... --out runs/x --resume      # continue an interrupted run

Writes ``OUT/metrics.json`` (config, per-epoch history, held-out evaluation),
``OUT/checkpoint.pt`` (atomic; what ``--resume`` reads) and figures beside them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from pyro_gen import data as data_lib
from pyro_gen import objectives
from pyro_gen.checkpoint import CheckpointError, write_json
from pyro_gen.data import DataNotFoundError
from pyro_gen.report import evaluate_model, model_figures
from pyro_gen.train import SCHEDULES, NonFiniteLossError, fit

__all__ = ["MODELS", "build_parser", "main"]


def _vae(args, ds: data_lib.Dataset):
    from models.vae import VAE

    return VAE(x_dim=ds.dim, z_dim=args.latent_dim, hidden=args.hidden, likelihood=args.likelihood,
               network=args.network, image_shape=ds.image_shape, activation=args.activation, beta=args.beta,
               **_flow_options(args))


# A command line needs names; each builder takes the parsed arguments and the data set.
MODELS: dict[str, Callable] = {"vae": _vae}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m inference.fit", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", choices=sorted(MODELS), help="model family")
    p.add_argument("--data", default="digits", choices=data_lib.names())
    p.add_argument("--data-root", default=None, help="folder with the data files (else $PYRO_GEN_DATA, else cache)")
    p.add_argument("--download", action="store_true", help="fetch missing data from its canonical source")
    p.add_argument("--objective", default="trace", help=f"one of {', '.join(objectives.names())} (or name:arg)")
    p.add_argument("--particles", type=int, default=None, help="k for iwae/dreg/renyi, particles for trace")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-schedule", default=None, help=f"one of {', '.join(SCHEDULES)} (e.g. step:10:0.5)")
    p.add_argument("--clip-norm", type=float, default=None)
    p.add_argument("--patience", type=int, default=None, help="early stopping after this many epochs")
    p.add_argument("--kl-anneal", type=float, default=0.0, help="epochs to ramp the KL weight from 0")
    p.add_argument("--beta", type=float, default=1.0, help="KL weight while training (beta-VAE)")
    p.add_argument("--latent-dim", type=int, default=50)
    p.add_argument("--hidden", type=int, nargs="+", default=[400])
    p.add_argument("--activation", default="relu")
    p.add_argument("--likelihood", default=None, help="bernoulli, continuous-bernoulli or gaussian "
                   "(default: bernoulli for binary data, continuous-bernoulli otherwise)")
    p.add_argument("--network", default="mlp", choices=["mlp", "conv"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--max-seconds", type=float, default=None)
    p.add_argument("--eval-k", type=int, default=1000, help="importance samples for the test log-likelihood")
    p.add_argument("--eval-n", type=int, default=None, help="evaluate on the first N test points only")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--no-progress", action="store_true")
    _add_flow_options(p)
    return p


# --- flows (pyro_gen.flows): a flow guide and/or a flow prior for the VAE -----------------------


def _add_flow_options(p: argparse.ArgumentParser) -> None:
    from pyro_gen.flows import FAMILIES, SCORABLE

    g = p.add_argument_group("flows")
    g.add_argument("--guide-flow", default=None, help=f"amortized flow guide: {', '.join(FAMILIES)} or zuko:NAME")
    g.add_argument("--flow-depth", type=int, default=4, help="layers of each flow")
    g.add_argument("--prior-flow", default=None, help=f"learnable flow prior: {', '.join(SCORABLE)} or zuko:NAME")


def _flow_options(args) -> dict:
    return {"guide_flow": args.guide_flow, "prior_flow": args.prior_flow, "flow_depth": args.flow_depth}


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    objective = objectives.get(args.objective, particles=args.particles)  # fails early on a bad name or k
    ds = data_lib.load(args.data, data_root=args.data_root, download=args.download, seed=args.seed)
    if args.likelihood is None:
        args.likelihood = "bernoulli" if ds.binary else "continuous-bernoulli"
    torch.manual_seed(args.seed)
    model_obj = MODELS[args.model](args, ds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"fitting {args.model} on {ds} with {args.objective} -> {out}", file=sys.stderr)
    t0 = time.perf_counter()
    result = fit(model_obj.model, model_obj.guide, ds.train, objective=objective, epochs=args.epochs,
                 batch_size=args.batch_size, lr=args.lr, val_data=ds.val, patience=args.patience,
                 kl_anneal=args.kl_anneal, clip_norm=args.clip_norm, lr_schedule=args.lr_schedule,
                 seed=args.seed, device=args.device, out=out, resume=args.resume, max_steps=args.max_steps,
                 max_seconds=args.max_seconds, progress=not args.no_progress)
    wall = time.perf_counter() - t0
    test = ds.test.to(args.device)
    evaluation = evaluate_model(model_obj, test, k=args.eval_k, max_points=args.eval_n,
                                progress=not args.no_progress)
    labels = ds.labels.get("test")
    figures = model_figures(model_obj, test[:2000], labels[:2000] if labels is not None else None,
                            ds.image_shape, out)
    from pyro_gen.plots import training_curves

    figures["training_curves"] = str(training_curves({args.objective: result.history}, out / "training_curves.png"))
    metrics = {
        "config": {k: v for k, v in vars(args).items()},
        "history": result.history, "best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
        "stopped": result.stopped, "steps": result.steps, "train_seconds": result.seconds, "wall_seconds": wall,
        "test": evaluation, "figures": figures, "checkpoint": str(out / "checkpoint.pt"),
    }
    write_json(metrics, out / "metrics.json")
    print(f"test ELBO {evaluation['elbo']:.2f} ± {evaluation['elbo_se']:.2f}, log-likelihood (IWAE-{args.eval_k}) "
          f"{evaluation['log_likelihood']:.2f} ± {evaluation['log_likelihood_se']:.2f} nats; wrote {out}/metrics.json")
    return metrics


def _cli() -> int:
    try:
        main()
    except (DataNotFoundError, CheckpointError, NonFiniteLossError, ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_cli())
