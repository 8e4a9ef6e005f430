"""``python -m inference.fit rbm`` and ``python -m inference.evaluate RUN --ais``, with tiny settings."""

import json

import pytest

from inference import evaluate as evaluate_cli
from inference import fit as fit_cli
from pyro_gen.infer.checkpoint import load_checkpoint


def test_fit_an_rbm_then_re_estimate_its_log_z(tmp_path):
    out = tmp_path / "rbm"
    m = fit_cli.main(["rbm", "--data", "digits", "--hidden", "24", "--epochs", "2", "--optimizer", "sgd", "--lr",
                      "0.05", "--ais-steps", "100", "--ais-chains", "10", "--eval-n", "50", "--no-progress",
                      "--out", str(out)])
    assert m["config"]["objective"] == "pcd" and json.loads((out / "metrics.json").read_text())["config"][
        "optimizer"] == "sgd"
    test = m["test"]
    assert test["n"] == 50 and test["log_z_method"] == "AIS, 100 steps, 10 chains"
    assert -64 * 0.7 < test["log_likelihood"] < 0  # 64 binary pixels: better than coin flips, below 0
    for fig in ("samples", "filters", "training_curves"):
        assert (out / f"{fig}.png").stat().st_size > 1000, fig
    assert load_checkpoint(out / "checkpoint.pt")["best"]["modules"][0]["log_z"].item() == pytest.approx(test["log_z"])

    again = evaluate_cli.main([str(out), "--ais", "--steps", "400", "--chains", "20", "--n", "50", "--no-progress"])
    assert again["log_z_method"] == "AIS, 400 steps, 20 chains"
    assert abs(again["log_z"] - test["log_z"]) < 4 * (again["log_z_se"] + test["log_z_se"]) + 0.5
    assert json.loads((out / "ais.json").read_text())["log_z"] == again["log_z"]
    with pytest.raises(ValueError, match="--bdmc and --from-guide are for models with latents"):
        evaluate_cli.main([str(out), "--ais", "--bdmc"])


def test_ais_and_bdmc_beside_iwae_for_a_vae_run(tmp_path):
    out = tmp_path / "vae"
    fit_cli.main(["vae", "--data", "digits", "--latent-dim", "2", "--hidden", "16", "--epochs", "1", "--eval-k", "5",
                  "--eval-n", "20", "--no-progress", "--out", str(out)])
    s = evaluate_cli.main([str(out), "--ais", "--bdmc", "--n", "10", "--steps", "30", "--chains", "4", "--k", "50",
                           "--no-progress"])
    assert s["n"] == 10 and s["start"] == "prior" and 0 < s["acceptance"] <= 1
    assert abs(s["ais"]["mean"] - s["iwae"]["mean"]) < 5  # two estimates of the same log p(x)
    assert s["bdmc"]["lower"]["mean"] <= s["bdmc"]["upper"]["mean"] + 0.5
    assert json.loads((out / "ais.json").read_text())["bdmc"]["gap"] == s["bdmc"]["gap"]
    with pytest.raises(ValueError, match="say what to estimate: --ais"):
        evaluate_cli.main([str(out)])
    with pytest.raises(ValueError, match="--steps must be at least 1, got 0"):
        evaluate_cli.main([str(out), "--ais", "--steps", "0"])
    with pytest.raises(FileNotFoundError, match="metrics.json not found"):
        evaluate_cli.main([str(tmp_path / "nothing"), "--ais"])
