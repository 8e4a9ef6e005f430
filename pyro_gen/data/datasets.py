"""Data sets for generative models, as float tensors with one row per data point.

``load(name)`` returns a :class:`Dataset` with ``train``, ``val`` and ``test``
tensors (N, D), optional integer labels, and the image shape. Files are looked
up under a data root: the ``data_root`` argument, else ``$PYRO_GEN_DATA``, else
the user cache folder (``$XDG_CACHE_HOME/pyro_gen`` or ``~/.cache/pyro_gen``).
The layout is the one of ``../shared/data`` (``binarized_mnist/...``,
``frey_faces/...``). When a file is missing and ``download=True``, it is fetched
from its canonical source into the cache folder; otherwise the error names the
file and every place it was looked for.

Pickles run code when loaded, so a pickle is opened only after its SHA-256
matches a known value.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

__all__ = ["Dataset", "load", "names", "data_roots", "find_file", "safe_unpickle", "read_idx", "DataNotFoundError",
           "KNOWN_SHA256"]

#: The SHA-256 of each pickled data file, by its path under the data root. :func:`safe_unpickle`
#: refuses to unpickle a file that is not listed here or does not match.
KNOWN_SHA256 = {
    "frey_faces/freyfaces.pkl": "3b69410c6a5fd6e03f09012905168be3712373a094a776f7e58fcd0670d2138a",
    "20newsgroups/vocab.pkl": "f73390efc9bb4635f5abb788c1368596f5cf058baa8174bd3fae248549b3ab6f",
    "jsb_chorales/jsb-chorales-quarter.pkl": "be67b1e1d0ea22a0c64eb72db53a83dae65650a7b470ca09a34a1e43a3fb4405",
}

_URLS = {
    # The static binarization of Larochelle & Murray (2011), as plain-text .amat files.
    **{
        f"binarized_mnist/binarized_mnist_{s}.amat": (
            f"http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/binarized_mnist_{s}.amat"
        )
        for s in ("train", "valid", "test")
    },
    "frey_faces/frey_rawface.mat": "https://cs.nyu.edu/~roweis/data/frey_rawface.mat",
}


class DataNotFoundError(FileNotFoundError):
    """A data file is in none of the places looked in."""


@dataclass
class Dataset:
    """A data set split three ways. Tensors are float32 with one row per data point."""

    name: str
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    image_shape: tuple[int, ...] | None = None
    binary: bool = False
    labels: dict[str, torch.Tensor] = field(default_factory=dict)
    #: The true length of each sequence, by split (``"train"``, ``"val"``, ``"test"``), for sequence
    #: data of shape (N, T, D) padded with zeros; empty otherwise.
    lengths: dict[str, torch.Tensor] = field(default_factory=dict)
    #: The word of each column, for bag-of-words data (None otherwise).
    vocab: list[str] | None = None
    #: The known factors of variation of each row, by split, as integer indices (N, F), for data
    #: rendered from factors (``shapes``); empty otherwise. Their names are :attr:`factor_names`.
    factors: dict[str, torch.Tensor] = field(default_factory=dict)
    factor_names: tuple[str, ...] = ()

    @property
    def dim(self) -> int:
        return self.train.shape[-1]

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={tuple(self.train.shape)}, val={tuple(self.val.shape)}, "
                f"test={tuple(self.test.shape)}, image_shape={self.image_shape}, binary={self.binary})")


# --- where files live --------------------------------------------------------------------


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pyro_gen"


def data_roots(data_root: str | os.PathLike | None = None) -> list[tuple[Path, str]]:
    """The folders searched for data files, in order, each with where it came from.

    An explicit ``data_root`` is the only folder searched: a file missing there is an error
    naming it, never a silent fall-back to ``$PYRO_GEN_DATA`` or the cache."""
    if data_root is not None:
        return [(Path(data_root).expanduser(), "data_root argument")]
    roots = []
    env = os.environ.get("PYRO_GEN_DATA")
    if env:
        roots.append((Path(env).expanduser(), "$PYRO_GEN_DATA"))
    roots.append((_cache_dir(), "user cache folder"))
    return roots


def find_file(relpath: str, data_root=None, download: bool = False, alternatives: Sequence[str] = ()) -> Path:
    """The first existing ``root/relpath`` (or ``root/alternative``) over :func:`data_roots`.

    Downloads ``relpath`` into the cache folder when missing, ``download`` is set and
    a canonical source is known; otherwise raises :class:`DataNotFoundError` naming
    the file and every folder that was searched.
    """
    candidates = [relpath, *alternatives]
    roots = data_roots(data_root)
    for root, _ in roots:
        for rel in candidates:
            if (root / rel).is_file():
                return root / rel
    if download:
        for rel in candidates:
            if rel in _URLS:
                return _download(_URLS[rel], _cache_dir() / rel)
    looked = "; ".join(f"{root} ({why})" for root, why in roots)
    hint = " or pass download=True" if any(r in _URLS for r in candidates) else ""
    raise DataNotFoundError(
        f"data file {' or '.join(candidates)} not found. Looked in: {looked}. "
        f"Point PYRO_GEN_DATA (or --data-root) at a folder holding it{hint}."
    )


def _download(url: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            shutil.copyfileobj(response, out)
        os.replace(tmp, dest)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise DataNotFoundError(f"could not download {url} to {dest}: {e}") from e
    return dest


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def safe_unpickle(path: Path, relpath: str):
    """Unpickle ``path`` only if its SHA-256 is the known one for ``relpath``."""
    expected = KNOWN_SHA256.get(relpath)
    if expected is None:
        raise ValueError(f"refusing to unpickle {path}: no known SHA-256 for {relpath}")
    actual = _sha256(path)
    if actual != expected:
        raise ValueError(f"refusing to unpickle {path}: SHA-256 {actual} does not match the known {expected}")
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


# --- loaders -----------------------------------------------------------------------------


def _split(x: torch.Tensor, n_val: int, n_test: int, seed: int, y: torch.Tensor | None = None):
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    parts = {"test": perm[:n_test], "val": perm[n_test:n_test + n_val], "train": perm[n_test + n_val:]}
    xs = {k: x[idx] for k, idx in parts.items()}
    ys = {k: y[idx] for k, idx in parts.items()} if y is not None else {}
    return xs, ys


def _digits(data_root=None, download=False, seed=0, binarize=True) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.as_tensor(bunch.data, dtype=torch.float32) / 16.0
    if binarize:
        x = (x > 0.5).float()
    y = torch.as_tensor(bunch.target, dtype=torch.long)
    xs, ys = _split(x, 250, 250, seed, y)
    return Dataset("digits", xs["train"], xs["val"], xs["test"], (1, 8, 8), binarize, ys)


def _shapes(variant: str, n_train: int | None, n_val: int, n_test: int) -> Callable[..., Dataset]:
    """A loader of procedural shapes (:mod:`pyro_gen.data.shapes`): the whole grid split three ways,
    or a seeded subset of ``n_train`` training images when the grid is too large to hold as floats."""

    def load(data_root=None, download=False, seed=0) -> Dataset:
        from .shapes import FACTORS, Shapes

        ds = Shapes(variant)
        n = len(ds) if n_train is None else n_train + n_val + n_test
        index = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n]
        parts = {"test": index[:n_test], "val": index[n_test:n_test + n_val], "train": index[n_test + n_val:]}
        xs = {k: ds.images(idx) for k, idx in parts.items()}
        fs = {k: ds.grid.factors(idx) for k, idx in parts.items()}
        name = "shapes" if variant == "full" else f"shapes-{variant}"
        return Dataset(name, xs["train"], xs["val"], xs["test"], ds.image_shape, True, factors=fs, factor_names=FACTORS)

    return load


def _read_amat(path: Path) -> np.ndarray:
    try:  # the copies in ../shared/data are MATLAB v5 files despite the name
        from scipy.io import loadmat

        return np.asarray(loadmat(str(path))["X"])
    except ValueError:  # the canonical download is plain text
        return np.loadtxt(path, dtype=np.uint8)


def _binarized_mnist(data_root=None, download=False, seed=0) -> Dataset:
    parts = {}
    for split in ("train", "valid", "test"):
        path = find_file(f"binarized_mnist/binarized_mnist_{split}.amat", data_root, download)
        arr = _read_amat(path)
        if arr.shape[1:] != (784,):
            raise ValueError(f"{path}: expected 784 pixels per row, got shape {arr.shape}")
        parts[split] = torch.as_tensor(arr, dtype=torch.float32)
    return Dataset("binarized-mnist", parts["train"], parts["valid"], parts["test"], (1, 28, 28), True)


def _frey_faces(data_root=None, download=False, seed=0) -> Dataset:
    rel = "frey_faces/freyfaces.pkl"
    path = find_file(rel, data_root, download, alternatives=["frey_faces/frey_rawface.mat"])
    if path.suffix == ".pkl":
        arr = np.asarray(safe_unpickle(path, rel)[0])
    else:
        from scipy.io import loadmat

        arr = np.asarray(loadmat(str(path))["ff"]).T
    x = torch.as_tensor(arr.reshape(-1, 560), dtype=torch.float32) / 255.0
    xs, _ = _split(x, 200, 200, seed)
    return Dataset("frey-faces", xs["train"], xs["val"], xs["test"], (1, 28, 20), False)


# IDX type codes (LeCun's MNIST format) and their big-endian numpy dtypes.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file (MNIST's format), gzip'ed or not, as a numpy array in native byte order.

    The header is two zero bytes, a type code (0x08 for uint8), the number of dimensions,
    then each dimension as a big-endian uint32. Raises ``ValueError`` naming the file when
    it is corrupt or truncated."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as e:
            raise ValueError(f"{path}: corrupt or truncated gzip file: {e}") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (magic bytes {raw[:4].hex() or 'missing'}; expected "
                         f"00 00, a type code in {{{', '.join(f'{c:02x}' for c in _IDX_DTYPES)}}}, the rank)")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header: {len(raw)} bytes, expected {header} for {ndim} dimensions")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path}: {'truncated' if len(raw) < expected else 'trailing bytes in'} IDX file: "
                         f"{len(raw)} bytes, expected {expected} for shape {shape} of {dtype.name}")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _idx_files(folder: Path) -> list[Path] | None:
    """The four MNIST-style files in ``folder``, each unpacked or ``.gz``; None unless all are there."""
    found = []
    for name in _IDX_FILES:
        path = next((folder / n for n in (name, name + ".gz") if (folder / n).is_file()), None)
        if path is None:
            return None
        found.append(path)
    return found


def _torchvision(cls_name: str, label: str) -> Callable[..., Dataset]:
    def load_tv(data_root=None, download=False, seed=0) -> Dataset:
        roots = [r for r, _ in data_roots(data_root)]
        files = next((f for f in (_idx_files(r / "torchvision" / cls_name / "raw") for r in roots) if f), None)
        if files is None:
            if not download:
                looked = "; ".join(str(r / "torchvision" / cls_name / "raw") for r in roots)
                raise DataNotFoundError(
                    f"{label}: torchvision files not found ({', '.join(n + '[.gz]' for n in _IDX_FILES)}). "
                    f"Looked in: {looked}. "
                    "Pass download=True (--download) or point PYRO_GEN_DATA at a folder holding them."
                )
            import torchvision

            cache = _cache_dir() / "torchvision"
            try:  # downloads the four files into cache/<cls_name>/raw
                getattr(torchvision.datasets, cls_name)(str(cache), train=False, download=True)
            except Exception as e:  # network errors come in many types
                raise DataNotFoundError(f"{label}: download failed: {e}") from e
            files = _idx_files(cache / cls_name / "raw")
            if files is None:
                raise DataNotFoundError(f"{label}: download left no IDX files in {cache / cls_name / 'raw'}")
        images, labels = {}, {}
        for split, (x_path, y_path) in (("train", files[:2]), ("test", files[2:])):
            x, y = read_idx(x_path), read_idx(y_path)
            if x.ndim != 3 or x.shape[1:] != (28, 28) or x.dtype != np.uint8:
                raise ValueError(f"{x_path}: expected uint8 images (N, 28, 28), got {x.dtype} {x.shape}")
            if y.shape != x.shape[:1]:
                raise ValueError(f"{y_path}: expected {len(x)} labels, one per image of {x_path}, got shape {y.shape}")
            images[split] = torch.from_numpy(x.reshape(-1, 784)).float() / 255.0
            labels[split] = torch.from_numpy(y).long()
        train_x, test_x, train_y, test_y = images["train"], images["test"], labels["train"], labels["test"]
        n_val = min(10000, len(train_x) // 6)  # the usual 50k/10k split of the 60k training images
        perm = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed))
        val_idx, tr_idx = perm[:n_val], perm[n_val:]
        return Dataset(label, train_x[tr_idx], train_x[val_idx], test_x, (1, 28, 28), False,
                       {"train": train_y[tr_idx], "val": train_y[val_idx], "test": test_y})

    return load_tv


def _newsgroups(data_root=None, download=False, seed=0) -> Dataset:
    """20 Newsgroups as preprocessed for ProdLDA: word counts (N, 1995), one row a document.

    The shared copy holds ProdLDA's test split only (7,487 documents); it is split
    again, with a fixed seed, into 6,487 train, 500 validation and 500 test documents.
    """
    vocab_rel = "20newsgroups/vocab.pkl"
    word_index = safe_unpickle(find_file(vocab_rel, data_root, download), vocab_rel)
    vocab = [""] * len(word_index)
    for word, i in word_index.items():
        vocab[i] = word
    path = find_file("20newsgroups/test.txt", data_root, download)
    rows, cols = [], []
    with open(path, encoding="latin1") as f:
        docs = [line.split() for line in f if line.strip()]
    for d, words in enumerate(docs):
        for w in words:
            if w in word_index:  # the preprocessed files have no out-of-vocabulary words
                rows.append(d)
                cols.append(word_index[w])
    counts = torch.zeros(len(docs), len(vocab))
    counts.index_put_((torch.tensor(rows), torch.tensor(cols)), torch.ones(len(rows)), accumulate=True)
    xs, _ = _split(counts, 500, 500, seed)
    return Dataset("20newsgroups", xs["train"], xs["val"], xs["test"], vocab=vocab)


def _jsb_chorales(data_root=None, download=False, seed=0) -> Dataset:
    """JSB chorales as piano rolls (N, T, 88) padded with zeros, with the length of each.

    Reads the JSON copy, so no pickle is opened. MIDI note m is piano key m - 21,
    as in Pyro's deep Markov model example.
    """
    import json

    path = find_file("jsb_chorales/jsb-chorales-quarter.json", data_root, download)
    with open(path) as f:
        raw = json.load(f)
    t_max = max(len(seq) for split in raw.values() for seq in split)
    parts, lengths = {}, {}
    for split in ("train", "valid", "test"):
        seqs = raw[split]
        rolls = torch.zeros(len(seqs), t_max, 88)
        for i, seq in enumerate(seqs):
            for t, chord in enumerate(seq):
                keys = [int(n) - 21 for n in chord]
                if any(k < 0 or k >= 88 for k in keys):
                    raise ValueError(f"{path}: {split} sequence {i} step {t} has a note outside the piano: {chord}")
                rolls[i, t, keys] = 1.0
        parts[split] = rolls
        lengths[split] = torch.tensor([len(seq) for seq in seqs])
    lengths["val"] = lengths.pop("valid")
    return Dataset("jsb-chorales", parts["train"], parts["valid"], parts["test"], binary=True, lengths=lengths)


_LOADERS: dict[str, Callable[..., Dataset]] = {
    "digits": _digits,
    "binarized-mnist": _binarized_mnist,
    "mnist": _torchvision("MNIST", "mnist"),
    "fashion-mnist": _torchvision("FashionMNIST", "fashion-mnist"),
    "frey-faces": _frey_faces,
    "20newsgroups": _newsgroups,
    "jsb-chorales": _jsb_chorales,
    "shapes": _shapes("full", 50_000, 5_000, 5_000),
    "shapes-small": _shapes("small", None, 500, 500),
}


def names() -> list[str]:
    """The data set names :func:`load` accepts."""
    return list(_LOADERS)


def load(name: str, data_root: str | os.PathLike | None = None, download: bool = False, seed: int = 0) -> Dataset:
    """Load a data set by name.

    Args:
        name: one of :func:`names`: ``digits`` (scikit-learn's bundled 8x8 digits,
            binarized, offline), ``binarized-mnist`` (the static Larochelle split),
            ``mnist`` and ``fashion-mnist`` (torchvision's IDX files, ``.gz`` or
            unpacked, read in place; grey values in [0, 1], labels set),
            ``frey-faces`` (20x28 grey faces in [0, 1]), ``20newsgroups`` (word
            counts, ``vocab`` set), ``jsb-chorales`` (piano rolls (N, T, 88),
            ``lengths`` set), ``shapes`` (a seeded 60,000 of the 737,280 procedural
            64x64 shapes of dSprites' factor grid, :mod:`pyro_gen.data.shapes`; the whole grid
            streams from :class:`pyro_gen.data.Shapes`) and ``shapes-small`` (all 4,608 of the
            32x32 test grid), both with ``factors`` set.
        data_root: folder to search first (see module docstring).
        download: fetch a missing file from its canonical source.
        seed: seed of the fixed train/val/test split where the source has none.

    Examples:
        >>> ds = load("digits")
        >>> ds.train.shape, ds.val.shape, ds.test.shape, ds.image_shape
        (torch.Size([1297, 64]), torch.Size([250, 64]), torch.Size([250, 64]), (1, 8, 8))
        >>> sorted(ds.labels)
        ['test', 'train', 'val']
    """
    if name not in _LOADERS:
        raise ValueError(f"unknown data set {name!r}; valid choices: {', '.join(names())}")
    return _LOADERS[name](data_root=data_root, download=download, seed=seed)
