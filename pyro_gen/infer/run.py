"""The named parts of :func:`pyro_gen.fit`'s loop, around one :class:`Run`.

- preparing data and parameters: :meth:`Run.__init__`;
- resuming: :meth:`Run.resume`; checkpointing: :meth:`Run.checkpoint`;
- one optimizer step: :meth:`Run.step` (with the NaN guard);
- one epoch of steps under a budget: :meth:`Run.train_epoch`;
- validation, the best state and early stopping: :meth:`Run.end_epoch`, :meth:`Run.stop_mid_epoch`;
- the result: :meth:`Run.result`.

Everything a resumed run needs sits in ``Run.state`` (a plain dict of numbers, lists
and tensors) and the random-number states, so a checkpoint holds all of it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pyro
import torch
from pyro.infer import TraceEnum_ELBO

from ..data import check_batch, check_for_models
from . import objectives as _objectives
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint, write_json
from .params import get_state, load_state, modules_of, param_store_names, parameters_of
from .particles import with_particles
from .schedules import make_optimizer, make_scheduler, step_scheduler

__all__ = ["Run", "FitResult", "NonFiniteLossError"]

_LOG = logging.getLogger("pyro_gen")

# What a checkpoint keeps of Run.state, besides parameters, optimizer, scheduler and RNG states.
_CHECKPOINTED = ("epoch", "step", "seconds", "history", "bad_epochs", "best_val", "best_epoch", "best", "perm", "pos",
                 "total", "count")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or inf."""


@dataclass
class FitResult:
    """What :func:`pyro_gen.fit` returns.

    Attributes:
        history: one dict per epoch: ``epoch``, ``step``, ``train_loss`` (negative
            objective per data point), ``val_loss`` (if validated), ``lr``,
            ``kl_weight``, ``seconds`` (cumulative training time).
        best_state: parameters at the best validation loss (the last epoch's if no
            validation data): ``{"modules": [state_dict, ...], "param_store": {...}}``.
        best_epoch, best_val_loss: where that was.
        stopped: why training ended: ``"epochs"``, ``"early_stopping"``, ``"max_steps"``,
            ``"max_seconds"``, ``"callback"``.
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
        load_state(self.modules, self.best_state)


class Run:
    """One training run of a model/guide pair: its data, parameters, optimizer and progress."""

    def __init__(self, model: Callable, guide: Callable, train_data, *, objective, epochs: int, batch_size: int,
                 lr: float, optimizer: str, weight_decay: float, val_data, val_batch_size: int, patience: int | None,
                 beta: float, kl_anneal: float, clip_norm: float | None, lr_schedule, seed: int | None, device,
                 out, checkpoint_every: int, max_steps: int | None, max_seconds: float | None):
        self.model, self.guide = model, guide
        self.epochs, self.batch_size, self.val_batch_size = epochs, batch_size, val_batch_size
        self.patience, self.beta, self.kl_anneal, self.clip_norm = patience, beta, kl_anneal, clip_norm
        self.checkpoint_every, self.max_steps, self.max_seconds = checkpoint_every, max_steps, max_seconds
        self.device = torch.device(device)
        self.elbo = _objectives.get(objective)
        self.sequential = _objectives.devectorized(self.elbo)  # for models that do not broadcast over particles
        self.train = tuple(t.to(self.device) for t in check_batch(train_data, "train_data"))
        self.val = (tuple(t.to(self.device) for t in check_batch(val_data, "val_data"))
                    if val_data is not None else None)
        self.out = Path(out) if out is not None else None
        self.ckpt_path = self.out / "checkpoint.pt" if self.out is not None else None

        if seed is not None:
            pyro.set_rng_seed(seed)
        # seed=None: the shuffling follows torch's global RNG (torch.seed() would reseed that RNG itself,
        # at random: the caller's own seeding would no longer reproduce the run)
        self.shuffle = torch.Generator().manual_seed(
            seed if seed is not None else int(torch.randint(2**62, (1,)).item()))

        self.modules = modules_of(model, guide)
        check_for_models(self.train, self.modules)
        if self.val is not None:
            check_for_models(self.val, self.modules)
        for m in self.modules:
            m.to(self.device)
            m.train()
        # One forward pass creates any lazily initialized pyro.param; then the parameter list is complete.
        first = tuple(t[: min(batch_size, len(t))] for t in self.train)
        self.store_names, enumerated = param_store_names(model, guide, first, self.modules, enumerated=True)
        if enumerated and not isinstance(self.elbo, TraceEnum_ELBO):
            raise ValueError(
                f"the model marks {', '.join(map(repr, enumerated))} for enumeration (infer={{'enumerate': ...}}), "
                f"which objective {_objectives.describe(self.elbo)} ignores: it would sample them instead of summing them "
                "out. Use objective 'enum' (TraceEnum_ELBO), or drop the mark")
        _objectives.prepare(self.elbo, model, guide, *first)
        self.params = parameters_of(self.modules, self.store_names)
        if not self.params:
            raise ValueError("model and guide have no trainable parameters (no nn.Module owner and no pyro.param)")
        self.opt = make_optimizer(optimizer, self.params, lr, weight_decay)
        self.sched = make_scheduler(lr_schedule, self.opt, epochs)

        self.n = len(self.train[0])
        self.steps_per_epoch = math.ceil(self.n / batch_size)
        self.state: dict[str, Any] = {
            "epoch": 0, "step": 0, "seconds": 0.0, "history": [], "bad_epochs": 0,
            "best": None, "best_val": None, "best_epoch": 0, "ckpt_epoch": None,
            # where we are inside an epoch (a budget can stop a run mid-epoch)
            "perm": None, "pos": 0, "total": 0.0, "count": 0}
        self.config = {"objective": _objectives.describe(self.elbo), "batch_size": batch_size, "n_train": self.n,
                       "epochs": epochs, "lr_schedule": lr_schedule if isinstance(lr_schedule, str) else None}
        self.stopped = "epochs"
        self.history = self.state["history"]  # what is reported: the epochs, and a partial one if a budget hit

    # --- checkpoint and resume -------------------------------------------------------------

    def position(self) -> float:
        """Epochs done, with the fraction of a partly done one."""
        return self.state["epoch"] + (self.state["pos"] / self.n if self.state["perm"] is not None else 0)

    def resume(self) -> None:
        """Continue from ``out/checkpoint.pt``: parameters, optimizer, RNGs, position. Where there is no
        checkpoint yet (a first run under a script that always resumes) it says so in one line and
        starts a new run; where there is one it says the epoch and step it continues from."""
        if self.ckpt_path is None or not self.ckpt_path.exists():
            _LOG.warning("resume: no checkpoint at %s; starting a new run", self.ckpt_path)
            return
        ck = load_checkpoint(self.ckpt_path, map_location="cpu")  # RNG states must stay on the CPU
        must_match = ["objective", "batch_size", "n_train"]
        if self.config["lr_schedule"] == "cosine":  # its period is the number of epochs
            must_match.append("epochs")
        for key in must_match:
            if ck["config"].get(key) != self.config[key]:
                raise CheckpointError(
                    f"{self.ckpt_path} was made with {key}={ck['config'].get(key)!r}, this run has "
                    f"{self.config[key]!r}: resume needs the same objective, batch size and data (and epochs under "
                    "a cosine schedule)")
        _check_shapes(self.ckpt_path, self.modules, ck["state"])
        load_state(self.modules, ck["state"])
        self.opt.load_state_dict(ck["optimizer"])
        if self.sched is not None and ck["scheduler"] is not None:
            self.sched.load_state_dict(ck["scheduler"])
        torch.set_rng_state(ck["rng"]["torch"])
        self.shuffle.set_state(ck["rng"]["shuffle"])
        if self.device.type == "cuda" and ck["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ck["rng"]["cuda"], self.device)
        self.state.update({k: ck[k] for k in self.state if k in ck})
        self.state["ckpt_epoch"] = self.position()
        self.history = self.state["history"]
        _LOG.warning("resume: continuing from %s at epoch %g, step %d", self.ckpt_path, self.position(),
                     self.state["step"])

    def checkpoint(self) -> None:
        """Write ``out/checkpoint.pt`` atomically (nothing without ``out``)."""
        if self.ckpt_path is None:
            return
        cuda = self.device.type == "cuda"
        save_checkpoint({
            "config": self.config, **{k: self.state[k] for k in _CHECKPOINTED},
            "state": get_state(self.modules, self.store_names), "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict() if self.sched is not None else None,
            "rng": {"torch": torch.get_rng_state(), "shuffle": self.shuffle.get_state(),
                    "cuda": torch.cuda.get_rng_state(self.device) if cuda else None},
        }, self.ckpt_path)
        self.state["ckpt_epoch"] = self.position()

    def write_metrics(self, history: list[dict], stopped: str | None = None) -> None:
        if self.out is not None:
            write_json({"config": self.config, "history": history, "best_epoch": self.state["best_epoch"],
                        "best_val_loss": self.state["best_val"], "stopped": stopped}, self.out / "metrics.json")

    # --- one step --------------------------------------------------------------------------

    def kl_weight(self, step: int) -> float:
        if self.kl_anneal <= 0:
            return self.beta
        return self.beta * min(1.0, step / (self.kl_anneal * self.steps_per_epoch))

    def batch_loss(self, batch: tuple[torch.Tensor, ...], weight: float) -> torch.Tensor:
        """The objective's loss per data point, with latent sites weighted by ``weight``."""
        if weight != 1.0:
            with _objectives.LatentScale(weight):
                return self.loss(batch) / len(batch[0])
        return self.loss(batch) / len(batch[0])

    def loss(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The objective's loss on ``batch``: particles vectorized where the model broadcasts."""
        if self.sequential is None:
            return self.elbo.differentiable_loss(self.model, self.guide, *batch)
        return with_particles(self.model, self.elbo.num_particles, "fit",
                              lambda: self.elbo.differentiable_loss(self.model, self.guide, *batch),
                              lambda: self.sequential.differentiable_loss(self.model, self.guide, *batch))

    def step(self, batch: tuple[torch.Tensor, ...], epoch: int) -> float:
        """One optimizer step on ``batch``; a NaN or inf loss stops the run before any update."""
        loss = self.batch_loss(batch, self.kl_weight(self.state["step"]))
        value = loss.item()
        if not math.isfinite(value):
            where = (f"last good checkpoint: {self.ckpt_path} (epoch {self.state['ckpt_epoch']:g})"
                     if self.state["ckpt_epoch"] is not None else "no checkpoint was written")
            raise NonFiniteLossError(
                f"loss became {value} at epoch {epoch}, step {self.state['step'] + 1} "
                f"(objective {self.config['objective']}); training stopped, {where}. Try a lower lr, "
                "clip_norm, or check the data and the model's scales.")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip_norm)
        self.opt.step()
        return value

    # --- one epoch under a budget ----------------------------------------------------------

    def budget_spent(self, elapsed: float) -> str | None:
        if self.max_steps is not None and self.state["step"] >= self.max_steps:
            return "max_steps"
        if self.max_seconds is not None and self.state["seconds"] + elapsed >= self.max_seconds:
            return "max_seconds"
        return None

    def train_epoch(self, epoch: int, bar) -> str | None:
        """Steps through the rest of epoch ``epoch``; returns the budget that stopped it, if one did."""
        t0 = time.perf_counter()
        state, budget_hit = self.state, None
        if state["perm"] is None:
            state.update(perm=torch.randperm(self.n, generator=self.shuffle), pos=0, total=0.0, count=0)
        perm = state["perm"].to(self.device)
        while state["pos"] < self.n:
            budget_hit = self.budget_spent(time.perf_counter() - t0)
            if budget_hit:
                break
            idx = perm[state["pos"]:state["pos"] + self.batch_size]
            value = self.step(tuple(t[idx] for t in self.train), epoch)
            state["step"] += 1
            state["pos"] += len(idx)
            state["total"] += value * len(idx)
            state["count"] += len(idx)
            bar.update(1)
            if state["step"] % 20 == 0:
                bar.set_postfix(epoch=epoch, loss=f"{state['total'] / state['count']:.3f}", refresh=False)
        state["seconds"] += time.perf_counter() - t0
        return budget_hit

    # --- validation, the best state, early stopping ----------------------------------------

    def epoch_row(self, epoch: int) -> dict:
        state = self.state
        row = {"epoch": epoch, "step": state["step"], "train_loss": state["total"] / max(state["count"], 1),
               "lr": self.opt.param_groups[0]["lr"], "kl_weight": self.kl_weight(state["step"]),
               "seconds": state["seconds"]}
        if self.val is not None:
            row["val_loss"] = validation_loss(self.elbo, self.model, self.guide, self.val, self.val_batch_size,
                                              self.beta, self.modules)
        return row

    def patience_spent(self) -> bool:
        return self.patience is not None and self.val is not None and self.state["bad_epochs"] >= self.patience

    def stop_mid_epoch(self, epoch: int, budget: str) -> None:
        """A budget stopped the run inside an epoch: checkpoint the position first (validation
        spends random numbers), so that a resumed run finishes this epoch exactly as an
        uninterrupted one; the partial epoch is reported but not recorded as an epoch."""
        self.stopped = budget
        self.checkpoint()
        self.history = self.state["history"] + [{**self.epoch_row(epoch), "partial": True}]
        val_loss = self.history[-1].get("val_loss")
        if val_loss is not None and (self.state["best_val"] is None or val_loss < self.state["best_val"]):
            self.state["best_val"], self.state["best_epoch"] = val_loss, epoch
            self.state["best"] = get_state(self.modules, self.store_names)

    def end_epoch(self, epoch: int, callback: Callable[[dict], Any] | None, bar) -> None:
        """Validate, keep the best state, step the schedule, then checkpoint and write metrics."""
        state = self.state
        row = self.epoch_row(epoch)
        state["history"].append(row)
        state.update(epoch=epoch, perm=None, pos=0, total=0.0, count=0)
        if self.val is None:  # nothing held out: the best state is the latest one
            state["best_epoch"], state["best"] = epoch, None
        elif state["best_val"] is None or row["val_loss"] < state["best_val"]:
            state["best_val"], state["best_epoch"], state["bad_epochs"] = row["val_loss"], epoch, 0
            state["best"] = get_state(self.modules, self.store_names)
        else:
            state["bad_epochs"] += 1
        step_scheduler(self.sched, row)
        bar.set_postfix(epoch=epoch, loss=f"{row['train_loss']:.3f}",
                        **({"val": f"{row['val_loss']:.3f}"} if "val_loss" in row else {}))
        if self.patience_spent():
            self.stopped = "early_stopping"
        if callback is not None and callback(row) is False:
            self.stopped = "callback"
        if epoch % self.checkpoint_every == 0 or self.stopped != "epochs" or epoch == self.epochs:
            self.checkpoint()
        self.write_metrics(state["history"])

    # --- the result ------------------------------------------------------------------------

    def result(self, restore_best: bool) -> FitResult:
        state = self.state
        self.write_metrics(self.history, self.stopped)
        best_state = state["best"] if state["best"] is not None else get_state(self.modules, self.store_names)
        result = FitResult(self.history, best_state, state["best_epoch"], state["best_val"], self.stopped,
                           state["step"], state["seconds"], self.out, self.modules)
        if restore_best and self.val is not None and state["best"] is not None:
            result.restore_best()
        return result


@torch.no_grad()
def validation_loss(elbo, model, guide, data, batch_size, beta, modules) -> float:
    """The objective's loss per data point on held-out data, modules in eval mode."""
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


def _check_shapes(path, modules, state: dict) -> None:
    """A checkpoint of another architecture: one line naming the first parameter whose shape differs."""
    for i, (module, saved) in enumerate(zip(modules, state["modules"])):
        own = module.state_dict()
        for name, value in saved.items():
            if name in own and tuple(own[name].shape) != tuple(value.shape):
                raise CheckpointError(
                    f"{path} holds another architecture: parameter {name!r} has shape {tuple(value.shape)} there and "
                    f"{tuple(own[name].shape)} in this model; resume needs the model it was written with")
        missing = sorted(set(own) - set(saved))
        if missing:
            raise CheckpointError(f"{path} holds another architecture: it has no parameter {missing[0]!r} "
                                  "of this model; resume needs the model it was written with")
