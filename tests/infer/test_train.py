"""The trainer: exact resume, seeds, early stopping, annealing, schedules, clipping,
NaN stops, atomic checkpoints and bad inputs."""

import json
import os

import pyro
import pyro.distributions as dist
import pytest
import torch

from models.vae import VAE
from pyro_gen import data, fit
from pyro_gen.infer.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from pyro_gen.infer.train import NonFiniteLossError


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def _vae(seed=0):
    torch.manual_seed(seed)
    return VAE(64, 4, (32,))


def _same(a: VAE, b: VAE):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("objective, fast", [("trace", "auto"), ("iwae:3", "auto"), ("trace", True), ("iwae:3", True)])
def test_resume_equals_uninterrupted(tmp_path, digits, objective, fast):
    """Bit for bit, with the fast path (pyro_gen.infer.fastpath) as without: its structure checks fall on the
    same steps in a resumed run as in an uninterrupted one."""
    kw = dict(objective=objective, epochs=4, batch_size=100, val_data=digits.val, lr_schedule="cosine",
              kl_anneal=2, clip_norm=50.0, progress=False, fast=fast)
    full = _vae()
    ref = fit(full.model, full.guide, digits.train, **kw)

    interrupted = _vae()

    def stop_after_two(row):
        if row["epoch"] == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(interrupted.model, interrupted.guide, digits.train, out=tmp_path, callback=stop_after_two, **kw)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1  # the crash came before epoch 2's save

    resumed = _vae(seed=123)  # different initial weights: everything must come from the checkpoint
    res = fit(resumed.model, resumed.guide, digits.train, out=tmp_path, resume=True, **kw)
    assert [h["train_loss"] for h in res.history] == [h["train_loss"] for h in ref.history]
    assert [h["val_loss"] for h in res.history] == [h["val_loss"] for h in ref.history]
    assert _same(resumed, full)
    assert res.best_epoch == ref.best_epoch


def test_same_seed_same_result_other_seed_other_result(digits):
    runs = []
    for seed in (0, 0, 1):
        m = _vae()
        fit(m.model, m.guide, digits.train[:300], epochs=1, batch_size=50, seed=seed, progress=False)
        runs.append(m)
    assert _same(runs[0], runs[1])
    assert not _same(runs[0], runs[2])


def _gaussian_mean_pair():
    """x ~ N(mu, 1) with a learnable mu in Pyro's param store; no latent variables."""

    def model(x):
        mu = pyro.param("mu", torch.tensor(5.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x[:, 0])

    def guide(x):
        pass

    return model, guide


def test_early_stopping_keeps_the_best_epoch():
    model, guide = _gaussian_mean_pair()
    train = torch.zeros(50, 1)
    val = torch.full((50, 1), 10.0)  # moving mu from 5 towards 0 makes the validation loss worse every epoch
    res = fit(model, guide, train, val_data=val, epochs=50, patience=3, lr=0.1, batch_size=50, progress=False)
    assert res.stopped == "early_stopping"
    assert len(res.history) == 4
    assert res.best_epoch == 1
    vals = [h["val_loss"] for h in res.history]
    assert vals == sorted(vals)
    # the best state is restored: mu is back at its value after epoch 1
    assert pyro.param("mu").item() == pytest.approx(5.0 - 0.1, abs=1e-4)


def test_kl_annealing_ramps_and_beta_scales(digits):
    m = _vae()
    res = fit(m.model, m.guide, digits.train[:200], epochs=4, batch_size=50, kl_anneal=2, beta=0.5, progress=False)
    weights = [h["kl_weight"] for h in res.history]
    assert weights == pytest.approx([0.25, 0.5, 0.5, 0.5])


def test_lr_schedules_and_unknown_one(digits):
    m = _vae()
    res = fit(m.model, m.guide, digits.train[:100], epochs=4, batch_size=50, lr=1e-2, lr_schedule="step:2:0.1",
              progress=False)
    assert [h["lr"] for h in res.history] == pytest.approx([1e-2, 1e-2, 1e-3, 1e-3])  # the lr used during each epoch
    with pytest.raises(ValueError, match="valid choices: constant, cosine"):
        fit(m.model, m.guide, digits.train[:100], epochs=1, lr_schedule="warm", progress=False)


def test_budget_in_steps_and_seconds(digits):
    m = _vae()
    res = fit(m.model, m.guide, digits.train, epochs=100, batch_size=10, max_steps=7, progress=False)
    assert res.steps == 7 and res.stopped == "max_steps"
    res = fit(m.model, m.guide, digits.train, epochs=10_000, batch_size=10, max_seconds=0.5, progress=False)
    assert res.stopped == "max_seconds" and res.seconds < 3


def test_the_progress_bar_ends_where_max_steps_stops_the_run(digits, capsys):
    m = _vae()
    fit(m.model, m.guide, digits.train, epochs=100, batch_size=10, max_steps=7, progress=True)
    err = capsys.readouterr().err
    assert "7/7" in err and f"/{100 * -(-len(digits.train) // 10)}" not in err


@pytest.mark.parametrize("fast", ["auto", True])
def test_nan_loss_stops_with_step_and_checkpoint(tmp_path, fast):
    model, guide = _gaussian_mean_pair()
    x = torch.zeros(20, 1)
    # a learning rate this large sends mu to inf within a few steps
    with pytest.raises(NonFiniteLossError) as err:
        fit(model, guide, x, epochs=100, lr=1e38, optimizer="sgd", batch_size=10, out=tmp_path, progress=False,
            fast=fast)
    msg = str(err.value)
    assert "at epoch" in msg and "step" in msg and "checkpoint" in msg
    # whatever checkpoint exists is a good one, written before the bad step
    if (tmp_path / "checkpoint.pt").exists():
        ck = load_checkpoint(tmp_path / "checkpoint.pt")
        assert all(torch.isfinite(v).all() for v in ck["state"]["param_store"].values())


def test_metrics_written_as_the_run_goes(tmp_path, digits):
    m = _vae()
    seen = []

    def look(row):
        seen.append(json.loads((tmp_path / "metrics.json").read_text())["history"] if row["epoch"] > 1 else None)

    fit(m.model, m.guide, digits.train[:200], epochs=3, batch_size=50, out=tmp_path, callback=look, progress=False)
    assert len(seen[1]) == 1 and len(seen[2]) == 2  # at epoch e, the file already holds epochs 1..e-1
    final = json.loads((tmp_path / "metrics.json").read_text())
    assert len(final["history"]) == 3 and final["stopped"] == "epochs"


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (torch.full((10, 64), float("nan")), ValueError, "NaN"),
        (torch.ones(10, 64).long(), TypeError, "dtype"),
        (torch.ones(64), ValueError, "shape"),
        ([[0.0] * 64] * 10, TypeError, "torch.Tensor"),
    ],
)
def test_bad_training_data_is_named(bad, error, match):
    m = _vae()
    with pytest.raises(error, match=match):
        fit(m.model, m.guide, bad, epochs=1, progress=False)


def test_bad_options_are_named(digits):
    m = _vae()
    x = digits.train[:50]
    with pytest.raises(ValueError, match="valid choices"):
        fit(m.model, m.guide, x, objective="elbow", progress=False)
    with pytest.raises(ValueError, match="k must be"):
        fit(m.model, m.guide, x, objective="iwae:0", progress=False)
    with pytest.raises(ValueError, match="optimizer.*valid choices: adam"):
        fit(m.model, m.guide, x, optimizer="lbfgs", progress=False)
    with pytest.raises(ValueError, match="resume=True needs"):
        fit(m.model, m.guide, x, resume=True, progress=False)
    with pytest.raises(ValueError, match="model expects 64"):
        data.check_data(torch.zeros(3, 5), "x", dim=64)


def test_corrupt_checkpoint_is_refused_and_left_alone(tmp_path, digits):
    m = _vae()
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt") as err:
        fit(m.model, m.guide, digits.train[:50], out=tmp_path, resume=True, progress=False)
    assert ckpt.read_bytes() == b"not a checkpoint at all"
    # one clear message: no torch advice to load untrusted files with weights_only=False
    assert "weights_only" not in str(err.value) and "no earlier good one" in str(err.value)


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_checkpoints_never_unpickle_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "pyro_gen.checkpoint/1", "x": _Payload()}, path)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(CheckpointError):
            load_checkpoint(path)
    finally:
        os.chdir(cwd)
    assert not (tmp_path / "pwned").exists()


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"epoch": 1}, path)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left behind


def test_resume_refuses_another_configuration(tmp_path, digits):
    m = _vae()
    fit(m.model, m.guide, digits.train[:100], epochs=1, batch_size=50, out=tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="batch_size"):
        fit(m.model, m.guide, digits.train[:100], epochs=2, batch_size=25, out=tmp_path, resume=True,
            progress=False)


def test_plain_functions_with_param_store_checkpoint_and_resume(tmp_path):
    model, guide = _gaussian_mean_pair()
    x = torch.randn(40, 1) + 2
    fit(model, guide, x, epochs=3, lr=0.05, batch_size=10, out=tmp_path / "a", progress=False)
    straight = pyro.param("mu").item()
    pyro.clear_param_store()

    def stop(row):
        if row["epoch"] == 2:
            return False

    fit(model, guide, x, epochs=3, lr=0.05, batch_size=10, out=tmp_path / "b", callback=stop, progress=False)
    pyro.clear_param_store()
    fit(model, guide, x, epochs=3, lr=0.05, batch_size=10, out=tmp_path / "b", resume=True, progress=False)
    assert pyro.param("mu").item() == straight


@pytest.mark.parametrize("fast", ["auto", True])
def test_budget_stop_inside_an_epoch_resumes_exactly(tmp_path, digits, fast):
    kw = dict(epochs=3, batch_size=100, val_data=digits.val, progress=False, fast=fast)
    straight = _vae()
    fit(straight.model, straight.guide, digits.train, max_steps=8, **kw)

    part = _vae()
    res = fit(part.model, part.guide, digits.train, max_steps=5, out=tmp_path, **kw)
    assert res.steps == 5 and res.stopped == "max_steps" and res.history[-1]["partial"]
    again = fit(part.model, part.guide, digits.train, max_steps=5, out=tmp_path, resume=True, **kw)
    assert again.steps == 5  # the budget is spent: no extra step
    resumed = _vae(seed=7)
    res = fit(resumed.model, resumed.guide, digits.train, max_steps=8, out=tmp_path, resume=True, **kw)
    assert res.steps == 8 and _same(resumed, straight)


def test_resuming_an_early_stopped_run_trains_no_further(tmp_path):
    model, guide = _gaussian_mean_pair()
    kw = dict(val_data=torch.full((50, 1), 10.0), epochs=50, patience=3, lr=0.1, batch_size=50, out=tmp_path,
              progress=False)
    first = fit(model, guide, torch.zeros(50, 1), **kw)
    second = fit(model, guide, torch.zeros(50, 1), resume=True, **kw)
    assert second.stopped == "early_stopping" and second.steps == first.steps


def test_resume_refuses_a_changed_cosine_period_and_another_objective(tmp_path, digits):
    m = _vae()
    fit(m.model, m.guide, digits.train[:100], epochs=2, batch_size=50, objective="iwae:5", lr_schedule="cosine",
        out=tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="epochs"):
        fit(m.model, m.guide, digits.train[:100], epochs=4, batch_size=50, objective="iwae:5",
            lr_schedule="cosine", out=tmp_path, resume=True, progress=False)
    with pytest.raises(CheckpointError, match="objective"):
        fit(m.model, m.guide, digits.train[:100], epochs=2, batch_size=50, objective="renyi:0.5",
            lr_schedule="cosine", out=tmp_path, resume=True, progress=False)


def test_without_validation_the_best_state_is_the_last(digits):
    m = _vae()
    res = fit(m.model, m.guide, digits.train[:200], epochs=3, batch_size=50, progress=False)
    assert res.best_epoch == 3 and res.best_val_loss is None
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in res.best_state["modules"][0].items())
    with pytest.raises(ValueError, match="patience must be >= 1"):
        fit(m.model, m.guide, digits.train[:200], epochs=3, patience=0, progress=False)


def test_outputs_get_the_users_umask_permissions(tmp_path, digits):
    m = _vae()
    old = os.umask(0o022)
    try:
        fit(m.model, m.guide, digits.train[:50], epochs=1, out=tmp_path, progress=False)
    finally:
        os.umask(old)
    for name in ("checkpoint.pt", "metrics.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
    assert not list(tmp_path.glob(".*.tmp"))


def test_resume_without_a_checkpoint_says_so_and_starts_new(tmp_path, digits, caplog):
    m = _vae()
    with caplog.at_level("WARNING", logger="pyro_gen"):
        fit(m.model, m.guide, digits.train[:50], epochs=1, out=tmp_path / "typo", resume=True, progress=False)
    assert any("no checkpoint at" in r.getMessage() and "starting a new run" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="pyro_gen"):
        fit(m.model, m.guide, digits.train[:50], epochs=2, out=tmp_path / "typo", resume=True, progress=False)
    assert any("continuing from" in r.getMessage() and "epoch 1, step 1" in r.getMessage() for r in caplog.records)


def test_resume_with_another_architecture_names_the_parameter_and_shapes(tmp_path, digits):
    m = _vae()
    fit(m.model, m.guide, digits.train[:50], epochs=1, out=tmp_path, progress=False)
    torch.manual_seed(0)
    other = VAE(64, 4, (16,))
    with pytest.raises(CheckpointError, match=r"another architecture: parameter '.*' has shape \(32, 64\) there and "
                                              r"\(16, 64\) in this model"):
        fit(other.model, other.guide, digits.train[:50], epochs=2, out=tmp_path, resume=True, progress=False)


def test_an_objective_that_ignores_enumeration_is_refused():
    def model(x):
        weights = pyro.param("w", torch.tensor([0.3, 0.7]), constraint=dist.constraints.simplex)
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Categorical(weights), infer={"enumerate": "parallel"})
            pyro.sample("x", dist.Normal(torch.tensor([-2.0, 2.0])[c], 1.0), obs=x[:, 0])

    def guide(x):
        pass

    x = torch.randn(20, 1)
    for objective in ("trace", "iwae:5"):
        with pytest.raises(ValueError, match="marks 'c' for enumeration.*Use objective 'enum'"):
            fit(model, guide, x, objective=objective, epochs=1, progress=False)
    fit(model, guide, x, objective="enum", epochs=1, progress=False)  # the objective that sums it out


def test_data_that_do_not_fit_the_likelihood_or_the_width_are_refused_up_front(digits):
    from pyro_gen import evaluate

    m = _vae()
    bad = digits.train[:20].clone()
    bad[3, 5] = 3.0  # values in {0, 3} for a Bernoulli likelihood
    with pytest.raises(ValueError, match=r"bernoulli likelihood needs values in \[0, 1\].*\[0, 3\]"):
        fit(m.model, m.guide, bad, epochs=1, progress=False)
    with pytest.raises(ValueError, match="has 63 columns but the model expects 64"):
        fit(m.model, m.guide, digits.train[:20, :63], epochs=1, progress=False)
    with pytest.raises(ValueError, match="bernoulli likelihood needs values in"):
        evaluate.log_likelihood(m.model, m.guide, bad, k=2)
    assert m.training  # a refused call leaves the modules as they were
