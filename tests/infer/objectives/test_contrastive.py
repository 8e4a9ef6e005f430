"""Contrastive divergence: its gradient against the exact log-likelihood gradient of a small RBM,
its value against the exact pseudo-likelihood, persistent chains through checkpoints, and refusals."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from models.rbm import RBM
from pyro_gen import fit, objectives
from pyro_gen.exact import rbm_log_partition
from pyro_gen.infer.checkpoint import load_checkpoint


def _rbm(seed=0, D=6, H=4):
    pyro.clear_param_store()  # the RBM's parameters live in Pyro's param store by name: a fresh one each time
    torch.manual_seed(seed)
    return RBM(D, hidden=H, init_scale=0.5)


def _data(n=8, D=6, seed=0):
    return torch.bernoulli(torch.full((n, D), 0.35), generator=torch.Generator().manual_seed(seed))


def _exact_mean_ll(rbm, x):
    return (-rbm.free_energy(x).double() - rbm_log_partition(rbm.W, rbm.b_v, rbm.b_h)).mean()


def test_long_chains_give_the_exact_log_likelihood_gradient():
    """CD-k from the data with k large enough to mix is unbiased for -grad mean log p(x)."""
    rbm, x = _rbm(), _data()
    exact = torch.autograd.grad(-_exact_mean_ll(rbm, x), [rbm.W, rbm.b_v, rbm.b_h])
    torch.manual_seed(1)
    reps = 4000  # each data point starts 4000 chains: a Monte Carlo average over the model's samples
    loss = objectives.get("cd:50").differentiable_loss(rbm.model, rbm.guide, x.repeat(reps, 1)) / (reps * len(x))
    grads = torch.autograd.grad(loss, [rbm.W, rbm.b_v, rbm.b_h])
    for g, e in zip(grads, exact):
        assert (g.double() - e).norm() < 0.05 * e.norm() + 0.01, (g, e)
    # CD-1 is biased: its gradient differs from the exact one by more than the Monte Carlo error
    torch.manual_seed(1)
    loss1 = objectives.get("cd:1").differentiable_loss(rbm.model, rbm.guide, x.repeat(reps, 1)) / (reps * len(x))
    g1 = torch.autograd.grad(loss1, [rbm.W])[0]
    assert (g1.double() - exact[0]).norm() > 0.1 * exact[0].norm()


def test_the_value_is_the_negative_pseudo_log_likelihood():
    rbm, x = _rbm(), _data()
    F = rbm.free_energy(x)
    flipped = x.unsqueeze(1) + (1 - 2 * x).unsqueeze(1) * torch.eye(6)  # every one-unit flip: (N, D, D)
    exact = -torch.nn.functional.logsigmoid(rbm.free_energy(flipped) - F.unsqueeze(1)).sum(1).mean()
    torch.manual_seed(0)
    with torch.no_grad():  # validation: the value only
        value = objectives.get("pcd:1").differentiable_loss(rbm.model, rbm.guide, x.repeat(3000, 1)) / (3000 * 8)
    assert value.item() == pytest.approx(exact.item(), rel=0.02)


def test_persistent_chains_carry_over_and_round_trip():
    rbm, x = _rbm(), _data()
    pcd = objectives.get("pcd:3")
    assert objectives.describe(pcd) == "PCD-3" and objectives.describe(objectives.get("cd:25")) == "CD-25"
    with torch.no_grad():
        pcd.differentiable_loss(rbm.model, rbm.guide, x)
    assert pcd.state_dict() == {"chains": {}}  # validation moves no chain
    pcd.differentiable_loss(rbm.model, rbm.guide, x)
    first = pcd.state_dict()["chains"]["x"]
    assert first.shape == x.shape and not torch.equal(first, x)
    pcd.differentiable_loss(rbm.model, rbm.guide, x)
    assert not torch.equal(pcd.state_dict()["chains"]["x"], first)  # continued, not restarted at the data
    other = objectives.get("pcd:3")
    other.load_state_dict(pcd.state_dict())
    assert torch.equal(other.state_dict()["chains"]["x"], pcd.state_dict()["chains"]["x"])


def test_pcd_resumes_exactly(tmp_path):
    """The chains are in the checkpoint: restarting them at the data would change the run (a larger RBM than
    the others here, whose chains do not coalesce under common random numbers within a few sweeps)."""
    x = _data(64, D=30, seed=3)
    kw = dict(objective="pcd:1", epochs=3, batch_size=16, lr=0.05, optimizer="sgd", progress=False)
    full = _rbm(D=30, H=20)
    fit(full.model, full.guide, x, **kw)
    full_state = [p.detach().clone() for p in full.parameters()]

    interrupted = _rbm(D=30, H=20)
    fit(interrupted.model, interrupted.guide, x, out=tmp_path, callback=lambda row: row["epoch"] < 1, **kw)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["objective"]["chains"]["x"].shape == (16, 30)
    resumed = _rbm(seed=5, D=30, H=20)
    fit(resumed.model, resumed.guide, x, out=tmp_path, resume=True, **kw)
    for a, b in zip(full_state, resumed.parameters()):
        assert torch.equal(a, b)


def test_cd_training_raises_the_exact_log_likelihood():
    teacher = _rbm(seed=7)
    with torch.no_grad():
        teacher.W.mul_(4)
    x = teacher.sample(400, steps=200).bernoulli()
    student = _rbm(seed=1)
    before = _exact_mean_ll(student, x).item()
    fit(student.model, student.guide, x, objective="pcd:1", epochs=60, batch_size=40, lr=0.1, optimizer="sgd",
        progress=False)
    after, best = _exact_mean_ll(student, x).item(), _exact_mean_ll(teacher, x).item()
    assert after > before + 0.5 and after > best - 0.3, (before, after, best)


def test_refuses_models_it_cannot_train():
    x = _data()

    def latent(x):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(z, 1.0).expand([6]).to_event(1), obs=x)

    def guide(x):
        pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="samples 'z': train it with an ELBO"):
        objectives.get("cd").differentiable_loss(latent, guide, x)

    def plain(x):
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Bernoulli(0.5).expand([6]).to_event(1), obs=x)

    with pytest.raises(ValueError, match="needs an observed site whose distribution is an EnergyDistribution"):
        objectives.get("pcd").differentiable_loss(plain, lambda x: None, x)
    with pytest.raises(ValueError, match="integer >= 1"):
        objectives.get("cd:0")
