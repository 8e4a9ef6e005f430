"""Pyro's idioms behave the same with pyro_gen imported: each runs in two fresh processes, one
with ``import pyro_gen`` first and one without, with the same seeds; losses and posteriors
(Predictive draws) must be identical."""

import json
import os
import subprocess
import sys

from tests.conftest import ROOT


def _run(*flags: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "pyro_idioms.py"), *flags], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_pyro_tutorial_idioms_are_unchanged_by_importing_pyro_gen():
    without, with_ = _run(), _run("--import-pyro-gen")
    assert set(without) == {"a", "b", "c", "d"}
    for idiom in without:
        assert with_[idiom] == without[idiom], f"idiom ({idiom}) changed when pyro_gen was imported"
        losses = without[idiom]["losses"]
        assert len(losses) == 30 and losses[-1] < losses[0], f"idiom ({idiom}) did not train"
