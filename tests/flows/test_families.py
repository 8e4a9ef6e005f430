"""Flows: exact log-determinants, inverses, gradients, save/load, and a conjugate posterior.

Every family, global and amortized, against ``torch.autograd.functional.jacobian`` in
float64; every invertible one round-trips; every parameter of a VAE with a flow guide or
prior, the encoder's included, gets a gradient; a flow guide gets at least as close to
the exact Gaussian posterior of a Bayesian linear regression as the diagonal guide.
"""

from __future__ import annotations

import io

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoDiagonalNormal

from models.vae import VAE
from pyro_gen import objectives
from pyro_gen.evaluate import per_point_log_weights
from pyro_gen.flows import FAMILIES, SCORABLE, Flow, FlowStack, check_family, flow_guide
from pyro_gen.flows.sylvester import HouseholderSylvester
from tests.conftest import ROOT

ALL = FAMILIES + ("zuko:nsf", "zuko:maf")
D, C = 3, 4  # event and context sizes


def _perturbed(stack: FlowStack, seed: int = 0, scale: float = 0.3) -> FlowStack:
    """Move every parameter off its (often identity) initialization, so the checks are not trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in stack.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return stack


def _forward(transforms, x):
    log_det = torch.zeros(x.shape[:-1], dtype=x.dtype)
    for t in transforms:
        y = t(x)
        ld = t.log_abs_det_jacobian(x, y)
        log_det = log_det + (ld.sum(-1) if ld.shape == x.shape else ld)  # elementwise splines report per dim
        x = y
    return x, log_det


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize("amortized", [False, True], ids=["global", "conditional"])
@pytest.mark.parametrize("family", ALL)
def test_log_det_equals_autograd_jacobian(family, amortized, float64):
    torch.manual_seed(0)
    stack = _perturbed(FlowStack(family, D, 2, context_dim=C if amortized else None, hidden=(8,)).double())
    xs, ctxs = torch.randn(2, D), torch.randn(2, C)
    for x, ctx in zip(xs, ctxs):
        ts = stack.transforms(ctx if amortized else None)
        y, log_det = _forward(ts, x)
        jac = torch.autograd.functional.jacobian(lambda v: _forward(ts, v)[0], x)
        assert torch.allclose(log_det, torch.linalg.slogdet(jac)[1], atol=1e-9), family
        assert abs(log_det.item()) > 1e-3 or family == "householder"  # not trivially zero
    # a batch of points at once gives the same values as one at a time
    ts = stack.transforms(ctxs if amortized else None)
    _, batch_log_det = _forward(ts, xs)
    singles = [_forward(stack.transforms(c if amortized else None), x)[1] for x, c in zip(xs, ctxs)]
    assert torch.allclose(batch_log_det, torch.stack(singles), atol=1e-10)


@pytest.mark.parametrize("amortized", [False, True], ids=["global", "conditional"])
@pytest.mark.parametrize("family", [f for f in ALL if f in SCORABLE or f.startswith("zuko:")])
def test_inverse_of_forward_is_identity(family, amortized, float64):
    torch.manual_seed(1)
    stack = _perturbed(FlowStack(family, D, 3, context_dim=C if amortized else None, hidden=(8,)).double())
    x, ctx = torch.randn(5, D), torch.randn(5, C)
    ts = stack.transforms(ctx if amortized else None)
    y = _forward(ts, x)[0]
    back = y
    for t in reversed(ts):
        back = t._inverse(back)  # the computation itself, not the x -> y cache
    assert not torch.allclose(y, x)
    assert torch.allclose(back, x, atol=1e-7), family


@pytest.mark.parametrize("family", ["planar", "radial", "sylvester"])
def test_families_without_inverse_are_refused_as_priors_naming_those_that_can(family):
    with pytest.raises(ValueError, match="no inverse") as e:
        VAE(16, 2, (8,), prior_flow=family)
    for ok in SCORABLE:
        assert ok in str(e.value)
    with pytest.raises(ValueError, match="no inverse"):
        Flow(2, family, 2, direction="score")


def test_bad_flow_options_get_clear_errors():
    with pytest.raises(ValueError, match="valid choices: planar, radial"):
        VAE(16, 2, (8,), guide_flow="glow")
    with pytest.raises(ValueError, match="valid choices"):
        check_family("zuko:nope")
    with pytest.raises(ValueError, match="depth must be an integer >= 1"):
        VAE(16, 2, (8,), guide_flow="iaf", flow_depth=0)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        FlowStack("iaf", 1, 2)
    with pytest.raises(ValueError, match="needs its context"):
        FlowStack("planar", 2, 1, context_dim=3).transforms()
    with pytest.raises(ValueError, match="3 columns, the flow has dim 2"):
        Flow(2, "spline", 1, direction="score").log_prob(torch.zeros(4, 3))


def _vae_cases():
    for fam in ALL:
        yield pytest.param({"guide_flow": fam}, id=f"guide-{fam}")
    for fam in SCORABLE + ("zuko:maf",):
        yield pytest.param({"prior_flow": fam}, id=f"prior-{fam}")


@pytest.mark.parametrize("options", list(_vae_cases()))
def test_vae_flow_every_parameter_gets_a_gradient_and_round_trips(options):
    x = (torch.rand(6, 12, generator=torch.Generator().manual_seed(0)) < 0.4).float()
    torch.manual_seed(0)
    vae = VAE(12, 3, (8,), flow_depth=2, flow_hidden=(8,), **options)
    loss = objectives.get("iwae:2").differentiable_loss(vae.model, vae.guide, x)
    loss.backward()
    for name, p in vae.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} got no gradient"
    assert any(n.startswith("encoder.") for n, _ in vae.named_parameters())
    # save/load: another initialization becomes the same model
    buf = io.BytesIO()
    torch.save(vae.state_dict(), buf)
    buf.seek(0)
    torch.manual_seed(1)
    other = VAE(12, 3, (8,), flow_depth=2, flow_hidden=(8,), **options)
    pyro.set_rng_seed(3)
    before = per_point_log_weights(other.model, other.guide, x, 2)
    other.load_state_dict(torch.load(buf, weights_only=True))
    pyro.set_rng_seed(3)
    a = per_point_log_weights(vae.model, vae.guide, x, 2)
    pyro.set_rng_seed(3)
    b = per_point_log_weights(other.model, other.guide, x, 2)
    assert torch.equal(a, b) and not torch.equal(a, before)
    assert vae.sample(4).shape == (4, 12)


def test_flow_prior_density_integrates_to_one_and_samples_from_it():
    """A 2-D spline prior off its initialization: its density sums to 1 on a grid and its samples
    have the moments that the density gives."""
    torch.manual_seed(0)
    vae = VAE(12, 2, (8,), prior_flow="spline", flow_depth=2, flow_hidden=(8,))
    _perturbed(vae.p_flow, scale=0.1)
    xs = torch.linspace(-6, 6, 401)
    grid = torch.stack(torch.meshgrid(xs, xs, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        density = vae.prior(grid).log_prob(grid).exp() * (xs[1] - xs[0]) ** 2
        z = vae.prior().sample((20000,))
    assert abs(density.sum().item() - 1.0) < 5e-3
    mean = (density[:, None] * grid).sum(0)
    assert (mean - z.mean(0)).abs().max() < 0.05  # ~4 standard errors
    assert mean.abs().max() > 0.1  # the perturbed prior is not N(0, I)


# --- the exact posterior of a conjugate model ------------------------------------------------

SIGMA = 0.5


def _regression_data():
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(12, generator=g)
    design = torch.stack([x1, x1 + 0.5 * torch.randn(12, generator=g)], 1)  # correlated columns
    y = design @ torch.tensor([1.0, -0.5]) + SIGMA * torch.randn(12, generator=g)
    return design, y


def regression_model(design, y):
    w = pyro.sample("w", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(design @ w, SIGMA), obs=y)


def _kl_to_posterior(guide, design, y, n: int = 20000) -> float:
    """KL(q || p(w | y)) = log p(y) - E_q[log p(w, y) - log q(w)], the exact Gaussian log evidence,
    n draws of the guide's posterior (w is unconstrained, so q over w is the guide's q)."""
    cov = design @ design.T + SIGMA ** 2 * torch.eye(len(y))
    log_evidence = dist.MultivariateNormal(torch.zeros(len(y)), cov).log_prob(y).item()
    torch.manual_seed(123)
    with torch.no_grad():
        q = guide.get_posterior()
        w = q(torch.Size([n]))  # ZukoToPyro draws through __call__ (and caches log q)
        log_joint = (dist.Normal(0.0, 1.0).log_prob(w).sum(-1)
                     + dist.Normal(w @ design.T, SIGMA).log_prob(y).sum(-1))
        return log_evidence - (log_joint - q.log_prob(w)).mean().item()


def _fit(guide, design, y, steps=300):
    """Pyro's Trace_ELBO through the guide, one particle a step, Adam with a decaying rate."""
    elbo = Trace_ELBO()
    elbo.differentiable_loss(regression_model, guide, design, y)  # builds the guide's parameters
    opt = torch.optim.Adam(guide.parameters(), lr=0.03)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.03 ** (1 / steps))
    for _ in range(steps):
        loss = elbo.differentiable_loss(regression_model, guide, design, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return _kl_to_posterior(guide, design, y)


@pytest.mark.slow
def test_flow_guides_reach_the_exact_posterior_at_least_as_closely_as_the_diagonal_guide(one_thread):
    """Bayesian linear regression with correlated inputs: the posterior is a correlated Gaussian.

    The families here cover one layer of each kind (planar, autoregressive, orthogonal,
    Sylvester, coupling, and a zuko flow through ZukoToPyro); the others are checked
    exactly (log-det, inverse, gradients) above and cost more per step.
    """
    import zuko

    design, y = _regression_data()
    pyro.set_rng_seed(0)
    kl_diag = _fit(AutoDiagonalNormal(regression_model), design, y)
    assert kl_diag > 0.5  # the posterior's correlation is what a diagonal guide cannot capture
    kls = {}
    for family in ("planar", "iaf", "householder", "sylvester", "affine_coupling"):
        pyro.set_rng_seed(0)
        kls[family] = _fit(flow_guide(regression_model, family, depth=2, hidden=(16,)), design, y)
    pyro.set_rng_seed(0)
    kls["zuko-nsf"] = _fit(flow_guide(regression_model, zuko.flows.NSF(features=2, transforms=2)), design, y)
    print(f"KL(q || posterior): diagonal {kl_diag:.4f}, " + ", ".join(f"{k} {v:.4f}" for k, v in kls.items()))
    for family, kl in kls.items():
        assert -0.01 < kl <= kl_diag + 0.01, (family, kl, kl_diag)
    # families that can express a full covariance recover nearly all of what the diagonal misses
    for family in ("iaf", "householder", "affine_coupling"):
        assert kls[family] < 0.1 * kl_diag, (family, kls[family], kl_diag)


def test_flow_guide_trains_under_fit_as_a_module():
    """``fit`` finds the guide's flow layers as module parameters and moves them."""
    from pyro_gen import fit

    design, y = _regression_data()
    data = torch.cat([design, y[:, None]], 1)

    def model(batch):
        regression_model(batch[:, :2], batch[:, 2])

    guide = flow_guide(model, "sylvester", depth=2)
    guide(data)  # builds the layers
    before = {n: p.detach().clone() for n, p in guide.named_parameters()}
    fit(model, guide, data, epochs=3, batch_size=12, lr=0.05, progress=False)
    assert isinstance(guide.stack.layers[0], HouseholderSylvester)
    for name, p in guide.named_parameters():
        assert not torch.equal(p, before[name]), f"{name} was not trained"


def test_pyro_sylvester_log_det_is_not_the_jacobians(float64):
    """Why pyro_gen writes its own Sylvester layer: Pyro 1.9's reports a log-det that autograd refutes."""
    from pyro.distributions.transforms import Sylvester

    torch.manual_seed(0)
    t = Sylvester(3, 2)
    with torch.no_grad():
        for p in t.parameters():
            p.normal_(0, 0.5)
    x = torch.randn(3)
    reported = t.log_abs_det_jacobian(x, t(x))
    exact = torch.linalg.slogdet(torch.autograd.functional.jacobian(t, x))[1]
    if torch.allclose(reported, exact, atol=1e-6):
        pytest.skip("Pyro's Sylvester log-det is now right: pyro_gen's own layer could be retired")
    ours = _perturbed(FlowStack("sylvester", 3, 1)).double()
    ts = ours.transforms()
    assert torch.allclose(_forward(ts, x)[1],
                          torch.linalg.slogdet(torch.autograd.functional.jacobian(lambda v: _forward(ts, v)[0], x))[1])


@pytest.mark.parametrize("flow", ["planar", "iaf", "sylvester"])
def test_amortized_flow_elbo_equals_the_hand_written_one(flow):
    """The VAE's flow guide under Pyro's Trace_ELBO gives, draw for draw, the negative ELBO that the
    layer equations written out by hand give (benchmarks/flows_speed.py's reference)."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import flows_speed

    x = (torch.rand(32, 784, generator=torch.Generator().manual_seed(0)) < 0.13).float()
    ours, by_hand = flows_speed.pyro_gen_step(flow, 2), flows_speed.torch_step(flow, 2)
    torch.manual_seed(0)
    a = ours(x)
    torch.manual_seed(0)
    b = by_hand(x)
    assert a == pytest.approx(b, rel=1e-6)
