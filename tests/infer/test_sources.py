"""fit's data sources: tensors, map-style and iterable Datasets, DataLoaders; workers, transforms,
exact resume, shards (gradient accumulation), precision and compilation."""

import logging

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from models.vae import VAE
from pyro_gen.data import DynamicBinarize, Transformed
from pyro_gen.infer.train import fit


def _data(n=40, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=g)


class Rows(Dataset):
    """A plain map-style data set, one row per item (no __getitems__), as users write them."""

    def __init__(self, x, transform=None):
        self.x, self.transform = x, transform

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        row = self.x[i]
        return self.transform(row) if self.transform is not None else row


class Stream(IterableDataset):
    def __init__(self, x):
        self.x = x

    def __iter__(self):
        return iter(self.x)


def _fit(data, seed=0, **kw):
    torch.manual_seed(0)
    vae = VAE(6, 2, (8,), likelihood="continuous-bernoulli")
    kw = {"epochs": 2, "batch_size": 8, "progress": False, "seed": seed, **kw}
    result = fit(vae.model, vae.guide, data, **kw)
    return torch.cat([p.detach().flatten() for p in vae.parameters()]), result


def test_a_dataset_or_dataloader_trains_exactly_as_the_tensors_do():
    x = _data()
    ref, _ = _fit(x)
    for data, kw in [(TensorDataset(x), {}), (Rows(x), {}),
                     (DataLoader(Rows(x), batch_size=8, shuffle=True), {"batch_size": None})]:
        got, result = _fit(data, **kw)
        assert result.steps == 10
        assert torch.equal(got, ref), type(data).__name__


def test_workers_and_random_transforms_draw_the_same_numbers_whatever_the_worker_count():
    # dynamic binarization in the workers: each batch is fetched under its own seed
    x = _data()
    zero, _ = _fit(Rows(x, DynamicBinarize()))
    two, _ = _fit(Rows(x, DynamicBinarize()), num_workers=2)
    assert torch.equal(zero, two)
    other, _ = _fit(Rows(x, DynamicBinarize()), seed=1)
    assert not torch.equal(zero, other)


def test_a_map_style_dataset_resumes_mid_epoch_exactly(tmp_path):
    x = _data(44)
    data = Transformed(x, DynamicBinarize())
    ref, _ = _fit(data, epochs=3, out=tmp_path / "ref")
    _fit(data, epochs=3, out=tmp_path / "cut", max_steps=7)  # stops inside epoch 2
    got, result = _fit(data, epochs=3, out=tmp_path / "cut", resume=True)
    assert result.steps == 18 and torch.equal(got, ref)


def test_a_stream_trains_and_resumes_at_the_epoch_boundary(tmp_path, caplog):
    x = _data()
    got, result = _fit(Stream(x))
    assert result.steps == 10 and len(result.history) == 2
    ref, _ = _fit(x)  # a stream keeps its own order, so the run differs from the shuffled one
    assert not torch.equal(got, ref)
    _fit(Stream(x), out=tmp_path / "s", max_steps=7)
    with caplog.at_level(logging.WARNING, logger="pyro_gen"):
        _, result = _fit(Stream(x), out=tmp_path / "s", resume=True)
    assert "resumes at epoch boundaries" in caplog.text
    # the 2 steps taken inside epoch 2 stay counted; epoch 2 itself runs whole again
    assert [r["epoch"] for r in result.history] == [1, 2] and result.steps == 7 + 5


def test_accumulated_shards_give_the_same_step_as_one_batch_for_a_deterministic_loss():
    # A model without latent variables: the loss is deterministic, so cutting a batch into shards
    # (their gradients summed before the step) changes nothing but the order of the additions.
    import pyro
    import pyro.distributions as dist

    def run(**kw):
        with pyro.get_param_store().scope():
            def model(x):
                loc = pyro.param("loc", torch.zeros(6))
                with pyro.plate("data", len(x)):
                    pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

            fit(model, lambda x: None, _data(), epochs=2, batch_size=8, progress=False, lr=0.1, **kw)
            return pyro.param("loc").detach().clone()

    one, four = run(), run(accumulate=4)
    assert torch.allclose(one, four, atol=1e-6) and not torch.equal(one, torch.zeros(6))


def test_bf16_and_compile_give_the_plain_losses_within_tolerance():
    # the first step's loss: the same parameters and the same noise, only the arithmetic differs
    x = (_data() > 0.5).float()

    def first_loss(**kw):
        torch.manual_seed(0)
        vae = VAE(6, 2, (8,), likelihood="bernoulli")
        result = fit(vae.model, vae.guide, x, epochs=1, batch_size=8, max_steps=1, progress=False, **kw)
        return result.history[0]["train_loss"]

    plain = first_loss()
    # bf16 keeps 8 bits of mantissa (relative rounding 2^-9): the loss of ~4 nats per point moves by ~0.1%
    assert first_loss(precision="bf16-mixed") == pytest.approx(plain, rel=1e-2)
    assert first_loss(precision="bf16-mixed") != plain  # autocast did run in bf16
    # torch.compile's graph capture and AOT autograd, without the C++ code generation (slow to start)
    from torch._dynamo.utils import counters

    counters.clear()
    assert first_loss(compile="aot_eager") == pytest.approx(plain, rel=1e-5)
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo captured the networks (0 without compile)


def test_bad_data_options_are_refused_with_the_reason():
    x = _data()
    with pytest.raises(ValueError, match="divisible by world_size × accumulate"):
        _fit(x, batch_size=10, accumulate=4)
    with pytest.raises(ValueError, match="the DataLoader's batch_size is 4"):
        _fit(DataLoader(Rows(x), batch_size=4), batch_size=8)
    with pytest.raises(ValueError, match="custom batch_sampler"):
        _fit(DataLoader(Rows(x), batch_sampler=[[0, 1], [2, 3]]), batch_size=None)
    with pytest.raises(ValueError, match="stream of unknown length"):
        _fit(Stream(x), kl_anneal=1)
    with pytest.raises(ValueError, match="unknown precision 'fp8'; valid choices: 32, bf16-mixed"):
        _fit(x, precision="fp8")
    with pytest.raises(TypeError, match="a batch must be a tensor or a tuple of tensors"):
        _fit(Rows([{"x": r} for r in x]))


def test_a_step_budget_spent_on_an_epochs_last_step_ends_that_epoch_whole():
    _, result = _fit(_data(), epochs=2, max_steps=10)  # 40 points in batches of 8: 5 steps an epoch
    assert result.stopped == "epochs" and [r["epoch"] for r in result.history] == [1, 2]
    assert not any(r.get("partial") for r in result.history)


def test_a_distributed_sampler_is_refused_fit_shares_the_data_out_itself():
    from torch.utils.data import DistributedSampler

    loader = DataLoader(Rows(_data()), batch_size=8, sampler=DistributedSampler(Rows(_data()), num_replicas=2, rank=0))
    with pytest.raises(ValueError, match="without a DistributedSampler"):
        _fit(loader, batch_size=None)
