"""Every flow family fitted to the 2-D test energies of Rezende & Mohamed (2015), and to 2-D toy data.

What is measured:

1. Energies. For each energy U1-U4 (:mod:`pyro_gen.flows.density`; U2-U4 with a N(z1; 0, 2^2)
   envelope so that they are normalizable), each family of :data:`pyro_gen.flows.FAMILIES`
   and each depth (2, 8, 32), a :class:`~pyro_gen.flows.Flow` (learnable diagonal
   Gaussian base, then the layers; networks 2-D -> (32, 32) -> params) is fitted by
   minimizing KL(q || p) with reparameterized batches (Adam, learning rate decaying
   exponentially from ``--lr`` to 1e-4). The reported figure is
   KL(q || p) = log Z - ELBO in nats, log Z by quadrature on a 2001^2 grid over
   [-10, 10]^2, the ELBO from 20,000 fresh draws of q (its standard error, ~0.002, is
   in results.json).
2. Toy data (``--toy``). Every family that can score data (:data:`pyro_gen.flows.SCORABLE`)
   at depth 8 is fitted by maximum likelihood to moons, circles, 8 Gaussians and a
   checkerboard (10,000 training points); reported: held-out negative log-likelihood.

Budget: every fit runs the same number of steps (``--steps``, default 2,000, of
``--batch`` 512) at every depth, so that deeper flows are compared with shallower ones at
equal optimization effort; the learning rate decays exponentially to 1e-4 over them. An
optional wall-clock cap per depth (``--seconds 2:5,8:10,32:20``) stops a fit early; the
steps taken are reported beside every KL either way. The fits are independent:
``--jobs N`` runs them in N worker processes of one torch thread each (the deep spline
flows, ~0.2 s per step, go first). Pyro's spline layers are the cost: on the shared 2-core
machine, beside two other jobs, the default run with ``--toy --jobs 2`` took 2.1 hours, of
which each depth-32 spline fit took 530-1,010 s; ``--families`` and ``--depths`` narrow it.

Run from the repository root::

    python benchmarks/flows_energy.py [--toy] [--out runs/flows_energy]
    python benchmarks/flows_energy.py --smoke        # tiny budget, for CI

Writes ``OUT/results.json``, ``OUT/kl_table.md``, ``OUT/energies_depth{2,8,32}.png`` (Fig. 3 style: the true
density beside each family's q, as a histogram of 200,000 draws) and, with ``--toy``,
``OUT/toy_densities.png``. Last stdout line: ``{"kl": {"U1": {"planar": {"2": .., "8": ..,
"32": ..}, ..}, ..}, "steps": {same layout}, "best_depth32": {"U1": [family, kl], ..},
"toy_nll": {...} (with --toy), "seconds": total}``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pyro  # noqa: E402
import torch  # noqa: E402

from pyro_gen.flows import density  # noqa: E402
from pyro_gen.infer.checkpoint import write_json  # noqa: E402
from pyro_gen.flows import FAMILIES, SCORABLE, Flow  # noqa: E402
from pyro_gen.figures.report import markdown_table  # noqa: E402

HIDDEN = (32, 32)
PLOT_LIM, PLOT_BINS = 4.0, 100
FINAL_LR = 1e-4
SEED = 0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _pairs(spec: str, cast=float) -> dict[int, float]:
    """'2:5,8:10,32:25' -> {2: 5.0, 8: 10.0, 32: 25.0}."""
    try:
        return {int(k): cast(v) for k, v in (item.split(":") for item in spec.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected DEPTH:VALUE pairs like 2:5,8:10, got {spec!r}") from None


def _list(valid):
    def parse(spec: str) -> list[str]:
        items = [s for s in spec.split(",") if s]
        bad = [s for s in items if s not in valid]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(bad) or 'empty list'}; valid choices: {', '.join(valid)}")
        return items
    return parse


def fit_one(u_name: str, family: str, depth: int, args, log_z: float) -> dict:
    """Fit one flow to one energy; returns its KL, the steps and seconds taken, and the
    histogram of ``args.plot_n`` draws of q for the figure (not the flow, so that the result
    can come back from a worker process)."""
    torch.set_num_threads(args.threads)
    pyro.enable_validation(False)  # support checks on every log_prob cost time and test nothing here
    torch.manual_seed(SEED)
    flow = Flow(2, family, depth, hidden=HIDDEN)
    u = density.energy(u_name)
    hist = None
    try:
        trace = density.fit_energy(flow, u, steps=args.steps, batch=args.batch, lr=args.lr, final_lr=FINAL_LR,
                                   max_seconds=args.seconds.get(depth) if args.seconds else None)
        torch.manual_seed(SEED + 1)
        kl, se = density.kl_to_energy(flow, u_name, n=args.eval_n, log_z=log_z)
        steps, seconds = trace.steps, trace.seconds
        hist = histogram(flow, args.plot_n, PLOT_LIM, PLOT_BINS)
    except FloatingPointError as e:  # reported, not hidden: the fit diverged
        log(f"  {family} depth {depth}: {e}")
        kl, se, steps, seconds = math.inf, math.nan, 0, math.nan
    return {"kl": kl, "se": se, "steps": steps, "seconds": seconds, "hist": hist}


def _cost(family: str, depth: int) -> float:
    """Rough relative cost of a fit, to start the slow ones first."""
    return depth * (10.0 if family.startswith("spline") else 1.0)


@torch.no_grad()
def histogram(flow: Flow, n: int, lim: float, bins: int):
    import numpy as np

    z = flow.sample(n).numpy()
    h, _, _ = np.histogram2d(z[:, 0], z[:, 1], bins=bins, range=[[-lim, lim], [-lim, lim]])
    return h.T


def energy_figure(results, energies, families, depth: int, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lim, bins = PLOT_LIM, PLOT_BINS
    fig, axes = plt.subplots(len(energies), len(families) + 1, figsize=(1.6 * (len(families) + 1), 1.6 * len(energies)),
                             squeeze=False)
    pts, xs, _ = density.grid(lim, bins)
    for i, e in enumerate(energies):
        p = torch.exp(-density.energy(e)(pts)).reshape(bins, bins)
        axes[i, 0].imshow(p.numpy(), origin="lower", extent=[-lim, lim, -lim, lim], cmap="viridis")
        axes[i, 0].set_ylabel(e)
        for j, fam in enumerate(families):
            r = results[e][fam][depth]
            ax = axes[i, j + 1]
            if math.isfinite(r["kl"]):
                ax.imshow(r["hist"], origin="lower", extent=[-lim, lim, -lim, lim],
                          cmap="viridis")
            ax.set_title(f"KL {r['kl']:.2f}", fontsize=7)
            if i == 0:
                ax.set_xlabel(fam, fontsize=7)
                ax.xaxis.set_label_position("top")
    axes[0, 0].set_xlabel("exp(-U)", fontsize=7)
    axes[0, 0].xaxis.set_label_position("top")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"q fitted by each flow family, depth {depth} (Rezende & Mohamed 2015, Fig. 3)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_toy(args, out: Path) -> dict:
    """Maximum likelihood on the toy sets for each family that can score data; figure of log q."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(density.TOY_DATA)
    fams = [f for f in SCORABLE if f in args.families]
    fig, axes = plt.subplots(len(names), len(fams) + 1, figsize=(1.6 * (len(fams) + 1), 1.6 * len(names)),
                             squeeze=False)
    lim, bins = 3.5, 100
    pts, _, _ = density.grid(lim, bins, dtype=torch.float32)
    nll: dict[str, dict[str, float]] = {}
    for i, name in enumerate(names):
        train, test = density.toy_data(name, args.toy_n, seed=0), density.toy_data(name, 2000, seed=1)
        axes[i, 0].hist2d(train[:, 0].numpy(), train[:, 1].numpy(), bins=bins, range=[[-lim, lim], [-lim, lim]])
        axes[i, 0].set_ylabel(name)
        nll[name] = {}
        for j, fam in enumerate(fams):
            torch.manual_seed(SEED)
            flow = Flow(2, fam, args.toy_depth, hidden=HIDDEN, direction="score")
            density.fit_data(flow, train, steps=args.toy_steps, batch=args.batch, lr=args.lr,
                             max_seconds=args.toy_seconds)
            with torch.no_grad():
                nll[name][fam] = round(-flow.log_prob(test).mean().item(), 4)
                q = flow.log_prob(pts).exp().reshape(bins, bins)
            axes[i, j + 1].imshow(q.numpy(), origin="lower", extent=[-lim, lim, -lim, lim], cmap="viridis")
            axes[i, j + 1].set_title(f"NLL {nll[name][fam]:.2f}", fontsize=7)
            if i == 0:
                axes[i, j + 1].set_xlabel(fam, fontsize=7)
                axes[i, j + 1].xaxis.set_label_position("top")
            log(f"toy {name} {fam}: held-out NLL {nll[name][fam]:.3f}")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"flows fitted by maximum likelihood, depth {args.toy_depth}: q(x) on a grid, NLL on held-out points", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "toy_densities.png", dpi=110)
    plt.close(fig)
    return nll


def kl_table(kl: dict, depths: list[int]) -> str:
    """KL(q || p) as one Markdown table: a row per energy and family, a column per depth."""
    cols = ["energy", "family"] + [f"depth {d}" for d in depths]
    rows = [{"energy": e, "family": f, **{f"depth {d}": by_d[str(d)] for d in depths}}
            for e, by_f in kl.items() for f, by_d in by_f.items()]
    return markdown_table(rows, cols, digits=3)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--energies", type=_list(list(density.ENERGIES)), default=list(density.ENERGIES))
    p.add_argument("--families", type=_list(list(FAMILIES)), default=list(FAMILIES))
    p.add_argument("--depths", type=lambda s: [int(d) for d in s.split(",")], default=[2, 8, 32])
    p.add_argument("--steps", type=int, default=2000, help="steps per fit, the same at every depth")
    p.add_argument("--seconds", type=_pairs, default=None,
                   help="optional wall-clock cap per fit at each depth, DEPTH:SECONDS,... (default: none)")
    p.add_argument("--batch", type=int, default=512, help="draws per step")
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--eval-n", type=int, default=20000, help="draws of q for the ELBO")
    p.add_argument("--plot-n", type=int, default=200000, help="draws of q per histogram")
    p.add_argument("--toy", action="store_true", help="also fit the 2-D toy data sets by maximum likelihood")
    p.add_argument("--toy-n", type=int, default=10000)
    p.add_argument("--toy-depth", type=int, default=8)
    p.add_argument("--toy-steps", type=int, default=1000)
    p.add_argument("--toy-seconds", type=float, default=12.0, help="time budget per toy fit")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (tiny 2-D batches gain nothing from more)")
    p.add_argument("--jobs", type=int, default=1, help="energy fits run in this many worker processes")
    p.add_argument("--smoke", action="store_true", help="2 energies x 3 families x depths 1,2; 20 steps (CI)")
    p.add_argument("--out", default="runs/flows_energy")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.smoke:
        args.energies, args.families, args.depths = ["U1", "U3"], ["planar", "sylvester", "affine_coupling"], [1, 2]
        args.steps, args.seconds, args.eval_n, args.plot_n = 20, {1: 5.0, 2: 5.0}, 2000, 5000
        args.toy_n, args.toy_depth, args.toy_steps, args.toy_seconds = 500, 2, 20, 5.0
    missing = [d for d in args.depths if args.seconds and d not in args.seconds]
    if args.jobs < 1:
        build_parser().error(f"--jobs must be at least 1, got {args.jobs}")
    if missing:
        build_parser().error(f"--seconds has no budget for depth(s) {missing}")
    torch.set_num_threads(args.threads)
    pyro.enable_validation(False)  # support checks on every log_prob cost time and test nothing here
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    log_zs = {e: density.log_normalizer(e) for e in args.energies}
    todo = sorted(((e, f, d) for e in args.energies for f in args.families for d in args.depths),
                  key=lambda t: -_cost(t[1], t[2]))
    results: dict = {e: {f: {} for f in args.families} for e in args.energies}

    def done(n, key, r):
        e, fam, depth = key
        results[e][fam][depth] = r
        log(f"{e} {fam:22s} depth {depth:2d}: KL {r['kl']:.4f} ± {r['se']:.4f} nats "
            f"({r['steps']} steps, {r['seconds']:.1f} s)  [{n}/{len(todo)}]")

    if args.jobs == 1:
        for n, key in enumerate(todo, 1):
            done(n, key, fit_one(*key, args, log_zs[key[0]]))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(fit_one, *key, args, log_zs[key[0]]): key for key in todo}
            for n, fut in enumerate(as_completed(futures), 1):
                done(n, futures[fut], fut.result())
    # results in the order asked for, whatever order the workers finished in
    results = {e: {f: {d: results[e][f][d] for d in args.depths} for f in args.families} for e in args.energies}
    figures = [str(energy_figure(results, args.energies, args.families, d, out / f"energies_depth{d}.png"))
               for d in args.depths]

    def table(key, digits=None):
        return {e: {f: {str(d): (round(r[key], digits) if digits else r[key]) for d, r in by_d.items()}
                    for f, by_d in by_f.items()} for e, by_f in results.items()}

    deepest = max(args.depths)
    best = {e: min(((f, by_d[deepest]["kl"]) for f, by_d in by_f.items()), key=lambda t: t[1])
            for e, by_f in results.items()}
    summary = {"kl": table("kl", 4), "steps": table("steps"),
               "best_depth%d" % deepest: {e: [f, round(k, 4)] for e, (f, k) in best.items()}}
    if args.toy:
        summary["toy_nll"] = run_toy(args, out)
        figures.append(str(out / "toy_densities.png"))
    summary["seconds"] = round(time.perf_counter() - t_start, 1)
    write_json({**summary, "kl_se": table("se", 4), "fit_seconds": table("seconds", 2), "batch": args.batch,
                "lr": args.lr, "final_lr": FINAL_LR, "hidden": list(HIDDEN), "budget_seconds": args.seconds,
                "max_steps": args.steps, "eval_n": args.eval_n, "envelope_std": density.ENVELOPE,
                "log_z": log_zs, "figures": figures},
               out / "results.json")
    (out / "kl_table.md").write_text(kl_table(summary["kl"], args.depths) + "\n")
    log(f"wrote {out / 'results.json'}, {out / 'kl_table.md'} and {', '.join(figures)}")
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
