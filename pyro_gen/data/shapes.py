"""Procedural 2-D shapes with known factors of variation: dSprites' factor grid, rendered here.

dSprites (Matthey et al. 2017) cannot be downloaded on every machine, so this module renders
images with the same five factors: shape (square, ellipse, heart), scale, orientation, and x
and y position, each on a grid of values. An image is a deterministic function of its factor
indices (no randomness anywhere), so the whole grid need not be stored: :class:`Shapes` renders
any index on demand and a ``DataLoader`` fetches whole batches at once.

Rendering: pixel centres u in [0, 1]^2 (y down), the shape's centre at
``c = 0.5 + (pos - 0.5) * span`` and its half-size ``r = 0.15 * scale`` of the image width; a
pixel is on when its centre, rotated by -orientation about c and divided by r, lies inside the
unit shape: the square ``max(abs(a), abs(b)) <= 0.85``, the ellipse ``a^2 + (b / 0.5)^2 <= 1`` (long
axis a), the heart ``(a^2 + b^2 - 1)^3 - a^2 b^3 <= 0`` (scaled by 1 / 1.2 to unit size, lobes up).

=================  =========================  ==========================
factor             full grid (64 x 64)        small grid (32 x 32)
=================  =========================  ==========================
``shape``          3                          3
``scale``          6, 0.5 .. 1                3, 0.5 .. 1
``orientation``    40, 0 .. 2 pi              8, 0 .. 2 pi (no endpoint)
``pos_x``          32, 0 .. 1                 8, 0 .. 1
``pos_y``          32, 0 .. 1                 8, 0 .. 1
=================  =========================  ==========================

The full grid has 737,280 images, as dSprites; the small one 4,608, for tests. dSprites
itself includes 2 pi as an orientation (the same image as 0); so does the full grid here.

References:
    Matthey, Higgins, Hassabis & Lerchner (2017), dSprites: Disentanglement testing Sprites
    dataset. Higgins et al. (2017), beta-VAE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["FACTORS", "SHAPE_NAMES", "ShapesGrid", "GRIDS", "grid", "render", "Shapes"]

#: The factors of variation, in the order of a factor row.
FACTORS = ("shape", "scale", "orientation", "pos_x", "pos_y")
#: The shapes, by their index in the ``shape`` factor.
SHAPE_NAMES = ("square", "ellipse", "heart")


@dataclass(frozen=True)
class ShapesGrid:
    """A grid of factor values: how many values each factor takes, and the image size."""

    sizes: tuple[int, int, int, int, int]
    image_size: int
    orientation_endpoint: bool = True

    def __post_init__(self):
        if len(self.sizes) != len(FACTORS) or any(int(s) < 1 for s in self.sizes):
            raise ValueError(f"sizes must give {len(FACTORS)} positive counts ({', '.join(FACTORS)}), got {self.sizes}")
        if self.sizes[0] > len(SHAPE_NAMES):
            raise ValueError(f"there are {len(SHAPE_NAMES)} shapes ({', '.join(SHAPE_NAMES)}), asked for {self.sizes[0]}")
        if self.image_size < 8:
            raise ValueError(f"image_size must be at least 8 pixels, got {self.image_size}")

    def __len__(self) -> int:
        return math.prod(self.sizes)

    def values(self) -> list[torch.Tensor]:
        """Each factor's values (float64): shape indices, scales, orientations (radians), positions."""
        shape, scale, orient, px, py = self.sizes
        return [torch.arange(shape, dtype=torch.float64),
                torch.linspace(0.5, 1.0, scale, dtype=torch.float64),
                torch.linspace(0.0, 2 * math.pi, orient + (0 if self.orientation_endpoint else 1),
                               dtype=torch.float64)[:orient],
                torch.linspace(0.0, 1.0, px, dtype=torch.float64),
                torch.linspace(0.0, 1.0, py, dtype=torch.float64)]

    def factors(self, index: torch.Tensor) -> torch.Tensor:
        """The factor indices (N, 5) of flat image indices (row-major over the grid, pos_y fastest)."""
        index = torch.as_tensor(index, dtype=torch.long)
        if index.numel() and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"image index out of range 0..{len(self) - 1}")
        out, rest = [], index
        for size in reversed(self.sizes):
            out.append(rest % size)
            rest = rest // size
        return torch.stack(out[::-1], dim=-1)

    def index(self, factors: torch.Tensor) -> torch.Tensor:
        """The flat image index of factor index rows (the inverse of :meth:`factors`)."""
        factors = torch.as_tensor(factors, dtype=torch.long)
        _check_factors(factors, self)
        flat = torch.zeros(factors.shape[:-1], dtype=torch.long)
        for i, size in enumerate(self.sizes):
            flat = flat * size + factors[..., i]
        return flat


#: The two grids by name, ``"full"`` (dSprites' grid, 737,280 images of 64 x 64) and ``"small"``
#: (the test-sized one, 4,608 images of 32 x 32).
GRIDS = {"full": ShapesGrid((3, 6, 40, 32, 32), 64), "small": ShapesGrid((3, 3, 8, 8, 8), 32, orientation_endpoint=False)}


def grid(variant: str | ShapesGrid = "full") -> ShapesGrid:
    """A grid by name (:data:`GRIDS`), or a :class:`ShapesGrid` as it is."""
    if isinstance(variant, ShapesGrid):
        return variant
    if variant not in GRIDS:
        raise ValueError(f"unknown shapes grid {variant!r}; valid choices: {', '.join(GRIDS)}")
    return GRIDS[variant]


def _check_factors(factors: torch.Tensor, g: ShapesGrid) -> None:
    if factors.dtype.is_floating_point or factors.ndim != 2 or factors.shape[-1] != len(FACTORS):
        raise ValueError(f"factors must be integer indices of shape (N, {len(FACTORS)}) ({', '.join(FACTORS)}), "
                         f"got {tuple(factors.shape)} {factors.dtype}")
    sizes = torch.tensor(g.sizes)
    bad = (factors < 0) | (factors >= sizes)
    if bad.any():
        col = int(bad.any(0).nonzero()[0])
        raise ValueError(f"factor {FACTORS[col]!r} has an index outside 0..{g.sizes[col] - 1}")


_SPAN = 0.6  # positions cover the central 60% of the image, so that the largest shape stays inside
_RADIUS = 0.15


def render(factors: torch.Tensor, variant: str | ShapesGrid = "full", chunk: int = 4096) -> torch.Tensor:
    """The images of factor index rows: a bool tensor (N, S, S), deterministic.

    Args:
        factors: integer factor indices (N, 5), in the order of :data:`FACTORS`.
        variant: the grid (:data:`GRIDS` name or a :class:`ShapesGrid`).
        chunk: images rendered at once (memory: ``chunk * S * S`` floats a few times over).

    Examples:
        >>> img = render(torch.tensor([[0, 5, 0, 16, 16]]))
        >>> img.shape, img.dtype, int(img.sum()) > 0
        (torch.Size([1, 64, 64]), torch.bool, True)
    """
    g = grid(variant)
    factors = torch.as_tensor(factors)
    _check_factors(factors, g)
    vals = g.values()
    s = g.image_size
    centres = (torch.arange(s, dtype=torch.float32) + 0.5) / s
    uy, ux = centres[:, None], centres[None, :]  # rows are y (down), columns x
    out = torch.empty(len(factors), s, s, dtype=torch.bool)
    for start in range(0, len(factors), chunk):
        f = factors[start:start + chunk]
        shape = f[:, 0]
        scale, theta, px, py = (vals[i][f[:, i]].float()[:, None, None] for i in range(1, 5))
        r = _RADIUS * scale
        dx = (ux - (0.5 + (px - 0.5) * _SPAN)) / r
        dy = (uy - (0.5 + (py - 0.5) * _SPAN)) / r
        cos, sin = torch.cos(theta), torch.sin(theta)
        a = cos * dx + sin * dy  # rotate by -theta
        b = -sin * dx + cos * dy
        inside = torch.zeros(len(f), s, s, dtype=torch.bool)
        square = shape == 0
        if square.any():
            inside[square] = torch.maximum(a[square].abs(), b[square].abs()) <= 0.85
        ellipse = shape == 1
        if ellipse.any():
            inside[ellipse] = a[ellipse] ** 2 + (b[ellipse] / 0.5) ** 2 <= 1.0
        heart = shape == 2
        if heart.any():
            ha, hb = a[heart] * 1.2, -b[heart] * 1.2 + 0.15  # y up, centred on the heart's box
            inside[heart] = (ha ** 2 + hb ** 2 - 1) ** 3 - ha ** 2 * hb ** 3 <= 0
        out[start:start + chunk] = inside
    return out


class Shapes(torch.utils.data.Dataset):
    """Every image of a shapes grid, rendered on demand: a map-style ``Dataset`` of flattened
    float images (S * S,) in {0, 1}, with :attr:`factors` (the factor indices of every image)
    and :attr:`grid`. A ``DataLoader`` fetches a batch in one render call (``__getitems__``).

    Args:
        variant: ``"full"`` (dSprites' grid, 737,280 images of 64 x 64), ``"small"`` (4,608 of 32 x 32)
            or a :class:`ShapesGrid`.

    Examples:
        >>> ds = Shapes("small")
        >>> len(ds), ds[0].shape, ds.factors[-1].tolist()
        (4608, torch.Size([1024]), [2, 2, 7, 7, 7])
    """

    def __init__(self, variant: str | ShapesGrid = "full"):
        self.grid = grid(variant)
        self.image_shape = (1, self.grid.image_size, self.grid.image_size)

    def __len__(self) -> int:
        return len(self.grid)

    @property
    def factors(self) -> torch.Tensor:
        """The factor indices (N, 5) of every image, in index order."""
        return self.grid.factors(torch.arange(len(self)))

    def images(self, index) -> torch.Tensor:
        """The flattened float images (len(index), S * S) at these indices."""
        return render(self.grid.factors(index), self.grid).flatten(1).float()

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images(torch.tensor([int(i)]))[0]

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        """The images at ``indices``, rendered in one call (a ``DataLoader``'s collate stacks them)."""
        return list(self.images(torch.tensor(indices)).unbind(0))

    def sample(self, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` images drawn uniformly without replacement (seeded), with their factor indices:
        ``(images (n, S * S), factors (n, 5))``."""
        if not 0 < n <= len(self):
            raise ValueError(f"n must be in 1..{len(self)}, got {n}")
        index = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        return self.images(index), self.grid.factors(index)
