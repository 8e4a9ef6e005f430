"""Seconds per training step of the deep Markov model with and without IAF guide layers.

What is measured: one loss + backward of ``DMM(88)`` and ``DMM(88, num_iafs=2)`` (the README's
model) under ``trace`` on batches of 20 JSB chorales, interleaved over rounds (the order rotates),
median per configuration; ``ratio`` is the IAF guide's time over the Gaussian guide's. Issue 17
found 7x (8.1 s against 1.15 s): Pyro scores z_t after the guide has run, when the IAF layers'
one-entry caches held the last step only, so log q(z_t) inverted the autoregressive transforms
(88 network passes per layer and step). ``models/dmm.py`` now gives each step its own cache.

Run from the repository root::

    PYRO_GEN_DATA=/path/to/shared/data python benchmarks/dmm_iaf_speed.py [--rounds 5]
    python benchmarks/dmm_iaf_speed.py --smoke     # random data, tiny sizes (CI)

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pyro  # noqa: E402
import torch  # noqa: E402

from models.dmm import DMM  # noqa: E402
from pyro_gen import objectives  # noqa: E402
from pyro_gen.data import DataNotFoundError, load  # noqa: E402


def batch(smoke: bool) -> tuple[torch.Tensor, torch.Tensor, str]:
    if not smoke:
        try:
            ds = load("jsb-chorales")
            lengths = ds.lengths["train"][:20]
            return ds.train[:20, : int(lengths.max())], lengths, "jsb-chorales"
        except DataNotFoundError as e:
            print(f"jsb-chorales not found, timing on random piano rolls ({e})", file=sys.stderr)
    g = torch.Generator().manual_seed(0)
    n, t = (4, 8) if smoke else (20, 129)
    return (torch.rand(n, t, 88, generator=g) < 0.1).float(), torch.full((n,), t), "random"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--smoke", action="store_true", help="2 rounds on a tiny random batch (CI)")
    args = p.parse_args(argv)
    rounds = 2 if args.smoke else args.rounds
    torch.set_num_threads(args.threads)
    x, lengths, source = batch(args.smoke)
    elbo = objectives.get("trace")
    nets = {}
    for iafs in (0, 2):
        torch.manual_seed(0)
        nets[f"iafs_{iafs}"] = DMM(88, num_iafs=iafs)
    times: dict[str, list[float]] = {k: [] for k in nets}

    def step(net) -> float:
        net.zero_grad()
        t0 = time.perf_counter()
        with pyro.validation_enabled(False):
            elbo.differentiable_loss(net.model, net.guide, x, lengths).backward()
        return time.perf_counter() - t0

    for net in nets.values():
        step(net)  # warm-up
    for r in range(rounds):
        order = list(nets) if r % 2 == 0 else list(nets)[::-1]
        for name in order:
            times[name].append(step(nets[name]))
        print(f"round {r + 1}/{rounds}: " + "  ".join(f"{k}={v[-1]:.3f}s" for k, v in times.items()), file=sys.stderr)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"seconds_per_step": {k: round(v, 4) for k, v in med.items()},
           "ratio": round(med["iafs_2"] / med["iafs_0"], 3), "batch": list(x.shape), "data": source,
           "rounds": rounds, "threads": args.threads}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
