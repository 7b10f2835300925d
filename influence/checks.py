"""Argument checks shared by the library: each names the argument and what was expected.

Nothing is coerced silently: a wrong type is a ``TypeError``, a wrong value a ``ValueError``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


def nonnegative(value: Any, name: str) -> float:
    """A finite number >= 0 (an L2 coefficient, alpha, a damping)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: expected a finite number >= 0, got {value}")
    return float(value)


def positive(value: Any, name: str) -> float:
    """A finite number > 0 (a tolerance)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not value > 0
    ):
        raise ValueError(f"{name}: expected a number > 0, got {value!r}")
    return float(value)


def positive_int(value: Any, name: str) -> int:
    """An integer >= 1 (iterations, a batch size)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    return value


def flag(value: Any, name: str) -> bool:
    """A bool, not merely something truthy."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__}")
    return value


def module(value: Any, name: str) -> nn.Module:
    """A module with parameters, all finite."""
    if not isinstance(value, nn.Module):
        raise TypeError(f"{name}: expected a torch.nn.Module, got {type(value).__name__}")
    if not list(value.parameters()):
        raise ValueError(f"{name}: the module has no parameters")
    for pname, p in value.named_parameters():
        if not torch.isfinite(p).all():
            raise ValueError(f"{name}: parameter {pname!r} holds NaN or Inf")
    return value
