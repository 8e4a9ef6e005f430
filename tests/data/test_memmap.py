"""Rows of a raw file read lazily: written chunk by chunk and atomically, read back exactly, in
any order, with clear errors; a pass over a 200 MB file keeps resident memory far below its size."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pyro_gen.data import DataNotFoundError, MemmapDataset, write_memmap


def test_rows_read_back_in_any_order(tmp_path):
    x = torch.randn(10, 2, 3)
    ds = write_memmap(tmp_path / "sub" / "x.f32", [x[:4], x[4:7].numpy(), x[7:]])
    assert len(ds) == 10 and ds.row_shape == (2, 3) and ds.dtype == np.float32
    assert torch.equal(ds[0], x[0]) and torch.equal(ds[-1], x[9])
    idx = [7, 2, 2, 9, 0, 1, 3]  # unsorted, repeated, with a run
    assert torch.equal(torch.stack(ds.__getitems__(idx)), x[idx])
    assert torch.equal(torch.cat(list(DataLoader(ds, batch_size=4))), x)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["x.f32"]  # no temporary file left
    # another dtype, read back as float32
    small = write_memmap(tmp_path / "u8", [np.arange(12, dtype=np.uint8).reshape(4, 3)], dtype=np.uint8)
    assert small[3].dtype == torch.float32 and small[3].tolist() == [9.0, 10.0, 11.0]
    assert torch.equal(MemmapDataset(tmp_path / "u8", 3, np.uint8)[1], torch.tensor([3.0, 4.0, 5.0]))


def test_errors_name_the_file_and_sizes(tmp_path):
    with pytest.raises(DataNotFoundError, match=str(tmp_path / "missing.f32")):
        MemmapDataset(tmp_path / "missing.f32", 4)
    (tmp_path / "odd.f32").write_bytes(b"\0" * 20)
    with pytest.raises(ValueError, match=r"odd.f32: size 20 bytes is not a whole number of rows of 12 bytes "
                                         r"\(row_shape \(3,\) of float32\)"):
        MemmapDataset(tmp_path / "odd.f32", 3)
    ds = MemmapDataset(tmp_path / "odd.f32", 5)
    with pytest.raises(IndexError, match="row 1 out of range.*with 1 rows"):
        ds[1]

    def chunks():
        yield np.zeros((2, 3))
        yield np.zeros((2, 4))

    with pytest.raises(ValueError, match=r"chunk 1 has rows of shape \(4,\), the first chunk \(3,\)"):
        write_memmap(tmp_path / "bad.f32", chunks())
    with pytest.raises(TypeError, match="chunk 0: cannot store float64 as uint8"):
        write_memmap(tmp_path / "bad.u8", [np.zeros((2, 3))], dtype=np.uint8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.f32"]  # nothing half-written left behind


_CHILD = """
import json, resource, sys
import torch
from torch.utils.data import DataLoader
from pyro_gen.data import write_memmap

torch.set_num_threads(1)
scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
n_chunks, rows, dim = 64, 1000, 784
import pyro, pyro.distributions as dist
from pyro_gen import fit

def model(x):  # fit streams the file through it: one epoch of a Gaussian's mean
    loc = pyro.param("loc", torch.zeros(dim))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

# the same steps on a small file first, so that the code they page in is not counted
warm = write_memmap(sys.argv[1], [torch.rand(2048, dim)])
sum(b.sum() for b in DataLoader(warm, batch_size=1024, shuffle=True))
with pyro.get_param_store().scope():
    fit(model, lambda x: None, warm, epochs=1, batch_size=1024, progress=False)
before = peak()
total = 0.0

def chunks():
    global total
    g = torch.Generator().manual_seed(0)
    for _ in range(n_chunks):
        c = torch.rand(rows, dim, generator=g)
        total += float(c.numpy().sum(dtype="float64"))  # numpy casts in small buffers: no float64 copy
        yield c

ds = write_memmap(sys.argv[1], chunks())
mean, seen = torch.zeros((), dtype=torch.float64), 0
for batch in DataLoader(ds, batch_size=1024, shuffle=True):
    seen += len(batch)
    mean += (batch.sum(dtype=torch.float64) / dim - len(batch) * mean) / seen
result = fit(model, lambda x: None, ds, epochs=1, batch_size=1024, lr=0.05, progress=False)
print(json.dumps({"growth": peak() - before, "file": ds.path.stat().st_size, "seen": seen, "rows": len(ds),
                  "mean": mean.item(), "expected": total / (len(ds) * dim), "fit_steps": result.steps,
                  "fit_loc": pyro.param("loc").mean().item()}))
"""


def test_a_pass_over_a_large_file_and_fit_over_it_keep_memory_flat(tmp_path):
    out = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path / "big.f32")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["file"] == 64_000 * 784 * 4 and r["seen"] == r["rows"] == 64_000
    assert abs(r["mean"] - r["expected"]) < 1e-9 and abs(r["mean"] - 0.5) < 1e-3
    assert r["fit_steps"] == 63 and abs(r["fit_loc"] - 0.5) < 0.05  # fit went through the whole file
    assert r["growth"] < r["file"] / 4, f"peak resident memory grew by {r['growth'] / 2**20:.0f} MiB"
