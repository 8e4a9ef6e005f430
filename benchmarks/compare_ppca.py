"""Inference algorithms compared on probabilistic PCA, against its exact log-likelihood.

    python benchmarks/compare_ppca.py [--budget 10s] [--seeds 3] [--out runs/bench_compare_ppca]
    python benchmarks/compare_ppca.py --smoke

Every objective x guide of the issue's compare command trains a pPCA (d=20, q=4,
2,000 synthetic training points) under the same wall-clock budget, and is scored on
1,000 held-out points. The exact reference is the held-out log-likelihood of the
closed-form maximum-likelihood solution. Per algorithm (mean and SD over seeds):

- ``gap``: reference minus the held-out ELBO, nats per point: everything the algorithm
  leaves on the table (parameters short of the maximum, plus the bound's looseness);
- ``bound_gap``: the run's own exact log-likelihood minus its ELBO (inference only);
- ``model_gap``: reference minus the run's exact log-likelihood (learning only).

Writes the comparison report (``report.md``, CSVs, figures) to ``--out``; the last
stdout line is ``{"exact": .., "runs": {"<objective>/<guide>": {"gap": .., "gap_sd": ..,
"seconds": ..}, ...}}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.compare import ppca_problem  # noqa: E402
from pyro_gen.diagnostics.compare import Budget, compare, write_report  # noqa: E402

OBJECTIVES = ["trace", "meanfield", "iwae:5", "iwae-dreg:5", "renyi:0.5", "rws"]
GUIDES = ["diagonal", "full", "iaf"]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", default="10s", help="the same for every run: 60s, 2000steps, 10epochs")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--objectives", default=",".join(OBJECTIVES))
    p.add_argument("--guides", default=",".join(GUIDES))
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for a model this small)")
    p.add_argument("--eval-k", type=int, default=200)
    p.add_argument("--out", default="runs/bench_compare_ppca")
    p.add_argument("--smoke", action="store_true", help="a tiny problem, 2 objectives, 20 steps, 1 seed")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    objectives, guides = args.objectives.split(","), args.guides.split(",")
    budget, seeds = Budget.parse(args.budget), args.seeds
    if args.smoke:
        objectives, guides, budget, seeds = ["trace", "iwae:5"], ["full"], Budget.parse("20steps"), 1
    problem = ppca_problem(smoke=args.smoke)
    results = compare(problem, objectives, guides, seeds, budget, eval_k=20 if args.smoke else args.eval_k,
                      log=lambda m: print(m, file=sys.stderr))
    write_report(problem, results, budget, args.out)
    runs = {}
    for algo in dict.fromkeys(r.algorithm for r in results):
        rs = [r for r in results if r.algorithm == algo and not r.error]
        if not rs:
            runs[algo] = {"error": next(r.error for r in results if r.algorithm == algo)}
            continue
        gap = np.array([problem.reference - r.elbo for r in rs])
        runs[algo] = {"gap": float(gap.mean()), "gap_sd": float(gap.std(ddof=1)) if len(rs) > 1 else 0.0,
                      "bound_gap": float(np.mean([r.gap for r in rs])),
                      "model_gap": float(np.mean([problem.reference - r.exact for r in rs])),
                      "seconds": float(np.mean([r.seconds for r in rs])),
                      "steps": float(np.mean([r.steps for r in rs]))}
    best = min((a for a in runs if "gap" in runs[a]), key=lambda a: runs[a]["gap"])
    print(f"best: {best}, gap {runs[best]['gap']:.4f} nats per point; report in {args.out}/report.md",
          file=sys.stderr)
    out = {"exact": problem.reference, "budget": str(budget), "seeds": seeds, "runs": runs}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
