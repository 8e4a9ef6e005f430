"""Compare inference algorithms on one model under one budget.

An algorithm is an objective (any name :func:`pyro_gen.objectives.get` takes) and a
guide family (any name the problem's ``build`` takes). Every algorithm has one
shape: build it (a fresh model/guide pair from the problem), step it
(:func:`pyro_gen.fit` under the shared :class:`Budget`), read its result
(:class:`RunResult`: held-out ELBO and IWAE-k log-likelihood with standard errors,
PSIS k-hat, seconds, steps per second, a bound-against-time curve, the gap to the
exact log-likelihood where the model has one). A new model, objective or guide joins
a comparison as data, never as a new code path.

:func:`compare` loops over objectives x guides x seeds and writes ``results.csv``
(one row a run), ``summary.csv`` and ``report.md`` (means and spread over seeds) and
the figures (bound against wall time, k-hat per algorithm) into ``out``.
"""

from __future__ import annotations

import csv
import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyro
import torch

from .. import evaluate
from ..data import as_tensors, is_torch_data
from ..figures.report import markdown_table
from ..infer import objectives
from ..infer.checkpoint import write_json
from ..infer.train import fit
from . import posterior as diagnostics

__all__ = ["Budget", "Problem", "RunResult", "AutoGuided", "AUTO_GUIDES", "run", "compare", "summarize",
           "write_report"]


def _auto_guides() -> dict[str, Callable]:
    from pyro.infer import autoguide

    from ..flows import FAMILIES, flow_guide

    builders = {"diagonal": autoguide.AutoNormal, "full": autoguide.AutoMultivariateNormal,
                "lowrank": autoguide.AutoLowRankMultivariateNormal}
    builders.update({family: (lambda f: lambda model: flow_guide(model, f, depth=4))(family) for family in FAMILIES})
    return builders


#: The guide names that :class:`AutoGuided` accepts, Pyro's ``diagonal`` (AutoNormal), ``full``
#: (AutoMultivariateNormal) and ``lowrank`` (AutoLowRankMultivariateNormal) AutoGuides and every flow
#: family of :data:`pyro_gen.flows.FAMILIES`.
AUTO_GUIDES = ("diagonal", "full", "lowrank", "iaf", "planar", "radial", "householder", "sylvester", "spline",
               "spline_autoregressive", "affine_coupling")


class AutoGuided(torch.nn.Module):
    """A model function with one of Pyro's AutoGuides over its global latents, as a
    module with ``model``/``guide`` methods (the guide's parameters are its own).

    Guides: ``diagonal`` (AutoNormal), ``full`` (AutoMultivariateNormal), ``lowrank``
    (AutoLowRankMultivariateNormal), and every flow family of :mod:`pyro_gen.flows`
    (``iaf``, ``planar``, ``sylvester``, ...: :func:`pyro_gen.flows.flow_guide`, depth 4).
    """

    def __init__(self, model_fn: Callable, guide: str = "diagonal", exact_log_likelihood: Callable | None = None):
        super().__init__()
        builders = _auto_guides()
        if guide not in builders:
            raise ValueError(f"unknown guide {guide!r}; valid choices: {', '.join(builders)}")
        self.model_fn = model_fn
        self.auto = builders[guide](model_fn)
        if exact_log_likelihood is not None:
            self.exact_log_likelihood = exact_log_likelihood

    def model(self, *args, **kwargs):
        """The wrapped model function, called with the same arguments."""
        return self.model_fn(*args, **kwargs)

    def guide(self, *args, **kwargs):
        """The AutoGuide over the model's latents, called with the model's arguments."""
        return self.auto(*args, **kwargs)


@dataclass(frozen=True)
class Budget:
    """What every algorithm gets: ``epochs``, optimizer ``steps`` or wall-clock ``seconds``."""

    kind: str
    value: float

    KINDS = ("epochs", "steps", "seconds")
    _SUFFIX = {"s": "seconds", "sec": "seconds", "seconds": "seconds", "steps": "steps", "step": "steps",
               "epochs": "epochs", "epoch": "epochs", "ep": "epochs"}

    def __post_init__(self):
        if self.kind not in self.KINDS:
            raise ValueError(f"unknown budget kind {self.kind!r}; valid choices: {', '.join(self.KINDS)}")
        if not (self.value > 0 and math.isfinite(self.value)):
            raise ValueError(f"a budget must be positive and finite, got {self.value}")

    @classmethod
    def parse(cls, spec: str | "Budget") -> "Budget":
        """``"60s"``, ``"2000steps"``, ``"10epochs"`` (also ``sec``, ``step``, ``ep``)."""
        if isinstance(spec, Budget):
            return spec
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-z]+)\s*", str(spec).lower())
        if not m or m.group(2) not in cls._SUFFIX:
            raise ValueError(f"cannot read budget {spec!r}: write a number and a unit, e.g. 60s, 2000steps or "
                             "10epochs")
        return cls(cls._SUFFIX[m.group(2)], float(m.group(1)))

    def fit_kwargs(self) -> dict:
        """The budget as keyword arguments of :func:`pyro_gen.fit`: ``epochs``, or ``max_steps``
        or ``max_seconds`` with an unbounded number of epochs."""
        if self.kind == "epochs":
            return {"epochs": int(self.value)}
        if self.kind == "steps":
            return {"epochs": 10**9, "max_steps": int(self.value)}
        return {"epochs": 10**9, "max_seconds": float(self.value)}

    def __str__(self) -> str:
        return f"{self.value:g} {self.kind}"


@dataclass
class Problem:
    """A model to compare algorithms on.

    Attributes:
        name: shown in reports.
        build: ``build(guide, seed)`` -> a fresh object with ``model``/``guide``
            methods (a ``PyroModule``), for each guide name in ``guides``; it may have
            ``exact_log_likelihood(x)`` -> exact log p(x_n) per point under its current
            parameters, which makes the run report its gap.
        train, test: data tensors (N, D), or torch Datasets/DataLoaders of such rows (read
            into memory); ``test`` is evaluated after training.
        guides: the guide names ``build`` accepts.
        local: True when each data point has its own latent (amortized guides, one
            k-hat per point); False when the latents are global (one k-hat, bounds of
            the whole data set's evidence, reported per point).
        reference: the exact log-likelihood per test point when known independently of
            the fit (e.g. the closed-form maximum), drawn as a reference line.
        batch_size, lr, lr_schedule: training settings shared by every algorithm
            (the schedule steps once per epoch, see :func:`pyro_gen.train.make_scheduler`).
        mcmc: for small global-latent models, a function returning reference
            posterior draws ``{site: (S, ...)}`` (e.g. from :func:`pyro_gen.mcmc.nuts`);
            each run's guide draws are then compared with them in the report.
    """

    name: str
    build: Callable[[str, int], object]
    train: torch.Tensor
    test: torch.Tensor
    guides: Sequence[str]
    local: bool = True
    reference: float | None = None
    batch_size: int = 128
    lr: float = 1e-2
    lr_schedule: str | None = None
    mcmc: Callable[[], dict] | None = None

    def __post_init__(self):  # a torch Dataset or DataLoader: its one tensor, read into memory
        for name in ("train", "test"):
            value = getattr(self, name)
            if is_torch_data(value):
                columns = as_tensors(value, f"problem.{name}")
                if len(columns) != 1:
                    raise ValueError(f"problem.{name}: compare takes one tensor (N, D) per split; this data set has "
                                     f"{len(columns)} per item (pack them as columns of one tensor)")
                setattr(self, name, columns[0])


@dataclass
class RunResult:
    """One algorithm, one seed: what it reached, and in how long."""

    objective: str
    guide: str
    seed: int
    steps: int = 0
    seconds: float = 0.0
    steps_per_second: float = float("nan")
    elbo: float = float("nan")
    elbo_se: float = float("nan")
    log_likelihood: float = float("nan")
    log_likelihood_se: float = float("nan")
    khat: float = float("nan")
    khat_share_07: float = float("nan")
    exact: float = float("nan")
    gap: float = float("nan")
    gap_to_reference: float = float("nan")
    curve: list = field(default_factory=list)  # [(seconds, held-out ELBO per point), ...]
    khats: list = field(default_factory=list)
    error: str = ""
    draws: dict = field(default_factory=dict, repr=False)  # global latents' guide draws (not saved)

    @property
    def algorithm(self) -> str:
        return f"{self.objective}/{self.guide}"


def _global_bounds(model_obj, x: torch.Tensor, k: int, repeats: int) -> tuple[evaluate.Estimate, evaluate.Estimate,
                                                                               np.ndarray]:
    """ELBO and IWAE-k of the whole data set's evidence, per data point, for global latents."""
    log_p, log_q = diagnostics.joint_log_weights(model_obj.model, model_obj.guide, x, num_samples=k * repeats)
    lw = (log_p - log_q) / len(x)
    iw = (torch.logsumexp((log_p - log_q).reshape(repeats, k), 1) - math.log(k)) / len(x)
    se = lambda v: float(v.std() / math.sqrt(len(v))) if len(v) > 1 else float("nan")  # noqa: E731
    return (evaluate.Estimate(float(lw.mean()), se(lw), len(lw)), evaluate.Estimate(float(iw.mean()), se(iw), len(iw)),
            (log_p - log_q).numpy())


def _curve_point(problem: Problem, model_obj, x: torch.Tensor) -> float:
    with torch.no_grad():
        if problem.local:
            return evaluate.elbo(model_obj.model, model_obj.guide, x).mean
        log_p, log_q = diagnostics.joint_log_weights(model_obj.model, model_obj.guide, x, num_samples=64)
        return float((log_p - log_q).mean()) / len(x)


def run(problem: Problem, objective: str, guide: str, seed: int, budget: Budget | str, eval_k: int = 100,
        curve_points: int = 12, progress: bool = False) -> RunResult:
    """Build, train and evaluate one algorithm on ``problem``, in a Pyro param store of its own: under
    ``module_local_params=False`` a fresh AutoGuide would otherwise start from the previous run's
    fitted values (same names in the global store), and runs would not be independent. The
    user's store is put back afterwards."""
    with pyro.get_param_store().scope():
        return _run(problem, objective, guide, seed, budget, eval_k, curve_points, progress)


def _run(problem: Problem, objective: str, guide: str, seed: int, budget: Budget | str, eval_k: int,
         curve_points: int, progress: bool) -> RunResult:
    budget = Budget.parse(budget)
    if guide not in problem.guides:
        raise ValueError(f"problem {problem.name!r} has no guide {guide!r}; valid choices: "
                         f"{', '.join(problem.guides)}")
    objectives.get(objective)  # an unknown name fails here, before any training
    result = RunResult(objective, guide, seed)
    torch.manual_seed(seed)
    model_obj = problem.build(guide, seed)
    probe = problem.test[:500] if problem.local else problem.train
    eval_times = iter(np.geomspace(1, 10**6, num=curve_points * 6))
    next_mark = [next(eval_times)]

    def record(row: dict) -> None:
        if row["epoch"] >= next_mark[0]:
            result.curve.append((row["seconds"], _curve_point(problem, model_obj, probe)))
            while next_mark[0] <= row["epoch"]:
                next_mark[0] = next(eval_times)

    try:
        fitted = fit(model_obj.model, model_obj.guide, problem.train, objective=objective, lr=problem.lr,
                     lr_schedule=problem.lr_schedule,
                     batch_size=min(problem.batch_size, len(problem.train)), seed=seed, progress=progress,
                     callback=record, **budget.fit_kwargs())
    except (ValueError, NotImplementedError, FloatingPointError) as e:  # e.g. iwae with a discrete guide
        result.error = f"{type(e).__name__}: {e}".splitlines()[0]
        return result
    result.steps, result.seconds = fitted.steps, fitted.seconds
    result.steps_per_second = fitted.steps / fitted.seconds if fitted.seconds > 0 else float("nan")
    result.curve.append((fitted.seconds, _curve_point(problem, model_obj, probe)))
    x = problem.test if problem.local else problem.train
    if problem.local:
        el = evaluate.elbo(model_obj.model, model_obj.guide, x)
        ll = evaluate.log_likelihood(model_obj.model, model_obj.guide, x, k=eval_k)
        ps = diagnostics.psis(model_obj.model, model_obj.guide, x[:200], num_samples=max(eval_k, 100),
                              per_point=True)
        result.khats = np.round(ps.khat, 4).tolist()
    else:
        el, ll, lw = _global_bounds(model_obj, x, eval_k, repeats=20)
        ps = diagnostics.PSISResult(float(diagnostics.psis_khat(torch.as_tensor(lw))), len(lw))
        result.khats = [ps.khat]
        result.draws = diagnostics.posterior_draws(model_obj.model, model_obj.guide, x, num_samples=1000)
    result.elbo, result.elbo_se, result.log_likelihood, result.log_likelihood_se = el.mean, el.se, ll.mean, ll.se
    result.khat = float(np.median(np.atleast_1d(ps.khat)))
    result.khat_share_07 = ps.share_above(0.7)
    if hasattr(model_obj, "exact_log_likelihood"):
        with torch.no_grad():
            exact = model_obj.exact_log_likelihood(x)
        result.exact = float(exact.mean()) if problem.local else float(exact.sum()) / len(x)
        result.gap = result.exact - result.elbo  # at the run's own fitted parameters: the inference gap
    if problem.reference is not None:  # the exact log-likelihood independent of any fit
        result.gap_to_reference = problem.reference - result.elbo
    return result


def summarize(results: Sequence[RunResult]) -> list[dict]:
    """Mean and standard deviation over seeds for each algorithm, in first-seen order."""
    groups: dict[str, list[RunResult]] = {}
    for r in results:
        groups.setdefault(r.algorithm, []).append(r)
    rows = []
    for name, rs in groups.items():
        ok = [r for r in rs if not r.error]
        row = {"algorithm": name, "runs": len(rs), "failed": len(rs) - len(ok)}
        for key in ("elbo", "log_likelihood", "gap", "gap_to_reference", "khat", "khat_share_07", "seconds",
                    "steps_per_second"):
            vals = np.array([getattr(r, key, float("nan")) for r in ok], dtype=float)
            vals = vals[np.isfinite(vals)]
            row[key] = float(vals.mean()) if len(vals) else float("nan")
            row[f"{key}_sd"] = float(vals.std(ddof=1)) if len(vals) > 1 else float("nan")
        draws = [r.draws for r in ok if r.draws]
        if len(draws) >= 2:  # restarts that land in different optima disagree: R-hat well above 1.01
            conv = diagnostics.restart_convergence(draws)
            row["restart_r_hat"] = float(max(np.max(c["r_hat"]) for c in conv.values()))
        if len(ok) < len(rs):
            row["error"] = next(r.error for r in rs if r.error)
        rows.append(row)
    return rows


def _figures(problem: Problem, results: Sequence[RunResult], out: Path) -> dict[str, str]:
    from ..figures.plots import _plt, _save

    plt = _plt()
    files = {}
    algos = list(dict.fromkeys(r.algorithm for r in results if not r.error))
    # colour tells the guides apart, line style the objectives (18 algorithms would reuse 10 colours)
    guides = list(dict.fromkeys(r.guide for r in results if not r.error))
    objs = list(dict.fromkeys(r.objective for r in results if not r.error))
    styles = ["-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (1, 3))]
    fig, ax = plt.subplots(figsize=(9, 4.2))
    for a in algos:
        for j, r in enumerate(r for r in results if r.algorithm == a):
            if r.curve:
                t, b = zip(*r.curve)
                ax.plot(np.maximum(t, 1e-3), b, color=f"C{guides.index(r.guide) % 10}",
                        ls=styles[objs.index(r.objective) % len(styles)], lw=1.2, alpha=0.8,
                        label=a if j == 0 else None)
    exacts = [r.exact for r in results if math.isfinite(r.exact)]
    if problem.reference is not None:
        ax.axhline(problem.reference, color="k", ls="--", lw=1, label="exact log-likelihood")
    elif exacts:
        ax.axhline(float(np.mean(exacts)), color="k", ls="--", lw=1, label="exact log p(x) (mean over runs)")
    ax.set_xscale("log")
    ax.set_xlabel("training seconds")
    ax.set_ylabel("held-out ELBO per point (nats)")
    ax.set_title(f"{problem.name}: bound against wall time")
    finite = [b for r in results for _, b in r.curve if math.isfinite(b)]
    if finite:  # the early, very low bounds would squash the interesting end
        hi = max(finite + exacts + ([problem.reference] if problem.reference is not None else []))
        lo = np.quantile(finite, 0.2)
        ax.set_ylim(lo - 0.1 * (hi - lo), hi + 0.05 * (hi - lo) + 1e-6)
    ax.legend(fontsize=7, ncol=1 + len(algos) // 16, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              title="objective / guide", title_fontsize=7)
    fig.tight_layout()
    files["bound_vs_time"] = str(_save(fig, out / "bound_vs_time.png"))

    fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(algos) + 2), 3.8))
    data = [[k for r in results if r.algorithm == a for k in r.khats] for a in algos]
    if any(data):
        ax.boxplot([d if d else [np.nan] for d in data], showfliers=True)
        ax.set_xticks(range(1, len(algos) + 1), algos, rotation=45, ha="right", fontsize=7)
    ax.axhline(0.5, color="C1", ls=":", lw=1)
    ax.axhline(0.7, color="C3", ls="--", lw=1)
    ax.set_ylabel("PSIS k-hat" + (" per test point" if problem.local else ""))
    ax.set_title("PSIS k-hat (below 0.5 good, above 0.7 unreliable)")
    files["khat"] = str(_save(fig, out / "khat.png"))
    return files


def _against_mcmc(problem: Problem, results: Sequence[RunResult], out: Path) -> tuple[list[str], dict]:
    """VI posterior means and SDs against the reference draws: a table and an interval plot."""
    from .mcmc import compare_posteriors, interval_plot

    t0 = time.perf_counter()
    reference = problem.mcmc()
    seconds = time.perf_counter() - t0
    rows, per_algo = [], {}
    for r in results:
        if r.error or not r.draws:
            continue
        for row in compare_posteriors(r.draws, reference):
            per_algo.setdefault(r.algorithm, []).append(row)
    for algo, rs in per_algo.items():
        rows.append({"algorithm": algo, "max_abs_z_mean": max(abs(x["z_mean"]) for x in rs),
                     "min_sd_ratio": min(x["sd_ratio"] for x in rs), "max_sd_ratio": max(x["sd_ratio"] for x in rs)})
    first = {}
    for r in results:
        if r.draws and r.algorithm not in first:
            first[r.algorithm] = r.draws
    fig = interval_plot({"NUTS": reference, **first}, out / "vi_vs_nuts.png")
    lines = ["## VI against NUTS", "",
             f"NUTS reference ({seconds:.1f} s). `max_abs_z_mean`: the largest error of a VI posterior mean, in "
             "NUTS standard deviations, over parameters and seeds; `sd_ratio`: VI SD over NUTS SD.", "",
             markdown_table(rows, ["algorithm", "max_abs_z_mean", "min_sd_ratio", "max_sd_ratio"], digits=3), "",
             "![VI against NUTS](vi_vs_nuts.png)", ""]
    return lines, {"vi_vs_nuts": rows, "nuts_seconds": seconds, "figure": str(fig)}


def write_report(problem: Problem, results: Sequence[RunResult], budget: Budget, out: str | Path,
                 extra_sections: Sequence[str] = ()) -> dict:
    """``results.csv``, ``summary.csv``, ``results.json``, ``report.md`` and figures in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    flat = [{k: v for k, v in asdict(r).items() if k not in ("curve", "khats", "draws")} | {"algorithm": r.algorithm}
            for r in results]
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(flat[0]))
        w.writeheader()
        w.writerows(flat)
    summary = summarize(results)
    with open(out / "summary.csv", "w", newline="") as f:
        keys = list(dict.fromkeys(k for row in summary for k in row))
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(summary)
    figures = _figures(problem, results, out)
    mcmc_lines, mcmc_payload = _against_mcmc(problem, results, out) if problem.mcmc is not None else ([], {})
    cols = ["algorithm", "runs", "elbo", "elbo_sd", "log_likelihood", "log_likelihood_sd", "gap", "gap_to_reference",
            "khat", "khat_share_07", "seconds", "steps_per_second", "restart_r_hat"]
    # a column that applies to no row (no exact likelihood, one seed) is left out, and so is its note
    cols = [c for c in cols if any(isinstance(r.get(c), (int, float)) and math.isfinite(r[c]) for r in summary)
            or c in ("algorithm", "runs")]
    notes = {
        "gap": "`gap` is each run's exact log-likelihood at its own fitted parameters minus its ELBO (the "
               "variational gap, KL(q || posterior), of that fit)",
        "gap_to_reference": "`gap_to_reference` is the reference line below minus the ELBO (it also counts how far "
                            "the fitted parameters are from the best ones)",
        "khat": "`khat` is the median PSIS k-hat, `khat_share_07` the share of points above 0.7",
        "restart_r_hat": "`restart_r_hat` (global latents) the largest R-hat of the posterior draws across seeds, "
                         "each seed one chain",
    }
    lines = [f"# {problem.name}: {len(summary)} algorithms, budget {budget}", "",
             "Held-out bounds in nats per data point (mean and standard deviation over seeds); "
             + "; ".join(text for c, text in notes.items() if c in cols) + ".", ""]
    if problem.reference is not None:
        lines += [f"Exact log-likelihood (reference): {problem.reference:.4f}", ""]
    lines += [markdown_table(summary, cols, digits=4), ""]
    failed = [r for r in summary if r.get("failed")]
    for r in failed:
        lines.append(f"- {r['algorithm']}: {r['failed']} of {r['runs']} runs failed: {r['error']}")
    lines += ["", "![bound against time](bound_vs_time.png)", "", "![k-hat](khat.png)", "", *mcmc_lines,
              *extra_sections]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    payload = {"problem": problem.name, "budget": str(budget), "summary": summary,
               "runs": [{k: v for k, v in asdict(r).items() if k != "draws"} | {"algorithm": r.algorithm}
                        for r in results], "figures": figures, **({"mcmc": mcmc_payload} if mcmc_payload else {})}
    write_json(payload, out / "results.json")
    return payload


def compare(problem: Problem, objective_names: Sequence[str], guides: Sequence[str], seeds: int | Sequence[int],
            budget: Budget | str, out: str | Path | None = None, eval_k: int = 100, progress: bool = False,
            log: Callable[[str], None] | None = print) -> list[RunResult]:
    """Every objective with every guide, for each seed, under the same budget."""
    budget = Budget.parse(budget)
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    for g in guides:
        if g not in problem.guides:
            raise ValueError(f"problem {problem.name!r} has no guide {g!r}; valid choices: "
                             f"{', '.join(problem.guides)}")
    for o in objective_names:
        objectives.get(o)
    results = []
    for o in objective_names:
        for g in guides:
            for s in seeds:
                t0 = time.perf_counter()
                r = run(problem, o, g, s, budget, eval_k=eval_k, progress=progress)
                results.append(r)
                if log is not None:
                    status = r.error or (f"ELBO {r.elbo:.3f}, log-lik {r.log_likelihood:.3f} ± "
                                         f"{r.log_likelihood_se:.3f}, k-hat {r.khat:.2f}, {r.steps} steps")
                    log(f"{r.algorithm} seed {s}: {status} ({time.perf_counter() - t0:.1f} s)")
    if out is not None:
        write_report(problem, results, budget, out)
    return results
