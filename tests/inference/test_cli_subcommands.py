"""``python -m inference.fit FAMILY``: one subcommand per model family, with the common options
and only the family's own (declared by its file in models/)."""

import argparse
import json

import pytest
import torch

from inference import fit as fit_cli
from pyro_gen.data import Dataset


def _help(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as e:
        fit_cli.main([*argv, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def _flags(family: str) -> set[str]:
    """The option strings of one family's subcommand."""
    return set(fit_cli._subcommands(fit_cli.build_parser())[family]._option_string_actions)


def test_help_lists_the_families_one_line_each(capsys):
    text = _help(capsys)
    for name in fit_cli.FAMILIES:
        assert sum(line.split()[:1] == [name] for line in text.splitlines()) == 1, name
    assert "--latent-dim" not in text and "--states" not in text


def test_a_familys_help_lists_only_its_options(capsys):
    vae = _help(capsys, "vae")
    assert "--guide-flow" in vae and "--likelihood" in vae and "--epochs" in vae and "--kl-anneal" in vae
    assert "--states" not in vae and "--topics" not in vae and "--ppca-encoder" not in vae
    hmm = _help(capsys, "hmm")
    assert "--states" in hmm and "--hmm-guide" in hmm and "--epochs" in hmm
    assert "--guide-flow" not in hmm and "--latent-dim" not in hmm and "--likelihood" not in hmm
    assert "--topics" in _help(capsys, "prodlda") and "--topics" in _help(capsys, "lda")


def test_every_family_parses_with_the_common_options_and_its_own():
    common = _flags("vae") & _flags("hmm")
    assert {"--data", "--objective", "--epochs", "--out", "--resume", "--eval-n", "--beta"} <= common
    own = {"vae": "--guide-flow", "ppca": "--ppca-ard", "prodlda": "--topics", "lda": "--topics",
           "hmm": "--states", "dmm": "--num-iafs", "rbm": "--ais-steps", "sbn": "--latent-dim", "catvae": "--relaxed",
           "ssvae": "--labels", "cvae": "--visible", "ae": "--noise", "dae": "--noise", "vqvae": "--codes"}
    assert set(own) == set(fit_cli.FAMILIES) == set(fit_cli.MODELS)
    for family, flag in own.items():
        assert _flags(family) >= common | {flag}
        args = fit_cli.build_parser().parse_args([family, "--out", "x", "--epochs", "3"])
        assert args.model == family and args.epochs == 3
    for other in ("hmm", "dmm"):
        assert "--guide-flow" not in _flags(other)


@pytest.mark.parametrize("argv, message", [
    (["vea", "--out", "x"], "invalid choice: 'vea' (choose from 'vae', 'ppca', 'prodlda', 'lda', 'hmm', 'dmm', 'rbm', 'sbn', 'catvae', 'cvae', 'ssvae', 'ae', 'dae', 'vqvae')"),
    ([], "required: FAMILY"),
    (["vae", "--states", "3", "--out", "x"],
     "unrecognized arguments for vae: --states 3; --states is an option of hmm"),
    (["hmm", "--guide-flow=iaf", "--out", "x"], "--guide-flow is an option of vae"),
    (["dmm", "--latent-dim", "two", "--out", "x"], "argument --latent-dim: invalid int value: 'two'"),
])
def test_bad_family_or_option_is_an_argparse_error(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        fit_cli.main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_default_objective_is_the_familys():
    from models import catvae, cvae, hmm, rbm, sbn, ssvae, vae

    assert hmm.default_objective(argparse.Namespace(hmm_guide="enum")) == "enum"
    assert hmm.default_objective(argparse.Namespace(hmm_guide="amortized")) == "graph"
    assert vae.default_objective(argparse.Namespace()) == "trace"
    assert rbm.default_objective(argparse.Namespace()) == "pcd"
    assert sbn.default_objective(argparse.Namespace()) == "vimco:5"
    assert catvae.default_objective(argparse.Namespace(relaxed=False)) == "vimco:5"
    assert catvae.default_objective(argparse.Namespace(relaxed=True)) == "trace"
    assert ssvae.default_objective(argparse.Namespace()) == "enum"
    assert not hasattr(cvae, "default_objective")  # trace


def _tiny(sequences: bool, binary: bool = False) -> Dataset:
    if binary:  # binary 4x4 images with labels: what every binary family takes
        x = (torch.rand(6, 16) < 0.5).float()
        labels = {s: torch.tensor([0, 1, 2, 0, 1, 2]) for s in ("train", "val", "test")}
        return Dataset("tiny", x, x, x, image_shape=(1, 4, 4), binary=True, labels=labels)
    x = (torch.rand(6, 5, 4) < 0.5).float() if sequences else torch.poisson(torch.ones(6, 12))
    lengths = {s: torch.full((6,), 5) for s in ("train", "val", "test")} if sequences else {}
    return Dataset("tiny", x, x, x, binary=sequences, lengths=lengths)


@pytest.mark.parametrize("family", list(fit_cli.FAMILIES))
def test_every_family_builds_from_its_parsed_options_and_from_its_recorded_config(family):
    sequences = family in ("hmm", "dmm")
    small = {"vae": ["--latent-dim", "2", "--hidden", "8"], "ppca": ["--latent-dim", "2", "--hidden", "8"],
             "prodlda": ["--topics", "3"], "lda": ["--topics", "3"], "hmm": ["--states", "2"],
             "dmm": ["--latent-dim", "2", "--rnn-dim", "4"], "rbm": ["--hidden", "5"], "sbn": ["--latent-dim", "3"],
             "catvae": ["--vars", "2", "--classes", "3", "--hidden", "8"], "ssvae": ["--latent-dim", "2", "--hidden", "8"],
             "cvae": ["--latent-dim", "2", "--hidden", "8", "--visible", "2"],
             "ae": ["--latent-dim", "2", "--hidden", "8"], "dae": ["--latent-dim", "2", "--noise", "saltpepper:0.1"],
             "vqvae": ["--codes", "4", "--code-dim", "2", "--channels", "4"]}[family]
    args = fit_cli.build_parser().parse_args([family, "--out", "x", *small])
    binary = family in ("rbm", "sbn", "catvae", "ssvae", "cvae", "ae", "dae", "vqvae")
    model = fit_cli.MODELS[family](args, _tiny(sequences, binary))
    # what inference.diagnose does: rebuild from metrics.json's config
    again = fit_cli.MODELS[family](argparse.Namespace(**json.loads(json.dumps(vars(args)))), _tiny(sequences, binary))
    assert type(again) is type(model)
    assert [p.shape for p in again.parameters()] == [p.shape for p in model.parameters()]
    if sequences:  # a sequence model refuses data without lengths, naming the data sets with them
        with pytest.raises(ValueError, match="needs sequence data; valid choices for --data: jsb-chorales"):
            fit_cli.MODELS[family](args, _tiny(False))
    if family in ("rbm", "sbn", "catvae", "cvae"):  # binary models refuse data that are not, naming the way out
        with pytest.raises(ValueError, match="not binary|needs binary images"):
            fit_cli.MODELS[family](args, _tiny(False))


def test_dynamic_binarization_needs_grey_levels(capsys):
    from inference.fit import main

    with pytest.raises(ValueError, match="--binarize dynamic needs grey levels in \\[0, 1\\].*digits is already binary"):
        main(["vae", "--data", "digits", "--binarize", "dynamic", "--out", "unused"])


def test_the_fast_path_is_auto_unless_turned_off():
    """The command line records the step only on runs long enough to repay it, like fit's default."""
    parse = fit_cli.build_parser().parse_args
    assert parse(["vae", "--out", "x"]).fast == "auto"
    assert parse(["vae", "--out", "x", "--no-fast"]).fast is False


def test_autoencoders_report_reconstruction_and_vqvae_its_bits_per_dim(tmp_path, capsys):
    m = fit_cli.main(["dae", "--data", "digits", "--latent-dim", "3", "--hidden", "16", "--epochs", "1",
                      "--out", str(tmp_path / "dae"), "--no-progress"])
    assert "elbo" not in m["test"] and 0 < m["test"]["reconstruction_nats"] < 64 * 0.7
    assert m["config"]["noise"] == "mask:0.25" and "reconstruction error" in capsys.readouterr().out
    assert (tmp_path / "dae" / "samples.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="--noise makes a denoising autoencoder: use python -m inference.fit dae"):
        fit_cli.main(["ae", "--data", "digits", "--noise", "mask:0.2", "--out", str(tmp_path / "ae")])
    m = fit_cli.main(["vqvae", "--data", "digits", "--codes", "8", "--code-dim", "2", "--channels", "8",
                      "--epochs", "1", "--prior-epochs", "1", "--eval-k", "2", "--out", str(tmp_path / "vq"),
                      "--no-progress"])
    t = m["test"]
    # one epoch: far from trained; the learned prior's bound is no worse than the uniform one's (up to its fit)
    assert 1 <= t["perplexity"] <= 8 and 0 < t["bits_per_dim"] < t["bits_per_dim_uniform_prior"] + 0.05
    assert t["elbo"] == pytest.approx(t["log_likelihood"])  # a deterministic guide: every particle is the same
