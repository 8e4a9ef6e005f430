"""Data loaders: the embedded digits, the real data sets in ../shared/data, the data root,
clear errors for missing files, and pickles opened only after their hash matches."""

import pickle
import subprocess
import sys

import pytest
import torch

from pyro_gen import data


def test_digits_offline_split_is_fixed():
    a, b = data.load("digits"), data.load("digits")
    assert a.train.shape == (1297, 64) and a.val.shape == (250, 64) and a.test.shape == (250, 64)
    assert torch.equal(a.train, b.train)
    assert set(a.train.unique().tolist()) == {0.0, 1.0} and a.binary
    assert a.labels["test"].shape == (250,) and a.image_shape == (1, 8, 8)
    assert not torch.equal(data.load("digits", seed=1).test, a.test)


def test_binarized_mnist_static_split(shared_data):
    ds = data.load("binarized-mnist", data_root=shared_data)
    assert ds.train.shape == (50_000, 784) and ds.val.shape == (10_000, 784) and ds.test.shape == (10_000, 784)
    assert set(ds.test.unique().tolist()) == {0.0, 1.0}
    # the static binarization: about 13% of pixels are on
    assert 0.10 < ds.train.mean().item() < 0.16


def test_frey_faces_hash_checked(shared_data):
    ds = data.load("frey-faces", data_root=shared_data)
    assert len(ds.train) + len(ds.val) + len(ds.test) == 1965
    assert ds.train.shape[1] == 560 and 0.0 <= ds.train.min() and ds.train.max() <= 1.0


def test_data_root_from_environment(shared_data, monkeypatch):
    monkeypatch.setenv("PYRO_GEN_DATA", str(shared_data))
    path = data.find_file("frey_faces/freyfaces.pkl")
    assert path == shared_data / "frey_faces" / "freyfaces.pkl"


def test_missing_file_names_the_file_and_every_place(tmp_path, monkeypatch):
    monkeypatch.setenv("PYRO_GEN_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(data.DataNotFoundError) as err:
        data.load("binarized-mnist")
    msg = str(err.value)
    assert "binarized_mnist/binarized_mnist_train.amat" in msg
    for where in ("env", "cache"):
        assert str(tmp_path / where) in msg
    assert "download=True" in msg


def test_an_explicit_data_root_is_the_only_place_searched(shared_data, tmp_path, monkeypatch):
    """--data-root pointing at a folder without the file is an error naming that folder, even where
    $PYRO_GEN_DATA holds the file: no silent fall-back to another copy."""
    monkeypatch.setenv("PYRO_GEN_DATA", str(shared_data))
    with pytest.raises(data.DataNotFoundError) as err:
        data.load("binarized-mnist", data_root=tmp_path / "arg")
    msg = str(err.value)
    assert str(tmp_path / "arg") in msg and str(shared_data) not in msg
    assert data.find_file("frey_faces/freyfaces.pkl", data_root=shared_data) == shared_data / "frey_faces" / "freyfaces.pkl"


def test_torchvision_sets_missing_are_named(tmp_path, monkeypatch):
    monkeypatch.delenv("PYRO_GEN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(data.DataNotFoundError, match="fashion-mnist.*Looked in"):
        data.load("fashion-mnist", data_root=tmp_path)


class _Payload:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_tampered_pickle_is_never_loaded(tmp_path, monkeypatch):
    (tmp_path / "frey_faces").mkdir()
    (tmp_path / "frey_faces" / "freyfaces.pkl").write_bytes(pickle.dumps(_Payload()))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="refusing to unpickle.*SHA-256"):
        data.load("frey-faces", data_root=tmp_path)
    assert not (tmp_path / "PWNED").exists()


def test_unknown_data_set_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid choices: digits, binarized-mnist, mnist, fashion-mnist, frey-faces"):
        data.load("cifar")


def test_check_data_names_each_problem():
    x = torch.zeros(4, 3)
    assert data.check_data(x) is x
    x[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN values in 1 row.*row 2"):
        data.check_data(x, "train_data")
    with pytest.raises(ValueError, match="inf"):
        data.check_data(torch.tensor([[1.0, float("inf")]]))
    with pytest.raises(TypeError, match="dtype torch.int64"):
        data.check_data(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"shape \(N, D\).*\(2, 2, 2\)"):
        data.check_data(torch.zeros(2, 2, 2))
    with pytest.raises(ValueError, match="N >= 1"):
        data.check_data(torch.zeros(0, 2))


def test_import_stays_light():
    code = ("import sys, pyro_gen; heavy = [m for m in ('matplotlib', 'arviz', 'torchvision', 'sklearn') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def _write_idx(path, array):
    import gzip

    import numpy as np

    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)


def _write_mnist_like(folder, suffix=""):
    import numpy as np

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60), ("t10k", 12)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", rng.integers(0, 10, (n,)))


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_torchvision_sets_from_a_local_root(tmp_path, name, folder):
    _write_mnist_like(tmp_path / "torchvision" / folder / "raw")
    ds = data.load(name, data_root=tmp_path)
    assert ds.train.shape == (50, 784) and ds.val.shape == (10, 784) and ds.test.shape == (12, 784)
    assert 0.0 <= ds.train.min() and ds.train.max() <= 1.0 and ds.labels["train"].shape == (50,)


def test_torchvision_sets_from_gz_files_read_in_place(tmp_path):
    """The canonical .gz files are read as they are, with the same result as the unpacked ones."""
    _write_mnist_like(tmp_path / "gz" / "torchvision" / "MNIST" / "raw", suffix=".gz")
    _write_mnist_like(tmp_path / "raw" / "torchvision" / "MNIST" / "raw")
    before = sorted(p.name for p in (tmp_path / "gz").rglob("*"))
    a, b = data.load("mnist", data_root=tmp_path / "gz"), data.load("mnist", data_root=tmp_path / "raw")
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(a, split), getattr(b, split)) and torch.equal(a.labels[split], b.labels[split])
    assert a.labels["train"].dtype == torch.long and sorted(p.name for p in (tmp_path / "gz").rglob("*")) == before


def test_torchvision_download_goes_to_the_cache_folder(tmp_path, monkeypatch):
    """download=True asks torchvision to fetch the files into the cache, then reads them there
    (torchvision stands in for the network here)."""
    import torchvision

    calls = []

    def fake_mnist(root, train, download):
        calls.append((root, train, download))
        _write_mnist_like(tmp_path / "cache" / "pyro_gen" / "torchvision" / "MNIST" / "raw", suffix=".gz")

    monkeypatch.delenv("PYRO_GEN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(torchvision.datasets, "MNIST", fake_mnist)
    ds = data.load("mnist", data_root=tmp_path / "empty", download=True)
    assert calls == [(str(tmp_path / "cache" / "pyro_gen" / "torchvision"), False, True)]
    assert ds.train.shape == (50, 784) and ds.test.shape == (12, 784)


def test_corrupt_idx_files_are_named(tmp_path):
    import gzip

    import numpy as np

    good = tmp_path / "good-idx3-ubyte"
    _write_idx(good, np.arange(2 * 3 * 4).reshape(2, 3, 4))
    assert data.read_idx(good).shape == (2, 3, 4) and data.read_idx(good).dtype == np.uint8
    cases = {
        "truncated.gz": (gzip.compress(good.read_bytes())[:-12], "corrupt or truncated gzip"),
        "truncated": (good.read_bytes()[:-5], r"truncated IDX file: 35 bytes, expected 40 for shape \(2, 3, 4\)"),
        "magic": (b"\x08\x03" + good.read_bytes()[2:], "not an IDX file"),
        "header": (good.read_bytes()[:9], "truncated IDX header"),
    }
    for name, (payload, message) in cases.items():
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(ValueError, match=message) as err:
            data.read_idx(tmp_path / name)
        assert str(tmp_path / name) in str(err.value)


def test_real_mnist_from_the_shared_gz_files(shared_data):
    raw = shared_data / "torchvision" / "MNIST" / "raw"
    if not raw.is_dir():
        pytest.skip(f"{raw} not found")

    def listing():
        return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in shared_data.rglob("*"))

    before = listing()
    ds = data.load("mnist", data_root=shared_data)
    assert ds.train.shape == (50_000, 784) and ds.val.shape == (10_000, 784) and ds.test.shape == (10_000, 784)
    for split in ("train", "val", "test"):
        y = ds.labels[split]
        assert y.shape == (len(getattr(ds, split)),) and y.min() == 0 and y.max() == 9
        assert 0.0 <= getattr(ds, split).min() and getattr(ds, split).max() <= 1.0
    assert 0.12 < ds.train.mean().item() < 0.14  # MNIST's mean grey level is 0.1307
    assert listing() == before  # nothing written under the data root


def test_binarized_mnist_plain_text_amat_as_downloaded(tmp_path):
    # The canonical download is whitespace-separated text; the shared copies are MATLAB files.
    import numpy as np

    folder = tmp_path / "binarized_mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 5), ("valid", 3), ("test", 4)):
        np.savetxt(folder / f"binarized_mnist_{split}.amat", rng.integers(0, 2, (n, 784)), fmt="%d")
    ds = data.load("binarized-mnist", data_root=tmp_path)
    assert ds.train.shape == (5, 784) and ds.val.shape == (3, 784) and ds.test.shape == (4, 784)


def test_frey_faces_from_the_original_mat_file(tmp_path, monkeypatch):
    import numpy as np
    from scipy.io import savemat

    monkeypatch.delenv("PYRO_GEN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "frey_faces").mkdir()
    faces = np.random.default_rng(0).integers(0, 256, (560, 1000)).astype(np.uint8)  # stored one face per column
    savemat(tmp_path / "frey_faces" / "frey_rawface.mat", {"ff": faces})
    ds = data.load("frey-faces", data_root=tmp_path)
    assert len(ds.train) + len(ds.val) + len(ds.test) == 1000 and ds.dim == 560
    assert ds.train.max() <= 1.0


def test_20newsgroups_bag_of_words(shared_data):
    ds = data.load("20newsgroups", data_root=shared_data)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (6487, 500, 500)
    assert ds.dim == len(ds.vocab) == 1995
    # every document of the preprocessed file is non-empty; counts are whole numbers
    assert (ds.train.sum(1) > 0).all() and torch.equal(ds.train, ds.train.round())
    # the first document's words, counted by hand from the file, in a fixed split
    first = (shared_data / "20newsgroups" / "test.txt").read_text(encoding="latin1").splitlines()[0].split()
    all_docs = torch.cat([ds.train, ds.val, ds.test])
    row = torch.zeros(ds.dim)
    for w in first:
        row[ds.vocab.index(w)] += 1
    assert (all_docs == row).all(1).any()
    assert torch.equal(data.load("20newsgroups", data_root=shared_data).test, ds.test)


def test_jsb_chorales_piano_rolls(shared_data):
    ds = data.load("jsb-chorales", data_root=shared_data)
    assert ds.train.shape == (229, 160, 88) and len(ds.val) == 76 and len(ds.test) == 77
    assert set(ds.lengths) == {"train", "val", "test"}
    # nothing is played after a sequence ends; before the end, four-part chords of at most 4 keys (rests allowed)
    t = torch.arange(160)
    for split in ("train", "val", "test"):
        x, n = getattr(ds, split), ds.lengths[split]
        assert x[t >= n[:, None]].sum() == 0
        notes = x.sum(-1)[t < n[:, None]]
        assert notes.max() <= 4 and (notes == 4).float().mean() > 0.8
    # the first chord of the first training chorale is MIDI (60, 72, 79, 88): keys 39, 51, 58, 67
    assert ds.train[0, 0].nonzero().flatten().tolist() == [39, 51, 58, 67]


def test_random_subsets_come_from_across_a_split_sorted_by_class():
    from pyro_gen.data import random_subset

    labels = torch.arange(10).repeat_interleave(100)  # sorted by class, as binarized MNIST's test split
    idx = random_subset(len(labels), 50, seed=3)
    assert len(idx) == 50 and len(set(idx.tolist())) == 50 and torch.equal(idx, idx.sort().values)
    assert len(set(labels[idx].tolist())) == 10  # the head (labels[:50]) has one class
    assert torch.equal(idx, random_subset(len(labels), 50, seed=3))  # seeded
    assert not torch.equal(idx, random_subset(len(labels), 50, seed=4))
    assert torch.equal(random_subset(7, None, 0), torch.arange(7)) and torch.equal(random_subset(7, 9, 0), torch.arange(7))
