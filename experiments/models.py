"""The networks of the paper's Table A, split into embedding W and heads U, Theta.

"CONV k w x h + s" is a convolution with k filters of size w x h and stride s; every
activation is tanh, and the last layer of a head has none. The CNN layers are the
embedding, shared by both stages; the fully connected layers are task-specific heads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from influence import MultiStage

MNIST_FEATURES = 64 * 4 * 4  # 28 -conv5-> 24 -pool-> 12 -conv5-> 8 -pool-> 4
CIFAR_FEATURES = (
    128 * 2 * 2
)  # 32 -conv3-> 30 -conv4-> 27 -pool-> 13 -conv2-> 12 -pool-> 6 -conv2-> 5 -pool-> 2


@dataclass
class MultiStageNet:
    """The weights of a two-stage network: one embedding, the two heads on it, and W_bar.

    The one container for trained two-stage weights, the toy problems' and Table A's alike.
    """

    embedding: (
        nn.Module
    )  # W: W* after finetuning (Case 2), or W_bar where finetuning froze it (Case 1)
    pretrain_head: nn.Module  # U
    finetune_head: nn.Module  # Theta
    pretrained_embedding: nn.Module | None = (
        None  # W_bar; None: the embedding itself (W frozen, Case 1)
    )

    def __post_init__(self) -> None:
        if self.pretrained_embedding is None:
            self.pretrained_embedding = self.embedding

    def multistage(self, **kwargs: Any) -> MultiStage:
        """The :class:`~influence.MultiStage` view of these weights; ``kwargs`` as MultiStage takes them.

        Where W_bar is a module of its own, finetuning moved W, and ``case="updated"`` is implied.
        """
        if self.pretrained_embedding is not self.embedding:
            kwargs = {
                "case": "updated",
                "pretrained_embedding": self.pretrained_embedding,
                **kwargs,
            }
        return MultiStage(
            self.embedding, self.pretrain_head, self.finetune_head, **kwargs
        )


def in_chunks(fn: Callable[[Tensor], Tensor], x: Tensor, size: int = 1000) -> Tensor:
    """``fn(x)`` without gradients, ``size`` examples at a time, concatenated: bounded memory on big sets."""
    with torch.no_grad():
        return torch.cat([fn(x[i : i + size]) for i in range(0, len(x), size)])


def mnist_embedding() -> nn.Sequential:
    """Table A, MNIST: CONV 32 5x5+1, MAX-POOL 2x2+2, CONV 64 5x5+1, MAX-POOL 2x2+2 (tanh)."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 5),
        nn.Tanh(),
        nn.MaxPool2d(2, 2),
        nn.Conv2d(32, 64, 5),
        nn.Tanh(),
        nn.MaxPool2d(2, 2),
        nn.Flatten(),
    )


def mnist_head(n_classes: int) -> nn.Linear:
    """Table A, MNIST: FC <# classes>, no activation."""
    return nn.Linear(MNIST_FEATURES, n_classes)


def cifar_embedding() -> nn.Sequential:
    """Table A, CIFAR: CONV 32 3x3+1, CONV 64 4x4+1, MAX-POOL 2x2+2, then twice
    CONV 128 2x2+1, MAX-POOL 2x2+2 (tanh)."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3),
        nn.Tanh(),
        nn.Conv2d(32, 64, 4),
        nn.Tanh(),
        nn.MaxPool2d(2, 2),
        nn.Conv2d(64, 128, 2),
        nn.Tanh(),
        nn.MaxPool2d(2, 2),
        nn.Conv2d(128, 128, 2),
        nn.Tanh(),
        nn.MaxPool2d(2, 2),
        nn.Flatten(),
    )


def cifar_head(n_classes: int, hidden: int = 1500) -> nn.Sequential:
    """Table A, CIFAR: FC 1500 (tanh), FC <# classes>."""
    return nn.Sequential(
        nn.Linear(CIFAR_FEATURES, hidden), nn.Tanh(), nn.Linear(hidden, n_classes)
    )


def small_mnist(
    pretrain_classes: int, finetune_classes: int, channels: tuple[int, int] = (4, 8)
) -> MultiStageNet:
    """A CNN small enough for float64 L-BFGS to converge on thousands of MNIST images.

    Table A's MNIST network in miniature: the image averaged down to 14 x 14, then
    CONV ``channels[0]`` 3x3+1, AVG-POOL 2x2+2, CONV ``channels[1]`` 3x3+1 (tanh), and linear
    heads on the ``channels[1] * 4 * 4`` features. Converged leave-one-out retraining
    (:mod:`experiments.converged_loo`) needs hundreds of full-batch float64 steps per removal, which
    Table A's 56,000 parameters on 28 x 28 images do not allow on 2 CPU cores. Average pooling
    replaces max pooling because max pooling makes the loss only piecewise smooth, and L-BFGS
    stalls at its kinks far above a stationary point; Theorem 1 assumes a twice
    differentiable loss.
    """
    first, second = channels
    embedding = nn.Sequential(
        nn.AvgPool2d(2, 2),
        nn.Conv2d(1, first, 3),
        nn.Tanh(),
        nn.AvgPool2d(2, 2),
        nn.Conv2d(first, second, 3),
        nn.Tanh(),
        nn.Flatten(),
    )
    features = second * 4 * 4  # 28 -avg-> 14 -conv3-> 12 -avg-> 6 -conv3-> 4
    return MultiStageNet(
        embedding,
        nn.Linear(features, pretrain_classes),
        nn.Linear(features, finetune_classes),
    )


def table_a(dataset: str, pretrain_classes: int, finetune_classes: int) -> MultiStageNet:
    """The Table A network for ``"mnist"`` or ``"cifar10"``, with heads sized for the two tasks."""
    if dataset == "mnist":
        return MultiStageNet(
            mnist_embedding(), mnist_head(pretrain_classes), mnist_head(finetune_classes)
        )
    if dataset == "cifar10":
        return MultiStageNet(
            cifar_embedding(), cifar_head(pretrain_classes), cifar_head(finetune_classes)
        )
    raise ValueError(f"dataset: expected 'mnist' or 'cifar10', got {dataset!r}")
