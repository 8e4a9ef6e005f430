"""Throughput of ``fit`` on the MNIST VAE: processes, data loaders, precision, compilation.

The model is the quality benchmark's VAE (``VAE(784, 50, (200, 200), activation="tanh")``,
Bernoulli likelihood) on binarized MNIST, trained by ``fit`` under ``trace`` at a global batch of
128. What is measured, each as training seconds over ``--steps`` steps after a warm-up, over
``--rounds`` rounds with the configurations interleaved (the order rotates each round), median:

- ``throughput``: samples per second with P = 1 and P = 2 processes (``torchrun``, gloo on the
  CPU; the global batch stays 128, 64 per process). P = 1 runs with ``--threads`` torch threads,
  P = 2 with ``--threads / 2`` each, so both use the same cores. ``efficiency_2`` is
  throughput(2) / (2 × throughput(1)): on a machine with 2 cores this is bounded by what one
  process already gets from its two threads.
- ``dataloader_overhead``: a ``DataLoader`` over an in-memory ``TensorDataset`` (fit feeds it its
  own resumable order) against the tensors themselves, seconds per step; beside it a plain
  map-style ``Dataset`` of rows (per-item fetch and collation) and the same with 2 workers.
- ``bf16_speedup``, ``compile_speedup``: the plain path's seconds per step over those of
  ``precision="bf16-mixed"`` and ``compile=True`` (torch.compile's inductor on the networks).

Run from the repository root::

    PYRO_GEN_DATA=/path/to/shared/data python benchmarks/scaling.py [--steps 300 --rounds 3]
    python benchmarks/scaling.py --smoke --only tensor,dataloader,bf16   # random data, tiny sizes (CI)

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset, TensorDataset  # noqa: E402

from models.vae import VAE  # noqa: E402
from pyro_gen.data import DataNotFoundError, load  # noqa: E402
from pyro_gen.infer.train import fit  # noqa: E402

BATCH = 128


class Rows(Dataset):
    """A map-style data set as users write them: one row per item, collated by the loader."""

    def __init__(self, x: torch.Tensor):
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]


def train_data(smoke: bool) -> torch.Tensor:
    if smoke:
        return (torch.rand(2048, 784, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    return load("binarized-mnist").train


def vae(smoke: bool) -> VAE:
    return VAE(784, 8, (32,), activation="tanh") if smoke else VAE(784, 50, (200, 200), activation="tanh")


def seconds_per_step(x: torch.Tensor, smoke: bool, steps: int, warmup: int, data=None, **kw) -> float:
    """Training seconds per step over ``steps`` steps, after ``warmup`` steps of the same modules."""
    torch.manual_seed(0)
    model = vae(smoke)
    common = {"epochs": 10**6, "progress": False, "seed": 0, **kw}
    if data is None:
        data = x
    if warmup:
        fit(model.model, model.guide, data, max_steps=warmup, **common)
    result = fit(model.model, model.guide, data, max_steps=steps, **common)
    return result.seconds / result.steps


IN_PROCESS = {
    "tensor": lambda x: {},
    "dataloader": lambda x: {"data": DataLoader(TensorDataset(x), batch_size=BATCH, shuffle=True)},
    "dataset_rows": lambda x: {"data": Rows(x)},
    "dataset_rows_2_workers": lambda x: {"data": Rows(x), "num_workers": 2, "persistent_workers": True},
    "bf16": lambda x: {"precision": "bf16-mixed"},
    "compile": lambda x: {"compile": True},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes(p: int, args) -> float:
    """Samples per second of ``p`` processes under torchrun (this script's --worker mode)."""
    threads = max(1, args.threads // p)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={p}", f"--master_port={_free_port()}",
         __file__, "--worker", "--steps", str(args.steps), "--warmup", str(args.warmup),
         *(["--smoke"] if args.smoke else []), "--threads", str(threads)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"torchrun with {p} processes failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["samples_per_s"]


def worker(args) -> None:
    torch.set_num_threads(args.threads)
    x = train_data(args.smoke)
    per_step = seconds_per_step(x, args.smoke, args.steps, args.warmup, batch_size=BATCH)
    if int(os.environ.get("RANK", 0)) == 0:
        print(json.dumps({"samples_per_s": BATCH / per_step}))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--only", default=None, help="comma-separated configurations to time (the others report null): "
                   "tensor, dataloader, dataset_rows, dataset_rows_2_workers, bf16, compile, P=1, P=2")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default="runs/bench_scaling")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.warmup, args.rounds = 10, 3, 1
    if args.worker:
        worker(args)
        return {}
    try:
        x = train_data(args.smoke)
    except DataNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    torch.set_num_threads(args.threads)
    configs = [*IN_PROCESS, "P=1", "P=2"]
    if args.only:
        unknown = set(args.only.split(",")) - set(configs)
        if unknown:
            p.error(f"unknown configuration(s) {', '.join(sorted(unknown))}; valid choices: {', '.join(configs)}")
        configs = [c for c in configs if c in args.only.split(",")]
    times: dict[str, list[float]] = {c: [] for c in configs}
    for r in range(args.rounds):
        order = configs[r % len(configs):] + configs[:r % len(configs)]
        for c in order:
            t0 = time.perf_counter()
            if c.startswith("P="):
                times[c].append(processes(int(c[2:]), args))
            else:
                kw = IN_PROCESS[c](x)
                kw.setdefault("batch_size", None if isinstance(kw.get("data"), DataLoader) else BATCH)
                times[c].append(seconds_per_step(x, args.smoke, args.steps, args.warmup, **kw))
            print(f"round {r + 1}/{args.rounds} {c}: {times[c][-1]:.4g} ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr)
    med = {c: statistics.median(times[c]) if c in times else float("nan") for c in [*IN_PROCESS, "P=1", "P=2"]}
    result = {
        "data": "random (smoke)" if args.smoke else "binarized-mnist", "batch": BATCH, "steps": args.steps,
        "rounds": args.rounds, "threads": args.threads,
        "ms_per_step": {c: 1000 * med[c] for c in IN_PROCESS},
        "throughput": {"1": med["P=1"], "2": med["P=2"]},
        "efficiency_2": med["P=2"] / (2 * med["P=1"]),
        "dataloader_overhead": med["dataloader"] / med["tensor"],
        "dataset_rows_overhead": med["dataset_rows"] / med["tensor"],
        "dataset_rows_2_workers_overhead": med["dataset_rows_2_workers"] / med["tensor"],
        "bf16_speedup": med["tensor"] / med["bf16"],
        "compile_speedup": med["tensor"] / med["compile"],
    }
    out = ROOT / args.out if not Path(args.out).is_absolute() else Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scaling.json").write_text(json.dumps(_none_for_nan(result), indent=1))
    _figure(result, out / "scaling.png")
    result = {k: _none_for_nan(v) for k, v in result.items()}
    print(json.dumps(result))
    return result


def _none_for_nan(v):
    if isinstance(v, dict):
        return {k: _none_for_nan(u) for k, u in v.items()}
    return None if isinstance(v, float) and v != v else v


def _figure(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    ms = result["ms_per_step"]
    a.barh(list(ms), list(ms.values()))
    a.set_xlabel("ms per step (batch 128), one process")
    a.invert_yaxis()
    tp = result["throughput"]
    b.bar([f"P={k}" for k in tp], list(tp.values()))
    b.set_ylabel("samples / s")
    b.set_title(f"torchrun, gloo; efficiency {result['efficiency_2']:.2f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
