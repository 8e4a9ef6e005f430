"""Run reports: the held-out evaluation of a fitted latent-variable model, its figures,
and a Markdown table. Shared by ``python -m inference.fit`` and the demo.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import torch

from .. import evaluate
from ..data import random_subset
from . import plots

__all__ = ["evaluate_model", "model_figures", "markdown_table"]


def evaluate_model(model_obj, test: torch.Tensor, k: int = 1000, max_points: int | None = None,
                   progress: bool = False, seed: int = 0) -> dict:
    """Held-out ELBO and IWAE-k log-likelihood (each with its SE), active units and KL
    per dimension, for a module with ``model``/``guide`` methods and a latent site ``z``.

    ``max_points`` evaluates a seeded random sample of the split (``seed``, recorded in the
    result's ``subset``), never its head."""
    idx = random_subset(len(test), max_points, seed)
    x = test[idx.to(test.device)] if len(idx) < len(test) else test
    el = evaluate.elbo(model_obj.model, model_obj.guide, x)
    ll = evaluate.log_likelihood(model_obj.model, model_obj.guide, x, k=k, progress=progress)
    out = {"n": len(x), "k": k, "elbo": el.mean, "elbo_se": el.se, "log_likelihood": ll.mean,
           "log_likelihood_se": ll.se,
           "subset": {"n": len(x), "of": len(test), "seed": seed if len(x) < len(test) else None}}
    try:
        au = evaluate.active_units(model_obj.model, model_obj.guide, x)
        kl = evaluate.kl_per_dim(model_obj.model, model_obj.guide, x)
        # the standard threshold (Burda et al. 2016): a unit is active when its guide mean varies with x,
        # Cov_x E_q[z_u | x] > 0.01; a unit can carry KL without being active (q moves its scale, not its mean)
        out.update(active_units=au["active"], latent_dim=au["total"], active_units_threshold=0.01,
                   kl_per_dim=[round(v, 4) for v in kl.tolist()])
    except ValueError:  # no site named "z": the two summaries do not apply
        pass
    except NotImplementedError:  # a flow guide: q(z|x) has no closed-form mean or per-dimension marginals
        pass
    return out


def model_figures(model_obj, x: torch.Tensor, labels: torch.Tensor | None, image_shape: Sequence[int] | None,
                  out: Path, prefix: str = "", n_samples: int = 100) -> dict[str, str]:
    """Reconstructions, samples, interpolation, a 2-D latent view (and the latent manifold
    for a 2-D latent) for a model with ``reconstruct``/``sample``/``encode``/``decode``."""
    out = Path(out)
    files: dict[str, str] = {}
    was = model_obj.training
    model_obj.eval()
    try:
        with torch.no_grad():
            if image_shape is not None and hasattr(model_obj, "reconstruct"):
                files["reconstructions"] = str(plots.reconstructions(
                    x[:10], model_obj.reconstruct(x[:10]), image_shape, out / f"{prefix}reconstructions.png"))
            if image_shape is not None and hasattr(model_obj, "sample"):
                files["samples"] = str(plots.samples(model_obj.sample(n_samples), image_shape,
                                                     out / f"{prefix}samples.png"))
            if hasattr(model_obj, "encode"):
                z = model_obj.encode(x)[0]
                files["latent"] = str(plots.latent_scatter(z, labels, out / f"{prefix}latent.png"))
                if image_shape is not None and hasattr(model_obj, "decode") and len(x) > 1:
                    files["interpolation"] = str(plots.interpolation(
                        model_obj.encode, model_obj.decode, x[0], x[1], image_shape,
                        out / f"{prefix}interpolation.png"))
                    if z.shape[-1] == 2:
                        files["manifold"] = str(plots.latent_manifold(model_obj.decode, image_shape,
                                                                      out / f"{prefix}manifold.png", device=z.device))
    finally:
        model_obj.train(was)
    return files


def _fmt(v, digits: int = 2) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def markdown_table(rows: Sequence[Mapping], columns: Sequence[str], digits: int = 2) -> str:
    """Rows of dicts as a Markdown table over ``columns``, floats with ``digits`` decimals."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c, ""), digits) for c in columns) + " |")
    return "\n".join(lines)
