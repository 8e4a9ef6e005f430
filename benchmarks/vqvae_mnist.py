"""VQ-VAE against a VAE of similar size on binary MNIST and Fashion-MNIST: reconstruction error and the
bound in bits per dimension.

What is measured: on each data set (``binarized-mnist``, the static split; ``fashion-mnist``, its
grey levels binarized once with a fixed seed, x ~ Bernoulli(grey), so that both models score the
same binary images), a ``VQVAE((1, 28, 28), codes=K, code_dim=16, channels=96)`` (a 7x7 grid of
codes; about 0.4 M parameters) and a convolutional ``VAE(784, 32, network="conv")`` (the same
number, within 10%: most of them in its fully connected layers) train
for the same epochs (Adam, lr 1e-3, batch 128, keeping the best validation epoch). Then, on a
seeded ``--eval-n`` test images:

- the reconstruction error ``-log p(x | z)`` at the code (VQ-VAE) or the guide's mean (VAE), nats;
- the bound on ``-log p(x)`` in bits per dimension: for the VQ-VAE, with the uniform prior over
  codes and with the learned autoregressive prior (:meth:`models.vqvae.VQVAE.fit_prior`, fitted to
  the training images' code maps for ``--prior-epochs``); for the VAE, its IWAE-``--eval-k`` bound;
- the VQ-VAE's codebook perplexity (of K) and both models' parameter counts.

Figures in OUT: ``<data>_reconstructions_<model>.png`` and ``<data>_samples_<model>.png``.

Run from the repository root::

    PYRO_GEN_DATA=/path/to/shared/data python benchmarks/vqvae_mnist.py
    python benchmarks/vqvae_mnist.py --smoke        # seconds, for CI

Writes ``OUT/results.json``; the last line on stdout is one JSON object
``{"binarized-mnist": {"vqvae": {"recon": r, "bits_per_dim": b, "bits_per_dim_uniform": u, "perplexity": p,
"seconds": s, "parameters": n}, "vae": {"recon": r, "bits_per_dim": b, "seconds": s, "parameters": n}},
"fashion-mnist": {...}}``.
Without the data files it exits with status 2 naming every folder it looked in.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pyro  # noqa: E402
import torch  # noqa: E402

from models.vae import VAE  # noqa: E402
from models.vqvae import VQVAE  # noqa: E402
from pyro_gen import evaluate, fit  # noqa: E402
from pyro_gen.data import DataNotFoundError, load, random_subset  # noqa: E402
from pyro_gen.figures import reconstructions, samples  # noqa: E402
from pyro_gen.infer.checkpoint import write_json  # noqa: E402

DATA = ("binarized-mnist", "fashion-mnist")
BATCH, LR, SEED, EVAL_SEED = 128, 1e-3, 0, 1234


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=",".join(DATA), help=f"comma-separated, among {', '.join(DATA)}")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--codes", type=int, default=64, help="the VQ-VAE's codebook size K")
    p.add_argument("--latent-dim", type=int, default=32, help="the VAE's z_dim")
    p.add_argument("--prior-epochs", type=int, default=10)
    p.add_argument("--eval-k", type=int, default=100, help="importance samples per test image (VAE)")
    p.add_argument("--eval-n", type=int, default=2000, help="a seeded random subset of N test images")
    p.add_argument("--smoke", action="store_true", help="1 epoch on 1,000 images, 100 test images (CI)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", default="runs/bench_vqvae")
    return p


def binary(name: str):
    """The data set with binary pixels: the static binarization, or grey levels binarized once (seeded)."""
    ds = load(name)
    if not ds.binary:
        g = torch.Generator().manual_seed(SEED)
        ds.train, ds.val, ds.test = (torch.bernoulli(x, generator=g) for x in (ds.train, ds.val, ds.test))
        ds.binary = True
    return ds


def n_params(net) -> int:
    return sum(p.numel() for p in net.parameters())


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    names = [d.strip() for d in args.data.split(",") if d.strip()]
    if not names or any(d not in DATA for d in names):
        parser.error(f"--data takes names among {', '.join(DATA)}; got {args.data!r}")
    if args.smoke:
        args.epochs, args.prior_epochs, args.eval_k, args.eval_n, args.codes = 1, 1, 5, 100, 16
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary, runs = {}, {}
    for name in names:
        try:
            ds = binary(name)
        except DataNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        train, val = (ds.train[:1000], ds.val[:500]) if args.smoke else (ds.train, ds.val)
        test = ds.test[random_subset(len(ds.test), args.eval_n, EVAL_SEED)]
        summary[name], runs[name] = {}, {}
        for model in ("vqvae", "vae"):
            pyro.clear_param_store()
            torch.manual_seed(SEED)
            net = (VQVAE((1, 28, 28), codes=args.codes, code_dim=16, channels=96) if model == "vqvae"
                   else VAE(784, args.latent_dim, network="conv", image_shape=(1, 28, 28)))
            log(f"{name}: training {model} ({n_params(net):,} parameters)")
            result = fit(net.model, net.guide, train, val_data=val, epochs=args.epochs, batch_size=BATCH, lr=LR,
                         seed=SEED, progress=not args.no_progress)
            net.eval()
            r = {"seconds": result.seconds, "parameters": n_params(net), "best_epoch": result.best_epoch,
                 "recon": net.reconstruction_error(test).mean().item()}
            if model == "vqvae":
                r["bits_per_dim_uniform"] = net.bits_per_dim(test).mean().item()
                net.fit_prior(train, epochs=args.prior_epochs, seed=SEED, progress=not args.no_progress)
                bpd = net.bits_per_dim(test)
                r.update(bits_per_dim=bpd.mean().item(), bits_per_dim_se=(bpd.std() / len(bpd) ** 0.5).item(),
                         perplexity=net.perplexity(test), codes=args.codes)
            else:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(EVAL_SEED)
                    ll = evaluate.log_likelihood(net.model, net.guide, test, k=args.eval_k)
                r.update(bits_per_dim=-ll.mean / (784 * math.log(2)), bits_per_dim_se=ll.se / (784 * math.log(2)))
            torch.manual_seed(EVAL_SEED)
            reconstructions(test[:10], net.reconstruct(test[:10]), (1, 28, 28), out / f"{name}_reconstructions_{model}.png")
            samples(net.sample(50), (1, 28, 28), out / f"{name}_samples_{model}.png", title=f"{model} samples, {name}")
            runs[name][model] = r
            summary[name][model] = {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()
                                    if k in ("recon", "bits_per_dim", "bits_per_dim_uniform", "perplexity", "seconds", "parameters")}
            log(f"{name}, {model}: reconstruction {r['recon']:.2f} nats, bound {r['bits_per_dim']:.4f} bits/dim, "
                f"{r['seconds']:.0f} s")
            write_json({"settings": vars(args), "summary": summary, "runs": runs}, out / "results.json")
    log(f"wrote {out / 'results.json'} and the figures in {out}")
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
