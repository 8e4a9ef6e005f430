"""A user's own images: a folder ``root/<class>/<image>`` as a dataset of tensors in [0, 1].

This module imports torchvision; :mod:`pyro_gen.data` loads it only when
:func:`image_folder` is first asked for.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
from torchvision import datasets, transforms as T

from .datasets import DataNotFoundError

__all__ = ["image_folder", "ImageFolderDataset"]


class ImageFolderDataset(datasets.ImageFolder):
    """torchvision's ``ImageFolder`` whose items are the image tensor alone, or ``(x, class index)``
    with ``with_labels``. ``image_shape`` is (C, H, W) of every image, before any flattening."""

    def __init__(self, root, transform, image_shape: tuple[int, int, int], with_labels: bool):
        super().__init__(str(root), transform=transform)
        self.image_shape = image_shape
        self.with_labels = with_labels

    @property
    def dim(self) -> int:
        """The length of a flattened image, ``C * H * W``."""
        c, h, w = self.image_shape
        return c * h * w

    def __getitem__(self, index: int):
        try:
            x, y = super().__getitem__(index)
        except _SizeMismatch as e:
            raise ValueError(f"{self.samples[index][0]}: {e}") from None
        return (x, y) if self.with_labels else x


class _SizeMismatch(ValueError):
    pass


class _SameSize:
    """Refuses a PIL image whose (width, height) differs from the folder's first image."""

    def __init__(self, size_wh: tuple[int, int]):
        self.size_wh = size_wh

    def __call__(self, img):
        if img.size != self.size_wh:
            (w, h), (w0, h0) = img.size, self.size_wh
            raise _SizeMismatch(f"image of {w}x{h} pixels, but the folder's first image has {w0}x{h0}; "
                                "pass size= to resize them all")
        return img


def _flatten(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1)


def image_folder(root: str | os.PathLike, size: int | tuple[int, int] | None = None, channels: int = 1,
                 flatten: bool = True, labels: bool = False,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> ImageFolderDataset:
    """Images in ``root/<class>/<file>`` as float tensors in [0, 1].

    Args:
        root: the folder; each sub-folder is a class (one sub-folder for unlabelled images).
        size: resize the shorter side to ``size`` and crop the centre to ``size`` x ``size``,
            or to (height, width). None keeps the images' size, which must then be the same
            for all (an image of another size is an error naming it).
        channels: 1 for grey, 3 for RGB.
        flatten: items of shape (C*H*W,) rather than (C, H, W).
        labels: items ``(x, class index)`` rather than ``x`` alone.
        transform: applied last to each tensor, e.g. :class:`~pyro_gen.data.DynamicBinarize`.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(f"image folder {root} not found (expected {root}/<class>/<image files>)")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    if size is not None:
        hw = (size, size) if isinstance(size, int) else tuple(size)
        if len(hw) != 2 or not all(isinstance(d, int) and d > 0 for d in hw):
            raise ValueError(f"size must be a positive int or (height, width), got {size!r}")
    # torchvision's loader opens every image as RGB, so channels=3 needs no conversion step
    colour = [T.Grayscale(1)] if channels == 1 else []
    tail = [T.ToTensor(), *([_flatten] if flatten else []), *([transform] if transform is not None else [])]
    if size is not None:
        ds = ImageFolderDataset(root, T.Compose([T.Resize(size), T.CenterCrop(size), *colour, *tail]),
                                (channels, *hw), labels)
    else:
        ds = ImageFolderDataset(root, None, (channels, 0, 0), labels)
        w, h = ds.loader(ds.samples[0][0]).size
        ds.image_shape = (channels, h, w)
        ds.transform = T.Compose([_SameSize((w, h)), *colour, *tail])
    return ds
