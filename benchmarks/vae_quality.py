"""Test log-likelihood of VAEs trained with pyro_gen against a hand-written PyTorch loop.

What is measured: static binarized MNIST (train 50,000 / valid 10,000 / test 10,000),
a VAE 784-200-200-50 with tanh MLPs and a Bernoulli likelihood
(``VAE(784, 50, (200, 200), activation="tanh")``), batch 100, Adam lr 1e-3, trained
for the same number of epochs three ways:

- ``trace``: :func:`pyro_gen.fit` with ``objective="trace"`` (the ELBO);
- ``iwae5``: :func:`pyro_gen.fit` with ``objective="iwae:5"`` (IWAE, k=5);
- ``reference_trace``: a plain PyTorch loop on a VAE instance's encoder/decoder with
  the ELBO written by hand (``torch.randperm`` shuffle each epoch, batch 100, Adam).

``fit`` validates on the validation split after every epoch and, as it does by
default, keeps the parameters of the best validation epoch; the plain loop keeps its
last epoch (its validation loss is computed for the curves only). Every model starts
from the same initial weights (seed 0). Each is then scored by the importance-sampled
test log-likelihood with k=1000 particles (:func:`pyro_gen.evaluate.log_likelihood`,
Burda et al. 2016), reported as NLL = -mean log p(x) in nats with its standard error
over test points; ``seconds`` is training time only (validation and evaluation excluded).

Flow guides and priors (``--guides``, ``--flow-prior``): the same VAE, data, budget and
objective (``trace``, the ELBO, as in van den Berg et al. 2018) with each listed guide
(``diagonal`` = the Gaussian guide above, or any flow family of
:data:`pyro_gen.flows.FAMILIES`, amortized on the encoder's last hidden layer, depth
``--flow-depth``), and with ``--flow-prior FAMILY`` one more run: the diagonal guide with
that learnable flow prior (``flow_prior``). Then the three runs above are not made, and the
JSON has one entry per guide plus ``flow_prior``; ``OUT/prior_samples.png`` shows samples of
the flow-prior VAE beside the Gaussian-prior (diagonal) one.

Run from the repository root (the full 30-epoch run took about 15 minutes on 2 CPU cores)::

    PYRO_GEN_DATA=/path/to/shared/data python benchmarks/vae_quality.py --epochs 30
    python benchmarks/vae_quality.py --guides diagonal,planar,iaf,sylvester --flow-prior spline
    python benchmarks/vae_quality.py --smoke          # 1 epoch on 500 points, for CI

Writes ``OUT/results.json`` (results, per-epoch histories, settings) and
``OUT/training_curves.png``; progress goes to stderr and the last line on stdout is
one JSON object with the results. Without the data files it exits with status 2 and
a message naming every folder it looked in.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

# The script is run as `python benchmarks/vae_quality.py`; `models` lives at the repository root.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pyro  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from models.vae import VAE  # noqa: E402
from pyro_gen import fit  # noqa: E402
from pyro_gen.infer.checkpoint import write_json  # noqa: E402
from pyro_gen.data import DataNotFoundError, load  # noqa: E402
from pyro_gen.evaluate import log_likelihood  # noqa: E402
from pyro_gen.flows import FAMILIES, check_family  # noqa: E402
from pyro_gen.figures.plots import image_grid, training_curves  # noqa: E402

X_DIM, Z_DIM, HIDDEN, ACTIVATION = 784, 50, (200, 200), "tanh"
BATCH = 100
LR = 1e-3
SEED = 0
EVAL_SEED = 1
LOG_2PI = math.log(2 * math.pi)


def log(msg: str) -> None:
    """A progress line on stderr (stdout is kept for the final JSON)."""
    print(msg, file=sys.stderr, flush=True)


def new_vae(**flows) -> VAE:
    """The benchmark's VAE; seeded so that every method starts from the same weights.

    ``flows`` (``guide_flow``, ``prior_flow``, ``flow_depth``) add flows after the same
    encoder and decoder, which are built first and so get the same initial weights.
    """
    torch.manual_seed(SEED)
    return VAE(X_DIM, Z_DIM, HIDDEN, activation=ACTIVATION, **flows)


# --- pyro_gen --------------------------------------------------------------------------------


def train_pyro_gen(objective: str, train: torch.Tensor, val: torch.Tensor, epochs: int,
                   **flows) -> tuple[VAE, dict]:
    """Train with :func:`pyro_gen.fit`; returns the VAE (best validation epoch) and a summary."""
    pyro.clear_param_store()
    vae = new_vae(**flows)
    result = fit(vae.model, vae.guide, train, objective=objective, epochs=epochs, batch_size=BATCH, lr=LR,
                 val_data=val, seed=SEED, progress=True)
    return vae, {"seconds": result.seconds, "history": result.history, "best_epoch": result.best_epoch,
                 "steps": result.steps}


# --- hand-written PyTorch reference ----------------------------------------------------------


def reference_loss(vae: VAE, x: torch.Tensor) -> torch.Tensor:
    """Negative ELBO per data point (one reparameterized z), averaged over the batch."""
    loc, scale = vae.encoder(x)
    z = loc + scale * torch.randn_like(loc)
    log_px = -F.binary_cross_entropy_with_logits(vae.decoder(z), x, reduction="none").sum(-1)
    log_pz = (-0.5 * z ** 2 - 0.5 * LOG_2PI).sum(-1)
    log_qz = (-0.5 * ((z - loc) / scale) ** 2 - scale.log() - 0.5 * LOG_2PI).sum(-1)
    return -(log_px + log_pz - log_qz).mean()


@torch.no_grad()
def reference_val_loss(vae: VAE, val: torch.Tensor, batch_size: int = 1000) -> float:
    """The same loss on held-out data, for the training curves (as fit's ``val_loss``)."""
    vae.eval()
    total = sum(reference_loss(vae, val[i:i + batch_size]).item() * len(val[i:i + batch_size])
                for i in range(0, len(val), batch_size))
    vae.train()
    return total / len(val)


def train_reference(train: torch.Tensor, val: torch.Tensor, epochs: int) -> tuple[VAE, dict]:
    """A plain PyTorch training loop for the ELBO; returns the VAE (last epoch) and a summary."""
    vae = new_vae()
    vae.train()
    opt = torch.optim.Adam(vae.parameters(), lr=LR)
    shuffle = torch.Generator().manual_seed(SEED)
    torch.manual_seed(SEED)  # the reparameterization noise
    n, seconds, step, history = len(train), 0.0, 0, []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=shuffle)
        total = 0.0
        for i in range(0, n, BATCH):
            x = train[perm[i:i + BATCH]]
            loss = reference_loss(vae, x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(x)
            step += 1
        seconds += time.perf_counter() - t0
        row = {"epoch": epoch, "step": step, "train_loss": total / n, "seconds": seconds,
               "val_loss": reference_val_loss(vae, val)}
        history.append(row)
        log(f"reference_trace: epoch {epoch}/{epochs} train {row['train_loss']:.3f} val {row['val_loss']:.3f} "
            f"({seconds:.1f} s training)")
    return vae, {"seconds": seconds, "history": history, "best_epoch": epochs, "steps": step}


# --- evaluation and main ---------------------------------------------------------------------


def evaluate(vae: VAE, test: torch.Tensor, k: int) -> dict:
    """Importance-sampled test NLL (nats) with its standard error; same noise seed for every model."""
    pyro.set_rng_seed(EVAL_SEED)
    t0 = time.perf_counter()
    est = log_likelihood(vae.model, vae.guide, test, k=k)
    return {"nll": -est.mean, "se": est.se, "eval_seconds": time.perf_counter() - t0}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--eval-k", type=int, default=1000, help="importance samples per test point")
    p.add_argument("--eval-n", type=int, default=None, help="evaluate on the first N test points (default all)")
    p.add_argument("--train-n", type=int, default=None, help="train on the first N points (default all)")
    p.add_argument("--val-n", type=int, default=None, help="validate on the first N points (default all)")
    p.add_argument("--smoke", action="store_true",
                   help="epochs 1, eval-k 10, and train-n 500, val-n 500, eval-n 100 unless given (CI)")
    p.add_argument("--out", default="runs/bench_quality", help="folder for results.json and the figure")
    p.add_argument("--guides", type=_guides, default=None,
                   help=f"compare guides instead: diagonal and/or flow families ({', '.join(FAMILIES)})")
    p.add_argument("--flow-prior", default=None, help="with --guides: also a diagonal guide with this flow prior")
    p.add_argument("--flow-depth", type=int, default=4, help="layers of each flow")
    return p


def _guides(spec: str) -> list[str]:
    names = [g for g in spec.split(",") if g]
    for g in names:
        if g != "diagonal":
            try:
                check_family(g, what="guide")
            except ValueError as e:
                raise argparse.ArgumentTypeError(f"{e} (or diagonal)") from None
    if not names:
        raise argparse.ArgumentTypeError("--guides needs at least one name")
    return names


def run_flows(args, train, val, test) -> tuple[dict, dict]:
    """Each guide (and the flow prior), trained with the ELBO at the same budget, then scored."""
    configs = {g: ({} if g == "diagonal" else {"guide_flow": g, "flow_depth": args.flow_depth}) for g in args.guides}
    if args.flow_prior:
        configs["flow_prior"] = {"prior_flow": args.flow_prior, "flow_depth": args.flow_depth}
    runs, vaes = {}, {}
    for name, flows in configs.items():
        log(f"training {name} ({flows or 'diagonal guide, Normal prior'}) with pyro_gen.fit, objective 'trace'")
        vaes[name], runs[name] = train_pyro_gen("trace", train, val, args.epochs, **flows)
        log(f"{name}: {runs[name]['seconds']:.1f} s training, best epoch {runs[name]['best_epoch']}")
    return runs, vaes


@torch.no_grad()
def prior_samples_figure(vaes: dict, path: Path) -> Path | None:
    """Samples (Bernoulli means) of the flow-prior VAE beside a Gaussian-prior one, same noise seed."""
    gaussian = vaes.get("diagonal")
    if "flow_prior" not in vaes or gaussian is None:
        return None
    rows = []
    for name in ("diagonal", "flow_prior"):
        torch.manual_seed(EVAL_SEED)
        rows.append(vaes[name].eval().sample(50))
    return image_grid(torch.cat(rows), (1, 28, 28), path, nrow=10,
                      title="top: Normal(0, I) prior (diagonal guide); bottom: flow prior")


def main(argv: list[str] | None = None) -> dict:
    """Train the three models, evaluate them, write the results; the JSON line is printed last."""
    args = build_parser().parse_args(argv)
    if args.smoke:
        # smoke sizes, unless given explicitly
        args.epochs, args.eval_k = 1, 10
        args.train_n, args.val_n, args.eval_n = args.train_n or 500, args.val_n or 500, args.eval_n or 100
    if args.flow_prior is not None:
        if not args.guides:
            build_parser().error("--flow-prior goes with --guides (it adds one run to the guide comparison)")
        try:
            check_family(args.flow_prior, scorable=True, what="prior")
        except ValueError as e:
            build_parser().error(str(e))
    for flag in ("epochs", "eval_k", "eval_n", "train_n", "val_n", "flow_depth"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            build_parser().error(f"--{flag.replace('_', '-')} must be >= 1, got {value}")

    try:
        ds = load("binarized-mnist")
    except DataNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    train, val, test = ds.train[:args.train_n], ds.val[:args.val_n], ds.test[:args.eval_n]
    log(f"binarized-mnist: train {len(train)}, valid {len(val)}, test {len(test)}; {args.epochs} epochs, "
        f"eval k={args.eval_k}; torch threads {torch.get_num_threads()}")

    runs: dict[str, dict] = {}
    vaes: dict[str, VAE] = {}
    if args.guides:
        runs, vaes = run_flows(args, train, val, test)
    else:
        for name, objective in (("trace", "trace"), ("iwae5", "iwae:5")):
            log(f"training {name} with pyro_gen.fit (objective {objective!r})")
            vaes[name], runs[name] = train_pyro_gen(objective, train, val, args.epochs)
            log(f"{name}: {runs[name]['seconds']:.1f} s training, best epoch {runs[name]['best_epoch']}")
        log("training reference_trace (plain PyTorch loop)")
        vaes["reference_trace"], runs["reference_trace"] = train_reference(train, val, args.epochs)

    for name, vae in vaes.items():
        log(f"evaluating {name}: IWAE-{args.eval_k} on {len(test)} test points")
        runs[name].update(evaluate(vae, test, args.eval_k))
        log(f"{name}: NLL {runs[name]['nll']:.2f} ± {runs[name]['se']:.2f} nats "
            f"({runs[name]['eval_seconds']:.1f} s evaluation)")

    summary = {"epochs": args.epochs}
    for name, r in runs.items():
        summary[name] = {"nll": round(r["nll"], 4), "se": round(r["se"], 4), "seconds": round(r["seconds"], 4)}
    summary.update({"eval_k": args.eval_k, "eval_n": len(test)})

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json({**summary, "train_n": len(train), "val_n": len(val), "batch_size": BATCH, "lr": LR,
                "architecture": f"{X_DIM}-{'-'.join(map(str, HIDDEN))}-{Z_DIM} {ACTIVATION}",
                "torch_threads": torch.get_num_threads(), "flow_depth": args.flow_depth if args.guides else None,
                "runs": runs}, out / "results.json")
    training_curves({name: r["history"] for name, r in runs.items()}, out / "training_curves.png")
    if args.guides:
        prior_samples_figure(vaes, out / "prior_samples.png")
    log(f"wrote {out / 'results.json'} and {out / 'training_curves.png'}")
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
