"""Step time of flow guides: against the diagonal guide, and against the same flow written in PyTorch.

What is measured: the milliseconds one optimizer step takes for the VAE of
``benchmarks/vae_speed.py`` (784-400-50 ReLU MLP, Bernoulli likelihood, batch 128 of
binarized MNIST, Adam, 2 threads, the ELBO with one sample), with

- ``diagonal``: the Gaussian guide, the step :func:`pyro_gen.fit` takes;
- ``FLOW`` (``planar``, ``iaf``, ``sylvester``; depth ``--depth``): ``VAE(guide_flow=FLOW)``,
  the same step: Pyro's conditional transforms (our Sylvester) inside a
  ``TransformedDistribution``, traced by Pyro's ``Trace_ELBO``;
- ``torch/FLOW``: the same flow (the same conditioning networks, weights and layer order)
  and ELBO written by hand in PyTorch: planar and IAF layer equations inline, the
  Sylvester layer through :func:`pyro_gen.flows.sylvester.sylvester_forward` (already plain
  PyTorch), log q = log N(z0) - sum log|det J|.

All implementations run interleaved in rounds (rotating order) on the same batches;
figures are medians over rounds. Reported per flow: ``pyro_gen_ms``, ``torch_ms``,
``ratio`` (pyro_gen / torch) and ``vs_diagonal`` (flow guide / diagonal guide, both pyro_gen).

Run from the repository root::

    PYRO_GEN_DATA=/path/to/shared/data python benchmarks/flows_speed.py [--rounds 10] [--steps 10]
    python benchmarks/flows_speed.py --smoke        # 2 rounds of 2 steps, for CI

The last line printed is one JSON object: ``{"diagonal_ms": .., "planar": {...}, "iaf": {...},
"sylvester": {...}, "depth": .., "rounds": .., "steps_per_round": .., "data": ..}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import pyro  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import vae_speed as vs  # noqa: E402  (the shared VAE, data, batches and timing)
from models.vae import VAE  # noqa: E402
from pyro_gen import objectives  # noqa: E402
from pyro_gen.flows.sylvester import sylvester_forward  # noqa: E402

FLOWS = ("planar", "iaf", "sylvester")


def new_vae(flow: str | None, depth: int) -> VAE:
    torch.manual_seed(0)
    return VAE(vs.X_DIM, vs.Z_DIM, vs.HIDDEN, guide_flow=flow, flow_depth=depth)


def _update(opt: torch.optim.Optimizer, loss: torch.Tensor) -> float:
    """Read the loss (as fit does, to check it), then zero_grad/backward/step."""
    value = loss.item()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return value


def pyro_gen_step(flow: str | None, depth: int) -> vs.Step:
    """The step ``fit`` takes (as in vae_speed.pyro_gen_step), for a VAE with the given guide."""
    vae = new_vae(flow, depth)
    elbo = objectives.get("trace")
    opt = torch.optim.Adam(vae.parameters(), lr=vs.LR)

    def step(x: torch.Tensor) -> float:
        with pyro.validation_enabled(False):
            return _update(opt, elbo.differentiable_loss(vae.model, vae.guide, x) / len(x))

    return step


def _planar(layer, z, h):
    bias, u, w = layer.nn(h)
    alpha = (u * w).sum(-1, keepdim=True)
    u_hat = u + (F.softplus(alpha) - 1 - alpha) * w / (w ** 2).sum(-1, keepdim=True)
    a = torch.tanh((w * z).sum(-1, keepdim=True) + bias)
    return z + u_hat * a, torch.log(torch.abs(1 + ((1 - a ** 2) * w * u_hat).sum(-1)))


def _iaf(layer, z, h):
    mean, log_scale = layer.nn(z, context=h)
    log_scale = log_scale + (log_scale.clamp(-5.0, 3.0) - log_scale).detach()  # Pyro's clamp, gradient kept
    return torch.exp(log_scale) * z + mean, log_scale.sum(-1)


def _sylvester(layer, z, h):
    return sylvester_forward(z, *layer._params_for(h))


def torch_step(flow: str, depth: int) -> vs.Step:
    """The same flow guide and ELBO by hand; the layers' networks are the VAE's own modules."""
    vae = new_vae(flow, depth)
    opt = torch.optim.Adam(vae.parameters(), lr=vs.LR)
    layer_fn = {"planar": _planar, "iaf": _iaf, "sylvester": _sylvester}[flow]
    permute = flow == "iaf"  # FlowStack reverses the order between autoregressive layers

    def step(x: torch.Tensor) -> float:
        h = vae.encoder.features(x)
        loc, scale = vae.encoder.gaussian(h)
        z = loc + scale * torch.randn_like(loc)
        log_q = vs.log_normal(z, loc, scale)
        for i, layer in enumerate(vae.q_flow.layers):
            if i and permute:
                z = z.flip(-1)
            z, log_det = layer_fn(layer, z, h)
            log_q = log_q - log_det
        return _update(opt, -(vs.log_bernoulli(vae.decoder(z), x) + vs.log_std_normal(z) - log_q).mean())

    return step


def run(rounds: int, steps: int, warmup: int, depth: int) -> dict:
    torch.set_num_threads(vs.THREADS)
    pyro.set_rng_seed(0)
    train, data_name = vs.load_train()
    batches = vs.make_batches(train, count=max(8, min(64, steps)))
    impls = {"pyro_gen/diagonal": pyro_gen_step(None, depth)}
    for flow in FLOWS:
        impls[f"pyro_gen/{flow}"] = pyro_gen_step(flow, depth)
        impls[f"torch/{flow}"] = torch_step(flow, depth)
    names = list(impls)
    for name in names:
        vs.time_steps(impls[name], batches, 0, warmup)
    per_round: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            per_round[name].append(vs.time_steps(impls[name], batches, r * steps, steps))
        print(f"round {r + 1}/{rounds} ms/step: " + "  ".join(f"{n}={per_round[n][-1]:.1f}" for n in names),
              file=sys.stderr, flush=True)
    med = {name: statistics.median(v) for name, v in per_round.items()}
    result: dict = {"diagonal_ms": round(med["pyro_gen/diagonal"], 3)}
    for flow in FLOWS:
        a, b = med[f"pyro_gen/{flow}"], med[f"torch/{flow}"]
        result[flow] = {"pyro_gen_ms": round(a, 3), "torch_ms": round(b, 3), "ratio": round(a / b, 3),
                        "vs_diagonal": round(a / med["pyro_gen/diagonal"], 3)}
    result.update({"depth": depth, "rounds": rounds, "steps_per_round": steps, "data": data_name})
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--depth", type=int, default=4, help="layers of each flow")
    p.add_argument("--smoke", action="store_true", help="2 rounds of 2 steps, depth 2 (CI)")
    args = p.parse_args(argv)
    if args.smoke:
        args.rounds, args.steps, args.warmup, args.depth = 2, 2, 1, 2
    if min(args.rounds, args.steps, args.depth) < 1 or args.warmup < 0:
        p.error("--rounds, --steps and --depth must be >= 1 and --warmup >= 0")
    result = run(args.rounds, args.steps, args.warmup, args.depth)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
