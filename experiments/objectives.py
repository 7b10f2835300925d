"""The objectives the optimizers of :mod:`experiments.fit` minimize.

- :class:`StageObjective`: one stage's training objective, G (eq. 1), F (eq. 2) or
  F + alpha ||W - W_bar||^2 (eq. 12), optionally with example weights (eq. 4, leave-one-out);
  :func:`finetune_objective` builds F for either case.
- :class:`Proximal`: ``base + eps * extra + lambda/2 ||phi - phi_s||^2 - grad base(phi_s) . phi``,
  the proximal response whose linearization is the damped influence function.
- :class:`Plain`: any other full-batch function of some parameters.

Each has ``params``, ``value()`` and ``gradient_norm()``: the :class:`~experiments.fit.Objective`
protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from influence.losses import Loss, cross_entropy

from .models import in_chunks


def norm(tensors: Sequence[Tensor]) -> float:
    """The Euclidean norm of several tensors laid end to end, summed in float64."""
    return torch.sqrt(sum((t.double() ** 2).sum() for t in tensors)).item()


@dataclass
class StageObjective:
    """One stage's objective over ``params``: G (eq. 1), F (eq. 2) or F + alpha ||W - W_bar||^2 (eq. 12).

    ``forward`` maps inputs to outputs with the current parameters. ``weights`` (default
    ``1/n`` each) turns the mean into a weighted sum: ``weights[i] += eps`` is the
    perturbation of eq. 4, and ``weights[i] = 0`` (the rest ``1/(n-1)``) is leave-one-out.
    ``proximity`` is ``(W parameters, W_bar tensors, alpha)`` for Case 2's finetuning.
    """

    params: Sequence[nn.Parameter]
    forward: Callable[[Tensor], Tensor]
    x: Tensor
    y: Tensor
    loss: Loss = cross_entropy
    l2: float = 0.0
    weights: Tensor | None = None
    proximity: tuple[Sequence[nn.Parameter], Sequence[Tensor], float] | None = None

    def regularizer(self) -> Tensor:
        reg = self.l2 / 2 * sum((p**2).sum() for p in self.params)
        if self.proximity is not None:
            ws, anchors, alpha = self.proximity
            reg = reg + alpha * sum(((w - a) ** 2).sum() for w, a in zip(ws, anchors))
        return reg

    def value(self, index: Tensor | None = None) -> Tensor:
        """The objective, or with ``index`` its minibatch estimate (weights renormalized to the batch)."""
        if index is None:
            losses = self.loss(self.forward(self.x), self.y)
            weights = (
                self.weights
                if self.weights is not None
                else torch.full_like(losses, 1 / len(losses))
            )
            return (weights * losses).sum() + self.regularizer()
        losses = self.loss(self.forward(self.x[index]), self.y[index])
        if self.weights is None:
            return losses.mean() + self.regularizer()
        w = self.weights[index]
        return (w * losses).sum() / w.sum().clamp_min(
            1e-30
        ) * self.weights.sum() + self.regularizer()

    def gradient_norm(self) -> float:
        grads = torch.autograd.grad(self.value(), list(self.params))
        return torch.sqrt(sum((g**2).sum() for g in grads)).item()


def finetune_objective(
    case: str,
    embedding: nn.Module,
    head: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    pretrained: nn.Module | None = None,
    alpha: float = 0.0,
    l2: float = 0.0,
) -> StageObjective:
    """The finetuning objective of either case, the one place training tells them apart.

    ``"fixed"`` (eq. 2): F over Theta alone; W is frozen, so its outputs are computed once.
    ``"updated"`` (eq. 12): F + alpha ||W - W_bar||^2 over (W, Theta), W_bar from ``pretrained``.
    """
    if case == "fixed":
        return StageObjective(
            list(head.parameters()), head, in_chunks(embedding, x), y, l2=l2
        )
    if case == "updated":
        if pretrained is None:
            raise ValueError(
                "pretrained: case 'updated' needs the pretrained embedding W_bar"
            )
        anchors = [w.detach().clone() for w in pretrained.parameters()]
        return StageObjective(
            [*embedding.parameters(), *head.parameters()],
            lambda v: head(embedding(v)),
            x,
            y,
            l2=l2,
            proximity=(list(embedding.parameters()), anchors, alpha),
        )
    raise ValueError(f"case: expected 'fixed' or 'updated', got {case!r}")


@dataclass
class Proximal:
    """``base() + eps * extra() + lambda/2 ||params - anchor||^2 - slope . params``.

    :meth:`at` anchors it at the current parameters phi_s with ``slope = grad base(phi_s)``, so
    that phi_s is its minimizer at eps = 0. Setting the gradient to zero and differentiating at
    eps = 0 gives ``dphi/deps = -(H_base + lambda I)^-1 grad extra``: the damped influence
    function is the exact linearization of this response (a proximal Bregman response, Bae et
    al. 2022, with the loss in place of the Bregman divergence).

    ``dtype`` is what the proximal and linear terms are summed in: float64 by default, since
    with float32 weights the damping term's change is below the value's rounding; ``None`` sums
    them in the parameters' own dtype.
    """

    params: list[nn.Parameter]
    base: Callable[[], Tensor]
    damping: float
    anchor: list[Tensor]
    slope: list[Tensor]
    extra: Callable[[], Tensor] | None = None
    eps: float = 0.0
    dtype: torch.dtype | None = torch.float64

    @classmethod
    def at(
        cls,
        params: list[nn.Parameter],
        base: Callable[[], Tensor],
        damping: float,
        dtype: torch.dtype | None = torch.float64,
    ) -> Proximal:
        """Anchored at the current ``params``, with the slope of ``base`` there."""
        slope = list(torch.autograd.grad(base(), params))
        anchor = [p.detach().clone() for p in params]
        return cls(params, base, damping, anchor, slope, dtype=dtype)

    def value(self) -> Tensor:
        value = self.base()
        if self.eps:
            value = value + self.eps * self.extra()
        for p, a, g in zip(self.params, self.anchor, self.slope):
            step, slope = p - a, g
            if self.dtype is not None:
                step, slope = step.to(self.dtype), slope.to(self.dtype)
            value = value + self.damping / 2 * (step**2).sum() - (slope * p).sum()
        return value

    def gradient_norm(self) -> float:
        return norm(torch.autograd.grad(self.value(), self.params))


@dataclass
class Plain:
    """Any full-batch objective, ``value()``, over ``params`` (a closure over the data)."""

    params: list[nn.Parameter]
    function: Callable[[], Tensor]

    def value(self) -> Tensor:
        return self.function()

    def gradient_norm(self) -> float:
        return norm(torch.autograd.grad(self.value(), self.params))
