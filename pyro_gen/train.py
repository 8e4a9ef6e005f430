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
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pyro
import torch
from pyro.infer import ELBO

from . import objectives as _objectives
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint, write_json
from .data import check_batch
from .progress import progress_bar

__all__ = ["fit", "FitResult", "NonFiniteLossError", "modules_of", "parameters_of", "make_scheduler", "SCHEDULES"]

SCHEDULES = ("constant", "cosine", "exponential", "step", "plateau")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or inf."""


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        history: one dict per epoch: ``epoch``, ``step``, ``train_loss`` (negative
            objective per data point), ``val_loss`` (if validated), ``lr``,
            ``kl_weight``, ``seconds`` (cumulative training time).
        best_state: parameters at the best validation loss (the last epoch's if no
            validation data): ``{"modules": [state_dict, ...], "param_store": {...}}``.
        best_epoch, best_val_loss: where that was.
        stopped: why training ended: ``"epochs"``, ``"early_stopping"``, ``"max_steps"``,
            ``"max_seconds"``.
        steps, seconds: optimizer steps taken and training seconds (validation excluded).
        out: the run folder, if one was given.
    """

    history: list[dict]
    best_state: dict
    best_epoch: int
    best_val_loss: float | None
    stopped: str
    steps: int
    seconds: float
    out: Path | None = None
    modules: list[torch.nn.Module] = field(default_factory=list, repr=False)

    def restore_best(self) -> None:
        """Load ``best_state`` into the trained modules and Pyro's param store."""
        _load_state(self.modules, self.best_state)


def modules_of(*fns: Callable) -> list[torch.nn.Module]:
    """The distinct ``nn.Module`` owners of bound methods (or modules) among ``fns``."""
    found: list[torch.nn.Module] = []
    for fn in fns:
        owner = getattr(fn, "__self__", fn)
        if isinstance(owner, torch.nn.Module) and not any(owner is m for m in found):
            found.append(owner)
    return found


def _param_store_names(model, guide, args) -> list[str]:
    with pyro.poutine.block(), torch.no_grad():
        names = []
        for fn in (guide, model):
            tr = pyro.poutine.trace(fn, param_only=True).get_trace(*args)
            names += [n for n, s in tr.nodes.items() if s["type"] == "param" and n not in names]
    # A PyroModule's own nn.Parameters (an AutoGuide's loc, say) show up as param sites too, but
    # under module_local_params they live in the module, which parameters_of already covers.
    store = pyro.get_param_store()
    return [n for n in names if n in store]


def parameters_of(modules: Sequence[torch.nn.Module], store_names: Sequence[str]) -> list[torch.Tensor]:
    """Trainable tensors: module parameters, then the unconstrained param-store tensors named."""
    params, seen = [], set()
    for m in modules:
        for p in m.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    store = dict(pyro.get_param_store().named_parameters())
    for name in store_names:
        p = store[name]
        if id(p) not in seen:
            seen.add(id(p))
            params.append(p)
    return params


def _get_state(modules, store_names) -> dict:
    store = dict(pyro.get_param_store().named_parameters())
    return {
        "modules": [copy.deepcopy(m.state_dict()) for m in modules],
        "param_store": {n: store[n].detach().clone() for n in store_names},
    }


def _load_state(modules, state) -> None:
    for m, sd in zip(modules, state["modules"]):
        m.load_state_dict(sd)
    store = dict(pyro.get_param_store().named_parameters())
    with torch.no_grad():
        for name, value in state["param_store"].items():
            store[name].copy_(value)


def make_scheduler(spec: str | Callable | None, optimizer: torch.optim.Optimizer, epochs: int):
    """A per-epoch LR scheduler from a spec: ``None``/``"constant"``, ``"cosine"``,
    ``"exponential:0.95"``, ``"step:10:0.5"`` (every 10 epochs times 0.5),
    ``"plateau:3:0.5"`` (on validation loss), or a callable ``optimizer -> scheduler``."""
    if spec is None or spec == "constant":
        return None
    if callable(spec):
        return spec(optimizer)
    name, *args = str(spec).split(":")
    try:
        nums = [float(a) for a in args]
    except ValueError:
        raise ValueError(f"bad lr_schedule {spec!r}: arguments after ':' must be numbers") from None
    S = torch.optim.lr_scheduler
    if name == "cosine":
        return S.CosineAnnealingLR(optimizer, T_max=max(1, epochs))
    if name == "exponential":
        return S.ExponentialLR(optimizer, gamma=nums[0] if nums else 0.95)
    if name == "step":
        return S.StepLR(optimizer, step_size=int(nums[0]) if nums else 10, gamma=nums[1] if len(nums) > 1 else 0.5)
    if name == "plateau":
        return S.ReduceLROnPlateau(optimizer, patience=int(nums[0]) if nums else 3,
                                   factor=nums[1] if len(nums) > 1 else 0.5)
    raise ValueError(f"unknown lr_schedule {spec!r}; valid choices: {', '.join(SCHEDULES)}")


_OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
               "rmsprop": torch.optim.RMSprop}


def fit(
    model: Callable,
    guide: Callable,
    train_data: torch.Tensor | Sequence[torch.Tensor],
    *,
    objective: str | ELBO = "trace",
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    val_data: torch.Tensor | Sequence[torch.Tensor] | None = None,
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
) -> FitResult:
    """Fit ``model``/``guide`` to data by maximizing ``objective`` with minibatch SVI.

    Args:
        model, guide: Pyro functions taking a batch (``model(x)``, or ``model(x, y)``
            when ``train_data`` is a tuple); typically a ``PyroModule``'s methods.
        train_data: a float tensor (N, D), or a tuple of tensors sharing N; padded
            sequences come as ``(x, lengths)`` with x of shape (N, T, D).
        objective: a name for :func:`pyro_gen.objectives.get` (``"trace"``,
            ``"meanfield"``, ``"iwae:5"``, ``"dreg:5"``, ``"renyi:0.5"``, ``"graph"``)
            or any ELBO with ``differentiable_loss``.
        epochs, batch_size, lr, optimizer, weight_decay: the optimization budget.
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

    Returns:
        A :class:`FitResult` with the history and the best state.

    Raises:
        NonFiniteLossError: the loss became NaN or inf; the message names the epoch,
            the step and the last good checkpoint. Nothing bad is written to disk.
    """
    if epochs < 0 or batch_size < 1:
        raise ValueError(f"epochs must be >= 0 and batch_size >= 1, got epochs={epochs}, batch_size={batch_size}")
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; valid choices: {', '.join(_OPTIMIZERS)}")
    if patience is not None and patience < 1:
        raise ValueError(f"patience must be >= 1 epoch (or None for no early stopping), got {patience}")
    if beta <= 0 or kl_anneal < 0:
        raise ValueError(f"beta must be > 0 and kl_anneal >= 0, got beta={beta}, kl_anneal={kl_anneal}")
    if resume and out is None:
        raise ValueError("resume=True needs the run folder `out` that holds checkpoint.pt")
    device = torch.device(device)
    elbo = _objectives.get(objective)
    train = tuple(t.to(device) for t in check_batch(train_data, "train_data"))
    val = tuple(t.to(device) for t in check_batch(val_data, "val_data")) if val_data is not None else None
    out = Path(out) if out is not None else None
    ckpt_path = out / "checkpoint.pt" if out is not None else None

    if seed is not None:
        pyro.set_rng_seed(seed)
    shuffle = torch.Generator().manual_seed(seed if seed is not None else torch.seed())

    modules = modules_of(model, guide)
    for m in modules:
        m.to(device)
        m.train()
    # One forward pass creates any lazily initialized pyro.param; then the parameter list is complete.
    first = tuple(t[: min(batch_size, len(t))] for t in train)
    store_names = _param_store_names(model, guide, first)
    _objectives.prepare(elbo, model, guide, *first)
    params = parameters_of(modules, store_names)
    if not params:
        raise ValueError("model and guide have no trainable parameters (no nn.Module owner and no pyro.param)")
    opt = _OPTIMIZERS[optimizer](params, lr=lr, weight_decay=weight_decay)
    sched = make_scheduler(lr_schedule, opt, epochs)

    n = len(train[0])
    steps_per_epoch = math.ceil(n / batch_size)
    state: dict[str, Any] = {"epoch": 0, "step": 0, "seconds": 0.0, "history": [], "bad_epochs": 0,
                             "best": None, "best_val": None, "best_epoch": 0, "ckpt_epoch": None,
                             # where we are inside an epoch (a budget can stop a run mid-epoch)
                             "perm": None, "pos": 0, "total": 0.0, "count": 0}
    config = {"objective": _objectives.describe(elbo), "batch_size": batch_size, "n_train": n,
              "epochs": epochs, "lr_schedule": lr_schedule if isinstance(lr_schedule, str) else None}

    def position() -> float:
        """Epochs done, with the fraction of a partly done one."""
        return state["epoch"] + (state["pos"] / n if state["perm"] is not None else 0)

    if resume and ckpt_path is not None and ckpt_path.exists():
        ck = load_checkpoint(ckpt_path, map_location="cpu")  # RNG states must stay on the CPU
        must_match = ["objective", "batch_size", "n_train"]
        if lr_schedule == "cosine":  # its period is the number of epochs
            must_match.append("epochs")
        for key in must_match:
            if ck["config"].get(key) != config[key]:
                raise CheckpointError(
                    f"{ckpt_path} was made with {key}={ck['config'].get(key)!r}, this run has {config[key]!r}: "
                    "resume needs the same objective, batch size and data (and epochs under a cosine schedule)"
                )
        _load_state(modules, ck["state"])
        opt.load_state_dict(ck["optimizer"])
        if sched is not None and ck["scheduler"] is not None:
            sched.load_state_dict(ck["scheduler"])
        torch.set_rng_state(ck["rng"]["torch"])
        shuffle.set_state(ck["rng"]["shuffle"])
        if device.type == "cuda" and ck["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ck["rng"]["cuda"], device)
        state.update({k: ck[k] for k in state if k in ck})
        state["ckpt_epoch"] = position()

    def kl_weight(step: int) -> float:
        if kl_anneal <= 0:
            return beta
        return beta * min(1.0, step / (kl_anneal * steps_per_epoch))

    def batch_loss(batch, weight: float) -> torch.Tensor:
        if weight != 1.0:
            with _objectives.LatentScale(weight):
                return elbo.differentiable_loss(model, guide, *batch) / len(batch[0])
        return elbo.differentiable_loss(model, guide, *batch) / len(batch[0])

    def checkpoint():
        if ckpt_path is None:
            return
        keep = ("epoch", "step", "seconds", "history", "bad_epochs", "best_val", "best_epoch", "best", "perm", "pos",
                "total", "count")
        save_checkpoint({
            "config": config, **{k: state[k] for k in keep}, "state": _get_state(modules, store_names),
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict() if sched is not None else None,
            "rng": {"torch": torch.get_rng_state(), "shuffle": shuffle.get_state(),
                    "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
        }, ckpt_path)
        state["ckpt_epoch"] = position()

    def write_metrics(history, stopped=None):
        if out is not None:
            write_json({"config": config, "history": history, "best_epoch": state["best_epoch"],
                        "best_val_loss": state["best_val"], "stopped": stopped}, out / "metrics.json")

    def budget_spent(elapsed: float) -> str | None:
        if max_steps is not None and state["step"] >= max_steps:
            return "max_steps"
        if max_seconds is not None and state["seconds"] + elapsed >= max_seconds:
            return "max_seconds"
        return None

    def epoch_row(epoch: int) -> dict:
        row = {"epoch": epoch, "step": state["step"], "train_loss": state["total"] / max(state["count"], 1),
               "lr": opt.param_groups[0]["lr"], "kl_weight": kl_weight(state["step"]), "seconds": state["seconds"]}
        if val is not None:
            row["val_loss"] = _evaluate_loss(elbo, model, guide, val, val_batch_size, beta, modules)
        return row

    stopped = "epochs"
    history = state["history"]
    bar = progress_bar(total=epochs * steps_per_epoch, initial=min(state["step"], epochs * steps_per_epoch),
                       disable=not progress, desc="fit", unit="step", dynamic_ncols=True)
    with bar, pyro.validation_enabled(validate):
        while state["epoch"] < epochs:
            if patience is not None and val is not None and state["bad_epochs"] >= patience:
                stopped = "early_stopping"  # e.g. resuming a run that had already stopped early
                break
            t0 = time.perf_counter()
            budget_hit = budget_spent(0.0)
            if budget_hit:
                stopped = budget_hit
                break
            epoch = state["epoch"] + 1
            if state["perm"] is None:
                state.update(perm=torch.randperm(n, generator=shuffle), pos=0, total=0.0, count=0)
            perm = state["perm"].to(device)
            while state["pos"] < n:
                budget_hit = budget_spent(time.perf_counter() - t0)
                if budget_hit:
                    break
                idx = perm[state["pos"]:state["pos"] + batch_size]
                batch = tuple(t[idx] for t in train)
                loss = batch_loss(batch, kl_weight(state["step"]))
                value = loss.item()
                if not math.isfinite(value):
                    where = (f"last good checkpoint: {ckpt_path} (epoch {state['ckpt_epoch']:g})"
                             if state["ckpt_epoch"] is not None else "no checkpoint was written")
                    raise NonFiniteLossError(
                        f"loss became {value} at epoch {epoch}, step {state['step'] + 1} "
                        f"(objective {config['objective']}); training stopped, {where}. Try a lower lr, "
                        "clip_norm, or check the data and the model's scales."
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, clip_norm)
                opt.step()
                state["step"] += 1
                state["pos"] += len(idx)
                state["total"] += value * len(idx)
                state["count"] += len(idx)
                bar.update(1)
                if state["step"] % 20 == 0:
                    bar.set_postfix(epoch=epoch, loss=f"{state['total'] / state['count']:.3f}", refresh=False)
            state["seconds"] += time.perf_counter() - t0
            if budget_hit:
                # Stopped inside the epoch: save the position first (validation spends random
                # numbers), so that a resumed run finishes this epoch exactly as an uninterrupted
                # one. The partial epoch is reported but not recorded as an epoch.
                stopped = budget_hit
                checkpoint()
                history = state["history"] + [{**epoch_row(epoch), "partial": True}]
                if val is not None and (state["best_val"] is None or history[-1]["val_loss"] < state["best_val"]):
                    state["best_val"], state["best_epoch"] = history[-1]["val_loss"], epoch
                    state["best"] = _get_state(modules, store_names)
                break
            row = epoch_row(epoch)
            state["history"].append(row)
            state.update(epoch=epoch, perm=None, pos=0, total=0.0, count=0)
            if val is None:  # nothing held out: the best state is the latest one
                state["best_epoch"], state["best"] = epoch, None
            elif state["best_val"] is None or row["val_loss"] < state["best_val"]:
                state["best_val"], state["best_epoch"], state["bad_epochs"] = row["val_loss"], epoch, 0
                state["best"] = _get_state(modules, store_names)
            else:
                state["bad_epochs"] += 1
            if sched is not None:
                if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    sched.step(row.get("val_loss", row["train_loss"]))
                else:
                    sched.step()
            bar.set_postfix(epoch=epoch, loss=f"{row['train_loss']:.3f}",
                            **({"val": f"{row['val_loss']:.3f}"} if "val_loss" in row else {}))
            if patience is not None and val is not None and state["bad_epochs"] >= patience:
                stopped = "early_stopping"
            if callback is not None and callback(row) is False:
                stopped = "callback"
            if epoch % checkpoint_every == 0 or stopped != "epochs" or epoch == epochs:
                checkpoint()
            write_metrics(state["history"])
            if stopped != "epochs":
                break
    write_metrics(history, stopped)
    best_state = state["best"] if state["best"] is not None else _get_state(modules, store_names)
    result = FitResult(history, best_state, state["best_epoch"], state["best_val"], stopped,
                       state["step"], state["seconds"], out, modules)
    if restore_best and val is not None and state["best"] is not None:
        result.restore_best()
    return result


@torch.no_grad()
def _evaluate_loss(elbo, model, guide, data, batch_size, beta, modules) -> float:
    for m in modules:
        m.eval()
    total, n = 0.0, len(data[0])
    scale = _objectives.LatentScale(beta) if beta != 1.0 else contextlib.nullcontext()
    with pyro.validation_enabled(False), scale:
        for i in range(0, n, batch_size):
            batch = tuple(t[i:i + batch_size] for t in data)
            total += elbo.differentiable_loss(model, guide, *batch).item()
    for m in modules:
        m.train()
    return total / n
