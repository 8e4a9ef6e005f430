"""Fit one model to one data set from the command line.

    python -m inference.fit vae --data binarized-mnist --objective iwae --particles 5 \\
        --epochs 10 --out runs/x
    python -m inference.fit vae ... --out runs/x --resume      # continue an interrupted run
    python -m inference.fit hmm --data jsb-chorales --states 16 --epochs 80 --batch-size 229 --lr 0.05 --out runs/h
    python -m inference.fit dmm --data jsb-chorales --epochs 20 --batch-size 20 --kl-anneal 5 --out runs/d

Sequence data sets (``jsb-chorales``) are passed to the model as ``(x, lengths)``; their
evaluation is the test negative log-likelihood per time step (exact for the HMM, the
IWAE-``--eval-k`` bound for the DMM).

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

from inference import run_cli
from pyro_gen import data as data_lib
from pyro_gen import objectives
from pyro_gen.infer.checkpoint import write_json
from pyro_gen.figures.report import evaluate_model, model_figures
from pyro_gen.infer.train import SCHEDULES, fit

__all__ = ["MODELS", "build_parser", "main"]


# Points of the test split drawn for the figures (a seeded random sample, across the classes).
FIGURE_POINTS = 2000


def _vae(args, ds: data_lib.Dataset):
    from models.vae import VAE

    return VAE(x_dim=ds.dim, z_dim=args.latent_dim, hidden=args.hidden, likelihood=args.likelihood,
               network=args.network, image_shape=ds.image_shape, activation=args.activation, beta=args.beta,
               **_flow_options(args))


def _ppca(args, ds: data_lib.Dataset):
    from models.ppca import PPCA

    return PPCA(x_dim=ds.dim, z_dim=args.latent_dim, encoder=args.ppca_encoder, covariance=args.ppca_covariance,
                hidden=args.hidden, ard=args.ppca_ard, num_data=len(ds.train))


def _topic_model(cls_name: str) -> Callable:
    def build(args, ds: data_lib.Dataset):
        import models.lda

        return getattr(models.lda, cls_name)(ds.dim, args.topics, alpha=args.alpha, hidden=args.topic_hidden,
                                             dropout=args.dropout)

    return build


def _hmm(args, ds: data_lib.Dataset):
    from models.hmm import HMM

    _need_sequences(args, ds)
    return HMM(args.states, ds.train.shape[-1], emission="bernoulli" if ds.binary else "gaussian",
               params=args.hmm_params, guide=args.hmm_guide, method=args.hmm_method, hidden=args.rnn_dim)


def _dmm(args, ds: data_lib.Dataset):
    from models.dmm import DMM

    _need_sequences(args, ds)
    if not ds.binary:
        raise ValueError(f"the DMM has Bernoulli emissions: it needs binary sequences, and {ds.name} is not binary")
    return DMM(ds.train.shape[-1], z_dim=args.latent_dim, emission_dim=args.emission_dim,
               transition_dim=args.transition_dim, rnn_dim=args.rnn_dim, num_iafs=args.num_iafs)


def _need_sequences(args, ds: data_lib.Dataset) -> None:
    if not ds.lengths:
        raise ValueError(f"model {args.model!r} needs sequence data; valid choices for --data: {', '.join(SEQUENCE_DATA)}")


# A command line needs names; each builder takes the parsed arguments and the data set.
MODELS: dict[str, Callable] = {"vae": _vae, "ppca": _ppca, "prodlda": _topic_model("ProdLDA"),
                               "lda": _topic_model("AmortizedLDA"), "hmm": _hmm, "dmm": _dmm}
SEQUENCE_DATA = ("jsb-chorales",)
# the objective each model trains with when --objective is not given
DEFAULT_OBJECTIVE = {"vae": "trace", "hmm": "enum", "dmm": "trace"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m inference.fit", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", choices=sorted(MODELS), help="model family")
    p.add_argument("--data", default="digits", choices=data_lib.names())
    p.add_argument("--data-root", default=None, help="folder with the data files (else $PYRO_GEN_DATA, else cache)")
    p.add_argument("--download", action="store_true", help="fetch missing data from its canonical source")
    p.add_argument("--objective", default=None, help=f"one of {', '.join(objectives.names())} (or name:arg); "
                   "default: trace (vae, dmm), enum (hmm), graph (hmm --hmm-guide amortized)")
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
    p.add_argument("--eval-n", type=int, default=None,
                   help="evaluate on a random sample of N test points (seeded by --seed, recorded in metrics.json)")
    ppca = p.add_argument_group("probabilistic PCA (model ppca; also uses --latent-dim, --hidden)")
    ppca.add_argument("--ppca-encoder", default="linear", choices=["linear", "mlp"],
                      help="amortized encoder of the guide's mean")
    ppca.add_argument("--ppca-covariance", default="full", choices=["full", "diagonal"],
                      help="the guide's covariance (full contains the exact posterior)")
    ppca.add_argument("--ppca-ard", action="store_true", help="Bayesian PCA: ARD prior on W's columns")
    topics = p.add_argument_group("topic models (prodlda, lda; e.g. --data 20newsgroups)")
    topics.add_argument("--topics", type=int, default=20, help="number of topics K")
    topics.add_argument("--alpha", type=float, default=None,
                        help="Dirichlet concentration of the topic proportions (default: 1 for prodlda, 1/K for lda)")
    topics.add_argument("--topic-hidden", type=int, default=100, help="width of the encoder's two hidden layers")
    topics.add_argument("--dropout", type=float, default=0.2, help="encoder dropout while training")
    seq = p.add_argument_group("sequence models (hmm, dmm; data: jsb-chorales)")
    seq.add_argument("--states", type=int, default=16, help="hmm: number of hidden states")
    seq.add_argument("--hmm-method", default="forward", choices=["forward", "vectorized", "markov"],
                     help="hmm: the forward recursion (ForwardHMM), DiscreteHMM's parallel scan, or a "
                          "pyro.markov loop over time (same numbers)")
    seq.add_argument("--hmm-params", default="point", choices=["point", "variational"],
                     help="hmm: maximum-likelihood parameters, or priors with a variational posterior")
    seq.add_argument("--hmm-guide", default="enum", choices=["enum", "amortized"],
                     help="hmm: sum the states out, or sample them from a neural guide")
    seq.add_argument("--rnn-dim", type=int, default=128, help="GRU width of the guide (dmm, amortized hmm)")
    seq.add_argument("--emission-dim", type=int, default=64, help="dmm: emitter hidden width")
    seq.add_argument("--transition-dim", type=int, default=64, help="dmm: gated transition hidden width")
    seq.add_argument("--num-iafs", type=int, default=0, help="dmm: inverse autoregressive flows in the guide")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--no-progress", action="store_true")
    _add_flow_options(p)
    return p


# Option groups of the parser, and the model families they apply to: metrics.json records the
# common options and only the groups of the model that ran.
_GROUP_MODELS = {"probabilistic PCA": ("ppca",), "topic models": ("prodlda", "lda"),
                 "sequence models": ("hmm", "dmm"), "flows": ("vae",)}


def _config(args: argparse.Namespace) -> dict:
    """The run's options: the common ones and those of its model family (not every family's)."""
    skip = set()
    for group in build_parser()._action_groups:
        applies = next((models for title, models in _GROUP_MODELS.items() if group.title.startswith(title)), None)
        if applies is not None and args.model not in applies:
            skip.update(a.dest for a in group._group_actions)
    return {k: v for k, v in vars(args).items() if k not in skip}


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
    if args.objective is None:
        amortized_hmm = args.model == "hmm" and args.hmm_guide == "amortized"
        args.objective = "graph" if amortized_hmm else DEFAULT_OBJECTIVE.get(args.model, "trace")
    objective = objectives.get(args.objective, particles=args.particles)  # fails early on a bad name or k
    if args.model in ("hmm", "dmm") and args.data not in SEQUENCE_DATA:  # before loading anything
        raise ValueError(f"model {args.model!r} needs sequence data; valid choices for --data: {', '.join(SEQUENCE_DATA)}")
    ds = data_lib.load(args.data, data_root=args.data_root, download=args.download, seed=args.seed)
    if args.likelihood is None:
        args.likelihood = "bernoulli" if ds.binary else "continuous-bernoulli"
    torch.manual_seed(args.seed)
    model_obj = MODELS[args.model](args, ds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"fitting {args.model} on {ds} with {args.objective} -> {out}", file=sys.stderr)
    if ds.lengths:
        return _fit_sequences(args, ds, model_obj, objective, out)
    t0 = time.perf_counter()
    result = fit(model_obj.model, model_obj.guide, ds.train, objective=objective, epochs=args.epochs,
                 batch_size=args.batch_size, lr=args.lr, val_data=ds.val, patience=args.patience,
                 kl_anneal=args.kl_anneal, clip_norm=args.clip_norm, lr_schedule=args.lr_schedule,
                 seed=args.seed, device=args.device, out=out, resume=args.resume, max_steps=args.max_steps,
                 max_seconds=args.max_seconds, progress=not args.no_progress)
    wall = time.perf_counter() - t0
    test = ds.test.to(args.device)
    # a model with global latents (Bayesian PCA) is evaluated per point at their posterior mean
    model_obj = model_obj.for_evaluation() if hasattr(model_obj, "for_evaluation") else model_obj
    # Subsets are seeded random samples of the whole split (never its head: binarized MNIST's test
    # split is sorted by class); their seed is recorded in metrics.json.
    evaluation = evaluate_model(model_obj, test, k=args.eval_k, max_points=args.eval_n,
                                progress=not args.no_progress, seed=args.seed)
    eval_idx = data_lib.random_subset(len(test), args.eval_n, args.seed).to(test.device)
    labels = ds.labels.get("test")
    if hasattr(model_obj, "exact_log_likelihood"):  # closed-form log p(x): the line the bounds sit below
        exact = model_obj.exact_log_likelihood(test[eval_idx])
        evaluation.update(exact_log_likelihood=exact.mean().item(),
                          exact_log_likelihood_se=(exact.std() / len(exact) ** 0.5).item())
    fig_idx = data_lib.random_subset(len(test), FIGURE_POINTS, args.seed)
    figures = model_figures(model_obj, test[fig_idx.to(test.device)],
                            labels[fig_idx] if labels is not None else None, ds.image_shape, out)
    from pyro_gen.figures.plots import training_curves

    figures["training_curves"] = str(training_curves({args.objective: result.history}, out / "training_curves.png"))
    if hasattr(model_obj, "topic_word"):  # topic models: coherence, perplexity, top words
        evaluation["topics"] = _topic_evaluation(model_obj, ds, test, evaluation, out)
        figures["top_words"] = evaluation["topics"].pop("figure")
    metrics = {
        "config": _config(args),
        "history": result.history, "best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
        "stopped": result.stopped, "steps": result.steps, "train_seconds": result.seconds, "wall_seconds": wall,
        "test": evaluation, "figures": figures, "checkpoint": str(out / "checkpoint.pt"),
        "figures_subset": {"n": len(fig_idx), "of": len(test), "seed": args.seed},
    }
    write_json(metrics, out / "metrics.json")
    exact = (f", exact log-likelihood {evaluation['exact_log_likelihood']:.2f} ± "
             f"{evaluation['exact_log_likelihood_se']:.2f}" if "exact_log_likelihood" in evaluation else "")
    units = (f"; active units {evaluation['active_units']} of {evaluation['latent_dim']} (Cov_x E_q[z_u | x] > "
             f"{evaluation['active_units_threshold']:g}, Burda et al. 2016)" if "active_units" in evaluation else "")
    print(f"test ELBO {evaluation['elbo']:.2f} ± {evaluation['elbo_se']:.2f}, log-likelihood (IWAE-{args.eval_k}) "
          f"{evaluation['log_likelihood']:.2f} ± {evaluation['log_likelihood_se']:.2f}{exact} nats{units}; "
          f"wrote {out}/metrics.json")
    return metrics


def _topic_evaluation(model_obj, ds: data_lib.Dataset, test: torch.Tensor, evaluation: dict, out: Path) -> dict:
    """NPMI on the whole corpus, held-out perplexity from the IWAE estimate already computed, top words."""
    from pyro_gen.metrics import topics

    model_obj.eval()
    corpus = torch.cat([ds.train, ds.val, ds.test])
    vocab = ds.vocab or [str(i) for i in range(ds.dim)]
    report = topics.topic_report(model_obj.topic_word().detach().cpu(), vocab, corpus, out)
    idx = data_lib.random_subset(len(test), evaluation["n"], evaluation["subset"]["seed"] or 0)  # what was evaluated
    ppl = topics.perplexity_from(evaluation["log_likelihood"], test[idx.to(test.device)].cpu(), evaluation["k"])
    report["perplexity"] = ppl.perplexity
    print(f"topics: mean NPMI {report['npmi']:.3f}, held-out perplexity {ppl.perplexity:.1f} "
          f"(IWAE-{ppl.k}); top words in {report['table']}", file=sys.stderr)
    return report


def _fit_sequences(args, ds: data_lib.Dataset, model_obj, objective, out: Path) -> dict:
    """Fit and evaluate a sequence model on ``(x, lengths)``: test NLL per time step and figures."""
    from pyro_gen.evaluate import log_likelihood
    from pyro_gen.figures.plots import training_curves
    from pyro_gen.exact.hmm import nll_per_step

    def split(name):
        lengths = ds.lengths[name]
        x = getattr(ds, name)[:, : int(lengths.max())]
        return x.to(args.device), lengths.to(args.device)

    train, val, test = split("train"), split("val"), split("test")
    subset = data_lib.random_subset(len(test[0]), args.eval_n, args.seed).to(test[0].device)  # across the split
    test = (test[0][subset], test[1][subset])
    t0 = time.perf_counter()
    result = fit(model_obj.model, model_obj.guide, train, objective=objective, epochs=args.epochs,
                 batch_size=args.batch_size, lr=args.lr, val_data=val, val_batch_size=len(val[0]),
                 patience=args.patience, kl_anneal=args.kl_anneal, clip_norm=args.clip_norm,
                 lr_schedule=args.lr_schedule, seed=args.seed, device=args.device, out=out, resume=args.resume,
                 max_steps=args.max_steps, max_seconds=args.max_seconds, progress=not args.no_progress)
    wall = time.perf_counter() - t0
    figures = {"training_curves": str(training_curves({args.objective: result.history}, out / "training_curves.png"))}
    exact = args.model == "hmm"
    if exact:  # z summed out: the exact log-likelihood
        log_p = model_obj.log_likelihood(*test)
        evaluation = {"n": len(test[0]), "exact": True}
        from pyro_gen.figures.sequences import state_posterior

        x, lengths = test[0][:1], test[1][:1]
        figures["states"] = str(state_posterior(x[0], model_obj.marginals(x, lengths, num_samples=500)[0],
                                                model_obj.viterbi(x, lengths)[0], out / "states.png",
                                                length=int(lengths[0])))
    else:
        ll = log_likelihood(model_obj.model, model_obj.guide, test, k=args.eval_k,
                            batch_size=max(1, 2000 // args.eval_k), progress=not args.no_progress)
        log_p = torch.tensor(ll.mean * ll.n)
        evaluation = {"n": ll.n, "exact": False, "k": args.eval_k}
    evaluation["subset"] = {"n": len(subset), "of": len(ds.test), "seed": args.seed if args.eval_n else None}
    evaluation["nll_per_step"] = nll_per_step(log_p, test[1])
    evaluation["time_steps"] = int(test[1].sum())
    metrics = {
        "config": _config(args), "history": result.history, "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss, "stopped": result.stopped, "steps": result.steps,
        "train_seconds": result.seconds, "wall_seconds": wall, "test": evaluation, "figures": figures,
        "checkpoint": str(out / "checkpoint.pt"),
    }
    write_json(metrics, out / "metrics.json")
    how = "exact" if exact else f"IWAE-{args.eval_k} bound"
    print(f"test NLL {evaluation['nll_per_step']:.3f} nats per time step ({how}); wrote {out}/metrics.json")
    return metrics


if __name__ == "__main__":
    sys.exit(run_cli(main))
