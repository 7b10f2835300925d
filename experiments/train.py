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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from influence.losses import Loss, cross_entropy
from influence.progress import progress

from .models import in_chunks


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


class Objective(Protocol):
    """What :func:`fit_lbfgs` minimizes: parameters, a full-batch value, and its gradient norm."""

    params: Sequence[nn.Parameter]

    def value(self) -> Tensor: ...

    def gradient_norm(self) -> float: ...


def fit_lbfgs(
    objective: Objective,
    *,
    tol: float = 1e-10,
    max_iter: int = 5000,
    restarts: int = 5,
) -> float:
    """Minimize a full-batch objective with L-BFGS until the gradient norm is below ``tol``.

    L-BFGS can stall on a flat line search; each restart starts a fresh optimizer (a stale
    curvature memory is what stalled it), and restarting stops once it no longer helps.
    Returns the final gradient norm, so callers can assert a stationary point.
    """
    params = list(objective.params)
    best = objective.gradient_norm()
    for _ in range(restarts):
        optimizer = torch.optim.LBFGS(
            params,
            lr=1,
            max_iter=max_iter,
            tolerance_grad=tol,
            tolerance_change=0.0,
            history_size=100,
            line_search_fn="strong_wolfe",
        )

        def closure() -> Tensor:
            optimizer.zero_grad()
            value = objective.value()
            value.backward()
            return value

        optimizer.step(closure)
        norm = objective.gradient_norm()
        if norm <= tol or norm > 0.9 * best:
            return norm
        best = norm
    return best


def newton_polish(
    objective: StageObjective, *, steps: int = 3, max_dim: int = 5000
) -> float:
    """A few exact Newton steps with the dense Hessian, for small models near an optimum.

    Float64 line searches stop seeing progress around gradient norms of 1e-8; Newton's
    quadratic convergence takes such a point to rounding level. A step is kept only if it
    lowers the gradient norm. Returns the final gradient norm.
    """
    params = list(objective.params)
    dim = sum(p.numel() for p in params)
    if dim > max_dim:
        raise ValueError(f"newton_polish: {dim} parameters, above max_dim={max_dim}")
    norm = objective.gradient_norm()
    for _ in range(steps):
        grads = torch.autograd.grad(objective.value(), params, create_graph=True)
        g = torch.cat([x.reshape(-1) for x in grads])
        eye = torch.eye(dim, dtype=g.dtype, device=g.device)
        rows = torch.autograd.grad(g, params, eye, is_grads_batched=True)
        hessian = torch.cat([r.reshape(dim, -1) for r in rows], dim=1)
        step = torch.linalg.solve(hessian, g.detach())
        saved = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, d in zip(params, torch.split(step, [p.numel() for p in params])):
                p -= d.view_as(p)
        new = objective.gradient_norm()
        if not new < norm:
            with torch.no_grad():
                for p, old in zip(params, saved):
                    p.copy_(old)
            break
        norm = new
    return norm


def batch_indices(n: int, *, steps: int, batch_size: int, seed: int) -> Iterator[Tensor]:
    """The minibatches :func:`fit_adam` draws: epochs of a seeded permutation, ``steps`` batches in all."""
    generator = torch.Generator().manual_seed(seed)
    batch_size = min(batch_size, n)
    order, start = torch.randperm(n, generator=generator), 0
    for _ in range(steps):
        if start + batch_size > n:
            order, start = torch.randperm(n, generator=generator), 0
        yield order[start : start + batch_size]
        start += batch_size


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
    if (
        state is not None
    ):  # a copy: Adam updates its moments in place, and the caller's state must survive
        optimizer.load_state_dict(copy.deepcopy(state))
    history = []
    batches = batch_indices(
        len(objective.y), steps=steps, batch_size=batch_size, seed=seed
    )
    for index in progress(batches, desc=desc, total=steps):
        optimizer.zero_grad()
        value = objective.value(index.to(objective.y.device))
        value.backward()
        optimizer.step()
        history.append(value.item())
    return AdamRun(history, optimizer.state_dict())
