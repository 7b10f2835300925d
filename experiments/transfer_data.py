"""The data of a transfer experiment: the pretraining and finetuning tasks cut from one dataset.

:func:`load_transfer_data` selects the classes and sizes a :class:`TransferConfig` names from
the real dataset (:mod:`experiments.data`) and puts every tensor on the config's device.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from . import data as datasets
from .configs import TransferConfig
from .devices import resolve

Pair = tuple[Tensor, Tensor]


@dataclass
class TransferData:
    """The examples of both tasks; labels relabelled to 0..k-1 within each task."""

    pretrain: Pair
    finetune: Pair
    test: Pair  # finetuning test points x_t
    pretrain_test: Pair  # the pretraining task's test images, for its accuracy

    def to(self, device: torch.device | str) -> TransferData:
        """The same examples on ``device`` (a no-op where they are there already)."""
        return TransferData(
            **{
                f.name: tuple(t.to(device) for t in getattr(self, f.name))
                for f in dataclasses.fields(self)
            }
        )


def load_transfer_data(config: TransferConfig) -> TransferData:
    """The pretraining and finetuning tasks of ``config`` from the real dataset, on its device."""
    load = {"mnist": datasets.load_mnist, "cifar10": datasets.load_cifar10}.get(
        config.dataset
    )
    if load is None:
        raise ValueError(
            f"dataset: expected 'mnist' or 'cifar10', got {config.dataset!r}"
        )
    x, y = load(train=True, raw=True)
    xt, yt = load(train=False, raw=True)

    def split(
        images: Tensor, labels: Tensor, classes: tuple[int, ...], n: int | None
    ) -> Pair:
        xs, ys = datasets.task_split(images, labels, classes, n=n, seed=config.seed)
        # convert after selecting: all of CIFAR-10 as float is 600 MB
        return datasets.to_unit(xs), ys

    return TransferData(
        pretrain=split(x, y, config.pretrain_classes, config.pretrain_size),
        finetune=split(x, y, config.finetune_classes, config.finetune_size),
        test=split(xt, yt, config.finetune_classes, config.test_size),
        pretrain_test=split(xt, yt, config.pretrain_classes, config.test_size),
    ).to(resolve(config.device))


def subsample(data: Pair, n: int | None, seed: int) -> Pair:
    """``n`` examples of ``data`` drawn without replacement by a seeded generator (all where None).

    The draw is made on the CPU, so a seed picks the same examples on every device.
    """
    x, y = data
    if n is None or n >= len(y):
        return data
    index = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n]
    return x[index.to(x.device)], y[index.to(y.device)]
