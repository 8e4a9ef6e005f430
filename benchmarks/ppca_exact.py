"""Probabilistic PCA fitted by SVI against its exact answers, scikit-learn, and hand-written PyTorch.

What is measured, on synthetic data drawn from a pPCA with known parameters (d=20
observed, q=4 latent dimensions, noise sigma=0.5; 5,000 training points and 1,000
held-out points; ``models.ppca.synthetic_data``):

- ``rel_gap``: (L* - L) / |L*|, where L is the exact mean log-likelihood of the
  parameters :func:`pyro_gen.fit` learned with the ELBO and the linear-Gaussian guide
  (linear encoder, full covariance), and L* the closed-form maximum (Tipping & Bishop
  1999). Target: below 1e-3.
- ``angle_deg``: the largest principal angle between the learned W and scikit-learn's
  ``PCA(q).components_``. Target: below 1 degree.
- ``sklearn_score_diff``: L - ``PCA(q).fit(x).score(x)`` (sklearn's score is the pPCA
  log-likelihood at its own, N-1 normalized, estimates), nats per point.
- ``elbo_gap_linear_guide`` / ``elbo_gap_diagonal_guide``: the exact mean of
  log p(x) - ELBO(x) = KL(q(z|x) || p(z|x)) on the held-out points, for the linear-
  Gaussian guide and for a linear encoder with a diagonal covariance (each trained
  jointly with its own model). No Monte Carlo noise: both are closed-form KLs.
- ``bounds_ordered``: on the held-out points, for both guides and an MLP encoder with
  a diagonal covariance (a guide with a real gap), ELBO <= IWAE-k <= exact log p(x) at
  every point, as :func:`pyro_gen.evaluate.bounds.check_bounds` tests it (k=100, 20 replicates:
  the first inequality exactly, the second in expectation within 5 standard errors).
- ``seconds``: training seconds of the linear-guide run that produced these figures.

``results.json`` adds the seconds each guide took to first get within 1e-3 of L*, the
MLP guide's figures, the linear autoencoder's angle to the PCA subspace (Baldi & Hornik
1989), scikit-learn's fitting time, and the speed of one training step against the same
ELBO written by hand in PyTorch, interleaved in one run (median ms of R rounds of S
steps each, alternating which goes first), as a ratio. Figures: ``training.png`` (exact
log-likelihood per epoch against L*) and ``bounds.png`` (per-point ELBO, IWAE-k, exact).

Run from the repository root (about a minute on 2 CPU cores)::

    python benchmarks/ppca_exact.py
    python benchmarks/ppca_exact.py --smoke       # a few seconds, for CI

The last line printed is one JSON object:
``{"rel_gap", "angle_deg", "sklearn_score_diff", "elbo_gap_linear_guide",
"elbo_gap_diagonal_guide", "bounds_ordered", "seconds"}``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

# The script is run as `python benchmarks/ppca_exact.py`; `models` lives at the repository root.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pyro  # noqa: E402
import torch  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402

from models.ppca import PPCA, fit_linear_autoencoder, synthetic_data  # noqa: E402
from pyro_gen import fit, objectives  # noqa: E402
from pyro_gen.exact import linear_gaussian as lg  # noqa: E402
from pyro_gen.evaluate.bounds import check_bounds  # noqa: E402
from pyro_gen.infer.checkpoint import write_json  # noqa: E402

LOG_2PI = math.log(2 * math.pi)
GUIDES = {"linear": ("linear", "full"), "diagonal": ("linear", "diagonal"), "mlp": ("mlp", "diagonal")}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def train(x: torch.Tensor, q: int, guide: str, epochs: int, batch: int, L_star: float, seed: int = 0):
    """Fit a PPCA with ``guide`` by the ELBO; record the exact log-likelihood after every epoch."""
    encoder, covariance = GUIDES[guide]
    torch.manual_seed(seed)
    m = PPCA(x.shape[1], q, encoder=encoder, covariance=covariance, hidden=(64,))
    curve = []

    def record(row: dict) -> None:  # exact log p is cheap: O(N d q)
        curve.append({"epoch": row["epoch"], "seconds": row["seconds"],
                      "exact": m.exact_log_likelihood(x).mean().item(), "elbo": -row["train_loss"]})

    result = fit(m.model, m.guide, x, objective="trace", epochs=epochs, batch_size=batch, lr=0.03,
                 lr_schedule="cosine", seed=seed, progress=False, callback=record)
    reached = next((c["seconds"] for c in curve if (L_star - c["exact"]) / abs(L_star) < 1e-3), None)
    return m, {"seconds": result.seconds, "seconds_to_rel_1e-3": reached, "curve": curve}


def max_cos(W: torch.Tensor) -> float:
    """The largest |cosine| between two columns of W: 0 when W^T W is diagonal (posterior factorizes)."""
    W = W.detach().double()
    G = W.T @ W
    cos = G / torch.outer(G.diagonal(), G.diagonal()).sqrt()
    return (cos - torch.eye(len(G), dtype=G.dtype)).abs().max().item()


def handwritten_loss(m: PPCA, x: torch.Tensor) -> torch.Tensor:
    """The same single-sample ELBO per point as Pyro's Trace_ELBO on PPCA, written in PyTorch."""
    loc, L = m.guide_loc(x), m.scale_tril()
    eps = torch.randn_like(loc)
    z = loc + eps @ L.T
    sigma = m.sigma
    log_px = (-0.5 * ((x - z @ m.W.T - m.mu) / sigma) ** 2 - sigma.log() - 0.5 * LOG_2PI).sum(-1)
    log_pz = (-0.5 * z**2 - 0.5 * LOG_2PI).sum(-1)
    log_qz = (-0.5 * eps**2 - 0.5 * LOG_2PI).sum(-1) - L.diagonal().log().sum()
    return -(log_px + log_pz - log_qz).mean()


def step_speed(x: torch.Tensor, q: int, batch: int, rounds: int, steps: int) -> dict:
    """ms per training step: pyro_gen's step (as in fit) against the hand-written loss, interleaved."""
    batches = [x[i:i + batch] for i in range(0, len(x) - batch + 1, batch)]
    elbo = objectives.get("trace")
    impls = {}
    for name in ("pyro_gen", "torch"):
        torch.manual_seed(0)
        m = PPCA(x.shape[1], q)
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)
        if name == "pyro_gen":
            def loss_fn(b, m=m):
                with pyro.validation_enabled(False):
                    return elbo.differentiable_loss(m.model, m.guide, b) / len(b)
        else:
            def loss_fn(b, m=m):
                return handwritten_loss(m, b)
        impls[name] = (loss_fn, opt)

    def run(name: str, n: int) -> float:
        loss_fn, opt = impls[name]
        t = time.perf_counter()
        for i in range(n):
            loss = loss_fn(batches[i % len(batches)])
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"{name}: non-finite loss")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return 1000 * (time.perf_counter() - t) / n

    for name in impls:  # warm-up
        run(name, 3)
    times = {name: [] for name in impls}
    for r in range(rounds):
        for name in (list(impls) if r % 2 == 0 else list(reversed(impls))):
            times[name].append(run(name, steps))
    ms = {name: statistics.median(v) for name, v in times.items()}
    return {"pyro_gen_ms": ms["pyro_gen"], "torch_ms": ms["torch"], "ratio": ms["pyro_gen"] / ms["torch"],
            "rounds": rounds, "steps_per_round": steps, "batch": batch}


def save(fig, ax, path: Path) -> str:
    import matplotlib.pyplot as plt

    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def figures(runs: dict, L_star: float, check, out: Path) -> dict:
    """training.png: L* minus the fit's exact log p per epoch; bounds.png: per-point gaps of ELBO and IWAE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for guide, info in runs.items():
        c = info["curve"]
        ax.semilogy([r["epoch"] for r in c], [max(L_star - r["exact"], 1e-7) for r in c], label=f"{guide} guide")
    ax.set(xlabel="epoch", ylabel="L* - exact log p(x) of the fit (nats/point)",
           title="SVI reaching the closed-form maximum")
    files = {"training": save(fig, ax, out / "training.png")}

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, v in (("ELBO", check.elbo), (f"IWAE-{check.k} (mean of {check.replicates})", check.iwae)):
        ax.plot(check.exact.numpy(), (check.exact - v).numpy(), ".", ms=3, label=name)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set(xlabel="exact log p(x) of a held-out point (nats)", ylabel="log p(x) - bound (nats)",
           title="per-point gaps below the exact log-likelihood, MLP-diagonal guide")
    files["bounds"] = save(fig, ax, out / "bounds.png")
    return files


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    p.add_argument("--out", default="runs/ppca_exact")
    p.add_argument("--threads", type=int, default=1, help="torch threads (small matrices: 1 is fastest)")
    p.add_argument("--epochs", type=int, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.smoke:
        d, q, n, n_test, epochs, batch, k, reps, rounds, steps = 8, 2, 400, 100, 60, 100, 10, 10, 2, 5
    else:
        d, q, n, n_test, epochs, batch, k, reps, rounds, steps = 20, 4, 5000, 1000, 100, 500, 100, 20, 15, 50
    epochs = args.epochs or epochs
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    x_all, truth = synthetic_data(n + n_test, d, q, sigma=0.5, seed=0)
    x, x_test = x_all[:n], x_all[n:]
    L_star = lg.max_log_likelihood(x, q)
    t = time.perf_counter()
    pca = PCA(q).fit(x.double().numpy())
    sklearn_seconds = time.perf_counter() - t
    log(f"d={d} q={q} N={n}: closed-form L* = {L_star:.5f} nats/point; sklearn PCA in {sklearn_seconds:.4f} s")

    models, runs = {}, {}
    for guide in GUIDES:
        models[guide], runs[guide] = train(x, q, guide, epochs, batch, L_star)
        ll = models[guide].exact_log_likelihood(x).mean().item()
        log(f"{guide:>8} guide: exact log p = {ll:.5f} (rel gap {(L_star - ll) / abs(L_star):.2e}), "
            f"held-out ELBO gap {models[guide].elbo_gap(x_test).mean().item():.5f} nats, "
            f"{runs[guide]['seconds']:.1f} s (within 1e-3 of L* after {runs[guide]['seconds_to_rel_1e-3']} s)")

    m = models["linear"]
    ll = m.exact_log_likelihood(x).mean().item()
    checks = {}
    for guide, mg in models.items():
        pyro.set_rng_seed(1)
        checks[guide] = check_bounds(mg.model, mg.guide, x_test, mg.exact_log_likelihood(x_test), k=k,
                                     replicates=reps)
        log(f"{guide:>8} guide bounds: {checks[guide].summary()}")
    ae = fit_linear_autoencoder(x, q)
    ae_angle = lg.subspace_angle(ae.decoder.weight, pca.components_.T)
    log(f"linear autoencoder on squared error: {ae_angle:.4f} degrees from the PCA subspace")
    speed = step_speed(x, q, batch=min(batch, 128), rounds=rounds, steps=steps)
    log(f"step speed: pyro_gen {speed['pyro_gen_ms']:.3f} ms, hand-written PyTorch {speed['torch_ms']:.3f} ms, "
        f"ratio {speed['ratio']:.2f}")

    result = {
        "rel_gap": (L_star - ll) / abs(L_star),
        "angle_deg": lg.subspace_angle(m.W, pca.components_.T),
        "sklearn_score_diff": ll - float(pca.score(x.double().numpy())),
        "elbo_gap_linear_guide": m.elbo_gap(x_test).mean().item(),
        "elbo_gap_diagonal_guide": models["diagonal"].elbo_gap(x_test).mean().item(),
        "bounds_ordered": all(c.ordered for c in checks.values()),
        "seconds": runs["linear"]["seconds"],
    }
    details = {
        "settings": {"d": d, "q": q, "n": n, "n_test": n_test, "epochs": epochs, "batch": batch, "lr": 0.03,
                     "objective": "trace", "threads": args.threads, "sigma_true": 0.5},
        "L_star": L_star, "sklearn_score": float(pca.score(x.double().numpy())), "sklearn_seconds": sklearn_seconds,
        "guides": {g: {"exact_log_likelihood": models[g].exact_log_likelihood(x).mean().item(),
                       "elbo_gap_heldout": models[g].elbo_gap(x_test).mean().item(),
                       "angle_deg": lg.subspace_angle(models[g].W, pca.components_.T),
                       "max_cos_between_W_columns": max_cos(models[g].W),
                       "seconds": runs[g]["seconds"], "seconds_to_rel_1e-3": runs[g]["seconds_to_rel_1e-3"],
                       "bounds": checks[g].summary()} for g in models},
        "sigma_fit": m.sigma.item(), "sigma_ml": lg.ml_solution(x, q)[2].item(),
        "linear_autoencoder_angle_deg": ae_angle, "speed": speed,
        "figures": figures({g: runs[g] for g in ("linear", "diagonal")}, L_star, checks["mlp"], out),
        "curves": {g: r["curve"] for g, r in runs.items()},
    }
    write_json({"result": result, **details}, out / "results.json")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
