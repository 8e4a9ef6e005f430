"""Figures for sequence models: a piano roll with its HMM state posterior and best path.

Drawn with matplotlib through :mod:`pyro_gen.plots`' helpers (headless backend);
kept apart from ``plots.py`` because only the sequence models use it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .plots import _plt, _save

__all__ = ["state_posterior"]


def state_posterior(x: torch.Tensor, marginals: torch.Tensor, path: torch.Tensor, out, length: int | None = None,
                    title: str = "HMM state posterior") -> Path:
    """Three stacked panels over time for one sequence: the observations (a piano roll,
    keys x time), the posterior marginals p(z_t = k | x) as a heat map, and the Viterbi
    path drawn over them.

    Args:
        x: (T, D) observations; marginals: (T, K); path: (T,) state indices.
        out: the PNG to write. length: plot only the first ``length`` steps.
    """
    T = length or x.shape[0]
    x, marginals, path = x[:T].cpu(), marginals[:T].cpu(), path[:T].cpu()
    plt = _plt()
    fig, axes = plt.subplots(2, 1, figsize=(10, 6), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    axes[0].imshow(x.T, aspect="auto", origin="lower", cmap="Greys", interpolation="nearest")
    axes[0].set_ylabel("key")
    axes[0].set_title(title)
    im = axes[1].imshow(marginals.T, aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=1,
                        interpolation="nearest")
    axes[1].plot(range(T), path, color="red", lw=1.2, drawstyle="steps-mid", label="Viterbi path")
    axes[1].set_ylabel("state")
    axes[1].set_xlabel("time step")
    axes[1].legend(loc="upper right", fontsize=8)
    fig.colorbar(im, ax=axes, shrink=0.5, label="p(z_t = k | x)")
    return _save(fig, out)
