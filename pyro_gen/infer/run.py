"""The named parts of :func:`pyro_gen.fit`'s loop, around one :class:`Run`.

- preparing data and parameters: ``Run(...)`` (the data source: :mod:`.sources`; the
  processes: :mod:`.distributed`; precision and compilation: :mod:`.precision`);
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
from .distributed import no_sync, world
from .fastpath import AUTO_MIN_STEPS, FastLoss, supports, unsupported
from .params import get_state, load_state, modules_of, param_store_names, parameters_of, subsampled_size
from .particles import with_particles
from .precision import autocast, compile_networks
from .schedules import make_optimizer, make_scheduler, step_scheduler
from .sources import Shards, make_source, shard_key

__all__ = ["Run", "FitResult", "NonFiniteLossError"]

_LOG = logging.getLogger("pyro_gen")

# What a checkpoint keeps of Run.state, besides parameters, optimizer, scheduler and RNG states.
_CHECKPOINTED = ("epoch", "step", "seconds", "history", "bad_epochs", "best_val", "best_epoch", "best", "perm", "pos",
                 "total", "count", "base_seed")
_VAL = 2**31  # the shard index of validation chunks in shard_key (training shards are numbered from 0)


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

    def __init__(self, model: Callable, guide: Callable, train_data, *, objective, epochs: int, batch_size: int | None,
                 lr: float, optimizer: str, weight_decay: float, val_data, val_batch_size: int, patience: int | None,
                 beta: float, kl_anneal: float, clip_norm: float | None, lr_schedule, seed: int | None, device,
                 out, checkpoint_every: int, max_steps: int | None, max_seconds: float | None,
                 loader_options: dict | None = None, accumulate: int = 1, distributed: bool | None = None,
                 precision: str = "32", compile: bool | str | dict = False, fast: bool | str = "auto"):
        self.model, self.guide = model, guide
        self.epochs, self.val_batch_size = epochs, val_batch_size
        self.patience, self.beta, self.kl_anneal, self.clip_norm = patience, beta, kl_anneal, clip_norm
        self.checkpoint_every, self.max_steps, self.max_seconds = checkpoint_every, max_steps, max_seconds
        self.world = world(distributed, device)
        self.device = self.world.device(device)
        self.shards = Shards(self.world.rank, self.world.size, accumulate)
        # More than one shard per step: each shard's random numbers come from (seed, step, shard), so
        # that P processes equal one process accumulating P shards (see pyro_gen.infer.distributed).
        self.keyed = self.shards.count > 1
        self.elbo = _objectives.get(objective)
        self.sequential = _objectives.devectorized(self.elbo)  # for models that do not broadcast over particles
        self.source, self.batch_size = make_source(train_data, batch_size, self.shards, self.device,
                                                   loader_options=loader_options, sync=self.world.all_sum)
        if self.keyed and self.batch_size % self.shards.count:
            raise ValueError(f"batch_size {self.batch_size} is the global batch: it must be divisible by world_size × "
                             f"accumulate = {self.world.size} × {accumulate}, each process taking an equal share")
        self.val = (tuple(t.to(self.device) for t in check_batch(val_data, "val_data"))
                    if val_data is not None else None)
        self.out = Path(out) if out is not None else None
        self.ckpt_path = self.out / "checkpoint.pt" if self.out is not None else None

        if seed is not None:
            pyro.set_rng_seed(seed)
        # seed=None: the shuffling follows torch's global RNG (torch.seed() would reseed that RNG itself,
        # at random: the caller's own seeding would no longer reproduce the run); processes take rank 0's
        base_seed = seed if seed is not None else self.world.broadcast_int(int(torch.randint(2**62, (1,)).item()))
        self.shuffle = torch.Generator().manual_seed(base_seed)

        self.modules = modules_of(model, guide)
        first = self.source.first(self.batch_size)
        # in-memory data are checked whole; a data set or stream by its first batch
        check_for_models(getattr(self.source, "data", None) or check_batch(first, "train_data"), self.modules)
        if self.val is not None:
            check_for_models(self.val, self.modules)
        for m in self.modules:
            m.to(self.device)
            m.train()
        # One forward pass creates any lazily initialized pyro.param; then the parameter list is complete.
        self.store_names, enumerated = param_store_names(model, guide, first, self.modules, enumerated=True)
        if enumerated and not isinstance(self.elbo, TraceEnum_ELBO):
            raise ValueError(
                f"the model marks {', '.join(map(repr, enumerated))} for enumeration (infer={{'enumerate': ...}}), "
                f"which objective {_objectives.describe(self.elbo)} ignores: it would sample them instead of summing "
                "them out. Use objective 'enum' (TraceEnum_ELBO), or drop the mark")
        _objectives.prepare(self.elbo, model, guide, *first)
        # pyro.plate("data", N, subsample=...): the loss estimates the whole data set's, N/batch times a batch's
        self.plate_size = subsampled_size(model, first, self.modules, self.device)
        self.params = parameters_of(self.modules, self.store_names)
        if not self.params:
            raise ValueError("model and guide have no trainable parameters (no nn.Module owner and no pyro.param)")
        owned = {id(p) for m in self.modules for p in m.parameters()}
        self.store_params = [p for p in self.params if id(p) not in owned]  # pyro.param values DDP does not see
        self.world.broadcast(self.store_params)
        self.autocast = autocast(precision, self.device)
        self.uncompile = compile_networks(self.modules, compile)
        self.weight = 1.0  # the latent sites' weight of the current step (KL annealing, beta)
        self.loss_fn = self.world.wrap(self.modules, self.shard_loss)
        self.opt = make_optimizer(optimizer, self.params, lr, weight_decay)
        self.sched = make_scheduler(lr_schedule, self.opt, epochs)

        self.n = self.source.n
        self.steps_per_epoch = self.source.steps_per_epoch
        planned = epochs * self.steps_per_epoch if self.steps_per_epoch is not None else None
        self.fast = self._fast_path(fast, precision, compile, min(planned, max_steps or planned) if planned else None)
        self.state: dict[str, Any] = {
            "epoch": 0, "step": 0, "seconds": 0.0, "history": [], "bad_epochs": 0,
            "best": None, "best_val": None, "best_epoch": 0, "ckpt_epoch": None, "base_seed": base_seed,
            # where we are inside an epoch (a budget can stop a run mid-epoch)
            "perm": None, "pos": 0, "total": 0.0, "count": 0}
        self.config = {"objective": _objectives.describe(self.elbo), "batch_size": self.batch_size, "n_train": self.n,
                       "epochs": epochs, "lr_schedule": lr_schedule if isinstance(lr_schedule, str) else None,
                       "shards": self.shards.count, "world_size": self.world.size, "precision": precision}
        self.stopped = "epochs"
        self.history = self.state["history"]  # what is reported: the epochs, and a partial one if a budget hit

    # --- checkpoint and resume -------------------------------------------------------------

    def position(self) -> float:
        """Epochs done, with the fraction of a partly done one."""
        if self.state["perm"] is None or not self.n:
            return self.state["epoch"]
        return self.state["epoch"] + self.state["pos"] / self.n

    def resume(self) -> None:
        """Continue from ``out/checkpoint.pt``: parameters, optimizer, RNGs, position. Where there is no
        checkpoint yet (a first run under a script that always resumes) it says so in one line and
        starts a new run; where there is one it says the epoch and step it continues from."""
        found = self.ckpt_path is not None and self.ckpt_path.exists()
        if self.world.all_sum([float(found)])[0] not in (0, self.world.size):
            raise CheckpointError(f"{self.ckpt_path} is seen by some processes and not by others: under torchrun on "
                                  "several machines, the run folder must be on a file system they share")
        if not found:
            _LOG.warning("resume: no checkpoint at %s; starting a new run", self.ckpt_path)
            return
        ck = load_checkpoint(self.ckpt_path, map_location="cpu")  # RNG states must stay on the CPU
        ck["config"].setdefault("shards", 1)  # written before data sources had shards
        must_match = ["objective", "batch_size", "n_train", "shards"]
        if self.config["lr_schedule"] == "cosine":  # its period is the number of epochs
            must_match.append("epochs")
        for key in must_match:
            if ck["config"].get(key) != self.config[key]:
                raise CheckpointError(
                    f"{self.ckpt_path} was made with {key}={ck['config'].get(key)!r}, this run has "
                    f"{self.config[key]!r}: resume needs the same objective, batch size, data and world_size × "
                    "accumulate (and epochs under a cosine schedule)")
        _check_shapes(self.ckpt_path, self.modules, ck["state"])
        load_state(self.modules, ck["state"])
        self.opt.load_state_dict(ck["optimizer"])
        if ck.get("objective") is not None and hasattr(self.elbo, "load_state_dict"):
            self.elbo.load_state_dict(ck["objective"])  # e.g. persistent CD's chains
        if self.sched is not None and ck["scheduler"] is not None:
            self.sched.load_state_dict(ck["scheduler"])
        torch.set_rng_state(ck["rng"]["torch"])
        self.shuffle.set_state(ck["rng"]["shuffle"])
        if self.device.type == "cuda" and ck["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ck["rng"]["cuda"], self.device)
        self.state.update({k: ck[k] for k in self.state if k in ck})
        if self.state["perm"] is not None and not self.source.resumable:
            _LOG.warning("resume: %s stopped inside epoch %d of a stream, which resumes at epoch boundaries only; "
                         "starting that epoch again", self.ckpt_path, self.state["epoch"] + 1)
            self.state.update(perm=None, pos=0, total=0.0, count=0)
        self.state["ckpt_epoch"] = self.position()
        self.history = self.state["history"]
        _LOG.warning("resume: continuing from %s at epoch %g, step %d", self.ckpt_path, self.position(),
                     self.state["step"])

    def checkpoint(self) -> None:
        """Write ``out/checkpoint.pt`` atomically (nothing without ``out``; rank 0 only)."""
        self.state["ckpt_epoch"] = self.position()
        if self.ckpt_path is None or not self.world.main:
            return
        cuda = self.device.type == "cuda"
        save_checkpoint({
            "config": self.config, **{k: self.state[k] for k in _CHECKPOINTED},
            "state": get_state(self.modules, self.store_names), "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict() if self.sched is not None else None,
            "objective": self.elbo.state_dict() if hasattr(self.elbo, "state_dict") else None,
            "rng": {"torch": torch.get_rng_state(), "shuffle": self.shuffle.get_state(),
                    "cuda": torch.cuda.get_rng_state(self.device) if cuda else None},
        }, self.ckpt_path)

    def write_metrics(self, history: list[dict], stopped: str | None = None) -> None:
        """Write ``out/metrics.json`` atomically: the config, ``history``, the best epoch and
        validation loss, and ``stopped`` (None while training). Nothing without ``out``; rank 0 only."""
        if self.out is not None and self.world.main:
            write_json({"config": self.config, "history": history, "best_epoch": self.state["best_epoch"],
                        "best_val_loss": self.state["best_val"], "stopped": stopped}, self.out / "metrics.json")

    # --- one step --------------------------------------------------------------------------

    def kl_weight(self, step: int) -> float:
        """The latent sites' weight at optimizer step ``step``: ``beta``, ramped up linearly from 0
        over the first ``kl_anneal`` epochs when ``kl_anneal > 0``."""
        if self.kl_anneal <= 0:
            return self.beta
        return self.beta * min(1.0, step / (self.kl_anneal * self.steps_per_epoch))

    def _fast_path(self, fast: bool | str, precision: str, compile, planned: int | None) -> FastLoss | None:
        """The recorded step (pyro_gen.infer.fastpath) where it can serve this run; says once why not.
        ``"auto"`` tries it on runs long enough to repay the recording (``AUTO_MIN_STEPS``)."""
        if fast not in (True, False, "auto"):
            raise ValueError(f"fast must be True, False or 'auto', got {fast!r}")
        if not fast:
            return None
        if fast == "auto" and planned is not None and planned < AUTO_MIN_STEPS:
            _LOG.info("fast path not tried: %d steps would not repay the recording; fast=True forces it", planned)
            return None
        if isinstance(self.elbo, _objectives.ContrastiveDivergence):  # nothing to record: say so quietly
            _LOG.info("fast path not tried: %s", unsupported(self.elbo))
            return None
        stateful = [type(m).__name__ for m in self.modules if getattr(m, "fast_path", True) is False]
        reason = (None if supports(self.elbo) else unsupported(self.elbo)) or \
            (f"{stateful[0]} updates its own state while training (its fast_path = False)" if stateful else None) or \
            (f"precision {precision!r} (it records full precision)" if precision != "32" else None) or \
            ("compile=True compiles the networks instead" if compile else None)
        if reason is not None:
            _LOG.warning("fast path off: %s; training on the standard path", reason)
            return None
        return FastLoss(self.elbo, self.model, self.guide, self.params, self.standard_loss, must_pay=fast == "auto")

    def shard_loss(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The objective's loss summed over ``batch``, latent sites weighted by ``self.weight``, in the run's
        precision (what DDP's forward computes): replayed by the fast path where it serves the run."""
        if self.fast is not None:
            return self.fast(batch, self.weight, self.state["step"] + 1)
        return self.standard_loss(batch, self.weight)

    def standard_loss(self, batch: tuple[torch.Tensor, ...], weight: float) -> torch.Tensor:
        """The loss through Pyro's handlers and the objective's ``differentiable_loss``."""
        with _latent_weight(weight), self.autocast():
            loss = self.loss(batch)
        return loss.float() if loss.dtype in (torch.bfloat16, torch.float16) else loss

    def loss(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The objective's loss on ``batch``: particles vectorized where the model broadcasts."""
        if self.sequential is None:
            return self.elbo.differentiable_loss(self.model, self.guide, *batch)
        return with_particles(self.model, self.elbo.num_particles, "fit",
                              lambda: self.elbo.differentiable_loss(self.model, self.guide, *batch),
                              lambda: self.sequential.differentiable_loss(self.model, self.guide, *batch))

    def step(self, shards: list[tuple[torch.Tensor, ...]], points: int, epoch: int) -> float:
        """One optimizer step on this process's ``shards`` of a global batch of ``points`` points; returns the
        loss per point of the whole batch. A NaN or inf loss stops the run before any update."""
        self.weight = self.kl_weight(self.state["step"])
        self.opt.zero_grad(set_to_none=True)
        value = 0.0
        for m, batch in enumerate(shards):
            if self.keyed:
                torch.manual_seed(shard_key(self.state["base_seed"], self.state["step"], self.shards.mine[m]))
            last = m == len(shards) - 1
            with contextlib.nullcontext() if last else no_sync(self.loss_fn):
                loss = self.loss_fn(batch) / points  # this shard's part of the loss per point
                if self.plate_size is not None:  # its local terms weigh N/len(batch): back to the batch's own
                    loss = loss * (len(batch[0]) / self.plate_size)
                part = self.world.all_sum([loss.item()])[0]  # every process sees the same number
                if not math.isfinite(part):
                    self._stop_on(part, epoch)
                # DDP averages gradients over processes; the loss per point is their sum
                (loss * self.world.size if self.world.size > 1 else loss).backward()
            value += part
        self.world.average_grads(self.store_params)
        if self.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip_norm)
        self.opt.step()
        return value

    def _stop_on(self, value: float, epoch: int) -> None:
        where = (f"last good checkpoint: {self.ckpt_path} (epoch {self.state['ckpt_epoch']:g})"
                 if self.state["ckpt_epoch"] is not None else "no checkpoint was written")
        raise NonFiniteLossError(
            f"loss became {value} at epoch {epoch}, step {self.state['step'] + 1} "
            f"(objective {self.config['objective']}); training stopped, {where}. Try a lower lr, "
            "clip_norm, or check the data and the model's scales.")

    # --- one epoch under a budget ----------------------------------------------------------

    def budget_spent(self, elapsed: float) -> str | None:
        """The budget that is used up, ``"max_steps"`` or ``"max_seconds"``, or None.

        Args:
            elapsed: seconds spent in the current epoch so far, on top of ``state["seconds"]``.
                Under several processes, one process out of time stops them all.
        """
        if self.max_steps is not None and self.state["step"] >= self.max_steps:
            return "max_steps"
        if self.max_seconds is not None:  # clocks differ between processes: stop when any one is out of time
            late = self.state["seconds"] + elapsed >= self.max_seconds
            if self.world.all_sum([float(late)])[0] > 0:
                return "max_seconds"
        return None

    def train_epoch(self, epoch: int, bar) -> str | None:
        """Steps through the rest of epoch ``epoch``; returns the budget that stopped it, if one did."""
        t0 = time.perf_counter()
        state, budget_hit = self.state, None
        if state["perm"] is None:
            perm = self.source.order(self.shuffle)
            self.world.broadcast([perm])  # a user sampler's order may come from a process's own RNG: rank 0's
            state.update(perm=perm, pos=0, total=0.0, count=0)
        key = lambda b, j: shard_key(state["base_seed"], epoch, b, j)  # noqa: E731 (a data fetch's seed)
        batches = self.source.batches(state["perm"], state["pos"], key)
        while True:
            shards, points = next(batches, (None, 0))
            if shards is None:  # the epoch is done (before any budget: a budget spent on its last step ends it whole)
                break
            budget_hit = self.budget_spent(time.perf_counter() - t0)
            if budget_hit:
                break
            if shards:  # (a last batch too small to give every shard a point is skipped)
                value = self.step(shards, points, epoch)
                state["step"] += 1
                state["total"] += value * points
                state["count"] += points
                bar.update(1)
            state["pos"] += points
            if state["step"] % 20 == 0:
                bar.set_postfix(epoch=epoch, loss=f"{state['total'] / max(state['count'], 1):.3f}", refresh=False)
        state["seconds"] += time.perf_counter() - t0
        return budget_hit

    # --- validation, the best state, early stopping ----------------------------------------

    def epoch_row(self, epoch: int) -> dict:
        """The history row of epoch ``epoch`` so far: ``epoch``, ``step``, ``train_loss`` (per data
        point), ``lr``, ``kl_weight``, ``seconds``, and ``val_loss`` when there are validation data
        (computed here)."""
        state = self.state
        row = {"epoch": epoch, "step": state["step"], "train_loss": state["total"] / max(state["count"], 1),
               "lr": self.opt.param_groups[0]["lr"], "kl_weight": self.kl_weight(state["step"]),
               "seconds": state["seconds"]}
        if self.val is not None:
            row["val_loss"] = validation_loss(self.elbo, self.model, self.guide, self.val, self.val_batch_size,
                                              self.beta, self.modules, self.world,
                                              self.state["base_seed"] if self.keyed else None, epoch, self.plate_size)
        return row

    def patience_spent(self) -> bool:
        """Whether early stopping applies: ``patience`` epochs in a row without a better validation loss."""
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
        wants_stop = callback is not None and callback(row) is False
        if self.world.all_sum([float(wants_stop)])[0] > 0:  # any process's callback stops them all
            self.stopped = "callback"
        if epoch % self.checkpoint_every == 0 or self.stopped != "epochs" or epoch == self.epochs:
            self.checkpoint()
        self.write_metrics(state["history"])

    # --- the result ------------------------------------------------------------------------

    def result(self, restore_best: bool) -> FitResult:
        """Finish the run: write the final metrics, undo compilation, and return the :class:`FitResult`.

        Args:
            restore_best: load the best validation state into the modules (when there are
                validation data and a best state was kept).
        """
        state = self.state
        self.write_metrics(self.history, self.stopped)
        best_state = state["best"] if state["best"] is not None else get_state(self.modules, self.store_names)
        self.uncompile()
        result = FitResult(self.history, best_state, state["best_epoch"], state["best_val"], self.stopped,
                           state["step"], state["seconds"], self.out, self.modules)
        if restore_best and self.val is not None and state["best"] is not None:
            result.restore_best()
        return result


@torch.no_grad()
def validation_loss(elbo, model, guide, data, batch_size, beta, modules, world=None, keyed_seed: int | None = None,
                    epoch: int = 0, plate_size: int | None = None) -> float:
    """The objective's loss per data point on held-out data, modules in eval mode.

    Under several processes, chunk ``j`` goes to process ``j mod world_size`` and the sums are added
    up; with ``keyed_seed`` each chunk draws from its own seed (seed, epoch, chunk), so the number
    does not depend on how many processes share the work. ``plate_size``: the N of a subsampled
    data plate, whose N/chunk weight is taken out again.
    """
    for m in modules:
        m.eval()
    rank, size = (world.rank, world.size) if world is not None else (0, 1)
    total, n = 0.0, len(data[0])
    with pyro.validation_enabled(False), _latent_weight(beta):
        for j, i in enumerate(range(0, n, batch_size)):
            if j % size != rank:
                continue
            if keyed_seed is not None:
                torch.manual_seed(shard_key(keyed_seed, epoch, _VAL, j))
            batch = tuple(t[i:i + batch_size] for t in data)
            loss = elbo.differentiable_loss(model, guide, *batch).item()
            total += loss * len(batch[0]) / plate_size if plate_size is not None else loss
    for m in modules:
        m.train()
    if world is not None:
        total = world.all_sum([total])[0]
    return total / n


def _latent_weight(weight: float):
    """The latent sites' log densities weighted by ``weight`` (nothing to do at 1)."""
    return _objectives.LatentScale(weight) if weight != 1.0 else contextlib.nullcontext()


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
