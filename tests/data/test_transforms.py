"""Dynamic binarization and the Transformed dataset: draws centred on the grey levels, fresh at
each epoch, repeated under a seed, in DataLoader workers too; clear errors."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from pyro_gen.data import DynamicBinarize, Transformed


def _epoch(ds, **kw):
    return torch.cat(list(DataLoader(ds, batch_size=64, **kw)))


def test_dynamic_binarization_is_centred_on_the_grey_levels():
    grey = torch.linspace(0, 1, 11)
    draws = DynamicBinarize()(grey.expand(20_000, 11))
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(draws.mean(0), grey, atol=0.02)  # 5 standard errors at most
    assert draws[:, 0].sum() == 0 and draws[:, -1].min() == 1


def test_each_epoch_draws_afresh_and_a_seed_repeats_the_draws():
    grey = torch.rand(500, 20)
    ds = Transformed(grey, DynamicBinarize())
    assert len(ds) == 500 and ds[3].shape == (20,)
    torch.manual_seed(7)
    first, second = _epoch(ds), _epoch(ds)
    assert first.shape == (500, 20) and not torch.equal(first, second)
    torch.manual_seed(7)
    assert torch.equal(_epoch(ds), first)
    # through __getitems__, a batch at a time, the draws still follow the grey levels
    assert abs(torch.stack([_epoch(ds) for _ in range(20)]).mean(0) - grey).mean() < 0.1


def test_draws_in_worker_processes_repeat_under_a_seed():
    ds = Transformed(torch.rand(256, 8), DynamicBinarize())
    torch.manual_seed(3)
    a, b = _epoch(ds, num_workers=2), _epoch(ds, num_workers=2)
    torch.manual_seed(3)
    assert torch.equal(_epoch(ds, num_workers=2), a) and not torch.equal(a, b)


def test_transformed_dataset_items_keep_their_labels():
    x, y = torch.rand(10, 4), torch.arange(10)
    ds = Transformed(TensorDataset(x, y), DynamicBinarize())
    xi, yi = ds[2]
    assert xi.shape == (4,) and yi == 2
    xb, yb = next(iter(DataLoader(ds, batch_size=10)))
    assert xb.shape == (10, 4) and torch.equal(yb, y) and set(xb.unique().tolist()) <= {0.0, 1.0}
    # a transform that takes one item at a time
    flat = Transformed(torch.rand(6, 2, 3), torch.flatten, batched=False)
    assert next(iter(DataLoader(flat, batch_size=6))).shape == (6, 6)


def test_dynamic_binarization_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"in \[0, 1\], got values in \[0, 255\].*x / 255"):
        DynamicBinarize()(torch.tensor([0.0, 255.0]))
    with pytest.raises(ValueError, match="nan"):
        DynamicBinarize()(torch.tensor([0.5, float("nan")]))
    with pytest.raises(TypeError, match="torch.uint8"):
        DynamicBinarize()(torch.zeros(3, dtype=torch.uint8))
    with pytest.raises(TypeError, match="tensor .N, .... or a map-style dataset, got int"):
        Transformed(3, DynamicBinarize())
