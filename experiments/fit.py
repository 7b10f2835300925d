"""Every optimizer of the experiments, each minimizing an :class:`Objective` in place.

- :func:`fit_adam`: minibatch Adam for a fixed number of steps from a seeded generator, as
  Appendix B trains the CNNs. The same seed gives the same batches (:func:`batch_indices`), so a
  retraining with and without a removed example can be compared step for step.
- :func:`fit_lbfgs`: full-batch L-BFGS to a tight gradient tolerance, for the small float64
  models of the theory chapters and the tests, where "trained to convergence" must mean a
  stationary point, as the influence function assumes.
- :func:`newton_polish`: Newton steps with a dense Hessian, which take a point that line
  searches can no longer improve to rounding level (or to a tolerance).
- :func:`descend` and :func:`accelerate`: gradient descent with a halving step, and Nesterov's
  method with fixed steps, for the proximal responses of section 4.1's ladder, whose max
  pooling or float32 rounding defeats line searches.

The objectives themselves are in :mod:`experiments.objectives`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from influence.progress import progress

from .objectives import StageObjective, norm


class Objective(Protocol):
    """What the optimizers minimize: parameters, a full-batch value, and its gradient norm."""

    params: Sequence[nn.Parameter]

    def value(self) -> Tensor: ...

    def gradient_norm(self) -> float: ...


def snapshot(params: Sequence[Tensor]) -> list[Tensor]:
    """Copies of the parameters' values, for :func:`restore`."""
    return [p.detach().clone() for p in params]


def restore(params: Sequence[Tensor], values: Sequence[Tensor]) -> None:
    """Set the parameters to the values a :func:`snapshot` took."""
    with torch.no_grad():
        for p, v in zip(params, values):
            p.copy_(v)


def fit_lbfgs(
    objective: Objective,
    *,
    tol: float = 1e-10,
    max_iter: int = 5000,
    restarts: int = 5,
    history_size: int = 100,
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
            history_size=history_size,
            line_search_fn="strong_wolfe",
        )

        def closure() -> Tensor:
            optimizer.zero_grad()
            value = objective.value()
            value.backward()
            return value

        optimizer.step(closure)
        current = objective.gradient_norm()
        if current <= tol or current > 0.9 * best:
            return current
        best = current
    return best


def _dense_hessian(gradient: Tensor, params: Sequence[Tensor]) -> Tensor:
    """The Hessian from a gradient built with ``create_graph=True``, one row per parameter."""
    dim = gradient.numel()
    eye = torch.eye(dim, dtype=gradient.dtype, device=gradient.device)
    rows = torch.autograd.grad(gradient, params, eye, is_grads_batched=True)
    return torch.cat([r.reshape(dim, -1) for r in rows], dim=1)


def newton_polish(
    objective: Objective,
    *,
    steps: int = 3,
    tol: float = 0.0,
    hessian: Callable[[], Tensor] | None = None,
    refreshes: int | None = None,
    keep: str | None = "gradient",
    max_dim: int = 5000,
) -> float:
    """Newton steps ``phi <- phi - t H^-1 grad(phi)`` with a dense Hessian, in place.

    Float64 line searches stop seeing progress around gradient norms of 1e-8; Newton's
    quadratic convergence takes such a point to rounding level, or to ``tol`` (at most
    ``steps`` steps). The options are where its uses differ:

    - ``hessian``: a function giving the dense Hessian at the current point (the library's
      ``H_G`` or ``K``, or a stored one); ``None`` differentiates the objective twice.
    - ``refreshes``: ``None`` solves with a fresh Hessian every step. An integer makes it a
      chord method: the Hessian is Cholesky-factored once and kept (near the minimum that still
      gains digits every step, and the fixed point is the minimum whatever Hessian is used),
      and taken again, at most ``refreshes`` times, where a step gains less than half a digit.
    - ``keep``: which steps are kept. ``"gradient"``: a full step, kept only if it lowers the
      gradient norm (else undone, and Newton stops). ``"value"``: the step length t is halved
      until the objective does not rise (where 30 halvings fail, undone, and Newton stops).
      ``None``: every full step.

    Returns the gradient norm at the final point.
    """
    params = list(objective.params)
    dim = sum(p.numel() for p in params)
    if hessian is None and dim > max_dim:
        raise ValueError(f"newton_polish: {dim} parameters, above max_dim={max_dim}")
    factor, last, current = None, math.inf, None
    if refreshes is not None:
        factor = torch.linalg.cholesky(hessian())
    for _ in range(steps):
        value = objective.value()
        grads = torch.autograd.grad(value, params, create_graph=hessian is None)
        g = torch.cat([x.reshape(-1) for x in grads])
        current = norm(grads)
        if current <= tol:
            return current
        if factor is None:
            dense = _dense_hessian(g, params) if hessian is None else hessian()
            step = torch.linalg.solve(dense, g.detach())
        else:
            if current > 0.3 * last and refreshes > 0:
                refreshes -= 1
                fresh, failed = torch.linalg.cholesky_ex(hessian())
                if not failed:
                    factor = fresh
            last = current
            step = torch.cholesky_solve(g.detach()[:, None], factor)[:, 0]
        start = snapshot(params)
        moves = torch.split(step, [p.numel() for p in params])
        for halving in range(30 if keep == "value" else 1):
            with torch.no_grad():
                for p, s, d in zip(params, start, moves):
                    p.copy_(s - 0.5**halving * d.view_as(p))
                if keep != "value" or objective.value() <= value:
                    break
        else:
            restore(params, start)
            break
        if keep == "gradient":
            new = objective.gradient_norm()
            if not new < current:
                restore(params, start)
                break
            current = new
        else:
            current = None  # moved: the norm is measured again
    return objective.gradient_norm() if current is None else current


def descend(
    objective: Objective, step: float, *, tol: float, max_iter: int, patience: int = 20
) -> float:
    """Gradient descent with step ``step`` (halved until the objective decreases).

    For rung 2's stage 1 on Table A's network, whose max pooling makes the objective only
    piecewise smooth: L-BFGS's line search can stall at a kink at the first step, while a
    proximal objective with lambda well above -h_min is well conditioned enough for plain
    descent. Stops at ``tol``, after ``max_iter`` steps, or when ``patience`` steps have not
    lowered the gradient norm by 1% (its float32 floor). Returns the final gradient norm.
    """
    params = objective.params
    best, stale = math.inf, 0
    for _ in range(max_iter):
        value = objective.value()
        grads = torch.autograd.grad(value, params)
        current = norm(grads)
        if current <= tol:
            return current
        stale = 0 if current < 0.99 * best else stale + 1
        best = min(best, current)
        if stale >= patience:
            break
        start, t = snapshot(params), step
        for _ in range(30):
            with torch.no_grad():
                for p, s, g in zip(params, start, grads):
                    p.copy_(s - t * g)
                if objective.value() <= value:
                    break
            t /= 2
    return objective.gradient_norm()


def accelerate(
    objective: Objective, step: float, strong: float, *, tol: float, max_iter: int
) -> float:
    """Nesterov's accelerated gradient with a fixed step, ``step`` = 1 / the largest curvature
    and ``strong`` the smallest (both of the objective, damping included).

    For Case 2's stage 2, whose response is too small for a line search: the decrease it
    makes, about push^2 / curvature, is below the float32 rounding of the objective's value,
    so comparing values cannot see it, while the gradient still can. Fixed steps need no
    values, and momentum ``(sqrt k - 1) / (sqrt k + 1)``, k the condition number, converges in
    about ``sqrt k`` steps where plain descent needs ``k``. Momentum restarts wherever the
    gradient points against the last move (O'Donoghue and Candes, 2015): ``strong`` is only a
    Lanczos estimate, and a perturbed objective can be less convex than it says. Stops at
    ``tol`` or after ``max_iter`` steps; returns the gradient norm at the last point.
    """
    params = objective.params
    root = math.sqrt(1 / (step * strong))
    momentum = (root - 1) / (root + 1)
    previous = snapshot(params)
    for _ in range(max_iter):
        grads = torch.autograd.grad(objective.value(), params)  # at the look-ahead point
        if norm(grads) <= tol:
            break
        with torch.no_grad():
            news = [p - step * g for p, g in zip(params, grads)]
            against = sum(
                (g.double() * (n - q).double()).sum()
                for g, n, q in zip(grads, news, previous)
            )
            beta = 0.0 if against > 0 else momentum
            for p, q, n in zip(params, previous, news):
                p.copy_(n + beta * (n - q))
                q.copy_(n)
    restore(params, previous)
    return objective.gradient_norm()


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
    if state is not None:
        # a copy: Adam updates its moments in place, and the caller's state must survive
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
