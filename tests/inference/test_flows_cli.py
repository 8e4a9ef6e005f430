"""The flow options of ``python -m inference.fit`` (``--guide-flow``, ``--flow-depth``, ``--prior-flow``)."""

import json
import subprocess
import sys

from inference.fit import main
from tests.conftest import ROOT


def test_fit_cli_trains_a_vae_with_a_flow_guide_and_prior(tmp_path):
    out = tmp_path / "run"
    metrics = main(["vae", "--data", "digits", "--guide-flow", "sylvester", "--prior-flow", "spline",
                    "--flow-depth", "2", "--epochs", "1", "--latent-dim", "3", "--hidden", "16", "--eval-k", "5",
                    "--eval-n", "40", "--out", str(out), "--no-progress"])
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["config"]["guide_flow"] == "sylvester" and saved["config"]["prior_flow"] == "spline"
    assert -64 * 0.7 < metrics["test"]["log_likelihood"] < 0  # 64 binary pixels: above uniform, below 0
    assert (out / "samples.png").stat().st_size > 0


def test_fit_cli_refuses_a_prior_that_cannot_score_naming_those_that_can(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "inference.fit", "vae", "--prior-flow", "radial", "--out",
                           str(tmp_path / "x")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "no inverse" in proc.stderr and "affine_coupling" in proc.stderr
    assert not (tmp_path / "x").exists()
