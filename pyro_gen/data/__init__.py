"""Data: data sets and their loaders, and the input checks every entry point shares.

The lowest layer of pyro_gen: it imports nothing else from the package.
"""

from .checks import check_batch, check_data, check_for_models, check_sequences, random_subset, time_mask
from .datasets import KNOWN_SHA256, Dataset, DataNotFoundError, data_roots, find_file, load, names, safe_unpickle

__all__ = ["Dataset", "load", "names", "data_roots", "find_file", "safe_unpickle", "DataNotFoundError", "KNOWN_SHA256",
           "check_data", "check_sequences", "check_batch", "check_for_models", "time_mask", "random_subset"]
