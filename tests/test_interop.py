"""Every pyro_gen tool takes every kind of model/guide a Pyro user writes, under either value of
Pyro's ``module_local_params`` (the user's choice, never pyro_gen's).

The zoo (tests/zoo.py): a PyroModule with PyroParam and PyroSample under each of Pyro's
AutoGuides and a pyro_gen flow guide, nn.Modules registered with pyro.module, plain pyro.param
functions, and pyro_gen's own VAE. The tools: fit, evaluate.elbo, evaluate.log_likelihood,
diagnostics.psis, diagnostics.to_inference_data; then sbc, compare and mcmc on the model kinds
they take."""

import logging
import math

import numpy as np

import pyro
import pytest
import torch

from pyro_gen import evaluate, fit
from pyro_gen.diagnostics import joint_log_weights, psis, to_inference_data
from pyro_gen.infer.params import modules_of
from tests import zoo
from tests.exact import normal_normal_data, normal_normal_model, normal_normal_posterior


@pytest.fixture(params=[False, True], ids=["global-params", "module-local-params"])
def setting(request):
    with pyro.settings.context(module_local_params=request.param):
        yield request.param
    assert pyro.settings.get("module_local_params") is False  # the tools left it as it was


def _values(model, guide) -> list[torch.Tensor]:
    """Every trainable value: the owning modules' parameters, then Pyro's param store."""
    mods = modules_of(model, guide)
    return ([p.detach().clone() for m in mods for p in m.parameters()]
            + [v.detach().clone() for _, v in sorted(pyro.get_param_store().items())])


@pytest.mark.parametrize("kind", list(zoo.ZOO))
def test_every_tool_takes_every_kind_of_model_and_guide(kind, setting):
    model, guide, data = zoo.build(kind)
    args = data if isinstance(data, tuple) else (data,)
    result = fit(model, guide, data, epochs=3, batch_size=len(args[0]), lr=0.01, progress=False, seed=0)
    assert result.steps == 3 and all(math.isfinite(r["train_loss"]) for r in result.history)
    before = _values(model, guide)
    fit(model, guide, data, epochs=2, batch_size=len(args[0]), lr=0.01, progress=False, seed=1)
    after = _values(model, guide)
    assert len(before) == len(after) > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, after)), "fit trained nothing"

    el = evaluate.elbo(model, guide, data, num_samples=4)
    ll = evaluate.log_likelihood(model, guide, data, k=16)
    assert math.isfinite(el.mean) and math.isfinite(ll.mean) and el.n == ll.n == len(args[0])
    if not kind.endswith("AutoDelta"):  # a point mass has no density to weigh against
        assert ll.mean >= el.mean - 3 * (el.se if math.isfinite(el.se) else 0) - 3 * ll.se - 0.5

    ps = psis(model, guide, *args, num_samples=20)
    assert ps.num_samples == 20 and np.ndim(ps.khat) == 0
    if not kind.endswith("AutoDelta"):
        assert not np.isnan(ps.khat)  # inf is an honest answer for a guide 3 steps from its start
    local = kind in ("pyro.module", "pyro_gen VAE")  # amortized: every latent belongs to a data point
    idata = to_inference_data(model, guide, *args, num_samples=10, include_local=local)
    assert "posterior" in idata.groups() and len(idata.posterior.data_vars) >= 1


def test_evaluation_of_global_latents_scores_the_whole_data_set():
    """On the conjugate Normal-Normal model with its exact posterior as the guide, every importance
    weight equals log p(x): the ELBO and IWAE-k both give exactly log p(x_1..N) / N."""
    x = normal_normal_data()
    loc, scale, log_evidence = normal_normal_posterior(x)

    def guide(x):
        pyro.sample("z", pyro.distributions.Normal(loc, scale))

    el = evaluate.elbo(normal_normal_model, guide, x, num_samples=8)
    ll = evaluate.log_likelihood(normal_normal_model, guide, x, k=8)
    for est in (el, ll):
        assert est.mean == pytest.approx(log_evidence / len(x), abs=1e-5) and est.n == len(x)
        assert est.se == pytest.approx(0.0, abs=1e-5)


def test_particles_are_drawn_one_at_a_time_where_the_model_does_not_broadcast(caplog):
    """Pyro's regression (nn.Linear given a batch of sampled weights) cannot take a vectorized
    particle dimension: pyro_gen notices, says so in one line, and draws particles in turn."""
    model, guide, (x, y) = zoo.regression("AutoDiagonalNormal")
    guide(x, y)
    with caplog.at_level(logging.WARNING, logger="pyro_gen"):
        log_p, log_q = joint_log_weights(model, guide, x, y, num_samples=6)
    assert log_p.shape == log_q.shape == (6,) and torch.isfinite(log_p - log_q).all()
    lines = [r for r in caplog.records if "one at a time" in r.getMessage()]
    assert len(lines) == 1


def test_vectorized_and_one_at_a_time_particles_give_the_same_numbers(monkeypatch):
    """With the exact posterior as guide every log weight is log p(x), whatever z is drawn, so
    the two paths must agree to float precision."""
    from pyro_gen.diagnostics import posterior

    x = normal_normal_data()
    loc, scale, log_evidence = normal_normal_posterior(x)

    def guide(x):
        pyro.sample("z", pyro.distributions.Normal(loc, scale))

    log_p, log_q = joint_log_weights(normal_normal_model, guide, x, num_samples=5)
    model_trace, guide_trace, _ = posterior._sequential_traces(normal_normal_model, guide, 5, 1, (x,), {})
    seq_p = sum(posterior._sum_per_draw(s, -2) for _, s in posterior._samples(model_trace))
    seq_q = sum(posterior._sum_per_draw(s, -2) for _, s in posterior._samples(guide_trace, observed=False))
    assert torch.allclose(log_p - log_q, torch.full((5,), float(log_evidence), dtype=torch.float64), atol=1e-4)
    assert torch.allclose((seq_p - seq_q).double(), log_p - log_q, atol=1e-4)


def _model_kind(kind: str):
    """(model, args, data_from) for the tools that take a model: a PyroModule or a plain function."""
    if kind == "PyroModule":
        x, y = zoo.regression_data()
        return zoo.BayesianRegression(), (x, y), lambda observed: (x, observed["obs"])
    x = normal_normal_data()
    return normal_normal_model, (x,), None


@pytest.mark.parametrize("kind", ["PyroModule", "plain function"])
def test_mcmc_and_sbc_take_both_kinds_of_model(kind, setting):
    from pyro_gen.diagnostics import mcmc, sbc

    model, args, data_from = _model_kind(kind)
    ref = mcmc.nuts(model, *args, num_samples=30, warmup_steps=30, num_chains=1)
    assert ref.draws and all(torch.isfinite(v).all() and len(v) == 30 for v in ref.draws.values())
    result = sbc.sbc(model, sbc.vi_procedure(model, steps=20, num_draws=9), *args, num_simulations=10,
                     data_from=data_from)
    assert result.ranks and all(len(r) == 10 for r in result.ranks.values())


def test_compare_takes_a_pyro_module_with_autoguides(setting, tmp_path):
    from pyro_gen.diagnostics.compare import AutoGuided, Problem, compare

    x, y = zoo.regression_data()
    xy = torch.cat([x, y[:, None]], 1)
    problem = Problem("regression", lambda guide, seed: AutoGuided(zoo.BayesianRegression(), guide), xy, xy,
                      guides=["diagonal", "full"], local=False, batch_size=len(xy), lr=0.05)
    results = compare(problem, ["trace", "iwae:3"], ["full"], seeds=[0], budget="15steps", out=tmp_path, eval_k=8,
                      log=None)
    assert len(results) == 2 and not any(r.error for r in results), [r.error for r in results]
    assert all(math.isfinite(r.elbo) and math.isfinite(r.log_likelihood) for r in results)
    assert (tmp_path / "report.md").is_file()


def test_compare_and_sbc_runs_are_independent_under_the_global_param_store():
    """Under Pyro's default module_local_params=False every fresh AutoGuide of one model has the same
    param-store names; each compare run and each SBC fit gets a store of its own, so a run never
    starts from the previous run's fitted values, and the user's store is left as it was."""
    from inference.compare import regression_problem
    from pyro_gen.diagnostics import sbc
    from pyro_gen.diagnostics.compare import run

    pyro.param("users_own", torch.tensor(1.5))
    problem = regression_problem(smoke=True)
    a, b = (run(problem, "trace", "diagonal", seed=0, budget="20steps", eval_k=8) for _ in range(2))
    assert a.elbo == b.elbo and a.steps == b.steps == 20  # the same seed, the same start: the same run
    infer = sbc.vi_procedure(problem.build("diagonal", 0).model_fn, steps=10, num_draws=5)
    pyro.set_rng_seed(1)
    first = infer(problem.train)
    pyro.set_rng_seed(1)
    again = infer(problem.train)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert list(pyro.get_param_store().keys()) == ["users_own"] and pyro.param("users_own").item() == 1.5
