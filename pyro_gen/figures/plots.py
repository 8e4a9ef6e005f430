"""Figures a person would rather look at than read, saved as PNG files.

Image grids use torchvision's ``make_grid``; everything is drawn with matplotlib's
non-interactive Agg backend, so these run on a machine with no screen. Each
function saves to ``path`` (creating the folder) and returns the path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

__all__ = ["latent_traversal", "kl_per_dimension", "metric_vs_reconstruction", "mutual_information_heatmap", "image_grid", "reconstructions", "samples", "interpolation", "latent_scatter", "latent_manifold",
           "training_curves"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path


def _as_images(x: torch.Tensor, image_shape: Sequence[int]) -> torch.Tensor:
    x = x.detach().float().cpu()
    if x.dim() == 2:
        x = x.reshape(-1, *image_shape)
    return x.clamp(0, 1)


def image_grid(x: torch.Tensor, image_shape: Sequence[int], path, nrow: int = 10, title: str | None = None) -> Path:
    """Rows of ``x`` (N, C*H*W) as a grid of images."""
    from torchvision.utils import make_grid

    plt = _plt()
    grid = make_grid(_as_images(x, image_shape), nrow=nrow, padding=1, pad_value=1.0)
    fig, ax = plt.subplots(figsize=(max(3, nrow * 0.6), max(2, grid.shape[1] / grid.shape[2] * nrow * 0.6)))
    ax.imshow(grid.permute(1, 2, 0).numpy(), cmap="gray" if grid.shape[0] == 1 else None, interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def reconstructions(x: torch.Tensor, recon: torch.Tensor, image_shape: Sequence[int], path, n: int = 10) -> Path:
    """Inputs (top row) above their reconstructions (bottom row)."""
    both = torch.cat([x[:n].cpu(), recon[:n].cpu()])
    return image_grid(both, image_shape, path, nrow=min(n, len(x)), title="inputs (top) and reconstructions (bottom)")


def samples(x: torch.Tensor, image_shape: Sequence[int], path, nrow: int = 10, title: str = "samples from the model") -> Path:
    """Draws from the model as an image grid."""
    return image_grid(x, image_shape, path, nrow=nrow, title=title)


def interpolation(encode: Callable, decode: Callable, x1: torch.Tensor, x2: torch.Tensor,
                  image_shape: Sequence[int], path, steps: int = 10) -> Path:
    """Decode points on the straight line between the latent means of two inputs."""
    with torch.no_grad():
        z1, z2 = encode(x1.reshape(1, -1))[0], encode(x2.reshape(1, -1))[0]
        t = torch.linspace(0, 1, steps, device=z1.device).unsqueeze(-1)
        images = decode(z1 + t * (z2 - z1))
    return image_grid(images, image_shape, path, nrow=steps, title="latent interpolation")


def latent_scatter(z: torch.Tensor, labels: torch.Tensor | None, path, title: str = "latent space") -> Path:
    """A 2-D view of latent codes coloured by label (first two principal components if dim > 2)."""
    plt = _plt()
    z = z.detach().cpu().double()
    axis_names = ("z1", "z2")
    if z.shape[1] > 2:
        from sklearn.decomposition import PCA

        pca = PCA(2).fit(z.numpy())
        z = torch.as_tensor(pca.transform(z.numpy()))
        axis_names = (f"PC1 ({pca.explained_variance_ratio_[0]:.0%})", f"PC2 ({pca.explained_variance_ratio_[1]:.0%})")
    elif z.shape[1] == 1:
        z = torch.cat([z, torch.zeros_like(z)], 1)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    if labels is not None:
        sc = ax.scatter(z[:, 0].numpy(), z[:, 1].numpy(), c=labels.cpu().numpy(), cmap="tab10", s=6, alpha=0.8)
        fig.colorbar(sc, ax=ax, label="label")
    else:
        ax.scatter(z[:, 0].numpy(), z[:, 1].numpy(), s=6, alpha=0.8)
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    ax.set_title(title)
    return _save(fig, path)


def latent_manifold(decode: Callable, image_shape: Sequence[int], path, n: int = 15,
                    device: str | torch.device = "cpu") -> Path:
    """For a 2-D latent: decode a grid of z at standard-normal quantiles (Kingma & Welling 2014, Fig. 4).

    ``device`` is where ``decode`` expects its input."""
    from torch.distributions import Normal

    q = Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, n))
    zz = torch.cartesian_prod(q, q.flip(0))[:, [1, 0]].to(device)
    with torch.no_grad():
        images = decode(zz)
    return image_grid(images, image_shape, path, nrow=n, title="learned manifold (2-D latent)")


def training_curves(histories: Mapping[str, Sequence[Mapping]], path, key_x: str = "epoch") -> Path:
    """Train (solid) and validation (dashed) loss per epoch, one colour per run."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (name, history) in enumerate(histories.items()):
        colour = f"C{i}"
        xs = [h[key_x] for h in history]
        ax.plot(xs, [h["train_loss"] for h in history], color=colour, label=f"{name} train")
        if history and "val_loss" in history[0]:
            ax.plot(xs, [h["val_loss"] for h in history], color=colour, ls="--", label=f"{name} val")
    ax.set_xlabel(key_x)
    ax.set_ylabel("negative bound per data point (nats)")
    ax.set_title("training curves")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def latent_traversal(decode: Callable, z: torch.Tensor, order: Sequence[int], image_shape: Sequence[int], path,
                     span: float = 2.5, steps: int = 9, labels: Sequence[str] | None = None,
                     title: str = "latent traversals") -> Path:
    """One row per latent in ``order`` (e.g. by decreasing KL): the decoding of the code ``z`` (z_dim,)
    with that latent swept over ``[-span, span]`` in ``steps`` steps, the others held."""
    from torchvision.utils import make_grid

    plt = _plt()
    values = torch.linspace(-span, span, steps, dtype=z.dtype, device=z.device)
    rows = []
    with torch.no_grad():
        for d in order:
            codes = z.expand(steps, -1).clone()
            codes[:, d] = values
            rows.append(decode(codes).cpu())
    grid = make_grid(_as_images(torch.cat(rows), image_shape), nrow=steps, padding=1, pad_value=1.0)
    fig, ax = plt.subplots(figsize=(steps * 0.7 + 1.2, len(rows) * 0.7 + 0.6))
    ax.imshow(grid.permute(1, 2, 0).numpy(), cmap="gray" if grid.shape[0] == 1 else None, interpolation="nearest")
    cell = grid.shape[1] / max(len(rows), 1)
    ax.set_yticks([cell * (i + 0.5) for i in range(len(rows))])
    ax.set_yticklabels(labels if labels is not None else [f"z{d}" for d in order], fontsize=8)
    ax.set_xticks([])
    ax.set_title(f"{title} ({-span:g} to {span:g})", fontsize=9)
    return _save(fig, path)


def kl_per_dimension(kls: Mapping[str, Sequence[float]], path, title: str = "KL per latent dimension (sorted)") -> Path:
    """Each method's KL per latent dimension in nats, sorted in decreasing order, as grouped bars."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / max(len(kls), 1)
    for i, (name, values) in enumerate(kls.items()):
        v = sorted((float(x) for x in values), reverse=True)
        ax.bar([j + i * width for j in range(len(v))], v, width=width, label=name)
    ax.set_xlabel("latent dimension (by decreasing KL)")
    ax.set_ylabel("KL (nats)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def metric_vs_reconstruction(points: Mapping[str, Sequence[tuple[float, float]]], path, metric: str = "MIG") -> Path:
    """Each method's runs as points (reconstruction error, metric): the trade-off between them."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for name, pts in points.items():
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=name, s=28)
    ax.set_xlabel("reconstruction error, -log p(x | z) (nats per image)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} against reconstruction, one point per run", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def mutual_information_heatmap(info, path, factor_names: Sequence[str] | None = None,
                               title: str = "mutual information / factor entropy") -> Path:
    """The (K factors, L latents) matrix of :func:`pyro_gen.disentanglement.mutual_information` as
    a heatmap with its values written in: a disentangled code has one bright cell per row, each in
    its own column."""
    import numpy as np

    info = np.asarray(info, dtype=float)
    if info.ndim != 2:
        raise ValueError(f"info must be a (factors, latents) matrix, got shape {info.shape}")
    names = list(factor_names) if factor_names is not None else [f"factor {k}" for k in range(info.shape[0])]
    if len(names) != info.shape[0]:
        raise ValueError(f"{len(names)} factor names for {info.shape[0]} rows of info")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(0.55 * info.shape[1] + 2.2, 0.45 * info.shape[0] + 1.2))
    ax.imshow(info, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    for (k, j), val in np.ndenumerate(info):
        ax.text(j, k, f"{val:.2f}", ha="center", va="center", fontsize=6, color="white" if val < 0.6 else "black")
    ax.set_xticks(range(info.shape[1]), [f"z{j}" for j in range(info.shape[1])], fontsize=7)
    ax.set_yticks(range(info.shape[0]), names, fontsize=7)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)
