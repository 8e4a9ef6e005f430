"""Compare inference algorithms on one model under one budget.

Examples::

    python -m inference.compare ppca --objectives trace,meanfield,iwae:5,iwae-dreg:5,renyi:0.5,rws \\
        --guides diagonal,full,iaf --seeds 3 --budget 60s --out runs/cmp
    python -m inference.compare regression --objectives trace,meanfield,iwae:5,rws \\
        --guides diagonal,full,iaf --seeds 3 --budget 20s --nuts --out runs/cmp-reg
    python -m inference.compare vae --objectives trace,iwae:5,iwae-dreg:5 --guides diagonal \\
        --budget 2epochs --out runs/cmp-vae

Writes ``OUT/report.md`` (table of means and spread over seeds, figures), ``results.csv``
(one row a run), ``summary.csv``, ``results.json`` and the figures (bound against
time with the exact answer where known, k-hat per algorithm, VI against NUTS).
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Callable

import pyro
import pyro.distributions as dist
import torch

from inference import run_cli
from pyro_gen import data as data_lib
from pyro_gen.diagnostics.compare import AUTO_GUIDES, AutoGuided, Budget, Problem, compare

__all__ = ["PROBLEMS", "regression_problem", "ppca_problem", "vae_problem", "build_parser", "main"]


def regression_problem(n: int = 40, d: int = 4, noise: float = 0.5, seed: int = 0, smoke: bool = False) -> Problem:
    """Bayesian linear regression with known noise: w ~ N(0, I), y ~ N(X w, noise^2).

    Conjugate, so the posterior and the evidence are exact; the features are
    correlated, so is the posterior, and a diagonal guide cannot match it. Data
    rows are ``[x_1 .. x_d, y]``.
    """
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, d, generator=g)
    X = base + 0.8 * base[:, :1]  # correlated features
    w_true = torch.randn(d, generator=g)
    y = X @ w_true + noise * torch.randn(n, generator=g)
    data = torch.cat([X, y[:, None]], 1)

    def model(xy):
        w = pyro.sample("w", dist.Normal(torch.zeros(d), 1.0).to_event(1))
        with pyro.plate("data", xy.shape[0]):
            pyro.sample("y", dist.Normal((xy[:, :d] * w).sum(-1), noise), obs=xy[:, d])  # broadcasts over draws

    def exact_log_likelihood(xy):
        Xs = xy[:, :d].double()
        cov = Xs @ Xs.T + noise**2 * torch.eye(len(xy), dtype=torch.float64)
        return torch.distributions.MultivariateNormal(torch.zeros(len(xy), dtype=torch.float64), cov).log_prob(
            xy[:, d].double())

    def nuts_draws():
        from pyro_gen.diagnostics.mcmc import nuts

        samples, warmup = (100, 100) if smoke else (1000, 500)
        return nuts(model, data, num_samples=samples, warmup_steps=warmup, num_chains=2).draws

    return Problem("bayesian linear regression", lambda guide, s: AutoGuided(model, guide, exact_log_likelihood),
                   data, data, AUTO_GUIDES, local=False,
                   reference=float(exact_log_likelihood(data)) / n, batch_size=n, lr=0.05,
                   lr_schedule="exponential:0.99", mcmc=nuts_draws)


PPCA_GUIDES = {"diagonal": {"covariance": "diagonal"}, "full": {"covariance": "full"},
               "mlp": {"encoder": "mlp", "covariance": "diagonal"},
               "iaf": {"covariance": "diagonal", "guide_flow": "iaf", "flow_depth": 2}}


def ppca_problem(n: int = 2000, n_test: int = 1000, x_dim: int = 20, z_dim: int = 4, seed: int = 0,
                 smoke: bool = False) -> Problem:
    """Probabilistic PCA (``models/ppca.py``) on synthetic data with known parameters.

    Amortized guides: ``full`` (linear encoder, full covariance: contains the exact
    posterior), ``diagonal`` (linear encoder, diagonal covariance), ``mlp`` (MLP
    encoder, diagonal), ``iaf`` (the diagonal guide pushed through two IAF layers). The reference is the exact held-out log-likelihood of the
    closed-form maximum-likelihood fit to the training data (Tipping & Bishop 1999);
    each run also reports its own exact log-likelihood.
    """
    from models.ppca import PPCA, synthetic_data
    from pyro_gen.exact.linear_gaussian import exact_log_likelihood, ml_solution

    if smoke:
        n, n_test = 300, 100
    x, _ = synthetic_data(n + n_test, x_dim, z_dim, seed=seed)
    train, test = x[:n], x[n:]
    W, mu, sigma = ml_solution(train, z_dim)
    reference = float(exact_log_likelihood(test, W, mu, sigma).mean())
    return Problem("pPCA (synthetic, d=20, q=4)", lambda guide, s: PPCA(x_dim, z_dim, **PPCA_GUIDES[guide]),
                   train, test, tuple(PPCA_GUIDES), local=True, reference=reference, batch_size=200, lr=0.03,
                   lr_schedule="exponential:0.98")


def vae_problem(data: str = "digits", data_root=None, z_dim: int = 8, seed: int = 0, smoke: bool = False) -> Problem:
    """The VAE of ``models/vae.py`` on a data set (amortized: one latent per point)."""
    from models.vae import VAE

    ds = data_lib.load(data, data_root=data_root, seed=seed)
    test = ds.test[:200] if smoke else ds.test
    return Problem(f"VAE on {data}", lambda guide, s: VAE(ds.dim, z_dim, (200,)), ds.train, test, ("diagonal",),
                   local=True, batch_size=100, lr=1e-3)


SMOKE_STEPS, SMOKE_EVAL_K = 30, 20
NUTS_PROBLEMS = ("regression",)  # the problems whose Problem has an mcmc reference

#: The problems by the name the command line takes. Each takes the parsed arguments and returns a
#: :class:`~pyro_gen.diagnostics.compare.Problem`.
PROBLEMS: dict[str, Callable[[argparse.Namespace], Problem]] = {
    "regression": lambda a: regression_problem(seed=a.data_seed, smoke=a.smoke),
    "ppca": lambda a: ppca_problem(seed=a.data_seed, smoke=a.smoke),
    "vae": lambda a: vae_problem(a.data or "digits", a.data_root, seed=a.data_seed, smoke=a.smoke),
}


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser: the problem (one of :data:`PROBLEMS`), the objectives, guides,
    seeds and budget to compare, and the evaluation."""
    p = argparse.ArgumentParser(prog="python -m inference.compare", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("problem", choices=sorted(PROBLEMS))
    p.add_argument("--objectives", default="trace,meanfield,iwae:5",
                   help="comma-separated objective names (trace, meanfield, iwae:k, iwae-dreg:k, renyi:a, rws, ...)")
    p.add_argument("--guides", default="diagonal", help="comma-separated guide names the problem offers")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--budget", default="10s", help="the same for every run: e.g. 60s, 2000steps, 10epochs")
    p.add_argument("--eval-k", type=int, default=100, help="importance samples for the log-likelihood")
    p.add_argument("--nuts", action="store_true", help="also run NUTS and compare VI posteriors with it")
    p.add_argument("--data", default=None, help="data set for problems that take one")
    p.add_argument("--data-root", default=None)
    p.add_argument("--data-seed", type=int, default=0, help="seed of the simulated data or the data split")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (small models run fastest on 1; default: torch's choice)")
    p.add_argument("--smoke", action="store_true",
                   help=f"tiny settings for a quick check: smaller data, a budget of at most {SMOKE_STEPS} steps, "
                        f"eval-k at most {SMOKE_EVAL_K}")
    p.add_argument("--out", required=True)
    return p


def main(argv: list[str] | None = None) -> dict:
    """Run ``python -m inference.compare``: every objective with every guide, for each seed, under
    the same budget; then write the report to ``--out``.

    Args:
        argv: the command-line arguments (None: ``sys.argv[1:]``).

    Returns:
        What :func:`~pyro_gen.diagnostics.compare.write_report` wrote to ``results.json``.
    """
    from pyro_gen.diagnostics.compare import summarize, write_report

    args = build_parser().parse_args(argv)
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    budget = Budget.parse(args.budget)
    if args.smoke:  # a quick check, whatever budget was asked for
        budget = Budget("steps", SMOKE_STEPS) if budget.kind != "steps" or budget.value > SMOKE_STEPS else budget
        args.eval_k = min(args.eval_k, SMOKE_EVAL_K)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    problem = PROBLEMS[args.problem](args)
    if args.nuts and problem.mcmc is None:
        raise ValueError(f"--nuts compares VI with NUTS on a model with global latents; problem {args.problem!r} has "
                         f"none to sample (valid choices with --nuts: {', '.join(NUTS_PROBLEMS)})")
    if not args.nuts:
        problem.mcmc = None
    objective_names = [o for o in args.objectives.split(",") if o]
    guides = [g for g in args.guides.split(",") if g]
    results = compare(problem, objective_names, guides, args.seeds, budget, out=None, eval_k=args.eval_k,
                      log=lambda m: print(m, file=sys.stderr))
    payload = write_report(problem, results, budget, args.out)
    best = max((r for r in summarize(results) if math.isfinite(r["log_likelihood"])),
               key=lambda r: r["log_likelihood"], default=None)
    if best is not None:
        print(f"best: {best['algorithm']} log-likelihood {best['log_likelihood']:.4f}; wrote {args.out}/report.md",
              file=sys.stderr)
    return payload


if __name__ == "__main__":
    sys.exit(run_cli(main))
