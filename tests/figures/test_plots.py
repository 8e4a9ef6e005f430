"""Each figure function writes a real PNG."""

import torch

from pyro_gen.figures import plots

PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
    return path.read_bytes()[:8] == PNG and path.stat().st_size > 1000


def test_every_figure_is_a_png(tmp_path):
    x = torch.rand(20, 64)
    shape = (1, 8, 8)
    decode = lambda z: torch.sigmoid(z.sum(-1, keepdim=True).expand(-1, 64))  # noqa: E731
    encode = lambda x: (x[..., :2], torch.ones_like(x[..., :2]))  # noqa: E731
    paths = [
        plots.image_grid(x, shape, tmp_path / "grid.png"),
        plots.reconstructions(x, x.flip(0), shape, tmp_path / "sub" / "rec.png"),
        plots.samples(x, shape, tmp_path / "samples.png"),
        plots.interpolation(encode, decode, x[0], x[1], shape, tmp_path / "interp.png"),
        plots.latent_scatter(torch.randn(50, 5), torch.randint(0, 10, (50,)), tmp_path / "latent.png"),
        plots.latent_scatter(torch.randn(50, 2), None, tmp_path / "latent2.png"),
        plots.latent_manifold(decode, shape, tmp_path / "manifold.png", n=5),
        plots.training_curves({"a": [{"epoch": 1, "train_loss": 3.0, "val_loss": 3.5},
                                     {"epoch": 2, "train_loss": 2.0, "val_loss": 2.7}]}, tmp_path / "curves.png"),
        plots.mutual_information_heatmap(torch.rand(5, 10).numpy(), tmp_path / "mi.png", list("abcde")),
    ]
    assert all(_is_png(p) for p in paths)


def test_a_heatmap_needs_a_matrix_and_one_name_per_row(tmp_path):
    import pytest

    with pytest.raises(ValueError, match=r"\(factors, latents\) matrix, got shape \(5,\)"):
        plots.mutual_information_heatmap(torch.rand(5).numpy(), tmp_path / "mi.png")
    with pytest.raises(ValueError, match="2 factor names for 3 rows"):
        plots.mutual_information_heatmap(torch.rand(3, 4).numpy(), tmp_path / "mi.png", ["a", "b"])
