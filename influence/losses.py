"""The per-example losses g and f, and how they are evaluated: in float64, on the network's outputs.

A confident example's loss derivative is a small difference of large numbers. For
cross-entropy, the forward-mode derivative along a tangent t of the logits is
``t_y - sum_k p_k t_k``, and with ``p_y`` near 1 the two terms nearly cancel; the loss itself,
``logsumexp(z) - z_y``, is a difference of nearly equal numbers too. In float32 that cancels to
0 or to a few ulps, so scores of confident examples came out exactly 0 or quantized.

:func:`precise` therefore evaluates any per-example loss in float64 on the outputs (and their
tangents or cotangents), cast up from the model's dtype; the network itself still runs in its
own dtype. Float64 is not available on every device (Apple's MPS lacks it); there the loss
runs in the outputs' dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as nnf
from torch import Tensor

Loss = Callable[[Tensor, Tensor], Tensor]  # (outputs, targets) -> per-example losses [B]


def cross_entropy(outputs: Tensor, targets: Tensor) -> Tensor:
    """Per-example cross-entropy of logits ``outputs`` against class indices: the default g and f."""
    return nnf.cross_entropy(outputs, targets, reduction="none")


def wide_dtype(device: torch.device) -> torch.dtype | None:
    """Float64, or None where the device has no float64 (MPS)."""
    return None if device.type == "mps" else torch.float64


def precise(loss: Loss) -> Loss:
    """``loss`` evaluated in float64 on the outputs it is given (eq. 1's g and eq. 2's f).

    The outputs, and floating-point targets, are cast to float64 before the loss sees them.
    Autograd carries the cast both ways: forward-mode tangents of the outputs are cast up
    before the loss combines them, and reverse-mode cotangents leave the loss in float64 and
    are cast down to the network's dtype only after the cancelling subtraction is done. So the
    scoring JVP, the test gradient and the Hessian-vector products all see an exact loss
    derivative, whatever the loss.
    """

    def evaluated_in_float64(outputs: Tensor, targets: Tensor) -> Tensor:
        dtype = wide_dtype(outputs.device)
        if dtype is None:
            return loss(outputs, targets)
        targets = targets.to(dtype) if targets.is_floating_point() else targets
        return loss(outputs.to(dtype), targets)

    evaluated_in_float64.__wrapped__ = loss  # type: ignore[attr-defined]
    return evaluated_in_float64
