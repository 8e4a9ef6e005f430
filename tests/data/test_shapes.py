"""The procedural shapes: dSprites' factor grid, deterministic images, factors that index them."""

import math

import pytest
import torch

from pyro_gen import data
from pyro_gen.data.shapes import FACTORS, GRIDS, Shapes, ShapesGrid, grid, render


def test_the_full_grid_is_dsprites_grid():
    g = grid("full")
    assert g.sizes == (3, 6, 40, 32, 32) and g.image_size == 64 and len(g) == 737_280
    vals = g.values()
    assert vals[1][0] == 0.5 and vals[1][-1] == 1.0 and vals[2][-1] == pytest.approx(2 * math.pi)


def test_factor_index_round_trip_and_row_major_order():
    g = grid("small")
    idx = torch.arange(len(g))
    f = g.factors(idx)
    assert torch.equal(g.index(f), idx)
    assert f[1].tolist() == [0, 0, 0, 0, 1] and f[-1].tolist() == [s - 1 for s in g.sizes]
    assert len(set(map(tuple, f.tolist()))) == len(g)  # every factor combination once


def test_rendering_is_deterministic_and_each_factor_changes_the_image():
    base = torch.tensor([[0, 3, 3, 10, 10]])
    img = render(base)
    assert torch.equal(img, render(base)) and img.dtype == torch.bool and img.shape == (1, 64, 64)
    for k in range(len(FACTORS)):
        other = base.clone()
        other[0, k] += 1
        assert not torch.equal(render(other), img), f"changing {FACTORS[k]} left the image unchanged"


def test_geometry_scale_position_and_symmetry():
    # the square's area is (2 * 0.85 * 0.15 * scale * 64)^2 pixels, up to pixelation; moving x moves the centre
    # of mass right; the orientation grid's endpoint repeats its start
    areas = render(torch.tensor([[0, 0, 0, 16, 16], [0, 5, 0, 16, 16]])).float().sum((1, 2))
    expected = torch.tensor([(2 * 0.85 * 0.15 * s * 64) ** 2 for s in (0.5, 1.0)])
    torch.testing.assert_close(areas, expected, rtol=0.12, atol=0)
    left, right = render(torch.tensor([[1, 3, 0, 0, 16], [1, 3, 0, 31, 16]])).float()
    cols = torch.arange(64.0)
    assert (right.sum(0) * cols).sum() / right.sum() > (left.sum(0) * cols).sum() / left.sum() + 30
    g = grid("full")  # 40 orientations over [0, 2 pi] with the endpoint: index 0 and 39 are the same angle
    a, b = render(torch.tensor([[2, 3, 0, 16, 16], [2, 3, 39, 16, 16]]), g)
    assert torch.equal(a, b)
    # every shape stays inside the image at the largest scale in the corners
    corner = render(torch.tensor([[s, 5, o, x, y] for s in range(3) for o in (5, 15) for x in (0, 31) for y in (0, 31)]))
    assert not (corner[:, 0].any() or corner[:, -1].any() or corner[:, :, 0].any() or corner[:, :, -1].any())


def test_dataset_streams_batches_and_load_returns_factors():
    ds = Shapes("small")
    batch = ds.__getitems__([0, 5, 7])
    assert len(batch) == 3 and batch[1].shape == (1024,) and torch.equal(batch[1], ds[5])
    loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=False)
    first = next(iter(loader))
    assert first.shape == (16, 1024) and torch.equal(first[3], ds[3])
    loaded = data.load("shapes-small")
    assert loaded.train.shape == (3608, 1024) and loaded.binary and loaded.factor_names == FACTORS
    assert loaded.factors["test"].shape == (500, 5)
    rows = grid("small").index(loaded.factors["val"][:4])  # the factors say which image each row is
    assert torch.equal(loaded.val[:4], ds.images(rows))


def test_bad_factors_are_refused_by_name():
    with pytest.raises(ValueError, match="'scale' has an index outside 0..5"):
        render(torch.tensor([[0, 6, 0, 0, 0]]))
    with pytest.raises(ValueError, match=r"integer indices of shape \(N, 5\)"):
        render(torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="valid choices: full, small"):
        Shapes("tiny")
    with pytest.raises(ValueError, match="there are 3 shapes"):
        ShapesGrid((4, 1, 1, 1, 1), 16)
    assert set(GRIDS) == {"full", "small"}
