"""Input checks shared by every entry point: one clear error that names the problem.

:func:`check_data` validates a (N, D) tensor, :func:`check_sequences` padded sequences
(N, T, D) with their lengths, and :func:`check_batch` the tuple a model takes.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

__all__ = ["check_data", "check_binary", "check_sequences", "check_batch", "check_for_models", "time_mask", "random_subset",
           "as_tensors", "batch_tuple", "is_torch_data", "data_args"]


def check_data(x, what: str = "data", dim: int | None = None) -> torch.Tensor:
    """Validate a data tensor: a floating tensor of shape (N, D), N >= 1, all finite.

    Returns it unchanged; raises ``TypeError``/``ValueError`` naming the problem.

    Examples:
        >>> check_data(torch.tensor([[0.5, float("nan")], [0.1, 0.2]]), what="training data")
        Traceback (most recent call last):
        ...
        ValueError: training data contains NaN values in 1 row(s), first at row 0
    """
    if not torch.is_tensor(x):
        raise TypeError(f"{what} must be a torch.Tensor of shape (N, D), got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TypeError(f"{what} must be a floating-point tensor (e.g. x.float()), got dtype {x.dtype}")
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"{what} must have shape (N, D) with N >= 1, got shape {tuple(x.shape)}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{what} has {x.shape[1]} columns but the model expects {dim}")
    bad = ~torch.isfinite(x)
    if bad.any():
        rows = bad.any(dim=1).nonzero().flatten()
        kind = "NaN" if torch.isnan(x).any() else "inf"
        raise ValueError(f"{what} contains {kind} values in {len(rows)} row(s), first at row {rows[0].item()}")
    return x


def check_binary(x, what: str, dim: int | None = None) -> torch.Tensor:
    """:func:`check_data`, and every value 0 or 1; ``what`` names the model in the message.

    Examples:
        >>> check_binary(torch.full((2, 3), 0.5), "the sigmoid belief network")
        Traceback (most recent call last):
        ...
        ValueError: the sigmoid belief network: binary data (0 or 1) expected, but these values lie in [0.5, 0.5]: binarize them (--binarize dynamic, or x.bernoulli())
    """
    check_data(x, "data", dim)
    if not ((x == 0) | (x == 1)).all():
        raise ValueError(f"{what}: binary data (0 or 1) expected, but these values lie in [{x.min().item():g}, "
                         f"{x.max().item():g}]: binarize them (--binarize dynamic, or x.bernoulli())")
    return x


def check_sequences(x, lengths, what: str = "sequences", dim: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate padded sequences: ``x`` float (N, T, D) and finite, ``lengths`` integers in [1, T].

    Returns ``(x, lengths)`` unchanged; raises ``TypeError``/``ValueError`` naming the problem.
    """
    if not torch.is_tensor(x):
        raise TypeError(f"{what} must be a torch.Tensor of shape (N, T, D), got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TypeError(f"{what} must be a floating-point tensor (e.g. x.float()), got dtype {x.dtype}")
    if x.dim() != 3 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{what} must have shape (N, T, D) with N, T >= 1, got shape {tuple(x.shape)}")
    if dim is not None and x.shape[-1] != dim:
        raise ValueError(f"{what} has {x.shape[-1]} features per time step but the model expects {dim}")
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).flatten(1).any(1).nonzero().flatten()
        raise ValueError(f"{what} contains NaN or inf values in {len(bad)} sequence(s), first at {bad[0].item()}")
    if not torch.is_tensor(lengths) or lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise TypeError(f"{what} lengths must be an integer tensor of shape (N,), got "
                        f"{lengths.dtype if torch.is_tensor(lengths) else type(lengths).__name__}")
    if lengths.shape != x.shape[:1]:
        raise ValueError(f"{what} lengths must have shape ({x.shape[0]},), one per sequence, got {tuple(lengths.shape)}")
    if (lengths < 1).any() or (lengths > x.shape[1]).any():
        raise ValueError(f"{what} lengths must lie in [1, T={x.shape[1]}], got min {lengths.min().item()} "
                         f"and max {lengths.max().item()}")
    return x, lengths


def time_mask(lengths: torch.Tensor, T: int) -> torch.Tensor:
    """(N, T) boolean: True at the time steps each sequence really has."""
    return torch.arange(T, device=lengths.device) < lengths.unsqueeze(-1)


def check_batch(data, what: str = "data") -> tuple[torch.Tensor, ...]:
    """``data`` as a tuple of tensors sharing N (a tensor (N, D), or ``(x, lengths, ...)`` with
    padded sequences x of shape (N, T, D)), each checked; raises naming the problem. A torch
    ``Dataset`` or ``DataLoader`` is read into memory first (:func:`as_tensors`)."""
    if is_torch_data(data):
        return as_tensors(data, what)
    tensors = tuple(data) if isinstance(data, (tuple, list)) else (data,)
    if not tensors:
        raise ValueError(f"{what} is empty")
    if len(tensors) >= 2 and torch.is_tensor(tensors[0]) and tensors[0].dim() == 3:
        check_sequences(tensors[0], tensors[1], what)  # padded sequences (N, T, D) with their lengths
    else:
        check_data(tensors[0], what)
    n = tensors[0].shape[0]
    for i, t in enumerate(tensors[1:], 1):
        if not torch.is_tensor(t) or t.shape[0] != n:
            raise ValueError(f"{what}[{i}] must be a tensor with {n} rows like {what}[0]")
    return tensors


def batch_tuple(batch) -> tuple[torch.Tensor, ...]:
    """A batch as the tuple of tensors a model takes: ``x`` -> ``(x,)``; a tuple or list of tensors as is."""
    if torch.is_tensor(batch):
        return (batch,)
    if isinstance(batch, (tuple, list)) and all(torch.is_tensor(t) for t in batch):
        return tuple(batch)
    kinds = type(batch).__name__
    if isinstance(batch, (tuple, list)):
        kinds += " of " + ", ".join(type(t).__name__ for t in batch)
    raise TypeError(f"a batch must be a tensor or a tuple of tensors (what the model takes), got {kinds}")


def as_tensors(data, what: str = "data", max_points: int | None = None) -> tuple[torch.Tensor, ...]:
    """Tensors from any data ``fit`` takes: tensors as they are; a ``Dataset`` or ``DataLoader``
    read through once, in order (its first ``max_points`` points if given), and concatenated.
    For the evaluation and diagnostic tools, which work on a (sub)set held in memory."""
    if not is_torch_data(data):
        return check_batch(data, what)
    if isinstance(data, DataLoader):
        loader = data
    elif isinstance(data, Dataset):
        if isinstance(data, TensorDataset):
            return check_batch(data.tensors, what)
        loader = DataLoader(data, batch_size=256, shuffle=False)
    parts, n = [], 0
    with torch.random.fork_rng(devices=[]):  # starting the loader draws from torch's RNG: not the caller's stream
        for batch in loader:
            batch = batch_tuple(batch)
            parts.append(batch)
            n += len(batch[0])
            if max_points is not None and n >= max_points:
                break
    if not parts:
        raise ValueError(f"{what} is empty")
    out = tuple(torch.cat(cols) for cols in zip(*parts))
    if max_points is not None:
        out = tuple(t[:max_points] for t in out)
    return check_batch(out, what)


def data_args(args: tuple) -> tuple:
    """A model's positional arguments, with a torch ``Dataset`` or ``DataLoader`` given as the only one
    read into its tensors (:func:`as_tensors`); other arguments as they are."""
    if len(args) == 1 and is_torch_data(args[0]):
        return as_tensors(args[0])
    return args


def is_torch_data(data) -> bool:
    """A ``torch.utils.data.Dataset`` or ``DataLoader`` (which :func:`as_tensors` reads)."""
    return isinstance(data, (Dataset, DataLoader))


def check_for_models(batch: tuple[torch.Tensor, ...], modules) -> None:
    """Let each model module that declares ``check_data(*batch)`` (its likelihood's support, its
    input width) refuse data it cannot score, once and up front, with its own clear message,
    before the data reach a network as a shape error deep in a Pyro trace."""
    for module in modules:
        check = getattr(module, "check_data", None)
        if callable(check):
            check(*batch)


def random_subset(n_total: int, n: int | None, seed: int) -> torch.Tensor:
    """Indices of a seeded random sample of ``n`` of ``n_total`` points (all of them, in order, when
    ``n`` is None or not smaller), sorted. Evaluation subsets and figures come from across a split
    this way, never from its head: binarized MNIST's test split, for one, is sorted by class."""
    if n is None or n >= n_total:
        return torch.arange(n_total)
    if n < 1:
        raise ValueError(f"a subset needs n >= 1 points, got {n}")
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:n].sort().values
