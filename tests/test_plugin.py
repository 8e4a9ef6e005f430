"""pyro_gen is a plugin: importing it, or any module of its library, models and drivers, leaves
Pyro and torch as they were (settings, param store, validation, dtype, RNG, threads)."""

import json
import os
import subprocess
import sys

from tests.conftest import ROOT

MODULES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for top in ("pyro_gen", "models", "inference") for p in (ROOT / top).rglob("*.py"))

_SNAPSHOT = r"""
import json, random
import numpy as np
import pyro, torch

def snapshot():
    return {
        "settings": {k: repr(v) for k, v in sorted(pyro.settings.get().items())},
        "param_store": sorted(pyro.get_param_store().keys()),
        "validation": [pyro.infer.util.is_validation_enabled(), torch.distributions.Distribution._validate_args],
        "default_dtype": str(torch.get_default_dtype()),
        "rng": [torch.get_rng_state().tolist(), repr(np.random.get_state()[1][:8]), random.getstate()[1][:8]],
        "threads": [torch.get_num_threads(), torch.get_num_interop_threads()],
        "grad": torch.is_grad_enabled(),
        "anomaly": torch.is_anomaly_enabled(),
    }
"""


def test_importing_every_module_changes_no_global_state():
    assert "pyro_gen.infer.run" in MODULES and "models.vae" in MODULES and "inference.fit" in MODULES
    code = _SNAPSHOT + (
        "import importlib\nbefore = snapshot()\n"
        f"for name in {MODULES!r}:\n    importlib.import_module(name)\n"
        "print(json.dumps({'before': before, 'after': snapshot()}))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in out["before"]:
        assert out["after"][key] == out["before"][key], f"importing pyro_gen changed {key}"
