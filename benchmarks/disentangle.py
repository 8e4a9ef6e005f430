"""Disentanglement on procedural shapes with known factors: the VAE, beta-VAE, beta-TCVAE, FactorVAE
and the autoencoder at equal steps, over seeds.

What is measured: each method trains the same MLP encoder/decoder (``--hidden``, ``--latent-dim``
latents, Bernoulli pixels) on the stream of procedural 64x64 shapes with dSprites' factor grid
(:class:`pyro_gen.data.Shapes`, 737,280 images rendered on demand; ``--grid small`` for the 32x32
test grid) for ``--steps`` Adam steps of batch ``--batch-size``, from the same initialization per
seed. Then, on a seeded random ``--eval-n`` images with their factors, the representation (the
guide's mean; the autoencoder's code) is scored by :mod:`pyro_gen.disentanglement` (MIG, DCI
disentanglement, the FactorVAE score, SAP) and the reconstruction error ``-log p(x | z)`` at that
representation (nats per image). Methods:

- ``vae``: the ELBO (``trace``);
- ``beta_vae``: beta = 4 on the KL term (Higgins et al. 2017; ``VAE(beta=4)``);
- ``beta_tcvae``: ``betatc:6`` (Chen et al. 2018);
- ``factor_vae``: ``factorvae:GAMMA`` (Kim & Mnih 2018; ``--factor-gamma``, 20 by default);
- ``ae``: the autoencoder (``models.ae``), the deterministic baseline.

The target (issue 14): beta-TCVAE's mean MIG at least twice the VAE's, with the ranking stable over
the seeds (reported: every seed's MIG per method, and whether beta-TCVAE beats the VAE in each).

Figures in OUT: ``traversals_<method>.png`` (seed 0; one row per latent, by decreasing KL),
``mutual_information_<method>.png`` (seed 0; which latent carries which factor, the matrix MIG
summarizes; each run's matrix is in results.json), ``kl_per_dim.png``, ``mig_vs_recon.png`` and
``dci_vs_recon.png`` (one point per run) and
``samples_vae_vs_ae.png`` (decoded prior draws of the VAE beside decoded draws from a Gaussian
fitted to the autoencoder's codes).

Run from the repository root::

    python benchmarks/disentangle.py                 # about 4 hours on 2 CPU cores (16 minutes a run)
    python benchmarks/disentangle.py --methods vae,beta_tcvae   # the target alone: 1.6 hours
    python benchmarks/disentangle.py --smoke         # seconds, for CI
    python benchmarks/disentangle.py --resume        # after an interruption: only the runs not yet in OUT

``--resume`` keeps the runs already in ``OUT/results.json`` (made with the same settings; any other
setting is refused, naming it) and trains only the missing ones, so the 4-hour run can be done in
parts, or a subset of methods added to another's: every (method, seed) run starts from its own seed,
so a kept run is the run that would have been made. The seed-0 models, which the figures draw, are
saved as ``OUT/seed0_<method>.pt`` (weights only).

Writes ``OUT/results.json``; the last line on stdout is one JSON object
``{"vae": {"mig": m, "dci": d, "factorvae": f, "recon": r, ...}, "beta_vae": {...}, "beta_tcvae": {...},
"factor_vae": {...}, "ae": {...}}``, each value a mean over seeds (with ``*_sd`` beside it), and a
``"target"`` entry.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pyro  # noqa: E402
import torch  # noqa: E402

from models.ae import Autoencoder  # noqa: E402
from models.vae import VAE  # noqa: E402
from pyro_gen import disentanglement, evaluate, fit  # noqa: E402
from pyro_gen.data.shapes import FACTORS, GRIDS, Shapes, ShapesGrid  # noqa: E402
from pyro_gen.figures import (image_grid, kl_per_dimension, latent_traversal, metric_vs_reconstruction,  # noqa: E402
                              mutual_information_heatmap)
from pyro_gen.infer.checkpoint import load_checkpoint, save_checkpoint, write_json  # noqa: E402

METHODS = ("vae", "beta_vae", "beta_tcvae", "factor_vae", "ae")
# the settings that do not change what a run computes; --resume ignores them when it compares
NOT_RESULTS = ("methods", "seeds", "no_progress", "out", "resume")
EVAL_SEED = 1234


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, among {', '.join(METHODS)}")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=12_000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--latent-dim", type=int, default=10)
    p.add_argument("--hidden", type=int, nargs="+", default=[512, 512])
    p.add_argument("--factor-gamma", type=float, default=20.0)
    p.add_argument("--grid", default="full", choices=list(GRIDS))
    p.add_argument("--image-size", type=int, default=None, help="render the grid at this size (default: the grid's)")
    p.add_argument("--eval-n", type=int, default=10_000, help="images scored by the metrics (seeded)")
    p.add_argument("--smoke", action="store_true", help="the small grid, 30 steps, 1 seed, 300 images (CI)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", default="runs/bench_disentangle")
    p.add_argument("--resume", action="store_true",
                   help="keep the runs in OUT/results.json made with these settings and train only the others")
    return p


def make(method: str, x_dim: int, args) -> tuple[torch.nn.Module, str]:
    """The model and objective name of a method."""
    if method == "ae":
        return Autoencoder(x_dim, args.latent_dim, args.hidden), "trace"
    beta = 4.0 if method == "beta_vae" else 1.0
    objective = {"beta_tcvae": "betatc:6", "factor_vae": f"factorvae:{args.factor_gamma:g}"}.get(method, "trace")
    return VAE(x_dim, args.latent_dim, args.hidden, beta=beta), objective


def run_one(method: str, seed: int, ds: Shapes, x_eval, f_eval, args) -> tuple[dict, torch.nn.Module]:
    pyro.clear_param_store()
    torch.manual_seed(seed)
    net, objective = make(method, ds.image_shape[1] * ds.image_shape[2], args)
    t0 = time.perf_counter()
    epochs = -(-args.steps * args.batch_size // len(ds))  # enough passes for --steps: max_steps decides
    result = fit(net.model, net.guide, ds, objective=objective, epochs=epochs, batch_size=args.batch_size, lr=args.lr,
                 max_steps=args.steps, seed=seed, progress=not args.no_progress)
    seconds = time.perf_counter() - t0
    net.eval()
    z = net.encode(x_eval)[0]  # the guide's mean; an autoencoder's code
    scores = disentanglement.all_metrics(z, f_eval, seed=seed)
    row = {"method": method, "seed": seed, "objective": objective, "steps": result.steps, "seconds": seconds,
           "recon": net.reconstruction_error(x_eval).mean().item(), **scores,
           "mutual_information": disentanglement.mutual_information(z, f_eval).round(4).tolist()}
    if method != "ae":
        row["kl_per_dim"] = evaluate.kl_per_dim(net.model, net.guide, x_eval[:2000]).tolist()
    log(f"{method} seed {seed}: MIG {scores['mig']:.3f}, DCI {scores['dci']:.3f}, FactorVAE {scores['factorvae']:.3f}, "
        f"SAP {scores['sap']:.3f}, recon {row['recon']:.1f} nats, {seconds:.0f} s")
    return row, net


def kept_runs(out: Path, args) -> list[dict]:
    """The runs of ``out/results.json`` for ``--resume``: none if there is no file; an exit naming the
    difference if it was made with other settings."""
    path = out / "results.json"
    if not path.is_file():
        log(f"--resume: no {path} yet, every run is trained")
        return []
    saved = json.loads(path.read_text())
    ours = {k: v for k, v in vars(args).items() if k not in NOT_RESULTS}
    theirs = {k: v for k, v in saved.get("settings", {}).items() if k not in NOT_RESULTS}
    differ = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
    if differ:
        why = "; ".join(f"{k}: {theirs.get(k)!r} there, {ours.get(k)!r} here" for k in differ)
        log(f"--resume: {path} was made with other settings ({why}); use another --out, or the same settings")
        sys.exit(2)
    return saved.get("runs", [])


def figures(models: dict, runs: list[dict], ds: Shapes, x_eval: torch.Tensor, out: Path) -> dict:
    shape = ds.image_shape
    files = {}
    first = {r["method"]: r for r in runs if r["seed"] == 0}  # the runs whose models are drawn
    for method, net in models.items():
        z0 = net.encode(x_eval[:1])[0][0]
        if method == "ae":
            order, span, labels = list(range(len(z0))), 2.5 * float(net.code(x_eval[:2000]).std(0).max()), None
        else:
            kl = first[method]["kl_per_dim"]
            order = sorted(range(len(kl)), key=lambda d: -kl[d])
            span, labels = 2.5, [f"z{d} (KL {kl[d]:.2f})" for d in order]
        files[f"mutual_information_{method}"] = str(mutual_information_heatmap(
            first[method]["mutual_information"], out / f"mutual_information_{method}.png", FACTORS,
            title=f"{method}, seed 0: I(factor; latent) / H(factor)"))
        files[f"traversals_{method}"] = str(latent_traversal(net.decode, z0, order, shape,
                                                             out / f"traversals_{method}.png", span=span,
                                                             labels=labels, title=f"{method}, seed 0"))
    kls = {m: first[m]["kl_per_dim"] for m in models if m != "ae"}
    if kls:
        files["kl_per_dim"] = str(kl_per_dimension(kls, out / "kl_per_dim.png"))
    for metric, name in (("mig", "MIG"), ("dci", "DCI disentanglement")):
        points = {m: [(r["recon"], r[metric]) for r in runs if r["method"] == m] for m in models}
        files[f"{metric}_vs_recon"] = str(metric_vs_reconstruction(points, out / f"{metric}_vs_recon.png", name))
    if "vae" in models and "ae" in models:
        torch.manual_seed(0)
        vae_samples = models["vae"].sample(20)
        ae = models["ae"].fit_codes(x_eval)
        ae_samples = ae.sample(20)
        files["samples_vae_vs_ae"] = str(image_grid(torch.cat([vae_samples, ae_samples]), shape,
                                                    out / "samples_vae_vs_ae.png", nrow=10,
                                                    title="VAE: decoded prior draws (top 2 rows); autoencoder: decoded "
                                                          "draws from a Gaussian fitted to its codes (bottom 2)"))
    return files


def summarize(runs: list[dict], methods: list[str]) -> dict:
    summary = {}
    for m in methods:
        rows = [r for r in runs if r["method"] == m]
        entry = {}
        for key in ("mig", "dci", "factorvae", "sap", "recon", "seconds"):
            vals = [r[key] for r in rows]
            entry[key] = statistics.fmean(vals)
            entry[f"{key}_sd"] = statistics.stdev(vals) if len(vals) > 1 else None
        entry["mig_per_seed"] = [r["mig"] for r in rows]
        summary[m] = entry
    if "vae" in summary and "beta_tcvae" in summary:
        tc, vae = summary["beta_tcvae"], summary["vae"]
        seeds = sorted({r["seed"] for r in runs})
        by = {(r["method"], r["seed"]): r["mig"] for r in runs}
        per_seed = [by[("beta_tcvae", s)] > by[("vae", s)] for s in seeds]
        rankings = [sorted(methods, key=lambda m: -by[(m, s)]) for s in seeds]
        summary["target"] = {"mig_ratio": tc["mig"] / vae["mig"] if vae["mig"] > 0 else float("inf"),
                             "ratio_at_least_2": tc["mig"] >= 2 * vae["mig"],
                             "beta_tcvae_beats_vae_every_seed": all(per_seed),
                             "mig_ranking_per_seed": rankings}
    return summary


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        log(f"unknown method(s) {', '.join(unknown)}; valid choices: {', '.join(METHODS)}")
        sys.exit(2)
    if args.smoke:
        args.grid, args.image_size, args.steps, args.seeds, args.eval_n, args.hidden = "small", None, 30, 1, 300, [64]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = GRIDS[args.grid]
    ds = Shapes(ShapesGrid(base.sizes, args.image_size or base.image_size, base.orientation_endpoint))
    x_eval, f_eval = ds.sample(args.eval_n, seed=EVAL_SEED)
    runs, first = (kept_runs(out, args) if args.resume else []), {}
    kept = {(r["method"], r["seed"]) for r in runs}
    for seed in range(args.seeds):
        for method in methods:  # interleaved: every method sees the machine in the same state, seed by seed
            weights = out / f"seed0_{method}.pt"
            if (method, seed) in kept and (seed or weights.is_file()):
                log(f"{method} seed {seed}: kept from {out / 'results.json'}")
                if seed == 0:
                    first[method] = make(method, ds.image_shape[1] * ds.image_shape[2], args)[0]
                    first[method].load_state_dict(load_checkpoint(weights)["model"])
                    first[method].eval()
                continue
            runs = [r for r in runs if (r["method"], r["seed"]) != (method, seed)]
            row, net = run_one(method, seed, ds, x_eval, f_eval, args)
            runs.append(row)
            if seed == 0:
                first[method] = net
                save_checkpoint({"model": net.state_dict()}, weights)
            write_json({"settings": vars(args), "runs": runs}, out / "results.json")
    # the runs asked for, in the order they would have been made; the file keeps every run (of other methods too)
    chosen = sorted((r for r in runs if r["method"] in methods and r["seed"] < args.seeds),
                    key=lambda r: (r["seed"], methods.index(r["method"])))
    summary = summarize(chosen, methods)
    files = figures(first, chosen, ds, x_eval, out)
    write_json({"settings": vars(args), "summary": summary, "runs": runs, "figures": files}, out / "results.json")
    log(f"wrote {out / 'results.json'} and the figures in {out}")
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
