"""Householder-Sylvester flows, global and amortized (conditional).

One Sylvester layer maps z (row vectors, shape ``(..., D)``) to::

    z' = z + Q R1 tanh(R2 Q^T z + b)
    log |det dz'/dz| = sum_i log(1 + tanh'((R2 Q^T z + b)_i) * R1_ii * R2_ii)

with Q orthogonal (a product of K Householder reflections), R1 and R2 upper
triangular with diagonals ``tanh(.)`` (so that ``|R1_ii R2_ii| < 1`` and the map is
invertible, van den Berg et al. 2018, Theorem 2) and b a bias. The determinant
identity det(I + Q R1 D R2 Q^T) = det(I + D R2 R1) is what makes the layer cheap.

Written here because Pyro has no conditional Sylvester, and because Pyro's
:class:`pyro.distributions.transforms.Sylvester` (1.9.2) computes
``x + tanh(x S Q^T + b) Q R``: its Jacobian is ``I + S Q^T D Q R`` in row
form, whose determinant is not the triangular product it reports (its
log-determinant disagrees with autograd; see ``tests/flows/test_families.py``).

:class:`HouseholderSylvester` holds its parameters; :class:`ConditionalHouseholderSylvester`
is amortized as in the paper: a linear head on the encoder's features emits Q's
Householder vectors, R1, R2 and b for each data point.

References:
    van den Berg, Hasenclever, Tomczak & Welling (2018), Sylvester Normalizing Flows
    for Variational Inference, UAI.
"""

from __future__ import annotations

import torch
from pyro.distributions import constraints
from pyro.distributions.conditional import ConditionalTransformModule
from pyro.distributions.torch_transform import TransformModule
from torch import nn
from torch.distributions import Transform

__all__ = ["HouseholderSylvester", "ConditionalHouseholderSylvester", "sylvester_forward"]


def _reflect(x: torch.Tensor, units: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """x @ H_1 ... H_K (or x @ H_K ... H_1) for unit vectors ``units`` of shape (..., K, D).

    Each reflection is applied to x directly (O(K D) per row) instead of building Q.
    """
    order = range(units.shape[-2] - 1, -1, -1) if reverse else range(units.shape[-2])
    for k in order:
        u = units[..., k, :]
        x = x - 2.0 * (x * u).sum(-1, keepdim=True) * u
    return x


def sylvester_forward(x, householder, r1, r2, b) -> tuple[torch.Tensor, torch.Tensor]:
    """One Householder-Sylvester layer: returns z' and log|det J| (summed over the event).

    Args:
        x: (..., D) inputs.
        householder: (..., K, D) Householder vectors (normalized here); Q = H_1 ... H_K.
        r1, r2: (..., D, D) upper triangular matrices (diagonals already squashed).
        b: (..., D) bias.
    """
    units = householder / householder.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    xq = _reflect(x, units)  # (Q^T x)^T = x^T Q
    # R v as (R * v[..., None, :]).sum(-1): broadcasts over per-point matrices without batched
    # BLAS calls, which for these small shapes cost far more (thread start-up) than the arithmetic.
    pre = (r2 * xq.unsqueeze(-2)).sum(-1) + b  # R2 Q^T x + b
    h = torch.tanh(pre)
    y = x + _reflect((r1 * h.unsqueeze(-2)).sum(-1), units, reverse=True)
    diag = torch.diagonal(r1, dim1=-2, dim2=-1) * torch.diagonal(r2, dim1=-2, dim2=-1)
    log_det = torch.log1p((1.0 - h ** 2) * diag).sum(-1)
    return y, log_det


def _triangular(dense: torch.Tensor, raw_diag: torch.Tensor, strict_upper: torch.Tensor) -> torch.Tensor:
    """Strict upper part of ``dense`` plus tanh(raw_diag) on the diagonal.

    A multiplied 0/1 mask rather than ``torch.triu``: on CPU, triu's autograd path costs
    about 20 ms per call on this torch build, 100 times the rest of the layer.
    """
    return dense * strict_upper + torch.diag_embed(torch.tanh(raw_diag))


class _SylvesterLayer(Transform):
    """A Sylvester map with given parameters; forward only (no closed-form inverse).

    The last forward pass is cached, so samples drawn through it can be scored, as with
    Pyro's planar and radial transforms.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, params):
        super().__init__(cache_size=1)
        self._params = params
        self._last = (None, None)

    def _call(self, x):
        y, log_det = sylvester_forward(x, *self._params())
        self._last = (x, log_det)
        return y

    def _inverse(self, y):
        raise NotImplementedError("a Sylvester flow has no closed-form inverse; it can only score its own samples")

    def log_abs_det_jacobian(self, x, y):
        x_cached, log_det = self._last
        if x_cached is not x:
            _, log_det = sylvester_forward(x, *self._params())
        return log_det


class HouseholderSylvester(TransformModule):
    """A Householder-Sylvester layer with learnable parameters (a global, non-amortized flow).

    Args:
        input_dim: D.
        count_transforms: K, the number of Householder reflections that make Q.

    References:
        van den Berg et al. (2018), Sylvester Normalizing Flows for Variational Inference.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, input_dim: int, count_transforms: int = 2):
        super().__init__(cache_size=1)
        d = int(input_dim)
        self.householder = nn.Parameter(torch.randn(count_transforms, d))
        self.r1 = nn.Parameter(0.01 * torch.randn(d, d))
        self.r2 = nn.Parameter(0.01 * torch.randn(d, d))
        self.d1 = nn.Parameter(0.01 * torch.randn(d))
        self.d2 = nn.Parameter(0.01 * torch.randn(d))
        self.b = nn.Parameter(0.01 * torch.randn(d))
        self.register_buffer("strict_upper", torch.ones(d, d).triu(1))
        self._layer = _SylvesterLayer(self._params)

    def _params(self):
        return (self.householder, _triangular(self.r1, self.d1, self.strict_upper),
                _triangular(self.r2, self.d2, self.strict_upper), self.b)

    def _call(self, x):
        return self._layer._call(x)

    def _inverse(self, y):
        return self._layer._inverse(y)

    def log_abs_det_jacobian(self, x, y):
        return self._layer.log_abs_det_jacobian(x, y)


class ConditionalHouseholderSylvester(ConditionalTransformModule):
    """An amortized Householder-Sylvester layer: ``condition(h)`` gives the layer for features h.

    A linear head maps the context (the encoder's last hidden layer) to the K
    Householder vectors, the two triangular matrices (strict upper parts and raw
    diagonals) and the bias, as the paper's amortized flows do.

    Args:
        input_dim: D.
        context_dim: size of the context vector.
        count_transforms: K, the number of Householder reflections that make Q.

    References:
        van den Berg et al. (2018), Sylvester Normalizing Flows for Variational Inference, Sec. 4.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, input_dim: int, context_dim: int, count_transforms: int = 2):
        super().__init__()
        d, k = int(input_dim), int(count_transforms)
        self.input_dim, self.count_transforms = d, k
        self.sizes = (k * d, d * d, d * d, d, d, d)
        self.head = nn.Linear(context_dim, sum(self.sizes))
        self.register_buffer("strict_upper", torch.ones(d, d).triu(1))
        with torch.no_grad():  # start near the identity map, as the global layer does
            self.head.weight.mul_(0.01)
            self.head.bias.zero_()
            self.head.bias[:k * d].normal_()

    def _params_for(self, context: torch.Tensor):
        d, k = self.input_dim, self.count_transforms
        v, r1, r2, d1, d2, b = self.head(context).split(self.sizes, dim=-1)
        batch = context.shape[:-1]
        return (v.reshape(*batch, k, d), _triangular(r1.reshape(*batch, d, d), d1, self.strict_upper),
                _triangular(r2.reshape(*batch, d, d), d2, self.strict_upper), b)

    def condition(self, context: torch.Tensor) -> Transform:
        params = self._params_for(context)
        return _SylvesterLayer(lambda: params)
