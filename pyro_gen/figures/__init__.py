"""Figures and reports: PNG figures (:mod:`.plots`, :mod:`.sequences`) and run reports (:mod:`.report`).

matplotlib is imported when the first figure is drawn, not before.
"""

from .plots import (image_grid, interpolation, kl_per_dimension, latent_manifold, latent_scatter, latent_traversal,
                    metric_vs_reconstruction, mutual_information_heatmap, reconstructions, samples, training_curves)
from .report import evaluate_model, markdown_table, model_figures
from .sequences import state_posterior

__all__ = ["latent_traversal", "kl_per_dimension", "metric_vs_reconstruction", "mutual_information_heatmap", "image_grid", "reconstructions", "samples", "interpolation", "latent_scatter", "latent_manifold",
           "training_curves", "evaluate_model", "model_figures", "markdown_table", "state_posterior"]
