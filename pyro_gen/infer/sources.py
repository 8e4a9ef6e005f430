"""Where :func:`pyro_gen.fit`'s batches come from: tensors, a map-style ``Dataset``, an
``IterableDataset`` or a ``DataLoader`` the user built.

Every source cuts each *global* batch into shards: ``world_size × accumulate`` of them,
of which this process takes its own (``rank × accumulate + m`` for ``m < accumulate``).
One process with ``accumulate=1`` takes the whole batch as its one shard.

- **Tensors** (and a ``TensorDataset``): rows are indexed directly, no DataLoader.
- **Map-style data sets**: the epoch's order is a permutation drawn from fit's shuffling
  generator (or the user sampler's order), kept in the checkpoint; a ``DataLoader`` with
  the user's workers, ``pin_memory``, ``persistent_workers``, ``collate_fn`` fetches each
  shard, so transforms run in the workers. Each shard is fetched under a torch seed
  derived from (seed, epoch, batch, shard): a random transform (dynamic binarization)
  draws the same values whatever the number of workers or processes, and a resumed run
  fetches exactly what the interrupted one would have.
- **Iterable data sets** stream; under ``torch.distributed`` each process keeps every
  ``world_size``-th item. They resume at epoch boundaries only: a run stopped mid-epoch
  starts that epoch again.

What torch's ``DataLoader`` lacks and this module adds: a sampler state that a checkpoint
can hold, and a batch split over processes and accumulation steps that is the same for
every kind of data.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import (BatchSampler, DataLoader, Dataset, DistributedSampler, IterableDataset, RandomSampler,
                              SequentialSampler, TensorDataset)
from torch.utils.data._utils.collate import default_collate

from ..data import batch_tuple, check_batch

__all__ = ["Shards", "TensorSource", "MapSource", "IterableSource", "make_source", "shard_key", "LOADER_OPTIONS"]

#: The ``DataLoader`` arguments taken over from a user's ``DataLoader`` when its data set is fetched
#: through a loader built here (one that fetches shards).
LOADER_OPTIONS = ("num_workers", "collate_fn", "pin_memory", "timeout", "worker_init_fn", "multiprocessing_context",
                  "prefetch_factor", "persistent_workers", "pin_memory_device", "in_order")


@dataclass(frozen=True)
class Shards:
    """How a global batch is cut: ``size × accumulate`` shards, of which this rank takes ``accumulate``."""

    rank: int = 0
    size: int = 1
    accumulate: int = 1

    @property
    def count(self) -> int:
        return self.size * self.accumulate

    @property
    def mine(self) -> range:
        return range(self.rank * self.accumulate, (self.rank + 1) * self.accumulate)


def shard_key(seed: int, *where: int) -> int:
    """A 63-bit seed for one shard of one batch of one epoch (or one validation chunk)."""
    key = seed & (2**63 - 1)
    for w in where:
        key = (key * 6364136223846793005 + 1442695040888963407 + w) % 2**63
    return key


class TensorSource:
    """Rows of in-memory tensors, indexed directly on the device."""

    resumable = True

    def __init__(self, tensors: tuple[torch.Tensor, ...], batch_size: int, shards: Shards, device):
        self.data = tuple(t.to(device) for t in tensors)
        self.n = len(self.data[0])
        self.batch_size, self.shards = batch_size, shards
        self.steps_per_epoch = math.ceil(self.n / batch_size)

    def first(self, k: int) -> tuple[torch.Tensor, ...]:
        """The first ``k`` rows (all of them if there are fewer), for the checks and first forward pass."""
        return tuple(t[:min(k, self.n)] for t in self.data)

    def order(self, generator: torch.Generator) -> torch.Tensor:
        """The epoch's order of the rows: a random permutation drawn from ``generator``."""
        return torch.randperm(self.n, generator=generator)

    def batches(self, perm: torch.Tensor, pos: int, key: Callable[[int, int], int]
                ) -> Iterator[tuple[list[tuple[torch.Tensor, ...]], int]]:
        """From point ``pos`` of the epoch's order on: (this rank's shards, points in the global batch)."""
        for _, size, mine in _cut(perm.to(self.data[0].device), pos, self.batch_size, self.shards):
            yield [tuple(t[idx] for t in self.data) for _, idx in mine], size


def _cut(perm: torch.Tensor, pos: int, batch_size: int, shards: Shards, drop_last: bool = False):
    """The global batches of an epoch's order from point ``pos`` on: (batch number, points, this rank's
    shards as [(shard index, indices), ...]). A batch too small to give every shard a point (or, with
    ``drop_last``, any short last batch) has no shards, but its points still count towards ``pos``."""
    b = pos // batch_size  # batches start at multiples of batch_size (only the last one is short)
    while pos < len(perm):
        idx = perm[pos:pos + batch_size]
        pos += len(idx)
        mine = []
        if len(idx) >= shards.count and not (drop_last and len(idx) < batch_size):
            parts = torch.tensor_split(idx, shards.count) if shards.count > 1 else (idx,)
            mine = [(j, parts[j]) for j in shards.mine]
        yield b, len(idx), mine
        b += 1


class _Fetch(Dataset):
    """Fetches one whole shard per ``DataLoader`` item: ``(seed, indices) -> batch``, collated in the
    worker, under a torch seed of its own (restored afterwards)."""

    def __init__(self, dataset: Dataset, collate_fn: Callable | None):
        self.dataset, self.collate_fn = dataset, collate_fn or default_collate

    def __getitem__(self, spec: tuple[int, torch.Tensor]):
        seed, idx = spec
        if isinstance(self.dataset, TensorDataset):  # nothing random: index the tensors at once
            return tuple(t[idx] for t in self.dataset.tensors)
        idx = idx.tolist() if torch.is_tensor(idx) else idx
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)  # the CPU's (torch.manual_seed would reseed the GPUs too)
            state = random.getstate()
            random.seed(seed)
            try:
                many = getattr(self.dataset, "__getitems__", None)
                items = many(idx) if many is not None else [self.dataset[i] for i in idx]
            finally:
                random.setstate(state)
        if isinstance(items, list):
            return self.collate_fn(items)
        return items  # a data set whose __getitems__ returns the batch itself


class _Plan(torch.utils.data.Sampler):
    """The shard specs of the rest of one epoch; set before each ``iter(loader)`` (so persistent
    workers keep working across epochs)."""

    def __init__(self):
        self.specs: list = []

    def __iter__(self):
        return iter(self.specs)

    def __len__(self):
        return len(self.specs)


class MapSource:
    """A map-style data set, fetched shard by shard through a ``DataLoader``."""

    resumable = True

    def __init__(self, dataset: Dataset, batch_size: int, shards: Shards, device, *, shuffle: bool = True,
                 sampler=None, drop_last: bool = False, loader_options: dict | None = None):
        self.dataset, self.device, self.shuffle, self.sampler = dataset, torch.device(device), shuffle, sampler
        self.drop_last = drop_last
        try:
            self.n = len(sampler) if sampler is not None else len(dataset)
        except TypeError as e:
            raise TypeError(f"a map-style data set needs __len__: {type(dataset).__name__} has none "
                            "(for a stream, subclass torch.utils.data.IterableDataset)") from e
        if self.n == 0:
            raise ValueError("the training data set is empty")
        self.batch_size, self.shards = batch_size, shards
        self.steps_per_epoch = self.n // batch_size if drop_last else math.ceil(self.n / batch_size)
        options = dict(loader_options or {})
        self.pin = bool(options.get("pin_memory")) and self.device.type == "cuda"
        self.workers = options.get("num_workers", 0)
        self.plan = _Plan()
        # its own generator: starting an iterator draws a worker seed, which must not come from (and
        # advance) torch's global RNG, the model's; each fetch is seeded anyway
        self.loader = DataLoader(_Fetch(dataset, options.pop("collate_fn", None)), sampler=self.plan,
                                 batch_size=None, generator=torch.Generator().manual_seed(0), **options)

    def first(self, k: int) -> tuple[torch.Tensor, ...]:
        """The first ``k`` items (all of them if there are fewer), fetched as one batch onto the device."""
        return self._to_device(self.loader.dataset[(0, torch.arange(min(k, self.n)))])

    def order(self, generator: torch.Generator) -> torch.Tensor:
        """The epoch's order of item indices: the user's sampler's if there is one, else a random
        permutation drawn from ``generator`` (or 0, 1, ... without shuffling)."""
        if self.sampler is not None:  # the user's sampler decides the order (and may repeat points)
            return torch.as_tensor(list(iter(self.sampler)), dtype=torch.long)
        return torch.randperm(self.n, generator=generator) if self.shuffle else torch.arange(self.n)

    def _to_device(self, batch) -> tuple[torch.Tensor, ...]:
        return tuple(t.to(self.device, non_blocking=self.pin) for t in batch_tuple(batch))

    def batches(self, perm, pos, key):
        """From point ``pos`` of the epoch's order ``perm`` on: (this rank's shards, points in the
        global batch), each shard fetched through the ``DataLoader`` under the torch seed
        ``key(batch number, shard index)``."""
        specs, sizes = [], []
        for b, size, mine in _cut(perm, pos, self.batch_size, self.shards, self.drop_last):
            sizes.append(size)
            # indices as a tensor in this process; as a list to workers (a tensor would go through shared memory)
            specs.append([(key(b, j), idx.tolist() if self.workers else idx) for j, idx in mine])
        self.plan.specs = [s for step in specs for s in step]
        fetched = iter(self.loader)
        for step, size in zip(specs, sizes):
            yield [self._to_device(next(fetched)) for _ in step], size


class _EveryNth(IterableDataset):
    """Item i of a stream goes to process i mod world_size."""

    def __init__(self, dataset: IterableDataset, rank: int, size: int):
        self.dataset, self.rank, self.size = dataset, rank, size

    def __iter__(self):
        return itertools.islice(iter(self.dataset), self.rank, None, self.size)


class IterableSource:
    """A stream: batches of ``batch_size / (world_size × accumulate)`` items per shard; an epoch is
    one pass over the stream."""

    resumable = False

    def __init__(self, dataset: IterableDataset, batch_size: int, shards: Shards, device,
                 loader_options: dict | None = None, sync: Callable[[list[float]], list[float]] | None = None):
        self.device, self.shards, self.batch_size = torch.device(device), shards, batch_size
        if batch_size % shards.count:
            raise ValueError(f"batch_size {batch_size} must be divisible by world_size × accumulate = {shards.count} "
                             "for a stream: each shard takes the same number of items")
        stream = _EveryNth(dataset, shards.rank, shards.size) if shards.size > 1 else dataset
        options = dict(loader_options or {})
        self.pin = bool(options.get("pin_memory")) and self.device.type == "cuda"
        self.loader = DataLoader(stream, batch_size=batch_size // shards.count, **options)
        self.sync = sync or (lambda values: values)
        try:
            self.n = len(dataset)
            self.steps_per_epoch = math.ceil(self.n / batch_size)
        except TypeError:
            self.n, self.steps_per_epoch = None, None

    def first(self, k: int) -> tuple[torch.Tensor, ...]:
        """The stream's first items, up to ``k`` and at most one shard's, as one batch on the device.

        Raises:
            ValueError: if the stream is empty.
        """
        batch = next(iter(DataLoader(self.loader.dataset, batch_size=min(k, self.batch_size // self.shards.count),
                                     collate_fn=self.loader.collate_fn)), None)
        if batch is None:
            raise ValueError("the training stream is empty")
        return tuple(t.to(self.device) for t in batch_tuple(batch))

    def order(self, generator: torch.Generator) -> torch.Tensor:
        """An empty order: a stream has its own (``generator`` is not used)."""
        return torch.empty(0, dtype=torch.long)  # a stream has its own order

    def batches(self, perm, pos, key):
        """The stream's next global batches: (this process's ``accumulate`` shards, points in the global
        batch), until some process's stream cannot fill a whole step. ``perm``, ``pos`` and ``key``
        are not used: a stream resumes at epoch boundaries only."""
        it = iter(self.loader)
        while True:
            shards = list(itertools.islice(it, self.shards.accumulate))
            shards = [tuple(t.to(self.device, non_blocking=self.pin) for t in batch_tuple(b)) for b in shards]
            # every process must agree on whether the epoch goes on, and on the global batch size
            full, points = self.sync([float(len(shards) == self.shards.accumulate),
                                      float(sum(len(s[0]) for s in shards))])
            if full < self.shards.size:
                return
            yield shards, int(points)


def _loader_options(loader: DataLoader) -> dict[str, Any]:
    options = {}
    for name in LOADER_OPTIONS:
        if hasattr(loader, name):
            options[name] = getattr(loader, name)
    if options.get("collate_fn") is not None and getattr(options["collate_fn"], "__name__", "") == "default_collate":
        options.pop("collate_fn")
    return options


def _without_worker_options(options: dict) -> dict:
    if not options.get("num_workers"):  # these are only valid with workers
        for name in ("prefetch_factor", "persistent_workers"):
            options.pop(name, None)
    return options


def make_source(data, batch_size: int | None, shards: Shards, device, *, what: str = "train_data",
                loader_options: dict | None = None, sync=None):
    """The source for ``data`` (tensors, a ``Dataset`` or a ``DataLoader``) and its global batch size.

    ``batch_size=None`` takes a DataLoader's own batch size (128 otherwise); a DataLoader's and
    an explicit one that differ are an error.
    """
    options = _without_worker_options(dict(loader_options or {}))
    if isinstance(data, DataLoader):
        if data.batch_size is None or (data.batch_sampler is not None and type(data.batch_sampler) is not BatchSampler):
            raise ValueError(f"{what}: a DataLoader with a custom batch_sampler (or batch_size=None) cannot be cut "
                             "into shards or resumed; pass its data set with a sampler= instead")
        if batch_size is not None and batch_size != data.batch_size:
            raise ValueError(f"{what}: batch_size={batch_size} but the DataLoader's batch_size is {data.batch_size}; "
                             "give one of them")
        batch_size = data.batch_size
        options = _without_worker_options({**_loader_options(data), **options})
        dataset = data.dataset
        if not isinstance(dataset, IterableDataset):
            sampler = data.sampler
            if isinstance(sampler, DistributedSampler):
                raise ValueError(f"{what}: fit shares the data out over the processes itself; build the DataLoader "
                                 "without a DistributedSampler (shuffle=True, or a sampler of the whole data set)")
            plain = type(sampler) is SequentialSampler or (type(sampler) is RandomSampler and not sampler.replacement
                                                            and sampler._num_samples is None)
            return MapSource(dataset, batch_size, shards, device, shuffle=isinstance(sampler, RandomSampler),
                             sampler=None if plain else sampler, drop_last=data.drop_last,
                             loader_options=options), batch_size
        data = dataset
    batch_size = 128 if batch_size is None else batch_size
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(data, IterableDataset):
        return IterableSource(data, batch_size, shards, device, options, sync), batch_size
    if isinstance(data, TensorDataset) and not options.get("num_workers"):
        data = data.tensors
    if isinstance(data, Dataset):
        return MapSource(data, batch_size, shards, device, loader_options=options), batch_size
    return TensorSource(check_batch(data, what), batch_size, shards, device), batch_size
