"""How loose are the bounds? AIS and BDMC against exact answers and IWAE, and RBMs scored by AIS.

Three parts, each against an exact answer or a published one:

- ``ppca``: a probabilistic PCA with known parameters (x 20-d, z 5-d, sigma 0.5), whose
  log p(x) is exact. AIS from the prior (:func:`pyro_gen.evaluate.ais`) on 100 points, and
  BDMC (:func:`pyro_gen.evaluate.bdmc`) on 100 points simulated from the model, at a range of
  step counts; ``ais_err`` is |AIS - exact| in nats per point at the largest, and
  ``OUT/bdmc_ppca.png`` the sandwich against the steps.
- ``vae_mnist``: the VAE of ``benchmarks/vae_quality.py`` (784-200-200-50, tanh, Bernoulli)
  trained with the ELBO on static binarized MNIST for ``--vae-epochs``; on ``--vae-n`` test points
  IWAE-1000 and AIS from the prior (Wu et al. 2017), and on as many points simulated from the VAE
  the BDMC gap (upper - lower). This says how much the IWAE figures understate log p(x).
- ``rbm``: binary RBMs with 500 hidden units on static binarized MNIST trained with CD-1, CD-25
  and PCD-1 (SGD, batch 100, cosine learning rate from ``--rbm-lr``) for the epochs given, capped at
  ``--rbm-seconds`` each; test log-likelihood with log Z from AIS (Salakhutdinov & Murray 2008:
  14,500 steps, 100 chains, from two base-rate RBMs, the data's clipped log-odds and the model's own
  marginals, keeping the larger log Z: each is a stochastic lower bound). Their MNIST figures with 500 hidden units are about
  -126 (CD-1), -106 (CD-3) and -86 (CD-25). ``logz_exact_err`` is |AIS - exact| log Z for an RBM
  with 16 hidden units trained the same way, whose Z is enumerable. ``OUT/rbm_*.png``: samples
  from long Gibbs chains and the filters.

Run from the repository root, in the background (about an hour and a half on 2 CPU cores)::

    PYRO_GEN_DATA=/path/to/shared/data python benchmarks/ais_eval.py
    python benchmarks/ais_eval.py --smoke     # seconds, for CI

Writes ``OUT/results.json`` and the figures; progress goes to stderr and the last line on
stdout is one JSON object::

    {"ppca": {"ais_err", "bdmc_lower", "bdmc_upper", "exact"},
     "vae_mnist": {"iwae1000", "ais", "bdmc_gap_simulated"},
     "rbm": {"cd1", "cd25", "pcd", "logz_exact_err"}}

with the RBMs' test NLL (-log p(x), nats). Without the data files it exits with status 2 and
a message naming every folder it looked in.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import pyro  # noqa: E402
import torch  # noqa: E402

from models.ppca import PPCA, synthetic_data  # noqa: E402
from models.rbm import RBM  # noqa: E402
from pyro_gen import data as data_lib  # noqa: E402
from pyro_gen import fit  # noqa: E402
from pyro_gen.evaluate import ais, bdmc, log_likelihood  # noqa: E402
from pyro_gen.exact.rbm import rbm_log_partition  # noqa: E402
from pyro_gen.evaluate.partition import base_rate_biases, rbm_ais_log_partition  # noqa: E402
from pyro_gen.figures.plots import image_grid  # noqa: E402
from pyro_gen.infer.checkpoint import write_json  # noqa: E402


def log(msg: str) -> None:
    """A progress line on stderr (stdout is kept for the final JSON)."""
    print(msg, file=sys.stderr, flush=True)


# --- pPCA: exact log p(x) ---------------------------------------------------------------------


def ppca_part(args, out: Path) -> dict:
    x, truth = synthetic_data(args.ppca_n, 20, 5, sigma=0.5, seed=0)
    pyro.clear_param_store()
    model = PPCA(20, 5)
    with torch.no_grad():
        model.W.copy_(truth["W"]), model.mu.copy_(truth["mu"]), model.log_sigma.fill_(truth["sigma"].log())
    exact = model.exact_log_likelihood(x).mean().item()
    rows = []
    for steps in args.ppca_steps:
        t0 = time.perf_counter()
        forward = ais(model.model, "prior", x, steps=steps, chains=args.ppca_chains, seed=1)
        sandwich = bdmc(model.model, "prior", x, steps=steps, chains=args.ppca_chains, seed=2)
        sim_exact = model.exact_log_likelihood(sandwich.data[0]).mean().item()
        rows.append({"steps": steps, "ais": forward.estimate.mean, "ais_se": forward.estimate.se,
                     "bdmc_lower": sandwich.lower.estimate.mean, "bdmc_upper": sandwich.upper.estimate.mean,
                     "exact_simulated": sim_exact, "seconds": time.perf_counter() - t0})
        log(f"ppca, {steps} steps: AIS {forward.estimate.mean:.3f} (exact {exact:.3f}); BDMC "
            f"{sandwich.lower.estimate.mean:.3f} <= {sim_exact:.3f} <= {sandwich.upper.estimate.mean:.3f}")
    sandwich_figure(rows, out / "bdmc_ppca.png")
    last = rows[-1]
    return {"ais_err": abs(last["ais"] - exact), "bdmc_lower": last["bdmc_lower"], "bdmc_upper": last["bdmc_upper"],
            "exact": last["exact_simulated"], "exact_test": exact, "ais": last["ais"], "rows": rows}


def sandwich_figure(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["steps"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(steps, [r["bdmc_upper"] - r["exact_simulated"] for r in rows], "o-", label="BDMC upper (reverse AIS)")
    ax.plot(steps, [r["bdmc_lower"] - r["exact_simulated"] for r in rows], "o-", label="BDMC lower (forward AIS)")
    ax.axhline(0.0, color="k", lw=0.8, label="exact log p(x)")
    ax.set_xscale("log")
    ax.set_xlabel("AIS steps")
    ax.set_ylabel("bound - exact (nats per point)")
    ax.set_title("pPCA: the BDMC sandwich closes on the exact value")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --- the MNIST VAE ----------------------------------------------------------------------------


def vae_part(args, ds, out: Path) -> dict:
    import vae_quality

    train = ds.train[:args.train_n] if args.train_n else ds.train
    vae, summary = vae_quality.train_pyro_gen("trace", train, ds.val[:args.val_n or None], args.vae_epochs)
    vae.eval()
    g = torch.Generator().manual_seed(0)
    x = ds.test[torch.randperm(len(ds.test), generator=g)[:args.vae_n]]
    iwae = log_likelihood(vae.model, vae.guide, x, k=1000, seed=0)
    log(f"vae: IWAE-1000 {iwae.mean:.2f} ± {iwae.se:.2f} on {len(x)} test points")
    t0 = time.perf_counter()
    forward = ais(vae.model, "prior", x, steps=args.vae_steps, chains=args.vae_chains, seed=1, batch_size=50,
                  progress=True)
    ais_seconds = time.perf_counter() - t0
    log(f"vae: AIS ({args.vae_steps} steps, {args.vae_chains} chains) {forward.estimate.mean:.2f} ± "
        f"{forward.estimate.se:.2f}, acceptance {forward.acceptance:.2f}, {ais_seconds:.0f} s")
    sandwich = bdmc(vae.model, "prior", x, steps=args.vae_steps, chains=args.vae_bdmc_chains, seed=2,
                    batch_size=50, progress=True)
    sim_iwae = log_likelihood(vae.model, vae.guide, sandwich.data[0], k=1000, seed=0)
    log(f"vae, simulated data: BDMC {sandwich.lower.estimate.mean:.2f} .. {sandwich.upper.estimate.mean:.2f} "
        f"(gap {sandwich.gap:.2f}); IWAE-1000 there {sim_iwae.mean:.2f}")
    return {"iwae1000": iwae.mean, "iwae1000_se": iwae.se, "ais": forward.estimate.mean, "ais_se": forward.estimate.se,
            "ais_minus_iwae": forward.estimate.mean - iwae.mean, "bdmc_gap_simulated": sandwich.gap,
            "bdmc_lower_simulated": sandwich.lower.estimate.mean, "bdmc_upper_simulated": sandwich.upper.estimate.mean,
            "iwae1000_simulated": sim_iwae.mean, "n": len(x), "steps": args.vae_steps, "chains": args.vae_chains,
            "ais_seconds": ais_seconds, "train_seconds": summary["seconds"], "epochs": args.vae_epochs}


# --- RBMs ---------------------------------------------------------------------------------------


def train_rbm(objective: str, hidden: int, epochs: int, train, val, args) -> tuple[RBM, dict]:
    pyro.clear_param_store()  # a PyroModule's parameters live in Pyro's param store by name: one RBM at a time
    torch.manual_seed(0)
    rbm = RBM(train.shape[1], hidden, image_shape=(1, 28, 28))
    result = fit(rbm.model, rbm.guide, train, objective=objective, epochs=epochs, batch_size=100, lr=args.rbm_lr,
                 optimizer="sgd", lr_schedule="cosine", val_data=val, restore_best=False, seed=0,
                 max_seconds=args.rbm_seconds, progress=False, fast=False)
    return rbm, {"seconds": result.seconds, "epochs": len(result.history), "stopped": result.stopped,
                 "final_val_pll": result.history[-1].get("val_loss") if result.history else None}


def rbm_part(args, ds, out: Path) -> dict:
    train = ds.train[:args.train_n] if args.train_n else ds.train
    val = ds.val[:args.val_n or None]
    results = {}
    settings = {"cd1": ("cd:1", args.cd1_epochs), "cd25": ("cd:25", args.cd25_epochs), "pcd": ("pcd:1", args.pcd_epochs)}
    for name in args.rbm_methods:
        objective, epochs = settings[name]
        rbm, summary = train_rbm(objective, args.rbm_hidden, epochs, train, val, args)
        t0 = time.perf_counter()
        est = rbm.estimate_log_partition(train, steps=args.rbm_ais_steps, chains=100, seed=0)
        ll = rbm.log_likelihood(ds.test)
        results[name] = -ll.mean().item()
        summary.update(nll=-ll.mean().item(), nll_se=(ll.std() / math.sqrt(len(ll))).item(), log_z=est.log_z,
                       log_z_se=est.se, log_z_runs=est.runs, ais_seconds=time.perf_counter() - t0)
        torch.save(rbm.state_dict(), out / f"rbm_{name}.pt")  # for other AIS budgets later (runs/ is ignored)
        results[f"{name}_detail"] = summary
        image_grid(rbm.sample(100, steps=args.gibbs_steps), (1, 28, 28), out / f"rbm_{name}_samples.png",
                   title=f"RBM ({objective}): {args.gibbs_steps} Gibbs sweeps from noise")
        image_grid(rbm.filters()[:100], (1, 28, 28), out / f"rbm_{name}_filters.png",
                   title=f"RBM ({objective}): filters of 100 hidden units")
        log(f"rbm {objective}: {summary['epochs']} epochs in {summary['seconds']:.0f} s, test NLL "
            f"{summary['nll']:.2f} ± {summary['nll_se']:.2f} (log Z {est:.2f}; by AIS start: {est.runs})")
    if not args.rbm_exact_check:
        return results
    # log Z of an enumerable RBM: AIS against the exact sum
    small, _ = train_rbm("cd:1", 16, max(1, args.cd1_epochs // 10), train, val, args)
    exact = rbm_log_partition(small.W, small.b_v, small.b_h).item()
    est = rbm_ais_log_partition(small.W, small.b_v, small.b_h, steps=args.rbm_ais_steps, chains=100,
                                base_visible_bias=base_rate_biases(train).float(), seed=0)
    unclipped = rbm_ais_log_partition(small.W, small.b_v, small.b_h, steps=args.rbm_ais_steps, chains=100,
                                      base_visible_bias=base_rate_biases(train, limit=None).float(), seed=0)
    results["logz_exact_err"] = abs(est.log_z - exact)
    results["logz_exact"] = {"exact": exact, "ais": est.log_z, "ais_se": est.se, "hidden": 16,
                             "ais_unclipped_base_rate": unclipped.log_z, "ais_unclipped_se": unclipped.se}
    log(f"rbm, 16 hidden units: AIS log Z {est:.3f} vs exact {exact:.3f} (unclipped base rate: {unclipped:.3f})")
    return results


def _methods(spec: str) -> list[str]:
    names = [s for s in spec.split(",") if s]
    unknown = sorted(set(names) - {"cd1", "cd25", "pcd"})
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown RBM method(s) {unknown}; valid choices: cd1, cd25, pcd")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny settings on a few hundred points, for CI")
    p.add_argument("--out", default="runs/bench_ais")
    p.add_argument("--parts", default="ppca,vae,rbm", help="which parts to run (comma-separated)")
    p.add_argument("--ppca-n", type=int, default=100)
    p.add_argument("--ppca-chains", type=int, default=16)
    p.add_argument("--ppca-steps", type=int, nargs="+", default=[10, 30, 100, 300, 1000])
    p.add_argument("--vae-epochs", type=int, default=30)
    p.add_argument("--vae-n", type=int, default=100)
    p.add_argument("--vae-steps", type=int, default=1000)
    p.add_argument("--vae-chains", type=int, default=16)
    p.add_argument("--vae-bdmc-chains", type=int, default=4)
    p.add_argument("--rbm-hidden", type=int, default=500)
    p.add_argument("--rbm-lr", type=float, default=0.05)
    p.add_argument("--rbm-methods", type=_methods, default=["cd1", "cd25", "pcd"],
                   help="which RBMs to train, comma-separated: cd1, cd25, pcd")
    p.add_argument("--no-rbm-exact-check", dest="rbm_exact_check", action="store_false",
                   help="skip the 16-hidden-unit RBM whose log Z is enumerated")
    p.add_argument("--cd1-epochs", type=int, default=100)
    p.add_argument("--cd25-epochs", type=int, default=15)
    p.add_argument("--pcd-epochs", type=int, default=100)
    p.add_argument("--rbm-seconds", type=float, default=1200.0, help="training-time cap of each RBM")
    p.add_argument("--rbm-ais-steps", type=int, default=14500)
    p.add_argument("--gibbs-steps", type=int, default=1000, help="Gibbs sweeps of the sample figures")
    p.add_argument("--train-n", type=int, default=None)
    p.add_argument("--val-n", type=int, default=None)
    return p


SMOKE = dict(ppca_n=10, ppca_chains=4, ppca_steps=[5, 20], vae_epochs=1, vae_n=4, vae_steps=10, vae_chains=2,
             vae_bdmc_chains=2, rbm_hidden=12, cd1_epochs=10, cd25_epochs=1, pcd_epochs=1, rbm_ais_steps=50,
             gibbs_steps=10, train_n=300, val_n=100)


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.smoke:
        for k, v in SMOKE.items():
            setattr(args, k, v)
    parts = set(args.parts.split(","))
    if parts - {"ppca", "vae", "rbm"}:
        raise SystemExit(f"unknown --parts {sorted(parts - {'ppca', 'vae', 'rbm'})}; valid choices: ppca, vae, rbm")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = None
    if parts & {"vae", "rbm"}:
        try:
            ds = data_lib.load("binarized-mnist")
        except data_lib.DataNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2)
    results = {}
    if "ppca" in parts:
        results["ppca"] = ppca_part(args, out)
    if "vae" in parts:
        results["vae_mnist"] = vae_part(args, ds, out)
    if "rbm" in parts:
        results["rbm"] = rbm_part(args, ds, out)
    write_json({"results": results, "settings": vars(args)}, out / "results.json")
    summary = {part: {k: v for k, v in values.items() if isinstance(v, float)} for part, values in results.items()}
    print(json.dumps(summary))
    return results


if __name__ == "__main__":
    main()
