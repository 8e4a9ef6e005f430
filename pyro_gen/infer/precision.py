"""Mixed precision and compilation for :func:`pyro_gen.fit`, each a part of its own.

- ``precision="bf16-mixed"`` runs the loss's forward pass under ``torch.autocast`` with
  bfloat16: matrix products in bf16, reductions and log densities in float32 where autocast
  keeps them there; parameters, gradients and the optimizer stay float32. The loss is
  returned as float32.
- ``compile=True`` applies ``torch.compile`` to the user's networks: each ``nn.Module`` inside
  the model's modules that is not itself a ``PyroModule`` (Pyro's handlers break graphs, so
  the model and guide functions stay eager), compiled in place with ``nn.Module.compile`` so
  that state dicts and checkpoints keep their names. fit undoes it when it returns.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Sequence

import torch

__all__ = ["PRECISIONS", "autocast", "compile_networks"]

#: The values of ``fit(precision=...)``, ``"32"`` (float32 throughout) or ``"bf16-mixed"`` (the
#: forward pass under ``torch.autocast`` with bfloat16).
PRECISIONS = ("32", "bf16-mixed")


def autocast(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of the context the loss's forward pass runs in."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid choices: {', '.join(PRECISIONS)}")
    if precision == "32":
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def compile_networks(modules: Sequence[torch.nn.Module], options: bool | str | dict) -> Callable[[], None]:
    """Compile the plain networks inside ``modules`` in place; returns the function that undoes it.

    ``options``: True (torch.compile's defaults), a backend name (``"aot_eager"``, ``"inductor"``), or
    a dict of ``torch.compile`` keyword arguments.
    """
    if not options:
        return lambda: None
    kwargs = {} if options is True else {"backend": options} if isinstance(options, str) else dict(options)
    from pyro.nn import PyroModule

    compiled: list[torch.nn.Module] = []

    def visit(module: torch.nn.Module) -> None:
        for child in module.children():
            if isinstance(child, PyroModule):
                visit(child)
            elif any(True for _ in child.parameters()):
                child.compile(**kwargs)
                compiled.append(child)

    for m in modules:
        visit(m)
    if not compiled:
        raise ValueError(f"compile={options!r} found no network to compile: the model's modules hold no plain "
                         "nn.Module with parameters (a PyroModule's own code runs Pyro's handlers and stays eager)")

    def undo() -> None:
        while compiled:
            compiled.pop()._compiled_call_impl = None

    return undo
