"""``fit``: stochastic variational inference as a plain PyTorch training loop.

The loop calls ``objective.differentiable_loss(model, guide, *batch)`` and steps a
``torch.optim`` optimizer; there is no ``pyro.infer.SVI`` and no ``pyro.optim``.
Parameters are those of the ``nn.Module`` that owns ``model``/``guide`` (a
``PyroModule``'s bound methods) and any ``pyro.param`` the two functions create,
so checkpoints, devices and schedules work as in any PyTorch program.

What it adds over a hand-written loop: validation each epoch with early stopping,
KL annealing and beta weights, gradient clipping, learning-rate schedules, seeds,
tqdm progress, metrics written as the run goes, atomic checkpoints that resume
exactly, budgets in epochs/steps/seconds, and a clear stop on a NaN or inf loss.
The loop below is the whole of it; its parts are the methods of :class:`.run.Run`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Sequence

import pyro
import torch
from pyro.infer import ELBO
from torch.utils.data import DataLoader, Dataset

from .params import modules_of, parameters_of
from .progress import progress_bar
from .run import FitResult, NonFiniteLossError, Run
from .schedules import OPTIMIZERS, SCHEDULES, make_scheduler

__all__ = ["fit", "FitResult", "NonFiniteLossError", "modules_of", "parameters_of", "make_scheduler", "SCHEDULES"]


def fit(
    model: Callable,
    guide: Callable,
    train_data: torch.Tensor | Sequence[torch.Tensor] | Dataset | DataLoader,
    *,
    objective: str | ELBO = "trace",
    epochs: int = 10,
    batch_size: int | None = None,
    lr: float = 1e-3,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    val_data: torch.Tensor | Sequence[torch.Tensor] | Dataset | DataLoader | None = None,
    val_batch_size: int = 1000,
    patience: int | None = None,
    beta: float = 1.0,
    kl_anneal: float = 0.0,
    clip_norm: float | None = None,
    lr_schedule: str | Callable | None = None,
    seed: int | None = 0,
    device: str | torch.device = "cpu",
    out: str | Path | None = None,
    resume: bool = False,
    checkpoint_every: int = 1,
    max_steps: int | None = None,
    max_seconds: float | None = None,
    progress: bool = True,
    validate: bool = False,
    restore_best: bool = True,
    callback: Callable[[dict], Any] | None = None,
    num_workers: int | None = None,
    pin_memory: bool | None = None,
    persistent_workers: bool | None = None,
    accumulate: int = 1,
    distributed: bool | None = None,
    precision: str = "32",
    compile: bool | str | dict = False,
    fast: bool | str = "auto",
) -> FitResult:
    """Fit ``model``/``guide`` to data by maximizing ``objective`` with minibatch SVI.

    Args:
        model, guide: Pyro functions taking a batch (``model(x)``, or ``model(x, y)``
            when ``train_data`` is a tuple); typically a ``PyroModule``'s methods.
        train_data: a float tensor (N, D), or a tuple of tensors sharing N (padded
            sequences come as ``(x, lengths)`` with x of shape (N, T, D)); or any
            ``torch.utils.data.Dataset`` (map-style or iterable) whose items collate to
            such a batch; or a ``DataLoader`` (its batch size, sampler, workers and
            ``collate_fn`` are kept; fit feeds it its own resumable order).
        objective: a name for :func:`pyro_gen.objectives.get` (``"trace"``,
            ``"meanfield"``, ``"iwae:5"``, ``"dreg:5"``, ``"renyi:0.5"``, ``"graph"``)
            or any ELBO with ``differentiable_loss``.
        epochs, batch_size, lr, optimizer, weight_decay: the optimization budget.
            ``batch_size`` is the global batch (all processes and accumulation steps
            together); None: a DataLoader's own, else 128.
        val_data: held-out data: its loss is computed after every epoch, the best
            epoch's parameters are kept, and ``patience`` epochs without improvement
            stop training early.
        beta: weight of the latent sites' log densities in model and guide
            (beta-VAE); ``kl_anneal`` epochs ramp that weight linearly from 0.
        clip_norm: clip the gradient's global norm to this value.
        lr_schedule: see :func:`make_scheduler`; stepped once per epoch.
        seed: seeds Pyro, torch, numpy and the shuffling generator (None: no seeding).
        device: where parameters and data live (``"cpu"``, ``"cuda"``).
        out: a run folder for ``metrics.json`` (rewritten every epoch) and
            ``checkpoint.pt`` (every ``checkpoint_every`` epochs, written atomically).
        resume: continue from ``out/checkpoint.pt`` if present; the result equals an
            uninterrupted run's.
        max_steps, max_seconds: stop after this many optimizer steps or training
            seconds (a budget for comparisons); checked after every step.
        validate: keep Pyro's validation checks on during training steps (slower;
            the data are always checked once up front).
        restore_best: load the best validation state into the modules at the end.
        callback: called with each epoch's history row; return ``False`` to stop.
        num_workers, pin_memory, persistent_workers: the DataLoader that fetches a
            ``Dataset``'s batches (transforms run in the workers); None: a given
            DataLoader's own settings, else 0 workers, no pinning.
        accumulate: cut each batch into this many shards, one backward pass each,
            before the optimizer step (gradient accumulation).
        distributed: train with DistributedDataParallel: None follows
            ``torch.distributed`` (on when a process group is initialized, as under
            ``torchrun``); True initializes one from torchrun's environment (gloo on
            CPU, NCCL on CUDA). Only rank 0 writes metrics, checkpoints and progress.
        precision: ``"32"`` or ``"bf16-mixed"`` (the forward pass under ``torch.autocast``).
        compile: ``torch.compile`` the model's networks (not Pyro's handlers): True, a
            backend name, or ``torch.compile``'s keyword arguments.
        fast: record the step once and replay it (:mod:`pyro_gen.infer.fastpath`) where the
            model's structure is static and the objective allows; checked, and the standard
            path takes over, with one log line, where it does not hold. ``"auto"``: on runs of
            at least 1000 planned steps (a recording costs about a hundred steps' time);
            True: on any run; False: always the standard path.

    Returns:
        A :class:`FitResult` with the history and the best state.

    Raises:
        NonFiniteLossError: the loss became NaN or inf; the message names the epoch,
            the step and the last good checkpoint. Nothing bad is written to disk.

    Examples:
        A conjugate model, whose exact posterior is N(3.0, 0.1^2) for these 100 points (the
        data are rows: (N, D) with D = 1):

        >>> import pyro, pyro.distributions as dist, torch
        >>> def model(x):
        ...     loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("x", dist.Normal(loc, 1.0), obs=x[:, 0])
        >>> def guide(x):
        ...     m = pyro.param("m", torch.tensor(0.0))
        ...     s = pyro.param("s", torch.tensor(1.0), constraint=dist.constraints.positive)
        ...     pyro.sample("loc", dist.Normal(m, s))
        >>> x = 3.0 + torch.linspace(-1.0, 1.0, 100)[:, None]
        >>> result = fit(model, guide, x, epochs=1000, batch_size=100, lr=0.05, progress=False)
        >>> round(pyro.param("m").item(), 1), round(pyro.param("s").item(), 1)
        (3.0, 0.1)
    """
    _check_options(epochs=epochs, batch_size=batch_size, optimizer=optimizer, patience=patience, beta=beta,
                   kl_anneal=kl_anneal, resume=resume, out=out, accumulate=accumulate)
    loader_options = {k: v for k, v in {"num_workers": num_workers, "pin_memory": pin_memory,
                                        "persistent_workers": persistent_workers}.items() if v is not None}
    run = Run(model, guide, train_data, objective=objective, epochs=epochs, batch_size=batch_size, lr=lr,
              optimizer=optimizer, weight_decay=weight_decay, val_data=val_data, val_batch_size=val_batch_size,
              patience=patience, beta=beta, kl_anneal=kl_anneal, clip_norm=clip_norm, lr_schedule=lr_schedule,
              seed=seed, device=device, out=out, checkpoint_every=checkpoint_every, max_steps=max_steps,
              max_seconds=max_seconds, loader_options=loader_options, accumulate=accumulate, distributed=distributed,
              precision=precision, compile=compile, fast=fast)
    if kl_anneal > 0 and run.steps_per_epoch is None:
        raise ValueError("kl_anneal counts epochs, and a stream of unknown length has no steps per epoch: give the "
                         "IterableDataset a __len__, or anneal with a callback")
    if resume:
        run.resume()
    total = epochs * run.steps_per_epoch if run.steps_per_epoch is not None else None
    if max_steps is not None:  # the bar ends where the run will
        total = min(total, max_steps) if total is not None else max_steps
    bar = progress_bar(total=total, initial=min(run.state["step"], total or run.state["step"]),
                       disable=not progress or not run.world.main, desc="fit", unit="step", dynamic_ncols=True)
    with bar, pyro.validation_enabled(validate), _finally(run.uncompile):
        while run.state["epoch"] < epochs:
            if run.patience_spent():  # e.g. resuming a run that had already stopped early
                run.stopped = "early_stopping"
                break
            if budget := run.budget_spent(0.0):
                run.stopped = budget
                break
            epoch = run.state["epoch"] + 1
            if budget := run.train_epoch(epoch, bar):
                run.stop_mid_epoch(epoch, budget)
                break
            run.end_epoch(epoch, callback, bar)
            if run.stopped != "epochs":
                break
    return run.result(restore_best)


@contextlib.contextmanager
def _finally(undo: Callable[[], None]):
    """``undo()`` however the block ends (compiled networks are restored even when a run fails)."""
    try:
        yield
    finally:
        undo()


def _check_options(*, epochs, batch_size, optimizer, patience, beta, kl_anneal, resume, out, accumulate) -> None:
    if epochs < 0 or (batch_size is not None and batch_size < 1) or accumulate < 1:
        raise ValueError(f"epochs must be >= 0, batch_size >= 1 and accumulate >= 1, got epochs={epochs}, "
                         f"batch_size={batch_size}, accumulate={accumulate}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; valid choices: {', '.join(OPTIMIZERS)}")
    if patience is not None and patience < 1:
        raise ValueError(f"patience must be >= 1 epoch (or None for no early stopping), got {patience}")
    if beta <= 0 or kl_anneal < 0:
        raise ValueError(f"beta must be > 0 and kl_anneal >= 0, got beta={beta}, kl_anneal={kl_anneal}")
    if resume and out is None:
        raise ValueError("resume=True needs the run folder `out` that holds checkpoint.pt")
