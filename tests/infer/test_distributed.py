"""DistributedDataParallel through torchrun: two gloo processes on the CPU against one process.

The per-shard random numbers (pyro_gen.infer.distributed) make P processes equal one process
that accumulates P shards per step, for every objective, to float tolerance.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.infer.ddp_job import OBJECTIVES, evaluation, run

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", *args, "-m", "tests.infer.ddp_job"]
    return cmd, env


def _check(proc):
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]


def _launch(job_args):
    port = _free_port()
    cmd, env = _torchrun("--nproc_per_node=2", f"--master_port={port}")
    return subprocess.Popen(cmd + job_args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_two_gloo_processes_equal_one_process_for_every_objective(tmp_path):
    proc = _launch(["--out", str(tmp_path / "ddp.json")])
    # meanwhile, in this process: the same global batch and seed, two shards accumulated per step
    single = {o: run(o, accumulate=2) for o in OBJECTIVES}
    evaluated = evaluation()
    _check(proc)
    ddp = json.loads((tmp_path / "ddp.json").read_text())
    # evaluation shared out over the two processes (batches 0 and 2 on rank 0, batch 1 on rank 1),
    # per-point values gathered: the same mean and standard error as one process, to the last bit
    assert ddp.pop("evaluate") == evaluated
    for objective, (params, result) in single.items():
        got = ddp[objective]
        assert got["world_size"] == 2 and got["steps"] == result.steps == 10
        assert torch.allclose(torch.tensor(got["params"]), params, atol=1e-5), objective
        # validation is sharded over the processes and summed: the same number as here
        for mine, theirs in zip(result.history, got["history"]):
            assert theirs["val_loss"] == pytest.approx(mine["val_loss"], rel=1e-5), objective
            assert theirs["train_loss"] == pytest.approx(mine["train_loss"], rel=1e-5), objective
    # and the run differs from one process without shards only by its random numbers
    plain, _ = run("trace")
    assert not torch.allclose(plain, single["trace"][0], atol=1e-5)


def test_two_nodes_of_one_process_resumed_by_one_process_equal_an_uninterrupted_run(tmp_path):
    run_dir = tmp_path / "run"
    port = _free_port()
    procs = []
    for _ in range(2):  # two "machines" on localhost, one process each, meeting at a c10d rendezvous
        cmd, env = _torchrun("--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d",
                             f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=pyro_gen_test")
        procs.append(subprocess.Popen(cmd + ["--out", str(tmp_path / "a.json"), "--objectives", "trace",
                                             "--epochs", "1", "--run-dir", str(run_dir)],
                                      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    reference, uninterrupted = run("trace", accumulate=2)  # meanwhile: two epochs in one process
    for proc in procs:
        _check(proc)
    first = json.loads((tmp_path / "a.json").read_text())["trace"]
    assert first["world_size"] == 2 and first["steps"] == 5
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoint.pt", "metrics.json"]  # rank 0 wrote them
    # the second epoch in this process, accumulating the two shards the two nodes took
    resumed, result = run("trace", accumulate=2, out=run_dir, resume=True)
    assert result.steps == uninterrupted.steps == 10
    assert torch.allclose(resumed, reference, atol=1e-5)
