"""Data: data sets and their loaders, and the input checks every entry point shares.

The lowest layer of pyro_gen: it imports nothing else from the package. ``image_folder``
(and ``ImageFolderDataset``) load torchvision, so they are imported on first use.
"""

from .checks import (as_tensors, batch_tuple, check_batch, check_binary, check_data, check_for_models, check_sequences, data_args,
                     is_torch_data, random_subset, time_mask)
from .datasets import (KNOWN_SHA256, Dataset, DataNotFoundError, data_roots, find_file, load, names, read_idx,
                       safe_unpickle)
from .labels import balanced_label_mask, check_labels, oversample_labeled
from .memmap import MemmapDataset, write_memmap
from .shapes import Shapes, ShapesGrid, render as render_shapes
from .transforms import DynamicBinarize, Transformed

__all__ = ["Dataset", "load", "names", "data_roots", "find_file", "safe_unpickle", "read_idx", "DataNotFoundError",
           "KNOWN_SHA256", "DynamicBinarize", "Transformed", "MemmapDataset", "write_memmap", "image_folder",
           "ImageFolderDataset", "check_data", "check_binary", "check_sequences", "check_batch", "check_for_models", "time_mask",
           "random_subset", "as_tensors", "batch_tuple", "is_torch_data", "data_args", "balanced_label_mask", "check_labels",
           "oversample_labeled", "Shapes", "ShapesGrid", "render_shapes"]

_LAZY = {"image_folder": "images", "ImageFolderDataset": "images"}


def __getattr__(name):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
