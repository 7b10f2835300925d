"""Training the two stages, and retraining them with one pretraining example up- or down-weighted.

Two optimizers, for two purposes:

- :func:`fit_lbfgs` minimizes a full-batch objective to a tight gradient tolerance. It is for
  the small float64 models of the theory chapters and the tests, where "trained to
  convergence" must mean a stationary point, as the influence function assumes.
- :func:`fit_adam` runs minibatch Adam for a fixed number of steps from a seeded generator,
  as Appendix B trains the CNNs. The same seed gives the same batches, so a retraining
  with and without a removed example can be compared step for step.

Both minimize a :class:`StageObjective`: ``sum_i weight_i * loss_i + l2/2 ||params||^2
+ alpha ||W - W_bar||^2``, the G or F of the paper with optional example weights (for
eps-perturbations, eq. 4, and leave-one-out).
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from .progress import progress

Loss = Callable[[Tensor, Tensor], Tensor]


def _cross_entropy(outputs: Tensor, targets: Tensor) -> Tensor:
    return nnf.cross_entropy(outputs, targets, reduction="none")


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
    loss: Loss = _cross_entropy
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
            weights = self.weights if self.weights is not None else torch.full_like(losses, 1 / len(losses))
            return (weights * losses).sum() + self.regularizer()
        losses = self.loss(self.forward(self.x[index]), self.y[index])
        if self.weights is None:
            return losses.mean() + self.regularizer()
        w = self.weights[index]
        return (w * losses).sum() / w.sum().clamp_min(1e-30) * self.weights.sum() + self.regularizer()

    def gradient_norm(self) -> float:
        grads = torch.autograd.grad(self.value(), list(self.params))
        return torch.sqrt(sum((g**2).sum() for g in grads)).item()


def fit_lbfgs(objective: StageObjective, *, tol: float = 1e-10, max_iter: int = 5000) -> float:
    """Minimize a full-batch objective with L-BFGS until the gradient norm is below ``tol``.

    Returns the final gradient norm, so callers can assert that they reached a stationary point.
    """
    params = list(objective.params)
    optimizer = torch.optim.LBFGS(
        params, lr=1, max_iter=max_iter, tolerance_grad=tol, tolerance_change=0.0,
        history_size=100, line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        value = objective.value()
        value.backward()
        return value

    for _ in range(5):  # LBFGS can stop early on a flat line search; a restart finishes the job
        optimizer.step(closure)
        if objective.gradient_norm() <= tol:
            break
    return objective.gradient_norm()


@dataclass
class AdamRun:
    """What :func:`fit_adam` did: the minibatch objective at every step, and Adam's final state."""

    history: list[float]
    state: dict


def fit_adam(
    objective: StageObjective,
    *,
    steps: int,
    batch_size: int,
    lr: float = 1e-3,
    seed: int = 0,
    state: dict | None = None,
    desc: str = "training",
) -> AdamRun:
    """Minibatch Adam for ``steps`` steps; batches drawn by a generator seeded with ``seed``.

    ``state`` (a previous run's :attr:`AdamRun.state`) resumes Adam's moment estimates, so
    that continued training from a trained model does not start with a jolt.
    With ``weights`` set, removed examples (weight 0) are still drawn but contribute nothing,
    so the batch sequence is the same with and without a removal: the controlled comparison
    of the book's section 4.1.
    """
    params = list(objective.params)
    optimizer = torch.optim.Adam(params, lr=lr)
    if state is not None:  # a copy: Adam updates its moments in place, and the caller's state must survive
        optimizer.load_state_dict(copy.deepcopy(state))
    generator = torch.Generator().manual_seed(seed)
    n = len(objective.y)
    batch_size = min(batch_size, n)
    history = []
    order = torch.randperm(n, generator=generator)
    start = 0
    for _ in progress(range(steps), desc=desc, total=steps):
        if start + batch_size > n:
            order, start = torch.randperm(n, generator=generator), 0
        index = order[start : start + batch_size].to(objective.y.device)
        start += batch_size
        optimizer.zero_grad()
        value = objective.value(index)
        value.backward()
        optimizer.step()
        history.append(value.item())
    return AdamRun(history, optimizer.state_dict())
