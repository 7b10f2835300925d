"""The removals of section 4.1's ladder: which pretraining examples its rungs perturb, how hard
each one pushes, and the summed test loss (the f of eq. 8) their responses are measured on."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as nnf
from torch import Tensor

from influence import MultiStage

from .models import in_chunks

Pair = tuple[Tensor, Tensor]  # inputs and labels


def evenly_spaced(n: int, k: int) -> list[int]:
    """``k`` positions of ``range(n)`` evenly spaced, first and last included (distinct for k <= n)."""
    return [round(j * (n - 1) / (k - 1)) for j in range(k)]


def spread(scores: Tensor, k: int) -> list[int]:
    """``k`` examples evenly spaced in rank over the whole score range, both extremes included."""
    if not 3 <= k <= len(scores):
        raise ValueError(f"k: expected 3 to {len(scores)}, got {k}")
    order = scores.argsort()
    return [int(order[j]) for j in evenly_spaced(len(scores), k)]


def per_example_norms(ms: MultiStage, examples: Pair) -> list[float]:
    """``||grad g(z)||`` over (W, U) for each example: the size of the perturbation it makes."""
    return ms.candidate_gradients(examples).norm(dim=1).tolist()


def summed_loss(model: Callable[[Tensor], Tensor], data: Pair) -> float:
    """The test loss summed over ``data``, in float64 (the f of eq. 8)."""
    x, y = data
    return nnf.cross_entropy(in_chunks(model, x).double(), y, reduction="sum").item()
