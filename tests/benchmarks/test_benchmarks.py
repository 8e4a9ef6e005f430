"""The benchmark scripts run end to end in smoke mode and print well-formed results.

Each script runs in a subprocess exactly as a person would run it (``python
benchmarks/x.py --smoke`` from the repository root); the last stdout line must be
one JSON object with the documented keys and sensible numbers. Together these take
about 15 s on 2 cores.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def _env(data_dir: Path | str | None = None, **extra: str) -> dict[str, str]:
    """The caller's environment with the repository importable and, if given, the data folder."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    if data_dir is not None:
        env["PYRO_GEN_DATA"] = str(data_dir)
    env.update(extra)
    return env


def _run(script: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _last_json(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-3000:]}"
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no output on stdout; stderr:\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1])


def _need(shared_data: Path, folder: str, benchmark: str) -> None:
    """Skip, naming what is missing, when the real data set a benchmark reads is absent."""
    if not (shared_data / folder).is_dir():
        pytest.skip(f"{folder} not found in {shared_data}: the {benchmark} needs the real data")


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_speed_smoke():
    # Uses the real data when PYRO_GEN_DATA points at it, random binary data otherwise.
    out = _last_json(_run("vae_speed.py", "--smoke", env=_env()))
    rows = {"trace", "meanfield", "iwae5", "pyro_svi", "threads", "rounds", "steps_per_round", "data", "batch",
            "hidden", "z_dim", "device"}
    assert set(out) == rows | {"small"} and set(out["small"]) == rows
    for size, (batch, hidden, z_dim) in ((out, (128, [400], 50)), (out["small"], (16, [64], 8))):
        for name in ("trace", "meanfield", "iwae5"):
            # fit's step (replayed by the fast path) and its standard step, each against the hand-written one
            assert set(size[name]) == {"pyro_gen_ms", "torch_ms", "ratio", "standard_ms", "standard_ratio"}
            assert all(_positive(v) for v in size[name].values()), size[name]
        assert set(size["pyro_svi"]) == {"pyro_ms", "torch_ms", "ratio"}
        assert all(_positive(v) for v in size["pyro_svi"].values()), size["pyro_svi"]
        assert (size["threads"], size["rounds"], size["steps_per_round"]) == (2, 2, 2)
        assert (size["batch"], size["hidden"], size["z_dim"]) == (batch, hidden, z_dim)
        assert size["data"] in ("binarized-mnist", "random") and size["device"] == "cpu"


@pytest.mark.slow
def test_quality_smoke(shared_data, tmp_path):
    _need(shared_data, "binarized_mnist", "quality benchmark")
    run_dir = tmp_path / "bench_quality"
    out = _last_json(_run("vae_quality.py", "--smoke", "--out", str(run_dir), env=_env(shared_data)))
    assert set(out) == {"epochs", "trace", "iwae5", "reference_trace", "eval_k", "eval_n"}
    assert (out["epochs"], out["eval_k"], out["eval_n"]) == (1, 10, 100)
    for name in ("trace", "iwae5", "reference_trace"):
        assert set(out[name]) == {"nll", "se", "seconds"}
        # log p(x) < 0 for binary data, so the NLL is positive; one epoch on 500 points stays far above 80 nats.
        assert all(_positive(v) for v in out[name].values()), out[name]
        assert 80 < out[name]["nll"] < 800, out[name]
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["trace"] == out["trace"]
    assert (run_dir / "training_curves.png").stat().st_size > 0


@pytest.mark.slow
def test_quality_without_data_exits_2_naming_the_folders(tmp_path):
    empty = tmp_path / "no_data"
    empty.mkdir()
    proc = _run("vae_quality.py", "--smoke", "--out", str(tmp_path / "out"),
                env=_env(empty, XDG_CACHE_HOME=str(tmp_path / "cache")))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "binarized_mnist" in proc.stderr and str(empty) in proc.stderr
    assert proc.stdout.strip() == ""


@pytest.mark.slow
def test_ppca_exact_smoke(tmp_path):
    run_dir = tmp_path / "ppca"
    out = _last_json(_run("ppca_exact.py", "--smoke", "--out", str(run_dir), env=_env()))
    assert set(out) == {"rel_gap", "angle_deg", "sklearn_score_diff", "elbo_gap_linear_guide",
                        "elbo_gap_diagonal_guide", "bounds_ordered", "seconds"}
    assert out["bounds_ordered"] is True
    # 240 SVI steps on 400 points get within 1% of the closed-form maximum and 1 degree of PCA
    assert 0 <= out["rel_gap"] < 1e-2 and 0 <= out["angle_deg"] < 1.0, out
    assert abs(out["sklearn_score_diff"]) < 0.1, out
    assert 0 <= out["elbo_gap_linear_guide"] < 0.05 and 0 <= out["elbo_gap_diagonal_guide"] < 0.05, out
    assert _positive(out["seconds"])
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["result"] == out and saved["linear_autoencoder_angle_deg"] < 1.0
    assert _positive(saved["speed"]["ratio"])
    assert (run_dir / "training.png").stat().st_size > 0 and (run_dir / "bounds.png").stat().st_size > 0


@pytest.mark.slow
def test_compare_ppca_smoke(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compare_ppca.py"), "--smoke", "--out",
                           str(tmp_path / "cmp")], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    out = _last_json(proc)
    assert set(out) == {"exact", "budget", "seeds", "runs"} and math.isfinite(out["exact"])
    assert set(out["runs"]) == {"trace/full", "iwae:5/full"}
    for run in out["runs"].values():
        assert {"gap", "gap_sd", "seconds"} <= set(run) and _positive(run["seconds"])
        # the gap splits into learning and inference; 20 steps leave both visibly open
        assert run["gap"] == pytest.approx(run["model_gap"] + run["bound_gap"], abs=1e-6) and run["gap"] > 0
    assert (tmp_path / "cmp" / "report.md").is_file()


@pytest.mark.slow
def test_topics_20ng_smoke(shared_data, tmp_path):
    _need(shared_data, "20newsgroups", "topic benchmark")
    run_dir = tmp_path / "topics"
    out = _last_json(_run("topics_20ng.py", "--smoke", "--out", str(run_dir), env=_env(shared_data)))
    assert set(out) == {"20", "50"}
    for k, row in out.items():
        assert set(row) == {"prodlda", "lda", "sklearn"}
        for name, figures in row.items():
            assert set(figures) == {"npmi", "perplexity", "seconds"}
            assert -1 <= figures["npmi"] <= 1 and _positive(figures["seconds"]), (k, name, figures)
            assert figures["perplexity"] > 1, (k, name, figures)
        # two iterations of scikit-learn's LDA already beat uniform guessing over the 1,995 words
        assert out[k]["sklearn"]["npmi"] > 0 and out[k]["sklearn"]["perplexity"] < 1995, out[k]["sklearn"]
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["results"] == out and saved["extra"]["0"]["20"]["sklearn"]["sklearn_bound_perplexity"] > 1
    assert len(saved["extra"]["0"]["50"]["prodlda"]["top_words"]) == 50
    assert (run_dir / "prodlda_20_seed0_top_words.png").stat().st_size > 0 and (run_dir / "top_words.md").is_file()


def test_topics_20ng_over_seeds_reports_means_sds_and_a_verdict(shared_data, tmp_path):
    _need(shared_data, "20newsgroups", "topic benchmark")
    out = _last_json(_run("topics_20ng.py", "--smoke", "--seeds", "2", "--topics", "5", "--out", str(tmp_path / "t"),
                          env=_env(shared_data)))
    assert out["seeds"] == [0, 1] and set(out["5"]["prodlda"]) == {"npmi", "npmi_sd", "perplexity", "perplexity_sd",
                                                                  "seconds", "seconds_sd"}
    cmp = out["5"]["prodlda_minus_sklearn_npmi"]
    assert len(cmp["per_seed"]) == 2 and cmp["mean"] == pytest.approx(sum(cmp["per_seed"]) / 2, abs=1e-3)
    assert cmp["verdict"] in ("ProdLDA higher", "scikit-learn higher", "not distinguishable")


@pytest.mark.slow
def test_hmm_jsb_smoke(shared_data, tmp_path):
    pytest.importorskip("hmmlearn", reason="hmmlearn is the EM reference of benchmarks/hmm_jsb.py: pip install -e '.[bench]'")
    _need(shared_data, "jsb_chorales", "HMM benchmark")
    run_dir = tmp_path / "bench_hmm"
    out = _last_json(_run("hmm_jsb.py", "--smoke", "--out", str(run_dir), env=_env(shared_data)))
    assert set(out) == {"forward_ratio", "max_rel_err", "hmm", "dmm", "hmmlearn"}
    assert _positive(out["forward_ratio"]) and 0 <= out["max_rel_err"] < 1e-4  # enumeration is exact
    assert set(out["hmm"]) == {"2", "3"}
    for row in [*out["hmm"].values(), out["dmm"]]:
        assert set(row) == {"test_nll", "seconds"} and all(_positive(v) for v in row.values()), row
        assert 0.5 < row["test_nll"] < 200, row  # nats per step over 88 keys: at most 88 log 2 = 61 for a sane HMM
    assert set(out["hmmlearn"]) == {"ours_ll", "hmmlearn_ll", "ours_seconds", "hmmlearn_seconds"}
    assert out["hmmlearn"]["ours_ll"] < 0 and out["hmmlearn"]["hmmlearn_ll"] < 0
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["summary"]["hmm"] == out["hmm"]
    assert (run_dir / "hmm_states.png").stat().st_size > 0 and (run_dir / "training_curves.png").stat().st_size > 0


@pytest.mark.slow
def test_hmm_jsb_timing_smoke(shared_data, tmp_path):
    """Part 1 alone (no hmmlearn needed): every form of the HMM, the markov form replayed by the fast path too,
    against the hand-written forward algorithm, with the same numbers."""
    _need(shared_data, "jsb_chorales", "HMM benchmark")
    out = _last_json(_run("hmm_jsb.py", "--smoke", "--timing-only", "--out", str(tmp_path), env=_env(shared_data)))
    assert set(out) == {"forward_ratio", "scan_ratio", "markov_ratio", "markov_fast_ratio", "max_rel_err"}
    assert all(_positive(out[k]) for k in out if k != "max_rel_err") and 0 <= out["max_rel_err"] < 1e-4


@pytest.mark.slow
def test_flows_energy_smoke(tmp_path):
    run_dir = tmp_path / "flows_energy"
    # --jobs 2: the fits come back from worker processes (histograms included) in any order
    out = _last_json(_run("flows_energy.py", "--smoke", "--toy", "--jobs", "2", "--out", str(run_dir), env=_env()))
    assert set(out) == {"kl", "steps", "best_depth2", "toy_nll", "seconds"}
    assert set(out["kl"]) == {"U1", "U3"}
    for energy, by_family in out["kl"].items():
        assert set(by_family) == {"planar", "sylvester", "affine_coupling"}
        for family, by_depth in by_family.items():
            assert set(by_depth) == {"1", "2"}
            # KL(q || p) >= 0 up to Monte Carlo error; 20 steps leave every fit far from p
            assert all(-0.05 < v < 50 for v in by_depth.values()), (energy, family, by_depth)
            assert all(0 < s <= 20 for s in out["steps"][energy][family].values())
    assert set(out["toy_nll"]) == {"moons", "circles", "8gaussians", "checkerboard"}
    assert all(set(v) == {"affine_coupling"} and math.isfinite(v["affine_coupling"]) for v in out["toy_nll"].values())
    for name in ("energies_depth1.png", "energies_depth2.png", "toy_densities.png", "results.json", "kl_table.md"):
        assert (run_dir / name).stat().st_size > 0


@pytest.mark.slow
def test_quality_flow_guides_smoke(shared_data, tmp_path):
    _need(shared_data, "binarized_mnist", "quality benchmark")
    run_dir = tmp_path / "flows_quality"
    out = _last_json(_run("vae_quality.py", "--smoke", "--guides", "diagonal,sylvester", "--flow-prior", "spline",
                          "--flow-depth", "2", "--train-n", "200", "--eval-n", "20", "--out", str(run_dir),
                          env=_env(shared_data)))
    assert set(out) == {"epochs", "diagonal", "sylvester", "flow_prior", "eval_k", "eval_n"}
    for name in ("diagonal", "sylvester", "flow_prior"):
        assert set(out[name]) == {"nll", "se", "seconds"}
        assert 80 < out[name]["nll"] < 800 and out[name]["se"] > 0, out[name]
    assert (run_dir / "prior_samples.png").stat().st_size > 0
    proc = _run("vae_quality.py", "--smoke", "--guides", "diagonal", "--flow-prior", "planar", env=_env(shared_data))
    assert proc.returncode == 2 and "no inverse" in proc.stderr and "spline" in proc.stderr


@pytest.mark.slow
def test_flows_speed_smoke():
    out = _last_json(_run("flows_speed.py", "--smoke", env=_env()))
    assert set(out) == {"diagonal_ms", "planar", "iaf", "sylvester", "depth", "rounds", "steps_per_round", "data"}
    assert _positive(out["diagonal_ms"])
    for flow in ("planar", "iaf", "sylvester"):
        assert set(out[flow]) == {"pyro_gen_ms", "torch_ms", "ratio", "vs_diagonal"}
        assert all(_positive(v) for v in out[flow].values()), out[flow]
    assert (out["depth"], out["rounds"], out["steps_per_round"]) == (2, 2, 2)


def test_dmm_iaf_speed_smoke():
    out = _last_json(_run("dmm_iaf_speed.py", "--smoke", env=_env()))
    assert set(out["seconds_per_step"]) == {"iafs_0", "iafs_2"} and out["ratio"] > 0 and out["data"] == "random"


def test_scaling_smoke(tmp_path):
    out = _last_json(_run("scaling.py", "--smoke", "--only", "tensor,dataloader,bf16", "--out", str(tmp_path),
                          env=_env()))
    assert set(out) >= {"throughput", "efficiency_2", "dataloader_overhead", "bf16_speedup", "compile_speedup"}
    assert out["dataloader_overhead"] > 0 and out["bf16_speedup"] > 0 and out["compile_speedup"] is None
    assert (tmp_path / "scaling.png").exists() and json.loads((tmp_path / "scaling.json").read_text())["batch"] == 128


@pytest.mark.slow
def test_ais_eval_smoke(shared_data, tmp_path):
    _need(shared_data, "binarized_mnist", "AIS benchmark")
    run_dir = tmp_path / "ais"
    out = _last_json(_run("ais_eval.py", "--smoke", "--out", str(run_dir), env=_env(shared_data)))
    assert {"ais_err", "bdmc_lower", "bdmc_upper", "exact"} <= set(out["ppca"])
    assert {"iwae1000", "ais", "bdmc_gap_simulated"} <= set(out["vae_mnist"])
    assert {"cd1", "cd25", "pcd", "logz_exact_err"} <= set(out["rbm"])
    assert out["ppca"]["bdmc_lower"] < out["ppca"]["exact"] < out["ppca"]["bdmc_upper"], out["ppca"]
    assert 0 <= out["ppca"]["ais_err"] < 2  # 20 steps and 4 chains: loose, but no worse than the prior's gap
    assert all(_positive(out["rbm"][k]) and out["rbm"][k] < 784 * math.log(2) for k in ("cd1", "cd25", "pcd"))
    assert -800 < out["vae_mnist"]["ais"] < 0 and -800 < out["vae_mnist"]["iwae1000"] < 0
    assert math.isfinite(out["rbm"]["logz_exact_err"])
    for fig in ("bdmc_ppca.png", "rbm_pcd_samples.png", "rbm_pcd_filters.png"):
        assert (run_dir / fig).stat().st_size > 1000, fig
    assert json.loads((run_dir / "results.json").read_text())["results"]["rbm"]["cd1"] == out["rbm"]["cd1"]


@pytest.mark.slow
def test_discrete_mnist_smoke(shared_data, tmp_path):
    _need(shared_data, "binarized_mnist", "discrete-latent benchmark")
    run_dir = tmp_path / "discrete"
    out = _last_json(_run("discrete_mnist.py", "--smoke", "--no-progress", "--out", str(run_dir), env=_env(shared_data)))
    assert set(out) == {"sbn", "categorical"}
    assert set(out["sbn"]) == {"graph", "vimco", "rws"} and set(out["categorical"]) == {"concrete", "vimco", "graph"}
    for part in out.values():
        for r in part.values():
            assert set(r) == {"nll", "se", "seconds"}
            # 20 steps: far from trained, but a proper bound on binary 784-pixel images
            assert 100 < r["nll"] < 784 * math.log(2) + 50 and r["se"] > 0 and r["seconds"] > 0, r
    saved = json.loads((run_dir / "results.json").read_text())
    noise = saved["runs"]["sbn"]["vimco"]["gradient_noise"]
    assert noise[0]["step"] == 0 and all(row["variance"] > 0 for row in noise)
    for fig in ("gradient_variance.png", "sbn_samples.png", "categorical_training_curves.png"):
        assert (run_dir / fig).stat().st_size > 1000, fig
    proc = _run("discrete_mnist.py", "--parts", "sbn,hmm", "--smoke", env=_env(shared_data))
    assert proc.returncode == 2 and "unknown part(s) hmm; valid choices: sbn, categorical" in proc.stderr


@pytest.mark.slow
def test_ssvae_mnist_smoke(shared_data, tmp_path):
    _need(shared_data, "torchvision", "semi-supervised benchmark")
    run_dir = tmp_path / "ssvae"
    out = _last_json(_run("ssvae_mnist.py", "--smoke", "--no-progress", "--out", str(run_dir), env=_env(shared_data)))
    assert set(out) == {"labels"} and set(out["labels"]) == {"100", "600"}
    for r in out["labels"].values():
        assert set(r) == {"error", "seconds"} and 0 < r["error"] < 90 and r["seconds"] > 0, r  # 90: chance
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["runs"]["600"]["error_curve"][-1]["error"] == pytest.approx(out["labels"]["600"]["error"], abs=0.01)
    for fig in ("analogies.png", "error_vs_time.png", "latent.png"):
        assert (run_dir / fig).stat().st_size > 1000, fig
    proc = _run("ssvae_mnist.py", "--labels", "105", "--smoke", env=_env(shared_data))
    assert proc.returncode == 2 and "positive multiples of 10" in proc.stderr


def test_ssvae_lr_decay_and_device_options(capsys):
    """--lr-decay: geometric from lr to final * lr over the epochs, or over the seconds of a time budget; --device
    refused by name when torch cannot parse it or has no CUDA."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("ssvae_mnist_bench", ROOT / "benchmarks" / "ssvae_mnist.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.decay_over_budget(1.0, None, 10) is None

    def lrs(make, steps):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=2.0)
        sched, seen = make(opt), [opt.param_groups[0]["lr"]]
        for _ in range(steps):
            opt.step()
            sched.step()
            seen.append(opt.param_groups[0]["lr"])
        return seen

    assert lrs(bench.decay_over_budget(0.25, None, 4), 6) == pytest.approx([2.0, 2 * 0.25 ** 0.25, 1.0,
                                                                           2 * 0.25 ** 0.75, 0.5, 0.5, 0.5])
    assert lrs(bench.decay_over_budget(0.25, 1e-9, 1000), 2)[1:] == pytest.approx([0.5, 0.5])  # budget spent
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--lr-decay", "0", "--smoke"])
    assert exit_.value.code == 2 and "--lr-decay must be in (0, 1], got 0.0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--device", "gpu0", "--smoke"])
    assert exit_.value.code == 2 and "--device must name a torch device" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit) as exit_:
            bench.main(["--device", "cuda", "--smoke"])
        assert exit_.value.code == 2 and "torch finds no CUDA device" in capsys.readouterr().err


@pytest.mark.slow
def test_cvae_mnist_smoke(shared_data, tmp_path):
    _need(shared_data, "binarized_mnist", "CVAE benchmark")
    run_dir = tmp_path / "cvae"
    out = _last_json(_run("cvae_mnist.py", "--smoke", "--no-progress", "--out", str(run_dir), env=_env(shared_data)))
    assert set(out) == {"visible"} and set(out["visible"]) == {"1", "2", "3"}
    for v, r in out["visible"].items():
        assert set(r) == {"cvae", "baseline"}
        hidden_pixels = 784 * (4 - int(v)) / 4
        for name in ("cvae", "baseline"):  # nats over the hidden pixels: between 0 and coin flipping
            assert 0 < r[name]["nll"] < hidden_pixels * 0.7 and r[name]["se"] > 0, r
    for fig in ("completions_1_cvae.png", "completions_3_baseline.png"):
        assert (run_dir / fig).stat().st_size > 1000, fig
    proc = _run("cvae_mnist.py", "--visible", "1,4", "--smoke", env=_env(shared_data))
    assert proc.returncode == 2 and "among 1, 2, 3" in proc.stderr


def test_disentangle_smoke(tmp_path):
    """No data files: the shapes are rendered. Every method trains and is scored; the figures exist."""
    run_dir = tmp_path / "disentangle"
    out = _last_json(_run("disentangle.py", "--smoke", "--no-progress", "--out", str(run_dir), env=_env()))
    assert set(out) == {"vae", "beta_vae", "beta_tcvae", "factor_vae", "ae", "target"}
    for method in ("vae", "beta_vae", "beta_tcvae", "factor_vae", "ae"):
        r = out[method]
        assert all(0 <= r[m] <= 1 for m in ("mig", "dci", "factorvae", "sap")), r
        # 30 steps on 32x32 binary images: worse than trained, better than coin flipping on every pixel
        assert 0 < r["recon"] < 1024 * math.log(2) and r["mig_sd"] is None, r
    assert isinstance(out["target"]["ratio_at_least_2"], bool) and len(out["target"]["mig_ranking_per_seed"]) == 1
    for fig in ("traversals_beta_tcvae.png", "kl_per_dim.png", "mig_vs_recon.png", "samples_vae_vs_ae.png"):
        assert (run_dir / fig).stat().st_size > 1000, fig
    proc = _run("disentangle.py", "--methods", "vae,pca", "--smoke", env=_env())
    assert proc.returncode == 2 and "unknown method(s) pca; valid choices: vae, beta_vae" in proc.stderr
    # --resume: the runs in results.json are kept, a missing one is trained again (the same run: same seed), and
    # the file keeps the runs of methods not asked for; other settings are refused, naming the difference
    (run_dir / "seed0_ae.pt").unlink()
    resume = ("disentangle.py", "--smoke", "--no-progress", "--out", str(run_dir), "--resume", "--methods", "vae,ae")
    proc = _run(*resume, env=_env())
    again = _last_json(proc)
    said = proc.stderr.splitlines()
    assert any(line.startswith("vae seed 0: kept from") for line in said), proc.stderr
    assert any(line.startswith("ae seed 0: MIG") for line in said), proc.stderr
    assert set(again) == {"vae", "ae"} and again["vae"] == out["vae"], again
    assert again["ae"]["recon"] == pytest.approx(out["ae"]["recon"], rel=1e-4), (again["ae"], out["ae"])
    saved = json.loads((run_dir / "results.json").read_text())
    assert sorted(r["method"] for r in saved["runs"]) == sorted(out_methods := set(out) - {"target"}), saved["runs"]
    proc = _run(*resume, "--lr", "0.01", env=_env())
    assert proc.returncode == 2 and "other settings (lr: 0.001 there, 0.01 here)" in proc.stderr, proc.stderr
    assert len(json.loads((run_dir / "results.json").read_text())["runs"]) == len(out_methods)


def test_vqvae_mnist_smoke(shared_data, tmp_path):
    _need(shared_data, "binarized_mnist", "VQ-VAE benchmark")
    _need(shared_data, "torchvision", "VQ-VAE benchmark")
    run_dir = tmp_path / "vqvae"
    out = _last_json(_run("vqvae_mnist.py", "--smoke", "--no-progress", "--out", str(run_dir), env=_env(shared_data)))
    assert set(out) == {"binarized-mnist", "fashion-mnist"}
    for part in out.values():
        vq, vae = part["vqvae"], part["vae"]
        # one epoch on 1,000 images: bounds between a trained model's and coin flipping (1 bit per pixel)
        assert 0 < vq["bits_per_dim"] <= vq["bits_per_dim_uniform"] + 0.05 and vq["bits_per_dim_uniform"] < 1.5, vq
        assert 0 < vae["bits_per_dim"] < 1.5 and 1 <= vq["perplexity"] <= 16, part
        assert abs(vq["parameters"] - vae["parameters"]) < 0.15 * vae["parameters"], part
    for fig in ("binarized-mnist_samples_vqvae.png", "fashion-mnist_reconstructions_vae.png"):
        assert (run_dir / fig).stat().st_size > 1000, fig
