"""VIMCO, and every estimator for discrete guides, against exact answers on a sigmoid belief
network small enough to enumerate: 2 binary latents (4 configurations), so the IWAE-k bound's
expectation is a finite sum over the 4^k tuples of samples and its gradient is exact."""

import itertools
import math

import pyro
import pytest
import torch

from models.sbn import SBN
from pyro_gen import objectives
from pyro_gen.infer.objectives.vimco import leave_one_out_signals


def _tiny():
    pyro.clear_param_store()
    torch.manual_seed(3)
    sbn = SBN(x_dim=4, z_dim=2)
    with torch.no_grad():
        for p in sbn.parameters():
            p.mul_(3.0)  # a posterior far from the prior and from the guide
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    return sbn, x


def _log_terms(sbn, x, z):
    """log p(x, z) and log q(z | x) for latent configurations z of shape (..., N, 2)."""
    log_p = sbn.prior().log_prob(z) + torch.distributions.Bernoulli(logits=sbn.decoder(z)).log_prob(x).sum(-1)
    return log_p, sbn.posterior(x).log_prob(z)


def _exact_gradients(sbn, x, k, which):
    """The exact expected gradient of the negative objective, summed over the rows of x:
    ``"iwae"`` the IWAE-k bound (all parameters), ``"elbo"`` the ELBO, ``"rws-phi"`` the
    wake-phi direction E[sum_i w~_i grad log q(z_i)] for the encoder."""
    configs = torch.tensor(list(itertools.product((0.0, 1.0), repeat=sbn.z_dim)))
    tuples = list(itertools.product(range(len(configs)), repeat=k))
    z = configs[torch.tensor(tuples)]  # (T, k, 2)
    z = z.unsqueeze(2).expand(-1, -1, len(x), -1)  # (T, k, N, 2)
    log_p, log_q = _log_terms(sbn, x, z)  # (T, k, N)
    prob = log_q.sum(1).exp()  # probability of each tuple under q^k
    log_w = log_p - log_q
    if which == "iwae":
        objective = (prob * (torch.logsumexp(log_w, 1) - math.log(k))).sum()
    elif which == "elbo":
        objective = (log_q[:, 0].exp() * log_w[:, 0]).sum() / len(configs) ** (k - 1)
    else:
        weights = torch.softmax(log_w.detach(), dim=1)
        objective = (prob.detach() * (weights * log_q).sum(1)).sum()
    sbn.zero_grad()
    (-objective).backward()
    return {n: torch.zeros_like(p) if p.grad is None else p.grad.clone() for n, p in sbn.named_parameters()}


def _monte_carlo_gradients(sbn, x, elbo, copies=1000, groups=20):
    """Mean and standard error over ``groups`` of the estimator's gradient, each the average of
    ``copies`` independent estimates (the rows of x repeated)."""
    grads = {n: [] for n, _ in sbn.named_parameters()}
    xs = x.repeat(copies, 1)
    for _ in range(groups):
        sbn.zero_grad()
        (elbo.differentiable_loss(sbn.model, sbn.guide, xs) / copies).backward()
        for n, p in sbn.named_parameters():
            grads[n].append(p.grad.clone())
    out = {}
    for n, g in grads.items():
        g = torch.stack(g)
        out[n] = (g.mean(0), g.std(0) / math.sqrt(groups))
    return out


def _z_scores(mc, exact, names=None):
    z = []
    for n, (mean, se) in mc.items():
        if names is None or n in names:
            z.append(((mean - exact[n]) / (se + 1e-3 * exact[n].abs().max() + 1e-6)).flatten())
    return torch.cat(z)


@pytest.mark.parametrize("objective, exact, params", [
    ("vimco:3", "iwae", None),  # VIMCO: unbiased for the IWAE-3 gradient of every parameter
    ("graph", "elbo", None),  # score function (Pyro's TraceGraph_ELBO): unbiased for the ELBO's
    ("rws:3", "iwae", ("prior_logits", "decoder.0.weight", "decoder.0.bias")),  # wake-theta: IWAE's
    ("rws:3", "rws-phi", ("encoder.0.weight", "encoder.0.bias")),  # wake-phi: its self-normalized target
])
def test_gradient_matches_its_exact_expectation(objective, exact, params):
    sbn, x = _tiny()
    k = int(objective.split(":")[1]) if ":" in objective else 1
    target = _exact_gradients(sbn, x, k, exact)
    pyro.set_rng_seed(0)
    mc = _monte_carlo_gradients(sbn, x, objectives.get(objective))
    z = _z_scores(mc, target, params)
    assert z.abs().max() < 5, f"{objective}: gradient off its exact expectation by {z.abs().max():.1f} SE"


def test_dropping_vimcos_score_term_is_detected():
    """The test above can fail: VIMCO without its score-function term (the IWAE gradient a
    reparameterized guide would get) is biased for a discrete guide, far beyond the Monte Carlo error."""
    sbn, x = _tiny()
    target = _exact_gradients(sbn, x, 3, "iwae")

    class NoScore(objectives.VIMCO):
        def differentiable_loss(self, model, guide, *args, **kwargs):
            lw = self.log_weights(model, guide, *args, **kwargs)
            return -(torch.softmax(lw.detach(), 0) * lw).sum()

    pyro.set_rng_seed(0)
    z = _z_scores(_monte_carlo_gradients(sbn, x, NoScore(3)), target, ("encoder.0.weight", "encoder.0.bias"))
    assert z.abs().max() > 10


def test_value_is_the_iwae_bound_and_sums_over_points():
    sbn, x = _tiny()
    pyro.set_rng_seed(1)
    loss = objectives.get("vimco:4").differentiable_loss(sbn.model, sbn.guide, x)
    pyro.set_rng_seed(1)
    lw = objectives.RenyiBound(0.0, 4).log_weights(sbn.model, sbn.guide, x)
    assert lw.shape == (4, len(x))
    assert torch.allclose(loss, -(torch.logsumexp(lw, 0) - math.log(4)).sum())
    # and the bound tends to the exact log-likelihood from below as k grows
    pyro.set_rng_seed(2)
    big = objectives.RenyiBound(0.0, 20000).log_weights(sbn.model, sbn.guide, x)
    iwae = torch.logsumexp(big, 0) - math.log(20000)
    exact = sbn.enumerate_log_likelihood(x)
    assert torch.allclose(iwae, exact, atol=0.03)


def test_leave_one_out_signals_against_a_loop():
    torch.manual_seed(0)
    log_w = torch.randn(5, 3) * 3
    signals = leave_one_out_signals(log_w)
    bound = torch.logsumexp(log_w, 0) - math.log(5)
    for i in range(5):
        replaced = log_w.clone()
        replaced[i] = torch.cat([log_w[:i], log_w[i + 1:]]).mean(0)
        assert torch.allclose(signals[i], bound - (torch.logsumexp(replaced, 0) - math.log(5)), atol=1e-6)


def test_mixed_guides_and_bad_k():
    """A guide with a reparameterized site beside the discrete one trains; k < 2 is refused by name."""
    import pyro.distributions as dist

    def model(x):
        with pyro.plate("data", len(x)):
            b = pyro.sample("b", dist.Bernoulli(0.5))
            m = pyro.sample("m", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(m + 2 * b, 1.0), obs=x)

    p = torch.zeros(2, requires_grad=True)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("b", dist.Bernoulli(logits=p[0].expand(len(x))))
            pyro.sample("m", dist.Normal(p[1].expand(len(x)), 1.0))

    loss = objectives.get("vimco:3").differentiable_loss(model, guide, torch.randn(7))
    loss.backward()
    assert torch.isfinite(loss) and (p.grad != 0).all()
    for bad in ("vimco:1", "vimco:0"):
        with pytest.raises(ValueError, match="k >= 2|integer >= 1"):
            objectives.get(bad)
    with pytest.raises(ValueError, match="k >= 2"):
        leave_one_out_signals(torch.zeros(1, 3))


def test_enumerated_elbo_equals_the_exact_sum():
    """A discrete latent summed out by Pyro's enumeration (``enum``, guide-side, in parallel) gives the
    ELBO as the finite sum sum_y q(y|x) [log p(x, y) - log q(y|x)], with no sampling error."""
    import pyro.distributions as dist

    torch.manual_seed(0)
    probs_x = torch.rand(4, 6)  # p(x | y): 4 classes of binary 6-vectors
    enc = torch.nn.Linear(6, 4)

    def model(x):
        with pyro.plate("data", len(x)):
            y = pyro.sample("y", dist.Categorical(torch.full((4,), 0.25)))
            pyro.sample("x", dist.Bernoulli(probs_x[y]).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("y", dist.Categorical(logits=enc(x)), infer={"enumerate": "parallel"})

    x = torch.bernoulli(torch.full((5, 6), 0.5))
    loss = objectives.get("enum").differentiable_loss(model, guide, x)
    q = torch.softmax(enc(x), -1)  # (5, 4)
    log_joint = torch.log(torch.tensor(0.25)) + dist.Bernoulli(probs_x).to_event(1).log_prob(x.unsqueeze(1))
    exact = (q * (log_joint - q.log())).sum()
    assert torch.allclose(-loss, exact, atol=1e-5)
    # and its gradient is the exact one, not an estimate
    g1 = torch.autograd.grad(loss, enc.weight)[0]
    g2 = torch.autograd.grad(-(q * (log_joint - q.log())).sum(), enc.weight)[0]
    assert torch.allclose(g1, g2, atol=1e-5)


def test_gradient_variance_against_a_known_spread():
    """evaluate.gradient_variance on an objective whose gradient is known in distribution: for
    loss = -(theta . eps) with eps ~ N(mu, s^2 I), the estimate is -eps: variance d s^2, ||E g||^2 = |mu|^2."""
    from pyro_gen.evaluate import gradient_variance

    theta = torch.nn.Parameter(torch.zeros(50))
    mu = torch.full((50,), 0.3)

    class Noisy:
        def differentiable_loss(self, model, guide, *args):
            return -(theta * (mu + 2.0 * torch.randn(50))).sum()

    before = torch.get_rng_state()
    g = gradient_variance(Noisy(), None, None, parameters=[theta], draws=400, seed=0)
    assert torch.equal(torch.get_rng_state(), before)  # the global random state is left as it was
    assert g.variance == pytest.approx(50 * 4.0, rel=0.1)
    assert g.snr == pytest.approx((50 * 0.09) ** 0.5 / (50 * 4.0) ** 0.5, rel=0.2)
    assert theta.grad is None
    with pytest.raises(ValueError, match="draws >= 2"):
        gradient_variance(Noisy(), None, None, parameters=[theta], draws=1)
