"""Wall time per training step: pyro_gen against hand-written PyTorch, same work.

What is measured: the milliseconds one optimizer step takes for a VAE 784-400-50
(ReLU MLP, Bernoulli-logits likelihood, ``VAE(784, 50, (400,))``) on a batch of 128
binarized-MNIST images with Adam (lr 1e-3) on 2 CPU threads, for three objectives:

- ``trace``: the ELBO with one reparameterized sample (``Trace_ELBO``);
- ``meanfield``: the ELBO with the analytic Gaussian KL (``TraceMeanField_ELBO``);
- ``iwae5``: IWAE with k=5 vectorized particles (encoder once, decoder on (5, B, 50)).

The pyro_gen side is the step :func:`pyro_gen.fit` takes, called as fit calls it
(``Run.step`` in ``pyro_gen/infer/run.py``): the objective's loss / B with Pyro's
validation off, ``loss.item()``, ``zero_grad``, ``backward``, ``step``. By default fit
replays the step recorded on its first call (``pyro_gen/infer/fastpath.py``); the same
step with ``fast=False`` (through Pyro's handlers and ``differentiable_loss``) is timed
beside it and reported as ``standard_ms`` and ``standard_ratio``. The reference is the same objective written by hand in
PyTorch on the same encoder/decoder modules (log densities written out, loss = mean
over the batch). A fourth row times plain ``pyro.infer.SVI`` with ``pyro.optim.Adam``
and ``Trace_ELBO`` written as in Pyro's VAE example (``pyro.module`` registration,
Pyro's default validation on) against the same hand-written ``trace`` reference.

How: every implementation has its own model instance (same initial weights) and
optimizer, and all see the same precomputed batches. After a warm-up, each of R
rounds runs S steps of every implementation in turn (the order rotates between
rounds so none always runs first); the reported milliseconds are medians over rounds.
``ratio`` is pyro_gen (or Pyro) time over PyTorch time, the median over rounds of each
round's own ratio (on a shared machine whose speed drifts from round to round, the two
sides of one round see the same load).

Run from the repository root::

    PYRO_GEN_DATA=/path/to/shared/data python benchmarks/vae_speed.py [--rounds 60] [--steps 5]
    python benchmarks/vae_speed.py --smoke        # 2 rounds of 2 steps, for CI
    python benchmarks/vae_speed.py --batch 64 --hidden 200 200 --z-dim 20 --no-small   # another size

Each size is reported in the same rows; the JSON's ``"small"`` holds them for a 784-64-8 VAE on
batches of 16, the regime where Pyro's per-step work, not the compute, dominates.

Without the binarized-MNIST files it uses random binary data of the same shape and
says so (``"data": "random"``); the timing does not depend on pixel values.
The last line printed is one JSON object with the results.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

# The script is run as `python benchmarks/vae_speed.py`; `models` lives at the repository root.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import pyro_gen  # noqa: E402,F401
from models.vae import VAE  # noqa: E402
from pyro_gen.data import DataNotFoundError, load  # noqa: E402
from pyro_gen.infer.run import Run  # noqa: E402

X_DIM, Z_DIM, HIDDEN = 784, 50, (400,)
BATCH = 128
# The overhead regime (issue 18): a small VAE on small batches, where Pyro's per-step work dominates.
SMALL = {"batch": 16, "hidden": (64,), "z_dim": 8}
LR = 1e-3
THREADS = 2
DEVICE = torch.device("cpu")  # --device cuda: the same steps on a GPU (where one is available)
K_IWAE = 5
LOG_2PI = math.log(2 * math.pi)

Step = Callable[[torch.Tensor], float]


# --- data ----------------------------------------------------------------------------------


def load_train(n_random: int = 10_000) -> tuple[torch.Tensor, str]:
    """Binarized-MNIST training images, or random binary data when the files are missing.

    Returns:
        The (N, 784) float tensor and the name reported in the JSON (``"binarized-mnist"``
        or ``"random"``).
    """
    try:
        return load("binarized-mnist").train, "binarized-mnist"
    except DataNotFoundError as e:
        print(f"binarized-mnist not found, timing on random binary data instead ({e})", file=sys.stderr)
        gen = torch.Generator().manual_seed(0)
        return (torch.rand(n_random, X_DIM, generator=gen) < 0.13).float(), "random"


def make_batches(train: torch.Tensor, count: int, seed: int = 0) -> list[torch.Tensor]:
    """``count`` distinct batches of 128 rows (contiguous copies), shared by every implementation."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(train), generator=gen)
    need = count * BATCH
    while len(perm) < need:  # tiny data sets (never the real one): wrap around
        perm = torch.cat([perm, torch.randperm(len(train), generator=gen)])
    return [train[perm[i * BATCH:(i + 1) * BATCH]].contiguous().to(DEVICE) for i in range(count)]


def new_vae(seed: int = 0) -> VAE:
    """A fresh VAE 784-400-50; the same seed gives every implementation the same initial weights."""
    torch.manual_seed(seed)
    return VAE(X_DIM, Z_DIM, HIDDEN).to(DEVICE)


# --- pyro_gen: the step inside fit ---------------------------------------------------------


def pyro_gen_step(objective: str, fast: bool = True) -> Step:
    """One training step of ``pyro_gen.fit`` for ``objective``: its own code, ``Run.step``.

    ``Run`` is the object ``fit`` loops over (``pyro_gen/infer/run.py``); its ``step``
    computes ``differentiable_loss / B``, reads the value with ``.item()`` (the NaN
    guard), then zero_grad/backward/step. Validation is off, as in ``fit`` by default.
    """
    vae = new_vae()
    run = Run(vae.model, vae.guide, torch.zeros(BATCH, X_DIM), objective=objective, epochs=1, batch_size=BATCH,
              lr=LR, optimizer="adam", weight_decay=0.0, val_data=None, val_batch_size=BATCH, patience=None,
              beta=1.0, kl_anneal=0.0, clip_norm=None, lr_schedule=None, seed=None, device=DEVICE, out=None,
              checkpoint_every=1, max_steps=None, max_seconds=None, fast=fast)

    def step(x: torch.Tensor) -> float:
        with pyro.validation_enabled(False):
            return run.step([(x,)], len(x), epoch=1)

    step.run = run

    return step


# --- plain Pyro: SVI as in Pyro's VAE example ------------------------------------------------


def pyro_svi_step() -> Step:
    """``pyro.infer.SVI(model, guide, pyro.optim.Adam, Trace_ELBO())`` written as in Pyro's
    VAE example: modules registered with ``pyro.module``, Pyro's default validation.

    pyro_gen's ``VAE.model``/``VAE.guide`` cannot be used here: their networks are plain
    ``nn.Module`` attributes of a ``PyroModule``, so they never reach Pyro's param store
    and ``SVI`` would silently update nothing. The networks are the VAE's own modules.
    """
    vae = new_vae()
    encoder, decoder = vae.encoder, vae.decoder

    def model(x: torch.Tensor) -> None:
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z_loc = x.new_zeros(x.shape[0], Z_DIM)
            z_scale = x.new_ones(x.shape[0], Z_DIM)
            z = pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
            pyro.sample("obs", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

    def guide(x: torch.Tensor) -> None:
        pyro.module("encoder", encoder)
        with pyro.plate("data", x.shape[0]):
            z_loc, z_scale = encoder(x)
            pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))

    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": LR}), loss=pyro.infer.Trace_ELBO())

    def step(x: torch.Tensor) -> float:
        return svi.step(x)  # the example's loss: summed over the batch (Adam is scale-free)

    return step


# --- hand-written PyTorch reference ----------------------------------------------------------


def log_normal(x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log N(x; loc, diag scale^2) summed over the last dimension."""
    return (-0.5 * ((x - loc) / scale) ** 2 - scale.log() - 0.5 * LOG_2PI).sum(-1)


def log_std_normal(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dimension."""
    return (-0.5 * z ** 2 - 0.5 * LOG_2PI).sum(-1)


def log_bernoulli(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log Bernoulli(x; logits) summed over pixels; broadcasts x over leading particle dims."""
    return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)


def torch_loss(objective: str, vae: VAE, x: torch.Tensor) -> torch.Tensor:
    """The negative bound per data point, averaged over the batch, in plain PyTorch."""
    loc, scale = vae.encoder(x)
    if objective == "trace":
        z = loc + scale * torch.randn_like(loc)
        log_w = log_bernoulli(vae.decoder(z), x) + log_std_normal(z) - log_normal(z, loc, scale)
        return -log_w.mean()
    if objective == "meanfield":
        z = loc + scale * torch.randn_like(loc)
        kl = 0.5 * (loc ** 2 + scale ** 2 - 1.0).sum(-1) - scale.log().sum(-1)
        return -(log_bernoulli(vae.decoder(z), x) - kl).mean()
    if objective == "iwae5":
        eps = torch.randn((K_IWAE,) + loc.shape, dtype=loc.dtype, device=loc.device)
        z = loc + scale * eps  # (k, B, z_dim): the encoder ran once
        log_w = log_bernoulli(vae.decoder(z), x) + log_std_normal(z) - log_normal(z, loc, scale)
        return -(torch.logsumexp(log_w, dim=0) - math.log(K_IWAE)).mean()
    raise ValueError(objective)


def torch_step(objective: str) -> Step:
    """One hand-written PyTorch step (its own VAE instance and Adam) for ``objective``."""
    vae = new_vae()
    opt = torch.optim.Adam(vae.parameters(), lr=LR)

    def step(x: torch.Tensor) -> float:
        loss = torch_loss(objective, vae, x)
        value = loss.item()  # a real loop logs the loss too; keeps the sync symmetric
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return value

    return step


# --- timing ----------------------------------------------------------------------------------


def time_steps(step: Step, batches: list[torch.Tensor], start: int, count: int) -> float:
    """Milliseconds per step over ``count`` steps, cycling through ``batches`` from ``start``."""
    n = len(batches)
    t0 = time.perf_counter()
    for i in range(count):
        step(batches[(start + i) % n])
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)
    return 1e3 * (time.perf_counter() - t0) / count


def run(rounds: int, steps: int, warmup: int, batch: int = 128, hidden: tuple[int, ...] = (400,),
        z_dim: int = 50) -> dict:
    """Time every implementation interleaved at one size; returns the JSON-ready results."""
    global BATCH, HIDDEN, Z_DIM  # the size every function above builds and feeds
    BATCH, HIDDEN, Z_DIM = batch, tuple(hidden), z_dim
    print(f"VAE {X_DIM}-{'-'.join(map(str, HIDDEN))}-{Z_DIM}, batch {BATCH}", file=sys.stderr, flush=True)
    torch.set_num_threads(THREADS)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    train, data_name = load_train()
    batches = make_batches(train, count=max(8, min(64, steps)))

    impls: dict[str, Step] = {}
    for name in ("trace", "meanfield", "iwae5"):
        spec = "iwae:5" if name == "iwae5" else name
        impls[f"pyro_gen/{name}"] = pyro_gen_step(spec)
        impls[f"standard/{name}"] = pyro_gen_step(spec, fast=False)
        impls[f"torch/{name}"] = torch_step(name)
    impls["pyro_svi/trace"] = pyro_svi_step()

    names = list(impls)
    for name in names:  # warm-up: allocator, autograd graph caches, Pyro's plate-nesting guess
        time_steps(impls[name], batches, 0, warmup)

    per_round: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            per_round[name].append(time_steps(impls[name], batches, r * steps, steps))
        row = "  ".join(f"{n}={per_round[n][-1]:.2f}" for n in names)
        print(f"round {r + 1}/{rounds} ms/step: {row}", file=sys.stderr, flush=True)

    med = {name: statistics.median(v) for name, v in per_round.items()}

    def ratio(a: str, b: str) -> float:  # the median of the rounds' own ratios: both sides share a round's load
        return round(statistics.median(x / y for x, y in zip(per_round[a], per_round[b])), 3)

    result: dict = {}
    for name in ("trace", "meanfield", "iwae5"):
        fast = impls[f"pyro_gen/{name}"].run.fast
        if fast is None or fast.off is not None or not fast.replays:
            raise RuntimeError(f"{name}: the fast path did not serve the benchmark ({fast and fast.off})")
        result[name] = {"pyro_gen_ms": round(med[f"pyro_gen/{name}"], 3), "torch_ms": round(med[f"torch/{name}"], 3),
                        "ratio": ratio(f"pyro_gen/{name}", f"torch/{name}"),
                        "standard_ms": round(med[f"standard/{name}"], 3),
                        "standard_ratio": ratio(f"standard/{name}", f"torch/{name}")}
    result["pyro_svi"] = {"pyro_ms": round(med["pyro_svi/trace"], 3), "torch_ms": round(med["torch/trace"], 3),
                          "ratio": ratio("pyro_svi/trace", "torch/trace")}
    result.update({"threads": THREADS, "rounds": rounds, "steps_per_round": steps, "data": data_name,
                   "batch": BATCH, "hidden": list(HIDDEN), "z_dim": Z_DIM, "device": str(DEVICE)})
    return result


def main(argv: list[str] | None = None) -> dict:
    """Parse flags, run the benchmark, print the JSON line last."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=60, help="interleaved rounds (the median is over these)")
    p.add_argument("--steps", type=int, default=5, help="steps of each implementation per round")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps of each implementation first")
    p.add_argument("--batch", type=int, default=128, help="batch size of the main size")
    p.add_argument("--hidden", type=int, nargs="+", default=[400], help="hidden widths of the main size")
    p.add_argument("--z-dim", type=int, default=50, help="latent dimension of the main size")
    p.add_argument("--device", default="cpu", help="cpu, or cuda where a GPU is available (then the small size "
                   "is the one that matters: there the per-step overhead is the whole story)")
    p.add_argument("--no-small", action="store_true",
                   help=f"skip the overhead-regime size ({SMALL['batch']}, {SMALL['hidden']}, {SMALL['z_dim']})")
    p.add_argument("--smoke", action="store_true", help="2 rounds of 2 steps, 1 warm-up step (CI)")
    args = p.parse_args(argv)
    if args.smoke:
        args.rounds, args.steps, args.warmup = 2, 2, 1
    if args.rounds < 1 or args.steps < 1 or args.warmup < 0 or args.batch < 1 or args.z_dim < 1 or \
            min(args.hidden) < 1:
        p.error("--rounds, --steps, --batch, --z-dim and --hidden must be >= 1 and --warmup >= 0")
    global DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no GPU on this machine")
    result = run(args.rounds, args.steps, args.warmup, args.batch, tuple(args.hidden), args.z_dim)
    if not args.no_small:  # the same rows at the small size (issue 18's overhead regime)
        result["small"] = run(args.rounds, args.steps, args.warmup, **SMALL)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
