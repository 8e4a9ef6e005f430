"""IWAE-k and the Renyi bound (pyro_gen.infer.objectives.renyi): order in k below the exact
log evidence, and the refusal of a guide it cannot reparameterize."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_gen import objectives
from tests.exact import normal_normal_data, normal_normal_guide, normal_normal_model, normal_normal_posterior


def test_iwae_bound_rises_with_k_and_stays_below_log_evidence():
    x = normal_normal_data()
    _, _, log_evidence = normal_normal_posterior(x)
    # a deliberately poor guide, so that the bounds are visibly apart
    pyro.param("loc", torch.tensor(-0.3))
    pyro.param("scale", torch.tensor(0.8), constraint=torch.distributions.constraints.positive)
    means, ses = [], []
    for k in (1, 5, 50, 500):
        bound = objectives.iwae(k) if k > 1 else objectives.trace()
        vals = torch.tensor([-bound.loss(normal_normal_model, normal_normal_guide, x) for _ in range(300)])
        means.append(vals.mean().item())
        ses.append(vals.std().item() / math.sqrt(len(vals)))
    for (m1, s1), (m2, s2) in zip(zip(means, ses), zip(means[1:], ses[1:])):
        assert m2 > m1 + 2 * math.hypot(s1, s2), (means, ses)
    assert means[-1] < log_evidence + 3 * ses[-1]
    assert log_evidence - means[-1] < 0.1 * (log_evidence - means[0])  # and it gets close


def test_iwae_refuses_a_non_reparameterized_guide():
    def model(x):
        c = pyro.sample("c", dist.Bernoulli(0.5))
        pyro.sample("x", dist.Normal(c, 1.0), obs=x[0, 0])

    def guide(x):
        pyro.sample("c", dist.Bernoulli(pyro.param("p", torch.tensor(0.5))))

    with pytest.raises(ValueError, match="not reparameterizable.*graph"):
        objectives.iwae(3).differentiable_loss(model, guide, torch.zeros(1, 1))
