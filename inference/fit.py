"""Fit one model to one data set from the command line.

Examples::

    python -m inference.fit vae --data binarized-mnist --objective iwae --particles 5 \\
        --epochs 10 --out runs/x
    python -m inference.fit vae ... --out runs/x --resume      # continue an interrupted run
    python -m inference.fit hmm --data jsb-chorales --states 16 --epochs 80 --batch-size 229 --lr 0.05 --out runs/h
    python -m inference.fit dmm --data jsb-chorales --epochs 20 --batch-size 20 --kl-anneal 5 --out runs/d
    python -m inference.fit rbm --data binarized-mnist --objective pcd --optimizer sgd --lr 0.05 --out runs/r
    python -m inference.fit vae --help     # the options of one family: vae, ppca, prodlda, lda, hmm, dmm, rbm, sbn, catvae, ssvae, cvae

Each family is a subcommand with the common options (``_common_options``) and its own, which its
module in ``models/`` declares (``cli_options``, ``from_cli``; see ``models/__init__.py``).

Sequence data sets (``jsb-chorales``) are passed to the model as ``(x, lengths)``; their
evaluation is the test negative log-likelihood per time step (exact for the HMM, the
IWAE-``--eval-k`` bound for the DMM).

Writes ``OUT/metrics.json`` (config, per-epoch history, held-out evaluation),
``OUT/checkpoint.pt`` (atomic; what ``--resume`` reads) and figures beside them.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from inference import run_cli
from models import need_sequences
from pyro_gen import data as data_lib
from pyro_gen import objectives
from pyro_gen.infer.checkpoint import write_json
from pyro_gen.figures.report import evaluate_model, model_figures
from pyro_gen.infer.distributed import current as current_world
from pyro_gen.infer.precision import PRECISIONS
from pyro_gen.infer.schedules import OPTIMIZERS
from pyro_gen.infer.train import SCHEDULES, fit

__all__ = ["MODELS", "build_parser", "main"]


# Points of the test split drawn for the figures (a seeded random sample, across the classes).
FIGURE_POINTS = 2000


# The model families: subcommand -> (module in models/, variant, one line of --help). The module
# declares the family's flags and builder (cli_options, from_cli; optionally default_objective and
# SEQUENCES: see models/__init__.py); a variant (prodlda and lda share models.lda) goes to from_cli.
FAMILIES: dict[str, tuple[str, str | None, str]] = {
    "vae": ("models.vae", None, "variational autoencoder (MLP or conv; flow guide and prior)"),
    "ppca": ("models.ppca", None, "probabilistic PCA, optionally Bayesian (ARD)"),
    "prodlda": ("models.lda", "ProdLDA", "ProdLDA topic model (Srivastava & Sutton 2017)"),
    "lda": ("models.lda", "AmortizedLDA", "LDA topic model with a Dirichlet encoder guide"),
    "hmm": ("models.hmm", None, "hidden Markov model, states summed out or amortized"),
    "dmm": ("models.dmm", None, "deep Markov model (Krishnan, Shalit & Sontag 2017)"),
    "rbm": ("models.rbm", None, "binary restricted Boltzmann machine, trained by CD-k or PCD"),
    "sbn": ("models.sbn", None, "sigmoid belief network (binary latents), trained by vimco, rws or graph"),
    "catvae": ("models.catvae", None, "VAE with categorical latents: discrete (vimco, graph) or Concrete-relaxed"),
    "cvae": ("models.cvae", None, "conditional VAE completing images from 1-3 visible quadrants (or --baseline)"),
    "ssvae": ("models.ssvae", None, "semi-supervised VAE, M2 (Kingma et al. 2014): labels enumerated where missing"),
    "ae": ("models.ae", "ae", "autoencoder: a point posterior and no prior (a baseline; reconstruction error only)"),
    "dae": ("models.ae", "dae", "denoising autoencoder (Vincent et al. 2008): --noise mask:0.25 by default"),
    "vqvae": ("models.vqvae", None, "VQ-VAE (van den Oord et al. 2017): a codebook, then a learned prior over codes"),
}


def _family(name: str):
    """The module of family ``name`` and its builder, a callable of (args, ds)."""
    module_name, variant, _ = FAMILIES[name]
    module = importlib.import_module(module_name)
    return module, (functools.partial(module.from_cli, variant=variant) if variant else module.from_cli)


def _builder(name: str) -> Callable:
    def build(args, ds: data_lib.Dataset):
        return _family(name)[1](args, ds)  # the model module is imported on first use

    return build


#: The model builders by subcommand name (the keys of ``FAMILIES``). Each takes the parsed arguments
#: and the loaded :class:`pyro_gen.data.Dataset` and returns the model, importing its module on first use.
MODELS: dict[str, Callable] = {name: _builder(name) for name in FAMILIES}


def _common_options(p: argparse.ArgumentParser) -> None:
    """The options of every family (metrics.json records them beside the family's own)."""
    p.add_argument("--data", default="digits", choices=data_lib.names())
    p.add_argument("--data-root", default=None, help="folder with the data files (else $PYRO_GEN_DATA, else cache)")
    p.add_argument("--download", action="store_true", help="fetch missing data from its canonical source")
    p.add_argument("--objective", default=None, help=f"one of {', '.join(objectives.names())} (or name:arg); "
                   "default: trace, unless the family's options below name another")
    p.add_argument("--particles", type=int, default=None, help="k for iwae/dreg/renyi, particles for trace")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--optimizer", default="adam", choices=list(OPTIMIZERS))
    p.add_argument("--lr-schedule", default=None, help=f"one of {', '.join(SCHEDULES)} (e.g. step:10:0.5)")
    p.add_argument("--clip-norm", type=float, default=None)
    p.add_argument("--patience", type=int, default=None, help="early stopping after this many epochs")
    p.add_argument("--kl-anneal", type=float, default=0.0, help="epochs to ramp the KL weight from 0")
    p.add_argument("--beta", type=float, default=1.0, help="KL weight while training (beta-VAE)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--max-seconds", type=float, default=None)
    p.add_argument("--eval-k", type=int, default=1000, help="importance samples for the test log-likelihood")
    p.add_argument("--eval-n", type=int, default=None,
                   help="evaluate on a random sample of N test points (seeded by --seed, recorded in metrics.json)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--binarize", default="none", choices=["none", "dynamic"],
                   help="dynamic: grey levels (mnist, fashion-mnist, frey-faces) binarized afresh at every epoch, "
                        "x ~ Bernoulli(grey), in the loader's workers; validation and test binarized once, with "
                        "--seed (Burda et al. 2016)")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes for the training data")
    p.add_argument("--accumulate", type=int, default=1, help="cut each batch into this many shards (gradient "
                   "accumulation); under torchrun --batch-size stays the global batch")
    p.add_argument("--precision", default="32", choices=list(PRECISIONS), help="bf16-mixed: torch.autocast")
    p.add_argument("--compile", action="store_true", help="torch.compile the model's networks")
    p.add_argument("--no-fast", dest="fast", action="store_false", default="auto",
                   help="always take the standard step through Pyro's handlers (by default a model of static "
                        "structure is recorded once and replayed: pyro_gen.infer.fastpath)")


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser: one subcommand per model family, each with the common options
    and the family's own (its module's ``cli_options``)."""
    p = argparse.ArgumentParser(prog="python -m inference.fit", description=__doc__.split("\n\n")[0],
                                epilog="python -m inference.fit FAMILY --help lists the options of FAMILY")
    families = p.add_subparsers(title="model families", dest="model", metavar="FAMILY", required=True)
    for name, (_, _, summary) in FAMILIES.items():
        sub = families.add_parser(name, help=summary, description=f"{p.description} {name}: {summary}.",
                                  formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        _common_options(sub)
        _family(name)[0].cli_options(sub)
    return p


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The families' parsers in ``build_parser()``, by name."""
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse; a flag of another family is named as such."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        owners = {flag: [n for n, sub in _subcommands(parser).items() if flag in sub._option_string_actions]
                  for flag in (a.split("=")[0] for a in extra if a.startswith("--"))}
        hint = "".join(f"; {flag} is an option of {', '.join(names)}" for flag, names in owners.items() if names)
        parser.error(f"unrecognized arguments for {args.model}: {' '.join(extra)}{hint} "
                     f"(python -m inference.fit {args.model} --help lists its options)")
    return args


def _fit_options(args: argparse.Namespace, out: Path, objective) -> dict:
    """fit's keyword arguments from the common options."""
    return dict(objective=objective, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                optimizer=getattr(args, "optimizer", "adam"),
                patience=args.patience, kl_anneal=args.kl_anneal, clip_norm=args.clip_norm,
                lr_schedule=args.lr_schedule, seed=args.seed, device=args.device, out=out, resume=args.resume,
                max_steps=args.max_steps, max_seconds=args.max_seconds, progress=not args.no_progress,
                num_workers=args.num_workers, accumulate=args.accumulate, precision=args.precision,
                compile=args.compile, fast=args.fast)


def _training_done() -> bool:
    """Under torchrun the processes part after training, and rank 0 alone evaluates and writes: True
    on the process that goes on."""
    world = current_world()
    if world.active:
        import torch.distributed

        torch.distributed.destroy_process_group()
    return world.main


def _binarize(args: argparse.Namespace, ds: data_lib.Dataset):
    """The training data: ``ds.train``, or with ``--binarize dynamic`` a data set that draws a fresh
    binarization of it at every epoch; the validation and test splits are then binarized once."""
    if args.binarize == "none":
        return ds.train
    if ds.binary or ds.lengths or ds.vocab is not None:
        raise ValueError(f"--binarize dynamic needs grey levels in [0, 1] (mnist, fashion-mnist, frey-faces); "
                         f"{ds.name} is {'already binary' if ds.binary else 'not images'}")
    fixed = torch.Generator().manual_seed(args.seed)
    ds.val, ds.test = torch.bernoulli(ds.val, generator=fixed), torch.bernoulli(ds.test, generator=fixed)
    ds.binary = True
    return data_lib.Transformed(ds.train, data_lib.DynamicBinarize())


def main(argv: list[str] | None = None) -> dict:
    """Run ``python -m inference.fit``: load the data, build and fit the model, evaluate it on
    the test split, and write ``OUT/metrics.json``, the checkpoint and the figures.

    Args:
        argv: the command-line arguments (None: ``sys.argv[1:]``).

    Returns:
        The metrics written to ``metrics.json``; an empty dict on every process but rank 0
        under torchrun.
    """
    args = _parse(argv)
    module, build = _family(args.model)
    if args.objective is None:
        args.objective = module.default_objective(args) if hasattr(module, "default_objective") else "trace"
    objective = objectives.get(args.objective, particles=args.particles)  # fails early on a bad name or k
    if getattr(module, "SEQUENCES", False):
        need_sequences(args)  # before loading anything
    ds = data_lib.load(args.data, data_root=args.data_root, download=args.download, seed=args.seed)
    train = _binarize(args, ds)
    torch.manual_seed(args.seed)
    model_obj = build(args, ds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if os.environ.get("RANK", "0") == "0":  # under torchrun: once
        print(f"fitting {args.model} on {ds} with {args.objective} -> {out}", file=sys.stderr)
    if ds.lengths:
        return _fit_sequences(args, ds, model_obj, objective, out)
    val = ds.val
    if hasattr(module, "training_data"):  # a family that trains on more than x (labels and their mask)
        train, val = module.training_data(args, ds, train)
    t0 = time.perf_counter()
    # a model with a per-epoch schedule of its own (the Concrete temperature) steps it after each epoch
    result = fit(model_obj.model, model_obj.guide, train, val_data=val, callback=getattr(model_obj, "anneal", None),
                 **_fit_options(args, out, objective))
    wall = time.perf_counter() - t0
    if not _training_done():
        return {}
    if hasattr(model_obj, "estimate_log_partition"):  # an energy-based model: log Z by AIS, then log p(x)
        return _fit_energy_based(args, ds, model_obj, result, wall, out)
    test = ds.test.to(args.device)
    # a model with global latents (Bayesian PCA) is evaluated per point at their posterior mean
    model_obj = model_obj.for_evaluation() if hasattr(model_obj, "for_evaluation") else model_obj
    # Subsets are seeded random samples of the whole split (never its head: binarized MNIST's test
    # split is sorted by class); their seed is recorded in metrics.json.
    point_posterior = getattr(model_obj, "point_posterior", False)
    if point_posterior:  # an autoencoder: no likelihood; its report gives the error
        evaluation = {}
    else:
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
    if hasattr(module, "report"):  # the family's own numbers and figures (M2: test error, analogies)
        extra, extra_figures = module.report(args, model_obj, ds, test, out)
        evaluation.update(extra)
        figures.update(extra_figures)
    if hasattr(model_obj, "topic_word"):  # topic models: coherence, perplexity, top words
        evaluation["topics"] = _topic_evaluation(model_obj, ds, test, evaluation, out)
        figures["top_words"] = evaluation["topics"].pop("figure")
    metrics = {
        "config": vars(args),
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
    if point_posterior:
        print(f"test reconstruction error {evaluation['reconstruction_nats']:.2f} ± "
              f"{evaluation['reconstruction_nats_se']:.2f} nats (no likelihood: a point posterior and no prior); "
              f"wrote {out}/metrics.json")
        return metrics
    print(f"test ELBO {evaluation['elbo']:.2f} ± {evaluation['elbo_se']:.2f}, log-likelihood (IWAE-{args.eval_k}) "
          f"{evaluation['log_likelihood']:.2f} ± {evaluation['log_likelihood_se']:.2f}{exact} nats{units}; "
          f"wrote {out}/metrics.json")
    return metrics


def _fit_energy_based(args, ds: data_lib.Dataset, model_obj, result, wall: float, out: Path) -> dict:
    """Evaluate an RBM: log Z by AIS from the training data's base rate, the test log-likelihood,
    samples from long Gibbs chains and the filters; write ``metrics.json`` (with log Z) and the
    checkpoint again, so that the run folder's model carries its log Z."""
    from pyro_gen.figures.plots import image_grid, training_curves
    from pyro_gen.infer.checkpoint import load_checkpoint, save_checkpoint
    from pyro_gen.infer.params import get_state, modules_of

    test = ds.test.to(args.device)
    idx = data_lib.random_subset(len(test), args.eval_n, args.seed).to(test.device)
    evaluation = model_obj.evaluate(test[idx], ds.train.to(args.device), steps=args.ais_steps,
                                    chains=args.ais_chains, seed=args.seed, progress=not args.no_progress)
    evaluation["subset"] = {"n": len(idx), "of": len(test), "seed": args.seed if args.eval_n else None}
    ck_path = out / "checkpoint.pt"
    ck = load_checkpoint(ck_path, map_location="cpu")
    ck["best"] = get_state(modules_of(model_obj.model, model_obj.guide), [])  # the evaluated state, with log Z
    save_checkpoint(ck, ck_path)
    figures = {"training_curves": str(training_curves({args.objective: result.history}, out / "training_curves.png"))}
    if ds.image_shape is not None:
        figures["samples"] = str(image_grid(model_obj.sample(100), ds.image_shape, out / "samples.png",
                                            title="samples: 1000 Gibbs sweeps from noise"))
        figures["filters"] = str(image_grid(model_obj.filters()[:100], ds.image_shape, out / "filters.png",
                                            title="filters of the first 100 hidden units"))
    metrics = {
        "config": vars(args), "history": result.history, "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss, "stopped": result.stopped, "steps": result.steps,
        "train_seconds": result.seconds, "wall_seconds": wall, "test": evaluation, "figures": figures,
        "checkpoint": str(ck_path),
    }
    write_json(metrics, out / "metrics.json")
    print(f"test log-likelihood {evaluation['log_likelihood']:.2f} ± {evaluation['log_likelihood_se']:.2f} nats "
          f"(log Z {evaluation['log_z']:.2f} ± {evaluation['log_z_se']:.2f}, {evaluation['log_z_method']}); "
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
    result = fit(model_obj.model, model_obj.guide, train, val_data=val, val_batch_size=len(val[0]),
                 **_fit_options(args, out, objective))
    wall = time.perf_counter() - t0
    if not _training_done():
        return {}
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
        "config": vars(args), "history": result.history, "best_epoch": result.best_epoch,
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
