"""A job for ``torchrun`` in tests/infer/test_distributed.py: small models fitted under every
objective; rank 0 writes their parameters and histories as JSON.

    python -m torch.distributed.run --nproc_per_node=2 -m tests.infer.ddp_job --out f.json
"""

import argparse
import json

import pyro
import pyro.distributions as dist
import torch
import torch.distributed as dist_

from models.vae import VAE
from pyro_gen.infer.train import fit

# "NAME/fast": the same objective with fit's fast path forced on (recorded at the first step, then replayed)
OBJECTIVES = ("trace", "iwae:3", "dreg:3", "rws:3", "enum", "iwae:3/fast", "enum/fast")


def data():
    g = torch.Generator().manual_seed(0)
    return (torch.rand(36, 6, generator=g) > 0.5).float(), (torch.rand(12, 6, generator=g) > 0.5).float()


def mixture(x):
    """Two Gaussian clusters, the assignments summed out by enumeration; pyro.param only (no module)."""
    weights = pyro.param("weights", torch.tensor([0.4, 0.6]), constraint=dist.constraints.simplex)
    locs = pyro.param("locs", torch.tensor([[0.2] * 6, [0.7] * 6]))
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Categorical(weights), infer={"enumerate": "parallel"})
        pyro.sample("x", dist.Normal(locs[z], 0.5).to_event(1), obs=x)


def run(objective: str, **kw):
    """Fits one model under ``objective``; returns its parameters (flat) and history."""
    objective, _, fast = objective.partition("/")
    if fast:
        kw = {**kw, "fast": True}
    train, val = data()
    common = {"epochs": 2, "batch_size": 8, "val_data": val, "val_batch_size": 4, "progress": False, "seed": 0,
              "lr": 0.01, **kw}
    with pyro.get_param_store().scope():
        if objective == "enum":
            result = fit(mixture, lambda x: None, train, objective=objective, **common)
            params = torch.cat([pyro.param("weights").flatten(), pyro.param("locs").flatten()])
        else:
            torch.manual_seed(0)
            vae = VAE(6, 2, (8,), likelihood="bernoulli")
            result = fit(vae.model, vae.guide, train, objective=objective, **common)
            params = torch.cat([p.detach().flatten() for p in vae.parameters()])
    return params.detach(), result


def evaluation() -> dict:
    """The sharded evaluation of a VAE: ELBO and IWAE-5 on 12 points in batches of 4 (3 batches)."""
    from pyro_gen import evaluate

    torch.manual_seed(0)
    vae = VAE(6, 2, (8,), likelihood="bernoulli")
    _, val = data()
    el = evaluate.elbo(vae.model, vae.guide, val, batch_size=4, seed=3)
    ll = evaluate.log_likelihood(vae.model, vae.guide, val, k=5, batch_size=4, seed=3)
    return {"elbo": [el.mean, el.se, el.n], "log_likelihood": [ll.mean, ll.se, ll.n]}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--objectives", default=",".join(OBJECTIVES))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--run-dir", default=None)
    p.add_argument("--resume", action="store_true")
    args = p.parse_args()
    results = {"evaluate": evaluation()}
    for objective in args.objectives.split(","):
        params, result = run(objective, epochs=args.epochs, out=args.run_dir, resume=args.resume)
        results[objective] = {"params": params.tolist(), "history": result.history, "steps": result.steps,
                              "world_size": dist_.get_world_size()}
    if dist_.get_rank() == 0:
        with open(args.out, "w") as f:
            json.dump(results, f)
    dist_.destroy_process_group()


if __name__ == "__main__":
    main()
