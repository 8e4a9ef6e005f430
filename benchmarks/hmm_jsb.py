"""HMMs and a deep Markov model on the JSB chorales, checked against exact answers and hmmlearn.

What is measured, in one run:

1. ``forward_ratio`` / ``max_rel_err``: the log-likelihood of the JSB test set (77
   chorales, 4,725 steps) under a 16-state HMM with Bernoulli keys, four ways, interleaved
   in rounds on the same data and parameters: the hand-written forward algorithm
   (:func:`pyro_gen.exact.hmm.forward_log_likelihood`, emissions by one matrix product),
   and ``TraceEnum_ELBO`` on the model written three ways: one ``ForwardHMM`` site
   (``method="forward"``, the default), one ``DiscreteHMM`` site (``method="vectorized"``,
   Pyro's parallel scan) and the ``pyro.markov`` loop with each z_t enumerated
   (``method="markov"``), and that markov form once more as ``fit``'s fast path replays it
   (``pyro_gen/infer/fastpath.py``: recorded on the first call, ``markov_fast_ratio``); all of
   them with Pyro's validation checks off, as ``fit`` trains.
   ``forward_ratio`` in the last line is the default form's median
   time over the hand-written one's at the last of ``--timing-states`` (16); the other
   forms' ratios (``scan_ratio``, ``markov_ratio``, ``markov_fast_ratio``) and the other
   state counts are in the detail line and ``results.json``. ``max_rel_err`` is the largest relative difference of
   any enumerated total, and of the per-sequence ``HMM.log_likelihood`` values, from the
   forward algorithm's. ``--timing-only`` runs this part alone.
2. ``hmm``: HMMs with 4, 8 and 16 states (``--states``) fitted by maximum likelihood with
   :func:`pyro_gen.fit` (objective ``enum``, full batch, Adam), the best validation epoch
   kept; test NLL per time step = -sum_n log p(x_n) / sum_n T_n, exact.
3. ``dmm``: the deep Markov model (Krishnan et al. 2017) trained with ``fit`` (ELBO, KL
   annealing over the first 5 epochs, batch 20) for a fixed number of epochs (``--dmm-epochs``,
   71 by default: a budget of work, not of wall time, so the figure does not depend on the
   machine's load; the training seconds are reported beside it; the best validation epoch is kept);
   test NLL per time step from the IWAE-k bound (``--dmm-k``), an upper bound on the NLL.
4. ``hmmlearn``: a 3-state diagonal Gaussian HMM on synthetic sequences with known
   parameters, fitted by ``fit`` (gradient ascent on the exact log-likelihood, one start) and
   by hmmlearn's EM (``GaussianHMM``, the best of 5 k-means starts); final training
   log-likelihood and seconds of each (hmmlearn's: all 5 starts).

Run from the repository root (about 15 minutes on 2 busy CPU cores)::

    PYRO_GEN_DATA=/path/to/shared/data python benchmarks/hmm_jsb.py
    python benchmarks/hmm_jsb.py --smoke      # seconds: few chorales, few steps, for CI

Writes ``OUT/results.json`` and ``OUT/hmm_states.png`` (a test chorale with its state
posterior and Viterbi path) and ``OUT/training_curves.png``; the last stdout line is
``{"forward_ratio": .., "max_rel_err": .., "hmm": {"<states>": {"test_nll": .., "seconds": ..}},
"dmm": {"test_nll": .., "seconds": .., "epochs": ..}, "hmmlearn": {"ours_ll": .., "hmmlearn_ll": ..,
"ours_seconds": .., "hmmlearn_seconds": ..}}``. Without the data files it exits with
status 2 naming the folders searched; without hmmlearn (``pip install -e ".[bench]"``),
with status 3.

References:
    Krishnan, Shalit & Sontag (2017), Structured Inference Networks for Nonlinear State
    Space Models (Pyro's ``examples/dmm`` reports 6.87 nats per step after 5000 epochs).
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

import numpy as np  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402

from models.dmm import DMM  # noqa: E402
from models.hmm import HMM, synthetic  # noqa: E402
from pyro_gen import fit, objectives  # noqa: E402
from pyro_gen.infer.checkpoint import write_json  # noqa: E402
from pyro_gen.data import DataNotFoundError, load  # noqa: E402
from pyro_gen.evaluate import log_likelihood  # noqa: E402
from pyro_gen.infer.fastpath import FastLoss  # noqa: E402
from pyro_gen.figures.plots import training_curves  # noqa: E402
from pyro_gen.figures.sequences import state_posterior  # noqa: E402
from pyro_gen.exact.hmm import forward_log_likelihood, nll_per_step  # noqa: E402

SEED = 0


_START = time.perf_counter()


def log(msg: str) -> None:
    """A progress line on stderr, stamped with the seconds since the start (stdout is for the JSON)."""
    print(f"[{time.perf_counter() - _START:6.1f} s] {msg}", file=sys.stderr, flush=True)


def trim(x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the padding columns that no sequence uses."""
    return x[:, : int(lengths.max())], lengths


# --- 1. enumeration against the hand-written forward algorithm -------------------------------


def forward_timing(x, lengths, states: int, rounds: int) -> dict:
    torch.manual_seed(SEED)
    nets = {m: HMM(states, x.shape[-1], method=m) for m in ("forward", "vectorized", "markov")}
    for net in nets.values():
        net.load_state_dict(nets["forward"].state_dict())
    enum = objectives.enum(max_plate_nesting=1)

    def hand():
        return forward_log_likelihood(*nets["forward"].log_terms(x), lengths)

    def enumerated(net):
        return lambda: -enum.loss(net.model, net.guide, x, lengths)

    # The markov form replayed by fit's fast path (pyro_gen.infer.fastpath): recorded on the first call
    markov = nets["markov"]
    replay = FastLoss(enum, markov.model, markov.guide, list(markov.parameters()),
                      lambda batch, weight: enum.differentiable_loss(markov.model, markov.guide, *batch))
    replay.checks = False  # timing only: no structure checks (the first call is checked)

    runs = {"hand": hand, **{m: enumerated(net) for m, net in nets.items()},
            "markov_fast": lambda: -replay((x, lengths), 1.0).item()}
    times = {k: [] for k in runs}
    values = {}
    with torch.no_grad(), pyro.validation_enabled(False):  # as fit trains (validate=False)
        for f in runs.values():  # warm-up
            f()
        for _ in range(rounds):
            for name, f in runs.items():
                t0 = time.perf_counter()
                values[name] = f()
                times[name].append(time.perf_counter() - t0)
    exact = values["hand"].double()
    per_seq = nets["forward"].log_likelihood(x, lengths).double()
    if replay.off is not None or not replay.replays:
        raise RuntimeError(f"the fast path did not serve the markov HMM: {replay.off}")
    errs = [abs(values[m] - exact.sum().item()) / abs(exact.sum().item()) for m in (*nets, "markov_fast")]
    errs.append(((per_seq - exact).abs() / exact.abs()).max().item())
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"forward_ratio": med["forward"] / med["hand"], "scan_ratio": med["vectorized"] / med["hand"],
            "markov_ratio": med["markov"] / med["hand"], "markov_fast_ratio": med["markov_fast"] / med["hand"],
            "max_rel_err": max(errs), "median_seconds": med,
            "rounds": rounds, "states": states}


# --- 2. HMMs on JSB --------------------------------------------------------------------------


def train_hmm(states: int, train, val, test, epochs: int, lr: float) -> tuple[HMM, dict]:
    torch.manual_seed(SEED)
    net = HMM(states, train[0].shape[-1]).init_from_data(*train, seed=SEED)
    result = fit(net.model, net.guide, train, objective=objectives.enum(max_plate_nesting=1), epochs=epochs,
                 batch_size=len(train[0]), lr=lr, val_data=val, val_batch_size=len(val[0]), seed=SEED,
                 progress=False)
    nll = nll_per_step(net.log_likelihood(*test), test[1])
    log(f"HMM K={states}: test NLL {nll:.3f} nats/step, {result.seconds:.1f} s, best epoch {result.best_epoch}")
    return net, {"test_nll": nll, "seconds": result.seconds, "history": result.history,
                 "best_epoch": result.best_epoch}


# --- 3. the deep Markov model ----------------------------------------------------------------


def train_dmm(train, val, test, seconds: float | None, epochs: int, k: int, num_iafs: int, anneal: float) -> dict:
    """An epoch budget (the same work on a busy machine as on a quiet one), seconds reported beside it."""
    torch.manual_seed(SEED)
    net = DMM(train[0].shape[-1], num_iafs=num_iafs)
    result = fit(net.model, net.guide, train, objective="trace", epochs=epochs, batch_size=20, lr=3e-3,
                 clip_norm=10.0, kl_anneal=anneal, val_data=val, val_batch_size=len(val[0]),
                 max_seconds=seconds, seed=SEED, progress=False)
    x, lengths = test
    torch.manual_seed(SEED + 1)
    ll = log_likelihood(net.model, net.guide, (x, lengths), k=k, batch_size=max(1, 2000 // k))
    nll = nll_per_step(torch.tensor(ll.mean * ll.n), lengths)
    log(f"DMM: test NLL <= {nll:.3f} nats/step (IWAE-{k}), {result.seconds:.1f} s, {result.steps} steps")
    return {"test_nll": nll, "seconds": result.seconds, "steps": result.steps, "epochs_done": len(result.history),
            "eval_k": k, "num_iafs": num_iafs, "history": result.history}


# --- 4. against hmmlearn's EM ---------------------------------------------------------------


def versus_hmmlearn(n: int, length: int, epochs: int, restarts: int) -> dict:
    from hmmlearn.hmm import GaussianHMM

    x, lengths, truth = synthetic(n=n, length=length, seed=SEED)
    torch.manual_seed(SEED)
    net = HMM(3, 2, "gaussian").init_from_data(x, lengths, seed=SEED)
    t0 = time.perf_counter()
    fit(net.model, net.guide, (x, lengths), objective=objectives.enum(max_plate_nesting=1), epochs=epochs,
        batch_size=n, lr=0.1, seed=SEED, progress=False)
    ours_seconds = time.perf_counter() - t0
    ours = net.log_likelihood(x, lengths).double().sum().item()
    flat = x.reshape(-1, 2).double().numpy()
    # EM finds local optima: keep the best of a few k-means starts, as one would in practice
    t0 = time.perf_counter()
    fits = [GaussianHMM(n_components=3, covariance_type="diag", n_iter=200, tol=1e-4, random_state=seed).fit(
        flat, lengths.tolist()) for seed in range(restarts)]
    em_seconds = time.perf_counter() - t0
    scores = [float(m.score(flat, lengths.tolist())) for m in fits]
    theirs = max(scores)
    true_ll = HMM(3, 2, "gaussian")
    with torch.no_grad():
        true_ll.init_logits.copy_(truth["init"].log())
        true_ll.trans_logits.copy_(truth["trans"].log())
        true_ll.emit_loc.copy_(truth["loc"])
        true_ll.emit_log_scale.copy_(truth["scale"].log())
    log(f"Gaussian HMM: ours {ours:.2f} in {ours_seconds:.2f} s, hmmlearn best of {restarts} {theirs:.2f} in "
        f"{em_seconds:.2f} s (each start: {[round(v, 1) for v in scores]}), true parameters "
        f"{true_ll.log_likelihood(x, lengths).sum():.2f}")
    return {"ours_ll": ours, "hmmlearn_ll": theirs, "ours_seconds": ours_seconds, "hmmlearn_seconds": em_seconds,
            "true_params_ll": true_ll.log_likelihood(x, lengths).sum().item(), "hmmlearn_restarts": scores,
            "em_iterations": [m.monitor_.iter for m in fits]}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="a few chorales and steps: checks the script runs")
    p.add_argument("--states", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--hmm-epochs", type=int, default=500, help="full-batch Adam steps per HMM")
    p.add_argument("--dmm-epochs", type=int, default=71,
                   help="training epochs of the DMM: the budget, so that the figure depends on the code, not the load")
    p.add_argument("--dmm-seconds", type=float, default=None, help="an optional cap on the DMM's training seconds")
    p.add_argument("--dmm-k", type=int, default=20, help="importance samples for the DMM's test NLL")
    p.add_argument("--dmm-iafs", type=int, default=0, help="IAFs in the DMM's guide")
    p.add_argument("--dmm-anneal", type=float, default=5.0,
                   help="epochs over which the KL weight ramps from 0 to 1 (must fit in the budget)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    p.add_argument("--timing-only", action="store_true", help="only part 1: the enumerated log-likelihood against the hand-written forward algorithm")
    p.add_argument("--timing-states", type=int, nargs="+", default=[4, 16],
                   help="state counts timed; the last one is the forward_ratio reported")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads; 1 by default: the sequential models run many small ops, which extra threads slow down on a busy machine")
    p.add_argument("--out", default="runs/hmm_jsb")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        if not args.timing_only:  # part 1 alone needs no EM reference
            import hmmlearn  # noqa: F401
    except ImportError:
        log("hmmlearn is not installed: pip install -e '.[bench]' (it is the EM reference)")
        sys.exit(3)
    try:
        ds = load("jsb-chorales")
    except DataNotFoundError as e:
        log(f"error: {e}")
        sys.exit(2)
    out = Path(args.out)
    splits = {s: trim(getattr(ds, s), ds.lengths[s]) for s in ("train", "val", "test")}
    n_syn, len_syn, syn_epochs = 40, 100, 150
    if args.smoke:  # a few short chorales: every code path, in seconds
        splits = {s: trim(x[:6, :24], lengths[:6].clamp(max=24)) for s, (x, lengths) in splits.items()}
        args.states, args.hmm_epochs, args.rounds, args.dmm_k = [2, 3], 3, 2, 2
        args.dmm_epochs, n_syn, len_syn, syn_epochs = 1, 5, 20, 3
    train, val, test = splits["train"], splits["val"], splits["test"]

    log("1. enumerated log-likelihood against the hand-written forward algorithm")
    sweep = {}
    for k in (args.timing_states if not args.smoke else [3]):
        sweep[str(k)] = forward_timing(*test, states=k, rounds=args.rounds)
        r = sweep[str(k)]
        log(f"   K={k}: forward/hand {r['forward_ratio']:.2f}, scan/hand {r['scan_ratio']:.2f}, markov/hand "
            f"{r['markov_ratio']:.2f}, markov replayed by the fast path/hand {r['markov_fast_ratio']:.2f}, "
            f"max relative error {r['max_rel_err']:.2e}")
    timing = dict(sweep[str(list(sweep)[-1])], max_rel_err=max(t["max_rel_err"] for t in sweep.values()),
                  by_states=sweep)
    if args.timing_only:
        summary = {k: timing[k] for k in ("forward_ratio", "scan_ratio", "markov_ratio", "markov_fast_ratio",
                                          "max_rel_err")}
        write_json({"summary": summary, "timing": timing, "settings": vars(args)}, out / "results.json")
        print(json.dumps(summary), flush=True)
        return summary

    log("2. HMMs on JSB")
    hmm, nets = {}, {}
    for k in args.states:
        nets[k], hmm[str(k)] = train_hmm(k, train, val, test, args.hmm_epochs, lr=0.05)
    best = nets[args.states[-1]]
    x, lengths = test[0][:1], test[1][:1]
    figure = state_posterior(x[0], best.marginals(x, lengths, num_samples=500)[0], best.viterbi(x, lengths)[0], out / "hmm_states.png",
                             length=int(lengths[0]), title=f"JSB test chorale 0: {args.states[-1]}-state HMM")

    log(f"3. deep Markov model, {args.dmm_epochs} epochs")
    dmm = train_dmm(train, val, test, args.dmm_seconds, args.dmm_epochs, args.dmm_k, args.dmm_iafs, args.dmm_anneal)

    log("4. Gaussian HMM against hmmlearn's EM")
    versus = versus_hmmlearn(n_syn, len_syn, syn_epochs, restarts=1 if args.smoke else 5)

    curves = {f"hmm K={k}": v["history"] for k, v in hmm.items()} | {"dmm": dmm["history"]}
    training_curves(curves, out / "training_curves.png")
    summary = {"forward_ratio": timing["forward_ratio"], "max_rel_err": timing["max_rel_err"],
               "hmm": {k: {"test_nll": v["test_nll"], "seconds": v["seconds"]} for k, v in hmm.items()},
               "dmm": {"test_nll": dmm["test_nll"], "seconds": dmm["seconds"], "epochs": dmm["epochs_done"]},
               "hmmlearn": {k: versus[k] for k in ("ours_ll", "hmmlearn_ll", "ours_seconds", "hmmlearn_seconds")}}
    write_json({"summary": summary, "timing": timing, "hmm": hmm, "dmm": dmm, "hmmlearn": versus,
                "settings": vars(args), "figures": [str(figure), str(out / "training_curves.png")]},
               out / "results.json")
    print(json.dumps({"timing": timing, "dmm_steps": dmm["steps"], "dmm_epochs": dmm["epochs_done"],
                      "hmmlearn_true_params_ll": versus["true_params_ll"],
                      "hmmlearn_restarts": versus["hmmlearn_restarts"]}), flush=True)
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
