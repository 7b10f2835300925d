"""How a trained two-stage network does on a task: mean loss, accuracy, the points it gets wrong."""

from __future__ import annotations

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from .models import in_chunks
from .transfer_data import Pair


def mean_loss(embedding: nn.Module, head: nn.Module, data: Pair) -> float:
    """Mean cross-entropy of ``head(embedding(x))`` over ``data``."""
    x, y = data
    losses = nnf.cross_entropy(
        in_chunks(lambda xb: head(embedding(xb)), x), y, reduction="none"
    )
    return losses.double().mean().item()


def accuracy(embedding: nn.Module, head: nn.Module, data: Pair) -> float:
    """Fraction of ``data`` that ``head(embedding(x))`` classifies correctly."""
    x, y = data
    predicted = in_chunks(lambda xb: head(embedding(xb)), x).argmax(1)
    return (predicted == y).double().mean().item()


def misclassified(
    embedding: nn.Module, head: nn.Module, test: Pair, k: int, seed: int = 0
) -> Tensor:
    """``k`` of the test points ``head(embedding(x))`` gets wrong, drawn at random (Fig. 4); on the CPU."""
    x, y = test
    predicted = in_chunks(lambda xb: head(embedding(xb)), x).argmax(1)
    wrong = (predicted != y).nonzero().flatten().cpu()
    return wrong[
        torch.randperm(len(wrong), generator=torch.Generator().manual_seed(seed))[:k]
    ]


def distance(a: nn.Module, b: nn.Module) -> float:
    """``||a - b||``: the Euclidean distance between two modules' parameters."""
    return float(
        torch.sqrt(
            sum(
                ((p.detach().double() - q.detach().double()) ** 2).sum()
                for p, q in zip(a.parameters(), b.parameters())
            )
        )
    )
