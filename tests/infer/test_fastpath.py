"""The fast path (pyro_gen.infer.fastpath): a recorded step equals the standard one, and falls back,
saying so once, wherever the model's structure is not static or the step cannot be recorded."""

import contextlib
import importlib
import logging
import pkgutil

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import models
from pyro_gen import fit, objectives
from pyro_gen.infer.fastpath import FastLoss, supports
from pyro_gen.infer.params import modules_of, parameters_of, param_store_names
from pyro_gen.infer.run import Run

# Every example of every model with its first objective; every objective the fast path serves on one example.
OBJECTIVES = ["trace", "meanfield", "iwae:3", "dreg:3", "renyi:0.5", "rws:3", "betatc:6", "dipvae:5"]


def _standard(elbo, model, guide):
    def loss(batch, weight):
        with objectives.LatentScale(weight) if weight != 1.0 else contextlib.nullcontext():
            return elbo.differentiable_loss(model, guide, *batch)
    return loss


def _fast_and_standard(net, batch, objective):
    elbo = objectives.get(objective)
    objectives.prepare(elbo, net.model, net.guide, *batch)
    params = parameters_of(modules_of(net.model, net.guide), param_store_names(net.model, net.guide, batch,
                                                                               modules_of(net.model, net.guide)))
    standard = _standard(elbo, net.model, net.guide)
    return FastLoss(elbo, net.model, net.guide, params, standard), standard, params


def _loss_and_grads(fn, batch, weight, params, seed):
    torch.manual_seed(seed)
    loss = fn(batch, weight)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return loss.detach(), grads, torch.get_rng_state()


def _cases():
    for name in sorted(m.name for m in pkgutil.iter_modules(models.__path__)):
        module = importlib.import_module(f"models.{name}")
        for example, (net, _) in module.examples().items():
            if getattr(net, "fast_path", True) is False:  # a model that says it changes its own state: fit never records it
                continue
            supported = [o for o in getattr(net, "objectives", getattr(module, "OBJECTIVES", OBJECTIVES))
                         if supports(objectives.get(o))]
            for objective in OBJECTIVES[1:] if (name, example) == ("vae", "mlp-bernoulli") else supported[:1]:
                yield pytest.param(name, example, objective, id=f"{name}-{example}-{objective}")


@pytest.mark.parametrize("file, example, objective", list(_cases()))
def test_every_models_examples_give_the_standard_loss_and_gradients(file, example, objective, caplog):
    net, data = importlib.import_module(f"models.{file}").examples()[example]
    batch = data if isinstance(data, tuple) else (data,)
    fast, standard, params = _fast_and_standard(net, batch, objective)
    fast.checks = False  # no structure check here: the first call records (and checks), the second replays
    # a latent weight (beta, annealing) is an input of its own recording; Pyro refuses it under enumeration
    weights = [1.0, 1.0] if objective == "enum" else [1.0, 1.0, 0.5, 0.25]
    with pyro.validation_enabled(False), caplog.at_level(logging.WARNING, logger="pyro_gen"):
        for step, weight in enumerate(weights):
            want, want_grads, want_rng = _loss_and_grads(standard, batch, weight, params, seed=step)
            got, got_grads, got_rng = _loss_and_grads(fast, batch, weight, params, seed=step)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
            for p, a, b in zip(params, want_grads, got_grads):
                assert (a is None) == (b is None)
                if a is not None:
                    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
            assert torch.equal(got_rng, want_rng), "the replay must spend the random numbers the standard step does"
    # served by the recording, or off with one line saying why
    said = [r.getMessage() for r in caplog.records if "fast path off" in r.getMessage()]
    assert (fast.replays == len(weights) and not said) or (fast.off is not None and len(said) == 1), (fast.off, said)


@pytest.mark.parametrize("file, example, objective", [
    ("vae", "mlp-bernoulli", "trace"), ("vae", "mlp-gaussian", "meanfield"), ("vae", "conv-bernoulli", "iwae:3"),
    ("vae", "householder-guide", "dreg:3"), ("vae", "mlp-bernoulli", "rws:3"), ("ppca", None, "trace"),
    ("hmm", "bernoulli-markov", "enum"), ("hmm", "bernoulli-vectorized", "enum"), ("dmm", "gaussian-guide", "trace"),
    ("lda", None, "meanfield")])
def test_the_common_models_are_served(file, example, objective):
    examples = importlib.import_module(f"models.{file}").examples()
    net, data = examples[example] if example is not None else next(iter(examples.values()))
    batch = data if isinstance(data, tuple) else (data,)
    fast, _, _ = _fast_and_standard(net, batch, objective)
    with pyro.validation_enabled(False):
        fast(batch, 1.0)
    assert fast.off is None and fast.replays == 1


# --- through fit ------------------------------------------------------------------------------


def _vae_and_data(n=40, seed=0):
    from models.vae import VAE
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    return VAE(20, 2, (8,)), (torch.rand(n, 20, generator=g) < 0.3).float()


def _fit(fast, **kw):
    vae, x = _vae_and_data()
    result = fit(vae.model, vae.guide, x, epochs=3, batch_size=16, seed=1, progress=False, fast=fast, **kw)
    return result, vae


@pytest.mark.parametrize("options", [{}, {"objective": "iwae:3", "kl_anneal": 2.0, "val_data": None}, {"beta": 2.0}])
def test_fit_trains_the_same_with_and_without_the_fast_path(options):
    """Three epochs of 16, 16 and 8 points (the last batch gets its own recording), KL annealing (the
    weight is an input of the graph) or beta: the same losses and parameters either way."""
    fast, fast_vae = _fit(True, **options)
    slow, slow_vae = _fit(False, **options)
    for a, b in zip(fast.history, slow.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    for (name, p), q in zip(fast_vae.named_parameters(), slow_vae.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)


def test_run_replays_and_can_be_turned_off():
    vae, x = _vae_and_data()
    kw = dict(objective="trace", epochs=1, batch_size=8, lr=1e-3, optimizer="adam", weight_decay=0.0, val_data=None,
              val_batch_size=8, patience=None, beta=1.0, kl_anneal=0.0, clip_norm=None, lr_schedule=None, seed=0,
              device="cpu", out=None, checkpoint_every=1, max_steps=None, max_seconds=None)
    with pyro.validation_enabled(False):
        run = Run(vae.model, vae.guide, x, fast=True, **kw)
        for _ in range(5):
            run.step([(x[:8],)], 8, epoch=1)
            run.state["step"] += 1  # as train_epoch counts them
        assert run.fast.replays == 4  # step 2 is checked against the standard path
        assert Run(vae.model, vae.guide, x, fast=False, **kw).fast is None
        assert Run(vae.model, vae.guide, x, fast="auto", **kw).fast is None  # 5 steps would not repay a recording
        assert Run(vae.model, vae.guide, x, fast="auto", **{**kw, "epochs": 200}).fast is not None
        with pytest.raises(ValueError, match="fast must be True, False or 'auto'"):
            Run(vae.model, vae.guide, x, fast="yes", **kw)


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if "fast path off" in r.getMessage()]


def test_an_objective_it_does_not_serve_says_so_once(caplog):
    with caplog.at_level(logging.WARNING, logger="pyro_gen"):
        _fit(True, objective="graph")
        _fit("auto", objective="graph")  # too short a run to try: nothing said
    (said,) = _warnings(caplog)
    assert "GraphELBO" in said and not supports(objectives.get("graph"))


class Growing(nn.Module):
    """A model whose structure follows Python state: a site appears once ``wide`` is set (by a callback)."""

    def __init__(self):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(3))
        self.wide = False

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))
            if self.wide:
                z = z + pyro.sample("extra", dist.Normal(torch.zeros(3), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.loc, 1.0).to_event(1))
            if self.wide:
                pyro.sample("extra", dist.Normal(self.loc, 1.0).to_event(1))


def test_structure_that_changes_is_caught_and_the_standard_path_takes_over(caplog):
    net = Growing()
    widen = lambda row: setattr(net, "wide", row["epoch"] >= 5)  # noqa: E731
    with caplog.at_level(logging.WARNING, logger="pyro_gen"):
        fit(net.model, net.guide, torch.randn(16, 3), epochs=20, batch_size=16, progress=False, callback=widen,
            fast=True)
    (said,) = _warnings(caplog)  # seen at the check of step 16
    assert "structure changed" in said and "'extra'" in said


class Branching(nn.Module):
    """A guide that branches on a sampled value: it cannot be recorded."""

    def __init__(self):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(3))

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(self.loc, 1.0).to_event(1))
        if z.sum() > 0:  # control flow on a sampled value
            pyro.factor("bonus", torch.zeros(()))


def test_control_flow_on_sampled_values_is_guarded(caplog):
    """The branch taken while recording is a guard: a step that would take the other one is served by the
    standard path, so training equals the standard path's; guards that fail often turn the fast path off."""
    x = torch.randn(16, 3)
    runs = []
    for fast in (True, False):
        net = Branching()
        with caplog.at_level(logging.WARNING, logger="pyro_gen"):
            runs.append(fit(net.model, net.guide, x, epochs=10, batch_size=8, progress=False, fast=fast))
    assert len(runs[0].history) == 10
    for a, b in zip(*(r.history for r in runs)):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    (said,) = _warnings(caplog)
    assert "a branch on a sampled or data value" in said and "came out otherwise" in said


def test_an_unused_random_draw_is_kept():
    """Dead code is removed from the recording, but never a random draw: the replay must leave torch's
    random state where the standard path leaves it."""
    loc = nn.Parameter(torch.zeros(2))

    def model(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    def guide(x):
        torch.randn(5)  # drawn and thrown away

    elbo = objectives.get("trace")
    standard = _standard(elbo, model, guide)
    fast = FastLoss(elbo, model, guide, [loc], standard)
    x = torch.randn(4, 2)
    with pyro.validation_enabled(False):
        for seed in range(3):
            want = _loss_and_grads(standard, (x,), 1.0, [loc], seed)
            got = _loss_and_grads(fast, (x,), 1.0, [loc], seed)
            assert torch.equal(want[2], got[2]) and torch.allclose(want[0], got[0])
    assert fast.replays >= 2


def test_recording_and_replaying_leave_pyro_and_torch_as_they_were():
    net, x = _vae_and_data(16)
    fast, _, _ = _fast_and_standard(net, (x,), "iwae:3")

    def state():
        return (repr(sorted(pyro.settings.get().items())), sorted(pyro.get_param_store().keys()),
                pyro.infer.util.is_validation_enabled(), torch.get_default_dtype(), torch.get_num_threads(),
                torch.is_grad_enabled(), torch.is_anomaly_enabled(), len(torch.overrides._get_current_function_mode_stack()))

    with pyro.validation_enabled(False):
        before = state()
        for step in range(1, 4):
            fast((x,), 1.0, step).backward()
        assert state() == before and fast.replays == 2  # step 2: a structure check


def test_auto_gives_up_on_a_replay_slower_than_the_standard_step(monkeypatch, caplog):
    import pyro_gen.infer.fastpath as fastpath

    net, x = _vae_and_data(16)
    elbo = objectives.get("trace")
    standard = _standard(elbo, net.model, net.guide)
    monkeypatch.setattr(fastpath, "_SLOWER", 0.0)  # any replay now counts as slower
    fast = FastLoss(elbo, net.model, net.guide, list(net.parameters()), standard, must_pay=True)
    with pyro.validation_enabled(False), caplog.at_level(logging.WARNING, logger="pyro_gen"):
        torch.manual_seed(0)
        got = fast((x,), 1.0, 1)
        torch.manual_seed(0)
        want = standard((x,), 1.0)
    assert torch.equal(got, want)  # the standard step stands, from the same random state
    (said,) = _warnings(caplog)
    assert "slower than the standard step" in said and fast.off is not None
