"""Sparse COO training batches (issue 27 item 2): the same batch as the dense one, read by every layer and
backend as its dense form, and a training run on them ends on bitwise the weights of the dense path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from spikestab import data
from spikestab.kernels import dropout as kd
from spikestab.kernels import sparse
from spikestab.models import SNNConfig, build_model
from spikestab.neurons import LIF
from spikestab.train import trainer as trainer_module
from spikestab.train.config import TrainConfig
from spikestab.train.trainer import Trainer

native = pytest.mark.skipif(not sparse.runs_natively(), reason="native kernels not built")


def dataset(samples=12, steps=20, channels=30, counts=True, density=0.08, **kwargs) -> data.SpikeDataset:
    """Random events (values 1-3 with counts, some zero counts), each (step, channel) at most once."""
    rng = np.random.default_rng(samples + steps)
    events = []
    for _ in range(samples):
        t, c = np.nonzero(rng.random((steps, channels)) < density)
        events.append((t, c, rng.integers(0, 4, len(t)).astype(np.float32)))
    labels = rng.integers(0, 3, samples)
    return data.SpikeDataset.from_events(events, labels, steps, channels, counts=counts, **kwargs)


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32)


@pytest.mark.parametrize("counts", [False, True])
@pytest.mark.parametrize("time_repeat", [1, 3])
def test_sparse_batch_is_the_dense_batch(counts, time_repeat):
    ds = dataset(counts=counts, time_repeat=time_repeat)
    idx = [5, 0, 11, 3]
    x, xs = ds.densify(idx), ds.sparse_batch(idx)
    assert xs.is_sparse and xs.dtype == torch.float32 and xs.shape == x.shape
    assert torch.equal(bits(xs.to_dense()), bits(x))
    assert bool((xs.values() != 0).all())  # zero counts are not stored
    recoalesced = torch.sparse_coo_tensor(xs.indices(), xs.values(), xs.shape, check_invariants=True).coalesce()
    assert torch.equal(recoalesced.indices(), xs.indices())  # truly in row-major order


def test_the_loader_yields_the_same_batches_sparse():
    ds = dataset()
    dense = list(data.make_loader(ds, 5, shuffle=True, seed=2))
    sparse_ = list(data.make_loader(ds, 5, shuffle=True, seed=2, sparse=True))
    assert len(dense) == len(sparse_) == 3
    for (x, y), (xs, ys) in zip(dense, sparse_):
        assert xs.is_sparse and torch.equal(xs.to_dense(), x) and torch.equal(ys, y)
    with_dropout = dataset(input_dropout=0.2)  # masks drawn over the dense batch
    with pytest.raises(ValueError, match="sparse batches need a dataset without input dropout"):
        data.make_loader(with_dropout, 5, shuffle=True, sparse=True)


def test_sparse_batches_where_they_pay():
    sparse_ds, dense_ds = dataset(samples=20, steps=100, channels=400, counts=False, density=0.005), dataset()
    assert sparse_ds.density < 0.01 < dense_ds.density
    assert sparse_ds.density == pytest.approx(float(sparse_ds.densify(range(20)).count_nonzero()) / (20 * 100 * 400))
    assert data.sparse_batches_pay(sparse_ds) and not data.sparse_batches_pay(dense_ds)
    assert not data.sparse_batches_pay(sparse_ds.subset(range(20), input_dropout=0.1))


def test_density_and_nonzeros_of_a_sparse_batch_are_the_dense_ones():
    for samples, steps in ((12, 20), (200, 400)):  # the second samples every few rows in density()
        ds = dataset(samples=samples, steps=steps)
        idx = np.arange(samples)
        x, xs = ds.densify(idx), ds.sparse_batch(idx)
        assert sparse.density(xs) == sparse.density(x)
        want, got = sparse.nonzeros(x.reshape(-1, x.shape[-1])), sparse.coo_nonzeros(xs)
        assert got.shape == want.shape
        assert all(torch.equal(a, b) for a, b in zip(got[:3], want[:3]))


@native
@pytest.mark.parametrize(
    "kwargs", [{}, {"backend": "fused"}, {"checkpoint": 7}, {"batch_first": True}, {"backend": "native"}]
)
def test_a_layer_reads_a_sparse_batch_as_its_dense_form(kwargs):
    ds = dataset()
    x, xs = ds.densify(range(6)), ds.sparse_batch(range(6))
    if kwargs.get("batch_first"):
        x, xs = x.transpose(0, 1).contiguous(), torch.stack([xs[:, b] for b in range(6)]).coalesce()
    torch.manual_seed(0)
    layer = LIF(30, 16, **kwargs)
    z, st = layer(x)
    zs, sts = layer(xs)
    assert torch.equal(zs, z) and all(torch.equal(a, b) for a, b in zip(st[:2], sts[:2]))
    g = torch.randn_like(z)
    params = [p for p in layer.parameters() if p.requires_grad]
    want = torch.autograd.grad(z, params, g, allow_unused=True)
    got = torch.autograd.grad(zs, params, g, allow_unused=True)
    assert all((a is None and b is None) or torch.equal(bits(a), bits(b)) for a, b in zip(want, got))


@native
def test_dropout_of_a_sparse_batch_is_that_of_the_dense_batch():
    if not kd.reproduces_torch():
        pytest.skip("this torch build draws its dropout masks otherwise")
    ds = dataset()
    x, xs = ds.densify(range(8)), ds.sparse_batch(range(8))
    torch.manual_seed(3)
    want = nn.functional.dropout(x, 0.25, True)
    state = torch.get_rng_state()
    torch.manual_seed(3)
    got = kd.dropout(xs, 0.25, True)
    assert got.is_sparse and torch.equal(bits(got.to_dense()), bits(want))
    assert torch.equal(torch.get_rng_state(), state)
    assert kd.dropout(xs, 0.25, training=False) is xs and kd.dropout(xs, 0.0) is xs


@native
@pytest.mark.parametrize("net", ["cuba", "slstm"])
def test_other_layers_get_the_dense_batch(net):
    ds = dataset()
    x, xs = ds.densify(range(4)), ds.sparse_batch(range(4))
    torch.manual_seed(0)
    model = build_model(SNNConfig(input_size=30, output_size=3, hidden_sizes=(8,), net=net, dropout=0.0))
    assert torch.equal(model(xs), model(x))


def fit(task: data.Task, net: str, dropout: float, sparse_batches: bool, out: str) -> dict:
    """Two epochs of ``spikestab train``'s Trainer (no stabilisation); the plain path builds dense batches
    and drops out with torch's nn.Dropout."""
    cfg = TrainConfig(
        task="shd", net=net, layers=(16, 12), batch_size=5, epochs=2, dropout=dropout, conditions="none",
        threads=1, progress=False, out=out,
    )  # fmt: skip
    make = trainer_module.train_batches
    plain = lambda *args, **kwargs: make(*args, **{**kwargs, "sparse": False})  # noqa: E731
    tr = Trainer(cfg, task=task, log=lambda _: None)
    if sparse_batches:
        tr.fit()
    else:
        tr.model.stack.dropout = nn.Dropout(dropout)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(trainer_module, "train_batches", plain)
            tr.fit()
    return tr.model.state_dict()


@native
@pytest.mark.parametrize("net", ["lif", "alif"])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_training_on_sparse_batches_ends_on_the_weights_of_dense_batches(net, dropout, tmp_path, monkeypatch):
    seen = []
    make = trainer_module.train_batches
    monkeypatch.setattr(trainer_module, "train_batches", lambda *a, **k: seen.append(list(make(*a, **k))) or seen[-1])
    monkeypatch.setattr(data.loader, "SPARSE_BATCH_DENSITY", 1.0)  # sparse batches for this 8 % dataset too
    train, test = dataset(samples=15, time_repeat=2), dataset(samples=6, time_repeat=2)
    task = data.Task("tiny", "classification", 30, 3, ["0", "1", "2"], train, test, test, train.n_steps)
    got = fit(task, net, dropout, True, str(tmp_path / "sparse"))
    assert any(batches[0][0].is_sparse for batches in seen)  # the epochs read sparse batches
    want = fit(task, net, dropout, False, str(tmp_path / "dense"))
    for name, w in want.items():
        assert torch.equal(bits(got[name]), bits(w)) if w.is_floating_point() else torch.equal(got[name], w), name
