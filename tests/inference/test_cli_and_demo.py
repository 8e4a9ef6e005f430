"""The command-line drivers and the demo, with tiny settings."""

import json
import subprocess
import sys

import pytest
import torch

from inference import demo
from inference import fit as fit_cli
from pyro_gen.infer.checkpoint import load_checkpoint
from tests.conftest import ROOT


def test_fit_cli_writes_metrics_checkpoint_figures_and_resumes(tmp_path):
    out = tmp_path / "run"
    args = ["vae", "--data", "digits", "--objective", "iwae", "--particles", "3", "--latent-dim", "2",
            "--hidden", "32", "--batch-size", "100", "--eval-k", "20", "--out", str(out), "--no-progress"]
    m = fit_cli.main(args + ["--epochs", "2"])
    assert (out / "checkpoint.pt").is_file()
    saved = json.loads((out / "metrics.json").read_text())
    assert len(saved["history"]) == 2 and saved["test"]["n"] == 250
    assert saved["test"]["log_likelihood"] >= saved["test"]["elbo"] - 3 * saved["test"]["elbo_se"]
    for fig in ("reconstructions", "samples", "latent", "interpolation", "manifold", "training_curves"):
        assert (out / f"{fig}.png").is_file(), fig
    assert m["config"]["objective"] == "iwae"
    # only the options that apply to a VAE: the common ones and the VAE's, no pPCA, topic or sequence options
    assert "guide_flow" in m["config"] and "latent_dim" in m["config"] and m["config"]["model"] == "vae"
    assert not {"ppca_encoder", "topics", "states", "num_iafs", "rnn_dim"} & set(m["config"])
    vae = {a.dest for a in fit_cli._subcommands(fit_cli.build_parser())["vae"]._actions} - {"help"}
    assert set(m["config"]) == vae | {"model"} and saved["config"]["likelihood"] == "bernoulli"

    # continue to 4 epochs: the history grows from where it stopped
    m2 = fit_cli.main(args + ["--epochs", "4", "--resume"])
    assert [h["epoch"] for h in m2["history"]] == [1, 2, 3, 4]
    assert m2["history"][:2] == saved["history"]
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 4


def test_fit_cli_on_binarized_mnist(tmp_path, shared_data):
    out = tmp_path / "bm"
    m = fit_cli.main(["vae", "--data", "binarized-mnist", "--data-root", str(shared_data), "--objective", "trace",
                      "--epochs", "1", "--max-steps", "20", "--eval-k", "10", "--eval-n", "200", "--out", str(out),
                      "--no-progress"])
    assert m["stopped"] == "max_steps" and m["test"]["n"] == 200
    # a seeded random sample of the whole (class-sorted) test split, recorded with its seed
    assert m["test"]["subset"] == {"n": 200, "of": 10000, "seed": 0}
    assert m["figures_subset"] == {"n": 2000, "of": 10000, "seed": 0}
    assert -600 < m["test"]["log_likelihood"] < -100  # nats per image: a 20-step model, but a real number


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--objective", "elbow"], "unknown objective 'elbow'; valid choices: trace"),
        (["--objective", "iwae", "--particles", "0"], "k must be an integer >= 1"),
        (["--data", "binarized-mnist", "--data-root", "/nonexistent"], "binarized_mnist_train.amat not found"),
    ],
)
def test_fit_cli_bad_input_exits_2_with_a_message(tmp_path, extra, message):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "inference.fit", "vae", "--out", str(tmp_path / "x"),
                           "--epochs", "1", *extra], capture_output=True, text=True, cwd=ROOT, env=env)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_fit_cli_corrupt_checkpoint(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"\x00garbage")
    proc = subprocess.run([sys.executable, "-m", "inference.fit", "vae", "--out", str(out), "--epochs", "1",
                           "--resume", "--no-progress"], capture_output=True, text=True, cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2 and "corrupt" in proc.stderr
    assert (out / "checkpoint.pt").read_bytes() == b"\x00garbage"


def test_demo_writes_a_report_with_one_row_per_objective(tmp_path):
    torch.manual_seed(0)
    report = demo.main(["--out", str(tmp_path), "--epochs", "2", "--eval-k", "10", "--no-progress"])
    text = report.read_text()
    for label in ("Trace_ELBO", "TraceMeanField_ELBO", "IWAE (k=5)"):
        assert f"| {label} |" in text
    assert "![training curves](training_curves.png)" in text
    for name in ("trace", "meanfield", "iwae5"):
        for fig in ("reconstructions", "samples", "latent"):
            assert (tmp_path / f"{name}_{fig}.png").stat().st_size > 1000
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [r["objective"] for r in rows] == ["Trace_ELBO", "TraceMeanField_ELBO", "IWAE (k=5)"]


@pytest.mark.slow
def test_diagnose_a_fitted_run(tmp_path):
    run = tmp_path / "run"
    fit_cli = [sys.executable, "-m", "inference.fit", "vae", "--data", "digits", "--latent-dim", "2", "--hidden", "16",
               "--epochs", "1", "--eval-k", "5", "--eval-n", "20", "--no-progress", "--out", str(run)]
    assert subprocess.run(fit_cli, cwd=ROOT, capture_output=True, text=True, timeout=300).returncode == 0
    diag = [sys.executable, "-m", "inference.diagnose", str(run), "--n", "30", "--k", "50", "--draws", "20"]
    proc = subprocess.run(diag, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = run / "diagnostics"
    summary = json.loads((out / "diagnostics.json").read_text())
    assert summary["psis"]["n"] == 30 and 0 <= summary["psis"]["share_above_0.7"] <= 1
    for f in ("khat.png", "worst_points.png", "ppc.png", "posterior.nc"):
        assert (out / f).stat().st_size > 0
    import arviz as az

    idata = az.from_netcdf(str(out / "posterior.nc"))
    assert idata.posterior["z"].shape == (1, 20, 30, 2)
    # a folder that is not a run is named
    bad = subprocess.run([sys.executable, "-m", "inference.diagnose", str(tmp_path / "nothing")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "metrics.json not found" in bad.stderr
