"""Where an experiment runs: every config carries ``device``, and this turns it into a torch device.

``"auto"`` picks CUDA when a GPU is visible and the CPU otherwise, so the same config runs on a
reader's laptop and on a GPU machine. Naming ``"cuda"`` where there is none is an error, not a
silent fall-back: a run that was asked for a GPU and took the CPU would be wrong about its cost.
"""

from __future__ import annotations

import torch


def resolve(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` when available, else ``cpu``; any other name as torch reads it."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(
            f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}"
        ) from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device: {device!r} was asked for, but torch sees no CUDA device; use 'auto' or 'cpu'"
        )
    return resolved
