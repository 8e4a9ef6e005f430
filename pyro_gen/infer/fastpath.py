"""Record once, replay: a training step without Pyro's handler stack, for models of static structure.

Where compute is small (small networks, small batches, any small model on a GPU), a step of
``fit`` is dominated by Python: Pyro's handlers and traces and ``torch.distributions`` objects
run for every site at every step, although for most models they do the same thing every time.
:class:`FastLoss` runs them once and records the tensor operations they issue as one
``torch.fx`` graph (torch's ``make_fx``, pre-dispatch, so that ``detach`` and ``no_grad`` keep
their meaning for autograd). Later steps run that graph: the same operations, the same random
draws in the same order, the same parameters (held by reference), so the loss and its gradients
equal the standard path's to float tolerance (only the order of a few sums differs).

What is checked, not assumed:

- **Structure.** The sample sites (name, distribution type, shape, observed or not), their plates
  and the parameter sites are recorded with the graph. A standard step is run at steps 2, 16, 128,
  1024, then every 4096 steps, and its structure must equal the recording; a difference (dynamic
  structure) turns the fast path off for the rest of the run, with one log line naming the site.
- **Control flow on values.** A branch on a tensor's value while recording (``if z.sum() > 0``,
  ``int(lengths.max())``, Pyro's own ``if not mask.all()`` in enumeration) becomes a guard in the
  graph: the replay checks that it reads the same value, and where it does not, the standard path
  serves that step. A guard that fails at more than 5% of the steps turns the fast path off.
- **The first step.** The recorded graph is replayed beside the standard path on the first batch,
  from the same random state; loss and gradients must agree, or the standard path serves the run
  (a custom ``autograd.Function`` whose backward is not its forward's derivative, for instance).
- **What keys a recording.** The shapes, dtypes and devices of the batch, whether the latent
  weight (beta, KL annealing) is 1 (otherwise it is an input of the graph), the modules' training
  flags and the grad mode; a new key records again (a last, smaller batch gets its own graph).

When: ``fit(fast="auto")``, the default, records on runs of at least 1000 planned steps (a
recording costs about as much as 10 to 200 standard steps, by the size of the model) and keeps
the replay unless its first step, gradients included, is clearly slower than the standard one
(by more than a quarter: one step's timing on a shared machine varies by tens of percent);
``fast=True`` records on any run, ``fast=False`` never.

What the fast path cannot see: Python state other than the above that changes the tensor
operations between two structure checks (a counter, the time, a flag set by a callback). Such a
model trains with ``fast=False``.

Objectives served: ``trace`` (score-function sites included), ``meanfield``, ``iwae``/``renyi``,
``dreg``, ``rws``, ``enum``, ``betatc`` and ``dipvae``. Others (``graph``, whose baselines keep running averages in
Python; ``capacity`` and ``factorvae``, whose step count and discriminator live in Python; and
user-written ELBOs) use the standard path. So do Pyro's validation checks
(``validate=True``), reduced precision and ``compile``.

Written here because torch and Pyro lack it: the per-objective losses without the value reads
(``.item()``, NaN warnings) that Pyro's ``differentiable_loss`` makes, value guards, the graph
clean-up (fold constants, drop no-op views, remove dead code but never a random draw or a guard),
and the structure checks. ``make_fx`` (torch) does the recording; Pyro's own traces, enumeration
and ELBO internals compute the terms.
"""

from __future__ import annotations

import contextlib
import logging
import operator
import time
from typing import Callable, Sequence

import pyro
import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO
from pyro.infer.trace_elbo import _compute_log_r
from pyro.infer.traceenum_elbo import _compute_dice_elbo
from pyro.infer.util import is_identically_zero, is_validation_enabled
from pyro.poutine.messenger import Messenger
from torch.distributions import kl_divergence
from torch.fx.experimental.proxy_tensor import disable_proxy_modes_tracing, make_fx
from torch.overrides import TorchFunctionMode

from .objectives import BetaTC_ELBO, DIPVAE_ELBO, LatentScale, RenyiBound, RWS_ELBO
from .params import modules_of

__all__ = ["FastLoss", "structure", "supports", "unsupported", "AUTO_MIN_STEPS"]

_LOG = logging.getLogger("pyro_gen")
_aten = torch.ops.aten
_CHECK_CAP = 4096  # structure checks at steps 2, 16, 128, 1024, then every this many steps
_MAX_GRAPHS = 4  # recordings per run (batch shapes, weighted or not, ...) before the fast path gives up
#: ``fit(fast="auto")`` records the fast path only on runs planned to take at least this many steps.
AUTO_MIN_STEPS = 1000
_SLOWER = 1.25  # fast="auto" gives up on a first replay slower than this many standard steps


# --- the objectives' losses, without value reads ----------------------------------------


def _trace_loss(elbo, model, guide, args, kwargs):
    """Trace_ELBO's and TraceMeanField_ELBO's differentiable loss, term for term, without the
    ``.item()`` reads and NaN check of Pyro's own (a read would be a guard that fails at every step)."""
    loss = 0.0
    particle = _meanfield_particle if isinstance(elbo, TraceMeanField_ELBO) else _trace_particle
    for model_trace, guide_trace in elbo._get_traces(model, guide, args, kwargs):
        loss = loss + particle(model_trace, guide_trace) / elbo.num_particles
    return loss


def _trace_particle(model_trace, guide_trace) -> torch.Tensor:
    """-ELBO of one particle, with the score-function surrogate (Rao-Blackwellized by Pyro's
    ``_compute_log_r``) for guide sites that are not reparameterized."""
    log_p, log_q = model_trace.log_prob_sum(), guide_trace.log_prob_sum()  # (memoized; no reads, validation off)
    surrogate, log_r = log_p, None
    for site in _samples(guide_trace):
        parts = site["score_parts"]
        if not is_identically_zero(parts.entropy_term):
            surrogate = surrogate - parts.entropy_term.sum()
        if not is_identically_zero(parts.score_function):
            log_r = log_r if log_r is not None else _compute_log_r(model_trace, guide_trace)
            surrogate = surrogate + (log_r.sum_to(site["cond_indep_stack"]) * parts.score_function).sum()
    if log_r is None:  # every guide site reparameterized: the surrogate is the ELBO
        return -surrogate
    return -(surrogate + ((log_p - log_q) - surrogate).detach())  # the ELBO's value, the surrogate's gradient


def _meanfield_particle(model_trace, guide_trace) -> torch.Tensor:
    """-ELBO of one particle with KL(q || p) in closed form wherever torch has it."""
    elbo = 0.0
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample":
            continue
        if site["is_observed"]:
            elbo = elbo + site["log_prob_sum"]
            continue
        q = guide_trace.nodes[name]
        try:
            kl = scale_and_mask(kl_divergence(q["fn"], site["fn"]), scale=q["scale"], mask=q["mask"])
        except NotImplementedError:
            elbo = elbo + site["log_prob_sum"] - q["score_parts"].entropy_term.sum()
            continue
        elbo = elbo - (kl.sum() if torch.is_tensor(kl) else kl * q["fn"].batch_shape.numel())
    for name, q in guide_trace.nodes.items():  # auxiliary guide sites
        if q["type"] == "sample" and name not in model_trace.nodes:
            elbo = elbo - q["score_parts"].entropy_term.sum()
    return -elbo


def _samples(trace):
    return (site for site in trace.nodes.values() if site["type"] == "sample")


def _enum_loss(elbo, model, guide, args, kwargs):
    """TraceEnum_ELBO's differentiable loss without its NaN check."""
    total = 0.0
    for model_trace, guide_trace in elbo._get_traces(model, guide, args, kwargs):
        total = total + _compute_dice_elbo(model_trace, guide_trace)
    return -total / elbo.num_particles


def _own_loss(elbo, model, guide, args, kwargs):
    """pyro_gen's own objectives make no value reads: their ``differentiable_loss`` as it is."""
    return elbo.differentiable_loss(model, guide, *args, **kwargs)


def _loss_of(elbo) -> Callable | None:
    if isinstance(elbo, (RenyiBound, RWS_ELBO, BetaTC_ELBO, DIPVAE_ELBO)):  # DReG_ELBO is a RenyiBound
        return _own_loss
    if isinstance(elbo, TraceEnum_ELBO):
        return _enum_loss
    if type(elbo) in (Trace_ELBO, TraceMeanField_ELBO):  # subclasses may change the estimator
        return _trace_loss
    return None


def supports(elbo) -> bool:
    """Whether the fast path can serve this objective."""
    return _loss_of(elbo) is not None


def unsupported(elbo) -> str:
    """Why the fast path does not serve this objective."""
    why = {"GraphELBO": "its baselines keep running averages in Python",
           "CapacityELBO": "its target capacity is a step count kept in Python",
           "FactorVAE_ELBO": "its discriminator takes an optimizer step of its own inside the loss",
           "ContrastiveDivergence": "its Gibbs chains are drawn in Python between the recorded passes"}
    return (f"it serves trace, meanfield, iwae, renyi, dreg, rws, enum, betatc and dipvae, not {type(elbo).__name__} ("
            f"{why.get(type(elbo).__name__, 'an objective of your own may read values')})")


# --- structure: what is recorded and checked -------------------------------------------


def _describe(fn) -> str:
    """A distribution's type, with what it wraps (``Independent(Normal)``)."""
    inner = getattr(fn, "base_dist", None)
    return type(fn).__name__ + (f"({_describe(inner)})" if inner is not None else "")


class _Structure(Messenger):
    """Records every sample and param site that passes: name, type, distribution, shape, plates."""

    def __init__(self):
        super().__init__()
        self.sites: list[tuple] = []

    def _pyro_post_sample(self, msg):
        value = msg["value"]
        self.sites.append((
            "sample", msg["name"], _describe(msg["fn"]), bool(msg["is_observed"]),
            tuple(value.shape) if torch.is_tensor(value) else None,
            tuple((f.name, f.dim, f.size) for f in msg["cond_indep_stack"]),
            msg["infer"].get("enumerate")))

    def _pyro_post_param(self, msg):
        self.sites.append(("param", msg["name"]))


def structure(fn: Callable, *args, **kwargs) -> tuple[object, list[tuple]]:
    """``fn(*args, **kwargs)`` and the sites it ran through (see :class:`FastLoss`)."""
    with _Structure() as rec:
        out = fn(*args, **kwargs)
    return out, rec.sites


def _difference(recorded: list[tuple], seen: list[tuple]) -> str:
    for a, b in zip(recorded, seen):
        if a != b:
            return f"site {a[1]!r} was {a[2:] if a[0] == 'sample' else 'a param'} when recorded, now {b[1]!r} {b[2:]}"
    longer, what = (recorded, "no longer runs") if len(recorded) > len(seen) else (seen, "is new")
    return f"site {longer[min(len(recorded), len(seen))][1]!r} {what}"


# --- the recorded graph, cleaned up -------------------------------------------------------

# Operations whose result depends only on their arguments' shapes, dtypes and devices.
_FACTORIES = {_aten.new_zeros.default, _aten.new_ones.default, _aten.new_full.default, _aten.zeros.default,
              _aten.ones.default, _aten.full.default, _aten.scalar_tensor.default}
# x + 0, x - 0, x * 1, x / 1: x (where the result has x's shape and dtype)
_IDENTITY = {_aten.add.Tensor: 0, _aten.sub.Tensor: 0, _aten.mul.Tensor: 1, _aten.div.Tensor: 1}
_NO_OPS = {_aten.expand.default, _aten.view.default, _aten._unsafe_view.default, _aten.alias.default,
           _aten.reshape.default}


def _meta(node) -> torch.Tensor | None:
    val = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    return val if isinstance(val, torch.Tensor) else None


def _same_layout(a, b) -> bool:
    ma, mb = _meta(a), _meta(b)
    return ma is not None and mb is not None and ma.shape == mb.shape and ma.dtype == mb.dtype


def _mutates(node) -> bool:
    schema = getattr(node.target, "_schema", None)
    return schema is not None and schema.is_mutable


def _random(node) -> bool:
    return torch.Tag.nondeterministic_seeded in getattr(node.target, "tags", ())


def _pure(node) -> bool:
    """An aten operation without side effects: no mutation, no random draw (grad-mode switches and
    other Python calls that pre-dispatch recording keeps are never touched)."""
    return (node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload)
            and not _mutates(node) and not _random(node) and len(node.target._schema.returns) > 0)


def _simplify(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Fold constants, drop operations that return their input, remove dead code.

    Recording is pre-dispatch (above autograd), so ``detach`` and ``no_grad`` blocks stay in the
    graph as they are. Constants are tensors made while recording (``torch.tensor(0.)``,
    ``x.new_zeros(d)``) and what deterministic operations compute from them alone (a prior's
    ``Normal(0, 1)`` log-density terms); tensors captured from outside (parameters, buffers) are
    never folded, since they change between steps. Random draws and guards are kept even when
    unused, so that the replay spends random numbers and checks values as the standard path does.
    """
    graph = gm.graph
    folded: dict[torch.fx.Node, object] = {}

    def fold(node, value) -> None:
        if isinstance(value, torch.Tensor):
            name = f"_folded{len(folded)}"
            gm.register_buffer(name, value, persistent=False)
            with graph.inserting_before(node):
                const = graph.get_attr(name)
            const.meta = dict(node.meta)
            node.replace_all_uses_with(const)
            folded[const] = value
        folded[node] = value  # (a list of tensors stays a node; its items fold)

    for node in list(graph.nodes):
        inputs = node.all_input_nodes
        if node.target is _aten.lift_fresh_copy.default and all(
                u.target is _aten.detach_.default or not _mutates(u) for u in node.users):
            fold(node, getattr(gm, node.args[0].target))
        elif node.target is _aten.detach_.default and node.args[0] in folded:  # a constant needs no detaching
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
        elif node.target is operator.getitem and inputs and inputs[0] in folded:
            fold(node, folded[inputs[0]][node.args[1]])
        elif _pure(node) and not any(_mutates(u) for u in node.users) and (
                node.target in _FACTORIES or (inputs and all(a in folded for a in inputs))):
            args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), lambda a: folded.get(a, _meta(a)))
            if node.target in _FACTORIES and node.target.__name__.startswith("new_"):  # only dtype and device count
                like = args[0]
                args = (torch.empty((), dtype=like.dtype, device=like.device), *args[1:])
            with torch.no_grad():
                fold(node, node.target(*args, **kwargs))
    for node in list(graph.nodes):
        if node.target is operator.getitem and node.args[0].target is _aten.broadcast_tensors.default:
            source = node.args[0].args[0][node.args[1]]  # broadcast_tensors([a, b])[i] is b where shapes agree
            if _same_layout(source, node):
                node.replace_all_uses_with(source)
            continue
        if not _pure(node) or any(_mutates(u) for u in node.users):
            continue
        arg = node.args[0] if node.args else None
        if node.target in _NO_OPS and _same_layout(arg, node):
            node.replace_all_uses_with(arg)
        elif node.target in _IDENTITY and len(node.args) == 2 and not node.kwargs and _same_layout(arg, node):
            other = folded.get(node.args[1], node.args[1])  # a number, or a constant tensor such as log(1)
            unit = _IDENTITY[node.target]
            if (isinstance(other, (int, float)) and other == unit) or (
                    isinstance(other, torch.Tensor) and other.dtype == _meta(node).dtype and bool((other == unit).all())):
                node.replace_all_uses_with(arg)
    changed = True
    while changed:  # dead code, but never a random draw, a mutation or a guard
        changed = False
        for node in reversed(list(graph.nodes)):
            if not node.users and (node.op == "get_attr" or node.target is operator.getitem or _pure(node)):
                graph.erase_node(node)
                changed = True
    graph.lint()
    gm.recompile()
    return gm


# --- the fast loss ---------------------------------------------------------------------------


class _Unservable(Exception):
    """The fast path cannot serve this model/objective (the message says why)."""


class _GuardFailed(Exception):
    """A value read while recording came out otherwise in a replay."""


_GUARD = "pyro_gen fast path: a value read while recording differs in this step"
_READS = {torch.Tensor.__bool__, torch.Tensor.item, torch.Tensor.__int__, torch.Tensor.__float__,
          torch.Tensor.__index__}


class _Reads(TorchFunctionMode):
    """While recording: a value read from a tensor (``if t:``, ``t.item()``, ``int(t)``) gets the real
    value, and the recording gets a guard in its place: an assertion that the replay reads the same
    value. A replay whose guard fails is served by the standard path instead."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func not in _READS:
            return func(*args, **(kwargs or {}))
        tensor = args[0]
        with disable_proxy_modes_tracing():
            value = func(tensor)
        same = ((tensor != 0) if value else (tensor == 0)) if func is torch.Tensor.__bool__ else tensor == value
        torch.ops.aten._assert_async.msg(same.all(), _GUARD)
        self.count += 1
        return value


class FastLoss:
    """The objective's loss for ``fit``'s step, from a recorded graph where the structure is static.

    Args:
        elbo: an objective it serves (see :func:`supports`).
        model, guide: the Pyro programs.
        params: the trained tensors (for the first step's gradient check).
        standard: ``standard(batch, weight)``, the standard path's loss (the reference).
        must_pay: turn off when the first replay (loss and gradients) is clearly slower than the
            standard step it is checked against.

    Calling it with ``(batch, weight)`` gives the loss tensor; where the fast path cannot serve
    the call it returns the standard path's loss, and says why once.
    """

    def __init__(self, elbo, model: Callable, guide: Callable, params: Sequence[torch.Tensor],
                 standard: Callable[[tuple, float], torch.Tensor], must_pay: bool = False):
        self.elbo, self.model, self.guide = elbo, model, guide
        self.params, self.standard, self.must_pay = list(params), standard, must_pay
        self.modules = modules_of(model, guide)  # their training flags key a recording
        self.loss_of = _loss_of(elbo)
        if self.loss_of is None:
            raise ValueError(f"the fast path does not serve objective {type(elbo).__name__}: {unsupported(elbo)}")
        self.graphs: dict[tuple, _Recording] = {}
        self.off: str | None = None  # why the fast path is off, once it is
        self.calls = 0
        self.checks = True  # structure checks at steps 2, 16, 128, 1024, then every 4096 (off: only for timing)
        self.replays = 0  # steps served by a recorded graph (for tests and reports)
        self.guard_failures = 0

    def _turn_off(self, reason: str) -> None:
        self.off = reason
        self.graphs.clear()
        _LOG.warning("fast path off: %s; training on the standard path (the same estimator, slower)", reason)

    def __call__(self, batch: tuple, weight: float, step: int | None = None) -> torch.Tensor:
        """The loss of ``batch`` at latent weight ``weight``; ``step``: the run's step number (from 1), which
        places the structure checks (a resumed run checks at the same steps as an uninterrupted one)."""
        if self.off is not None or is_validation_enabled():  # validation checks read values
            return self.standard(batch, weight)
        self.calls += 1
        key = self._key(batch, weight)
        if key not in self.graphs:
            if len(self.graphs) >= _MAX_GRAPHS:
                self._turn_off(f"the batches come in more than {_MAX_GRAPHS} shapes, each needing its own recording")
                return self.standard(batch, weight)
            try:
                return self._record(key, batch, weight)
            except _Unservable as e:
                self._turn_off(str(e))
                return self.standard(batch, weight)
        recording = self.graphs[key]
        if self.checks and _check_at(step if step is not None else self.calls):
            loss, seen = structure(self.standard, batch, weight)
            if seen != recording.sites:
                self._turn_off("the model's structure changed between steps ("
                               + _difference(recording.sites, seen) + ")")
            return loss
        try:
            loss = recording(batch, weight)
        except _GuardFailed:
            self.guard_failures += 1
            if self.guard_failures >= 3 and self.guard_failures > 0.05 * self.calls:
                self._turn_off(f"a value read while recording (a branch on a sampled or data value) came out "
                               f"otherwise at {self.guard_failures} of {self.calls} steps")
            return self.standard(batch, weight)
        self.replays += 1
        return loss

    def _key(self, batch: tuple, weight: float) -> tuple:
        shapes = tuple((tuple(t.shape), t.dtype, t.device) if torch.is_tensor(t) else ("value", t) for t in batch)
        training = tuple(m.training for m in self.modules)
        return shapes, weight == 1.0, training, torch.is_grad_enabled()

    def _traced(self, weighted: bool, rec: _Structure, reads: _Reads):
        """The function make_fx records: the objective's loss, with the latent weight as an input."""
        def loss(*inputs):
            batch, weight = (inputs[:-1], inputs[-1]) if weighted else (inputs, None)
            with rec, reads, LatentScale(weight) if weighted else contextlib.nullcontext():
                return self.loss_of(self.elbo, self.model, self.guide, batch, {})
        return loss

    def _record(self, key: tuple, batch: tuple, weight: float) -> torch.Tensor:
        if not all(torch.is_tensor(t) for t in batch):
            raise _Unservable("a batch holds values other than tensors")
        weighted = weight != 1.0
        inputs = (*batch, torch.tensor(float(weight))) if weighted else batch
        cuda = _cuda_devices(batch)
        state = _get_rng(cuda)
        rec, reads = _Structure(), _Reads()
        try:  # recording runs the step on the real tensors, spending random numbers: given back below
            graph = make_fx(self._traced(weighted, rec, reads), tracing_mode="real", pre_dispatch=True)(*inputs)
        except Exception as e:  # noqa: BLE001 (any failure to record means: serve it the standard way)
            raise _Unservable(f"recording the step failed ({_first_line(e)}); a model or guide that reads "
                              "values other than by branching on them (.tolist(), numpy()) cannot be replayed") from None
        finally:
            _set_rng(state, cuda)
        if reads.count and cuda:
            raise _Unservable("the step branches on tensor values, which on the GPU cannot be checked without a sync")
        self.graphs[key] = _Recording(_simplify(graph), rec.sites, weighted, reads.count)
        return self._verify(key, batch, weight, state, cuda)

    def _verify(self, key: tuple, batch: tuple, weight: float, state: tuple, cuda: list) -> torch.Tensor:
        """The first replay of a recording, checked against the standard path from the same random state."""
        params = [p for p in self.params if p.requires_grad]
        clock = time.perf_counter()
        want = self.standard(batch, weight)
        grad = torch.is_grad_enabled() and want.requires_grad
        want_grads = torch.autograd.grad(want, params, allow_unused=True, retain_graph=True) if grad else None
        standard_time = time.perf_counter() - clock
        after = _get_rng(cuda)
        _set_rng(state, cuda)
        try:
            clock = time.perf_counter()
            got = self.graphs[key](batch, weight)
            got_grads = torch.autograd.grad(got, params, allow_unused=True, retain_graph=True) if grad else None
            replay_time = time.perf_counter() - clock
            problem = _disagree("loss", want.detach(), got.detach())
            if problem is None and grad:
                problem = next(filter(None, map(_disagree_grads, want_grads, got_grads)), None)
        except Exception as e:  # noqa: BLE001 (e.g. a custom autograd.Function: recorded, its backward is lost)
            problem = f"replaying it failed: {_first_line(e)}"
        reason = f"the recorded step does not reproduce the standard one ({problem})" if problem else None
        if reason is None and self.must_pay and replay_time > _SLOWER * standard_time:
            reason = (f"replaying the step is slower than the standard step for this model "
                      f"({1e3 * replay_time:.3g} ms against {1e3 * standard_time:.3g} ms)")
        if reason is not None:  # the standard step stands, as if the fast path had never been tried
            self._turn_off(reason)
            _set_rng(after, cuda)
            return want
        self.replays += 1
        return got


class _Recording:
    """One recorded graph, the structure it was recorded with, and how to call it."""

    def __init__(self, graph: torch.fx.GraphModule, sites: list[tuple], weighted: bool, guards: int):
        self.graph, self.sites, self.weighted, self.guards = graph, sites, weighted, guards

    def __call__(self, batch: tuple, weight: float) -> torch.Tensor:
        inputs = (*batch, torch.tensor(float(weight))) if self.weighted else batch
        if not self.guards:
            return self.graph.forward(*inputs)
        cuda = _cuda_devices(batch)
        state = _get_rng(cuda)
        try:
            return self.graph.forward(*inputs)
        except RuntimeError as e:
            if _GUARD not in str(e):
                raise
            _set_rng(state, cuda)  # the standard path takes this step from where it began
            raise _GuardFailed from None


def _check_at(step: int) -> bool:
    return step in (2, 16, 128, 1024) or step % _CHECK_CAP == 0


def _cuda_devices(batch: tuple) -> list[torch.device]:
    return sorted({t.device for t in batch if torch.is_tensor(t) and t.device.type == "cuda"}, key=str)


def _get_rng(cuda: list) -> tuple:
    return torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in cuda]


def _set_rng(state: tuple, cuda: list) -> None:
    torch.set_rng_state(state[0])
    for device, saved in zip(cuda, state[1]):
        torch.cuda.set_rng_state(saved, device)


def _disagree(what: str, want: torch.Tensor, got: torch.Tensor) -> str | None:
    if want.shape != got.shape:
        return f"{what} shape {tuple(got.shape)} instead of {tuple(want.shape)}"
    tol = 1e-4 if want.dtype in (torch.float32, torch.float64) else 1e-2
    if not torch.allclose(got, want, rtol=tol, atol=tol * max(1.0, float(want.abs().max()))):
        return f"{what} differs by up to {float((got - want).abs().max()):.3g}"
    return None


def _disagree_grads(want: torch.Tensor | None, got: torch.Tensor | None) -> str | None:
    if (want is None) != (got is None):
        return "a parameter has a gradient on one path only"
    return None if want is None else _disagree("gradient", want, got)


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160]}" if text else type(e).__name__
