"""Which tensors a model/guide pair trains, and their state: nn.Module owners and Pyro's param store.

A ``PyroModule``'s bound methods bring their module's parameters; plain functions bring
the ``pyro.param`` sites they create. Both go into one optimizer and one state dict.
"""

from __future__ import annotations

import copy
from typing import Callable, Sequence

import pyro
import torch

from .objectives import marked_for_enumeration

__all__ = ["modules_of", "parameters_of", "param_store_names", "get_state", "load_state", "rename_on_load"]


def modules_of(*fns: Callable) -> list[torch.nn.Module]:
    """The distinct ``nn.Module`` owners of bound methods (or modules) among ``fns``."""
    found: list[torch.nn.Module] = []
    for fn in fns:
        owner = getattr(fn, "__self__", fn)
        if isinstance(owner, torch.nn.Module) and not any(owner is m for m in found):
            found.append(owner)
    return found


def param_store_names(model: Callable, guide: Callable, args: tuple, modules: Sequence[torch.nn.Module] = (),
                      enumerated: bool = False):
    """Names of the ``pyro.param`` sites of guide and model that live in Pyro's param store and
    are not parameters of ``modules`` (which train as the modules' own).

    Under ``module_local_params=False`` a PyroModule registers its networks in the global store
    (``pyro.module``); a store that still holds another instance's tensors under the same names
    must not add them to this run's optimizer or checkpoint, so module-owned sites are skipped.
    With ``enumerated``, also returns the model's sample sites marked for enumeration that the
    guide does not sample (seen in the same pass, which costs no extra random numbers).
    """
    owned = {id(p) for m in modules for p in m.parameters()}
    with pyro.poutine.block(), torch.no_grad():
        names, traces = [], []
        for fn in (guide, model):
            traces.append(pyro.poutine.trace(fn).get_trace(*args))
            for name, site in traces[-1].nodes.items():
                init = site["args"][1] if site["type"] == "param" and len(site["args"]) > 1 else None
                if site["type"] != "param" or name in names or (init is not None and id(init) in owned):
                    continue
                names.append(name)
    # A PyroModule's own nn.Parameters (an AutoGuide's loc, say) show up as param sites too, but
    # under module_local_params they live in the module, which parameters_of already covers.
    store = pyro.get_param_store()
    names = [n for n in names if n in store]
    if not enumerated:
        return names
    return names, marked_for_enumeration(traces[1], traces[0])


def subsampled_size(model: Callable, args: tuple, modules: Sequence[torch.nn.Module] = (),
                    device: torch.device | None = None) -> int | None:
    """The full size N of the model's data plate where it follows Pyro's minibatch convention,
    ``pyro.plate("data", N, subsample=...)`` with one subsample entry per row of the batch (its
    terms then weigh N/batch, an unbiased estimate of the whole data set's); None otherwise.

    Read from one pass of the model on the batch's first row (where a plain data plate has size 1,
    whatever N is), with the modules in eval mode (no BatchNorm statistics move) and the random
    state forked (the run draws the same numbers as without it).
    """
    from pyro.poutine.util import site_is_subsample

    one = tuple(t[:1] for t in args)
    was = [m.training for m in modules]
    devices = [device] if device is not None and device.type == "cuda" else []
    try:
        for m in modules:
            m.eval()
        with pyro.poutine.block(), torch.no_grad(), torch.random.fork_rng(devices=devices):
            trace = pyro.poutine.trace(model).get_trace(*one)
    except Exception:  # a model that cannot score one row alone (or without its guide): no plate read
        return None
    finally:
        for m, w in zip(modules, was):
            m.train(w)
    for site in trace.nodes.values():
        if site["type"] == "sample" and site_is_subsample(site):
            size, batch = site["fn"].size, len(site["value"])  # the subsample's indices
            if batch == 1 and size != 1:
                return int(size)
    return None


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


def get_state(modules: Sequence[torch.nn.Module], store_names: Sequence[str]) -> dict:
    """A copy of the trained state: ``{"modules": [state_dict, ...], "param_store": {name: tensor}}``."""
    store = dict(pyro.get_param_store().named_parameters())
    return {
        "modules": [copy.deepcopy(m.state_dict()) for m in modules],
        "param_store": {n: store[n].detach().clone() for n in store_names},
    }


def load_state(modules: Sequence[torch.nn.Module], state: dict) -> None:
    """Load a :func:`get_state` dict back into the modules and Pyro's param store."""
    for m, sd in zip(modules, state["modules"]):
        m.load_state_dict(sd)
    store = dict(pyro.get_param_store().named_parameters())
    with torch.no_grad():
        for name, value in state["param_store"].items():
            store[name].copy_(value)


def rename_on_load(module: torch.nn.Module, renamed: dict[str, str]) -> None:
    """Let ``module.load_state_dict`` accept state dicts saved before parameters were renamed
    (``renamed`` maps old names to new ones)."""

    def hook(state_dict, prefix, *args, **kwargs):
        for old, new in renamed.items():
            if prefix + old in state_dict and prefix + new not in state_dict:
                state_dict[prefix + new] = state_dict.pop(prefix + old)

    module._register_load_state_dict_pre_hook(hook)
