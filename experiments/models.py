"""The networks of the paper's Table A, split into embedding W and heads U, Theta.

"CONV k w x h + s" is a convolution with k filters of size w x h and stride s; every
activation is tanh, and the last layer of a head has none. The CNN layers are the
embedding, shared by both stages; the fully connected layers are task-specific heads.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

MNIST_FEATURES = 64 * 4 * 4  # 28 -conv5-> 24 -pool-> 12 -conv5-> 8 -pool-> 4
CIFAR_FEATURES = 128 * 2 * 2  # 32 -conv3-> 30 -conv4-> 27 -pool-> 13 -conv2-> 12 -pool-> 6 -conv2-> 5 -pool-> 2


@dataclass
class MultiStageNet:
    """One embedding and the two heads that sit on it."""

    embedding: nn.Module  # W
    pretrain_head: nn.Module  # U
    finetune_head: nn.Module  # Theta


def mnist_embedding() -> nn.Sequential:
    """Table A, MNIST: CONV 32 5x5+1, MAX-POOL 2x2+2, CONV 64 5x5+1, MAX-POOL 2x2+2 (tanh)."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 5), nn.Tanh(), nn.MaxPool2d(2, 2),
        nn.Conv2d(32, 64, 5), nn.Tanh(), nn.MaxPool2d(2, 2),
        nn.Flatten(),
    )


def mnist_head(n_classes: int) -> nn.Linear:
    """Table A, MNIST: FC <# classes>, no activation."""
    return nn.Linear(MNIST_FEATURES, n_classes)


def cifar_embedding() -> nn.Sequential:
    """Table A, CIFAR: CONV 32 3x3+1, CONV 64 4x4+1, MAX-POOL 2x2+2, then twice CONV 128 2x2+1, MAX-POOL 2x2+2 (tanh)."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3), nn.Tanh(),
        nn.Conv2d(32, 64, 4), nn.Tanh(), nn.MaxPool2d(2, 2),
        nn.Conv2d(64, 128, 2), nn.Tanh(), nn.MaxPool2d(2, 2),
        nn.Conv2d(128, 128, 2), nn.Tanh(), nn.MaxPool2d(2, 2),
        nn.Flatten(),
    )


def cifar_head(n_classes: int, hidden: int = 1500) -> nn.Sequential:
    """Table A, CIFAR: FC 1500 (tanh), FC <# classes>."""
    return nn.Sequential(nn.Linear(CIFAR_FEATURES, hidden), nn.Tanh(), nn.Linear(hidden, n_classes))


def table_a(dataset: str, pretrain_classes: int, finetune_classes: int) -> MultiStageNet:
    """The Table A network for ``"mnist"`` or ``"cifar10"``, with heads sized for the two tasks."""
    if dataset == "mnist":
        return MultiStageNet(mnist_embedding(), mnist_head(pretrain_classes), mnist_head(finetune_classes))
    if dataset == "cifar10":
        return MultiStageNet(cifar_embedding(), cifar_head(pretrain_classes), cifar_head(finetune_classes))
    raise ValueError(f"dataset: expected 'mnist' or 'cifar10', got {dataset!r}")
