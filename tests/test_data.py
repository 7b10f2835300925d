"""experiments.data: the real datasets where INFLUENCE_DATA has them, and the offline rules on tiny fakes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from experiments import data

DATA = data.data_root()
has_mnist = pytest.mark.skipif(
    not (DATA / "MNIST" / "raw").is_dir(), reason=f"no MNIST under {DATA}"
)
has_cifar = pytest.mark.skipif(
    not (
        (DATA / "cifar10" / "cifar10.npz").is_file()
        or (DATA / "cifar-10-batches-py").is_dir()
    ),
    reason=f"no CIFAR-10 under {DATA}",
)


@has_mnist
def test_mnist_shapes_range_and_class_counts():
    x, y = data.load_mnist(train=True)
    assert x.shape == (60000, 1, 28, 28) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() == 1.0
    assert y.dtype == torch.int64
    assert torch.bincount(y).tolist() == [
        5923,
        6742,
        5958,
        6131,
        5842,
        5421,
        5918,
        6265,
        5851,
        5949,
    ]
    xt, yt = data.load_mnist(train=False, raw=True)
    assert xt.shape == (10000, 1, 28, 28) and xt.dtype == torch.uint8 and len(yt) == 10000


@has_cifar
def test_cifar10_matches_the_official_order_and_statistics():
    x, y = data.load_cifar10(train=True, raw=True)
    assert (
        x.shape == (50000, 3, 32, 32)
        and x.dtype == torch.uint8
        and y.dtype == torch.int64
    )
    assert y[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert torch.bincount(y).tolist() == [5000] * 10
    mean = data.to_unit(x[:, :, ::4, ::4]).mean(
        dim=(0, 2, 3)
    )  # a pixel grid: the mean without 600 MB of floats
    assert torch.allclose(mean, torch.tensor([0.4914, 0.4822, 0.4465]), atol=5e-3)
    xt, yt = data.load_cifar10(train=False)
    assert (
        xt.shape == (10000, 3, 32, 32)
        and xt.dtype == torch.float32
        and float(xt.max()) <= 1.0
    )
    assert torch.bincount(yt).tolist() == [1000] * 10


def test_cifar10_archive_is_read_offline_channels_first(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    arrays = {
        f"x_{s}": rng.integers(0, 256, (k, 32, 32, 3), dtype=np.uint8)
        for s, k in [("train", 6), ("test", 4)]
    }
    arrays |= {
        "y_train": np.array([0, 1, 2, 0, 1, 2], np.uint8),
        "y_test": np.array([3, 4, 5, 6], np.uint8),
    }
    (tmp_path / "cifar10").mkdir()
    np.savez(tmp_path / "cifar10" / "cifar10.npz", **arrays)
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path))
    x, y = data.load_cifar10(train=True)
    assert x.shape == (6, 3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(
        x[2, :, 5, 7], torch.from_numpy(arrays["x_train"][2, 5, 7]).float() / 255
    )
    assert y.tolist() == [0, 1, 2, 0, 1, 2] and y.dtype == torch.int64
    assert data.load_cifar10(train=False, raw=True)[1].tolist() == [3, 4, 5, 6]


def test_official_cifar10_batches_are_preferred_to_the_archive(tmp_path, monkeypatch):
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar10").mkdir()
    np.savez(
        tmp_path / "cifar10" / "cifar10.npz",
        x_train=np.zeros((1, 32, 32, 3), np.uint8),
        y_train=np.zeros(1, np.uint8),
    )
    calls = []

    class FakeCIFAR10:
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            self.data, self.targets = np.full((2, 32, 32, 3), 255, np.uint8), [7, 9]

    monkeypatch.setattr("torchvision.datasets.CIFAR10", FakeCIFAR10)
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path))
    x, y = data.load_cifar10(train=True)
    assert calls == [(str(tmp_path), True, False)]  # offline: never download
    assert x.shape == (2, 3, 32, 32) and float(x.min()) == 1.0 and y.tolist() == [7, 9]


@pytest.mark.parametrize("loader", [data.load_mnist, data.load_cifar10])
def test_missing_dataset_says_where_it_looked_and_what_to_do(
    tmp_path, monkeypatch, loader
):
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path))
    with pytest.raises(data.DatasetNotFoundError) as info:
        loader(train=True)
    assert isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    assert str(tmp_path) in message and data.ENV_VAR in message and "download" in message


def test_data_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path))
    assert data.data_root() == tmp_path.resolve() and data.offline()
    monkeypatch.setenv(data.ENV_VAR, "")
    assert data.data_root() == data.DEFAULT_ROOT and not data.offline()


def test_task_split_selects_relabels_in_the_given_order_and_subsamples_reproducibly():
    x = torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1)
    y = torch.arange(20) % 5
    xs, ys = data.task_split(x, y, classes=[3, 1])
    assert xs.dtype == torch.uint8 and xs.flatten().tolist() == [
        1,
        3,
        6,
        8,
        11,
        13,
        16,
        18,
    ]
    assert ys.tolist() == [1, 0, 1, 0, 1, 0, 1, 0] and ys.dtype == torch.int64
    a = data.task_split(x, y, classes=[3, 1], n=5, seed=4)
    b = data.task_split(x, y, classes=[3, 1], n=5, seed=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and len(a[0]) == 5
    assert a[0].flatten().tolist() == sorted(
        a[0].flatten().tolist()
    )  # dataset order is kept
    assert data.task_split(x, y, classes=[3, 1], relabel=False)[1].tolist() == [1, 3] * 4


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(classes=[1, 1]), "distinct"),
        (dict(classes=[7]), "do not occur"),
        (dict(classes=[0], n=5), "n: expected 1 to 4"),
    ],
)
def test_task_split_rejects_bad_requests(kwargs, match):
    x, y = torch.zeros(20, 1), torch.arange(20) % 5
    with pytest.raises(ValueError, match=match):
        data.task_split(x, y, **kwargs)


def test_to_unit_scales_uint8_and_refuses_floats():
    assert data.to_unit(
        torch.tensor([0, 51, 255], dtype=torch.uint8)
    ).tolist() == pytest.approx([0.0, 0.2, 1.0])
    with pytest.raises(TypeError, match="uint8"):
        data.to_unit(torch.zeros(3))
