"""Each disentanglement metric on representations whose answer is known: the factors themselves
with noise score near 1, a rotation of them scores low, a constant scores 0.

"A rotation" is one that spreads every factor evenly over every latent (a normalized 8 x 8
Hadamard matrix on the 5 standardized factors and 3 noise columns). A generic random rotation
leaves some latents closer to one factor than the others: MIG, DCI and SAP still score it low,
but the FactorVAE score, which only asks that each factor have its own least-varying latent,
gives it 0.8 (Kim & Mnih's score is known to be lenient)."""

import numpy as np
import pytest
import torch

from pyro_gen import disentanglement as dis
from pyro_gen.data.shapes import grid

METRICS = {
    "mig": dis.mig,
    "dci": lambda z, v: min((d := dis.dci(z, v))["disentanglement"], d["completeness"]),  # both, from one fit
    "factorvae": dis.factorvae_score,
    "sap": dis.sap,
}


@pytest.fixture(scope="module")
def cases():
    rng = np.random.default_rng(0)
    g = grid("small")
    v = g.factors(torch.from_numpy(rng.choice(len(g), 2000, replace=False))).numpy()
    sizes = np.array(g.sizes, dtype=float)
    ideal = v / (sizes - 1)  # each factor in [0, 1]
    noisy = ideal + 0.02 * rng.standard_normal(ideal.shape)
    standard = np.concatenate([(ideal - ideal.mean(0)) / ideal.std(0), rng.standard_normal((len(v), 3))], 1)
    hadamard = np.array([[1.0]])
    for _ in range(3):
        hadamard = np.block([[hadamard, hadamard], [hadamard, -hadamard]])
    q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    return v, {"factors": noisy, "rotated": standard @ hadamard / np.sqrt(8), "random-rotation": (ideal - ideal.mean(0)) @ q,
               "constant": np.ones_like(ideal)}


@pytest.mark.parametrize("name", list(METRICS))
def test_metric_on_known_answers(name, cases):
    v, reps = cases
    metric = METRICS[name]
    good, rotated, constant = (metric(reps[k], v) for k in ("factors", "rotated", "constant"))
    assert good > 0.8, f"{name} of the noisy factors themselves: {good}"
    assert rotated < good - 0.3, f"{name}: a rotation ({rotated}) should score well below the factors ({good})"
    assert constant == 0.0
    if name != "factorvae":
        random_rotation = metric(reps["random-rotation"], v)
        assert random_rotation < good - 0.3, f"{name}: a random rotation scores {random_rotation}"


def test_metrics_ignore_extra_nuisance_latents_in_the_right_way(cases):
    v, reps = cases
    padded = np.concatenate([reps["factors"], np.random.default_rng(1).standard_normal((len(v), 3))], 1)
    assert dis.mig(padded, v) > 0.8  # noise latents carry no information about any factor
    assert dis.dci(padded, v)["disentanglement"] > 0.8


def test_one_latent_per_two_factors_is_not_disentangled(cases):
    v, reps = cases
    mixed = reps["factors"].copy()
    mixed[:, 3] = mixed[:, 3] + mixed[:, 4]  # pos_x and pos_y share a latent; the other latent is noise
    mixed[:, 4] = 0.01 * np.random.default_rng(2).standard_normal(len(v))
    before, after = dis.all_metrics(reps["factors"], v), dis.all_metrics(mixed, v)
    for name in ("mig", "dci", "dci_completeness", "dci_informativeness", "sap"):
        assert after[name] < before[name] - 0.15, (name, before[name], after[name])


def test_inputs_are_checked_by_name():
    z, v = np.zeros((20, 3)), np.zeros((20, 2), dtype=int)
    with pytest.raises(ValueError, match="one row per data point, got 20 representations and 19 factor rows"):
        dis.mig(z, v[:19])
    with pytest.raises(ValueError, match="NaN or inf"):
        dis.sap(np.full((20, 3), np.nan), v)
    with pytest.raises(ValueError, match="integer indices"):
        dis.dci(z, v + 0.5)
    with pytest.raises(ValueError, match="at least 2"):
        dis.mig(z[:, :1], v)


def test_metrics_touch_no_global_random_state(cases):
    v, reps = cases
    torch.manual_seed(3)
    np.random.seed(3)
    before = torch.get_rng_state(), np.random.get_state()[1].copy()
    first = dis.all_metrics(reps["rotated"][:600], v[:600])
    assert torch.equal(torch.get_rng_state(), before[0]) and np.array_equal(np.random.get_state()[1], before[1])
    assert dis.all_metrics(reps["rotated"][:600], v[:600]) == first  # seeded: the same numbers again


def test_mutual_information_matrix_says_which_latent_carries_which_factor(cases):
    v, reps = cases
    # latents: factor 2; factors 0 and 1 in one (100 v0 + v1: 20 equal bins over 0..202 split v1 only in part); noise
    rng = np.random.default_rng(3)
    z = np.stack([v[:, 2], v[:, 0] * 100 + v[:, 1], rng.standard_normal(len(v))], 1).astype(float)
    info = dis.mutual_information(z, v)
    assert info.shape == (v.shape[1], 3) and ((info >= 0) & (info <= 1 + 1e-9)).all()
    assert info[2, 0] == pytest.approx(1.0)  # the factor itself (8 values, no more than the 20 bins)
    assert info[2, 1] < 0.05 and info[:, 2].max() < 0.05  # independent of it / pure noise: nearly none
    assert info[0, 1] > 0.9 and info[1, 1] > 0.2  # the mixed latent: all of factor 0, part of factor 1
    # MIG is the mean over factors of the gap between each row's two largest entries
    gaps = [np.sort(row)[-1] - np.sort(row)[-2] for row in dis.mutual_information(reps["factors"], v)]
    assert dis.mig(reps["factors"], v) == pytest.approx(np.mean(gaps))
    with pytest.raises(ValueError, match="length|rows|match"):
        dis.mutual_information(z[:10], v)
