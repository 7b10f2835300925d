"""Section 4.1's ladder of ground truths: what the scores predict, rung by rung, as the retraining
they are compared with moves from a converged minimum to Appendix B's 100 Adam steps.

- Rung 3, :func:`converged_loo`: leave-one-out retraining that converges. A small CNN on real
  MNIST images, weight decay (so the minimum is isolated), float64, both stages re-optimized
  from the optimum by full-batch Newton iterations (L-BFGS where they stall) to a gradient far
  below ``||grad g(z)|| / m``. The prediction uses undamped inverse Hessians. Koh and Liang's
  experiment, in two stages.
- Rung 2, :func:`proximal_response`: the stored Table A network, whatever Adam left it at.
  Each stage is re-optimized from its trained weights phi_s with a proximity term
  ``lambda/2 ||phi - phi_s||^2`` and with ``grad G(phi_s) . phi`` subtracted, so that phi_s is
  exactly stationary when nothing is perturbed. Setting the gradient of
  ``G(phi) + eps g(z; phi) + lambda/2 ||phi - phi_s||^2 - grad G(phi_s) . phi`` to zero and
  differentiating at eps = 0 gives ``dphi/deps = -(H_G + lambda I)^-1 grad g(z)``: the damped
  influence function (damping on H, not on H^2) is the exact linearization of this response,
  a proximal Bregman response in the sense of Bae et al. (2022) with the loss in place of the
  Bregman divergence. It is measured by central differences at +eps and -eps, in float32 on
  Table A's network, whose max pooling makes the objective only piecewise smooth. In Case 2,
  stage 2 re-optimizes (W, Theta) on ``F + alpha ||W - W_bar||^2`` (eq. 12) around the W_bar
  that stage 1 moved, and its linearization is eqs. 12-15 with the same dampings.
- Rung 1 is Appendix B's protocol, section 4.1's own measurement (``sec41.json``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from influence import CG, Identity, MultiStage
from influence.progress import progress

from .configs import TransferConfig
from .models import in_chunks, small_mnist
from influence.spectrum import lanczos
from .stats import agreement
from .train import StageObjective, finetune_objective, fit_adam, fit_lbfgs
from .transfer import (
    Pair,
    TrainedTransfer,
    TransferData,
    load_transfer_data,
    mean_loss,
    measured_weights,
    subsample,
    train_transfer,
)


def evenly_spaced(n: int, k: int) -> list[int]:
    """``k`` positions of ``range(n)`` evenly spaced, first and last included (distinct for k <= n)."""
    return [round(j * (n - 1) / (k - 1)) for j in range(k)]


def spread(scores: Tensor, k: int) -> list[int]:
    """``k`` examples evenly spaced in rank over the whole score range, both extremes included."""
    if not 3 <= k <= len(scores):
        raise ValueError(f"k: expected 3 to {len(scores)}, got {k}")
    order = scores.argsort()
    return [int(order[j]) for j in evenly_spaced(len(scores), k)]


def _norm(tensors: Sequence[Tensor]) -> float:
    """The Euclidean norm of several tensors laid end to end, summed in float64."""
    return torch.sqrt(sum((t.double() ** 2).sum() for t in tensors)).item()


def summed_loss(model: Callable[[Tensor], Tensor], data: Pair) -> float:
    """The test loss summed over ``data``, in float64 (the f of eq. 8)."""
    x, y = data
    return nnf.cross_entropy(in_chunks(model, x).double(), y, reduction="sum").item()


def _save(params: Sequence[Tensor]) -> list[Tensor]:
    return [p.detach().clone() for p in params]


def _load(params: Sequence[Tensor], values: Sequence[Tensor]) -> None:
    with torch.no_grad():
        for p, v in zip(params, values):
            p.copy_(v)


# ---- rung 3 ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvergedConfig:
    """Rung 3: a scale at which leave-one-out retraining converges on 2 CPU cores."""

    pretrain_size: int = 2000  # MNIST digits 0-3
    finetune_size: int = 1000  # digits 4-9
    test_size: int = 500  # x_t: test images of digits 4-9, summed (eq. 8)
    channels: tuple[int, int] = (4, 8)  # Table A's MNIST network has 32 and 64
    l2: float = 3e-2  # weight decay of both stages: an isolated, well-conditioned minimum
    adam_steps: int = 1000  # warm start before L-BFGS
    tol: float = (
        1e-9  # gradient norm every optimum is brought to, far below ||grad g|| / m
    )
    cg_iters: int = 3000
    removals: int = 40
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _newton(
    objective: StageObjective,
    hessian: Callable[[], Tensor],
    tol: float,
    steps: int = 50,
    refreshes: int = 2,
) -> float:
    """Newton iterations ``phi <- phi - t H^-1 grad(phi)`` until the gradient norm is below ``tol``.

    ``hessian()`` gives a dense Hessian. It is factored once and kept (a chord method): near
    the minimum that still gains digits every step, and the fixed point is the minimum
    whatever Hessian is used. Where a step gains less than half a digit, ``hessian()`` is
    called again (``refreshes`` times at most). The step length t is halved until the
    objective decreases; where that fails, L-BFGS finishes. Returns the final gradient norm.
    """
    params = list(objective.params)
    factor = torch.linalg.cholesky(hessian())
    norm = last = math.inf
    for _ in range(steps):
        value = objective.value()
        g = torch.cat([x.reshape(-1) for x in torch.autograd.grad(value, params)])
        norm = g.norm().item()
        if norm <= tol:
            return norm
        if norm > 0.3 * last and refreshes > 0:
            refreshes -= 1
            fresh, failed = torch.linalg.cholesky_ex(hessian())
            if not failed:
                factor = fresh
        last = norm
        step = torch.cholesky_solve(g[:, None], factor)[:, 0]
        start = _save(params)
        for halving in range(30):
            t = 0.5**halving
            with torch.no_grad():
                for p, s, d in zip(
                    params, start, torch.split(step, [p.numel() for p in params])
                ):
                    p.copy_(s - t * d.view_as(p))
                if objective.value() <= value:
                    break
        else:
            _load(params, start)
            break
    return fit_lbfgs(objective, tol=tol)


def converged_loo(config: ConvergedConfig = ConvergedConfig()) -> dict[str, Any]:
    """Rung 3: Theorem 1's scores against leave-one-out retraining re-optimized to convergence.

    Training: Adam, then L-BFGS, then Newton steps with the dense Hessian there (852
    parameters) down to a gradient norm of ``tol``. Each removal sets the example's weight in G to 0
    (eps = -1/m exactly, the others keep 1/m), re-optimizes pretraining from the optimum by
    Newton iterations with the Hessian at the optimum, then finetuning on the moved
    embedding the same way, each to ``tol``, and measures the summed test loss. The
    prediction is ``-score / m``, with H_G and H_F themselves (CG on H, no damping); the
    identity ablation is scored on the same removals.
    """
    data = load_transfer_data(
        TransferConfig(
            pretrain_size=config.pretrain_size,
            finetune_size=config.finetune_size,
            test_size=config.test_size,
            seed=config.seed,
        )
    )
    pretrain, finetune, test = (
        (x.double(), y) for x, y in (data.pretrain, data.finetune, data.test)
    )
    torch.manual_seed(config.seed)
    net = small_mnist(4, 6, config.channels)
    emb, head, fhead = (
        m.double() for m in (net.embedding, net.pretrain_head, net.finetune_head)
    )
    pre = StageObjective(
        [*emb.parameters(), *head.parameters()],
        lambda x: head(emb(x)),
        *pretrain,
        l2=config.l2,
    )
    fit_adam(pre, steps=config.adam_steps, batch_size=256, lr=3e-3, seed=config.seed)
    fit_lbfgs(pre, tol=1e-6, max_iter=2000, restarts=1)

    def at_current() -> MultiStage:  # MultiStage reads the weights when it is made
        return MultiStage(
            emb, head, fhead, pretrain_l2=config.l2, finetune_l2=config.l2, case="fixed"
        )

    hessian_g = at_current().pretrain_hessian(pretrain).to_dense()  # made once: minutes
    grad_pre = _newton(pre, lambda: hessian_g, config.tol)
    eigenvalues = torch.linalg.eigvalsh(hessian_g)
    if eigenvalues[0] <= 0:
        raise RuntimeError(
            f"H_G has eigenvalue {float(eigenvalues[0]):.3g}: not at an isolated minimum"
        )

    def finetuned() -> tuple[StageObjective, float]:
        fine = finetune_objective("fixed", emb, fhead, *finetune, l2=config.l2)
        fit_lbfgs(fine, tol=config.tol)
        h_f = lambda: at_current().finetune_hessian(finetune).to_dense()  # noqa: E731
        return fine, _newton(fine, h_f, config.tol)

    fine, grad_fine = finetuned()
    model = lambda x: fhead(emb(x))  # noqa: E731
    original = summed_loss(model, test)
    ms = at_current()
    solvers = dict(
        pretrain_solver=CG(0.0, config.cg_iters, tol=1e-10, squared=False),
        finetune_solver=CG(0.0, config.cg_iters, tol=1e-10, squared=False),
    )
    scores = ms.scores(pretrain, finetune, test, **solvers)
    solves = [
        dataclasses.asdict(s)
        for s in ms.report.pretrain_solves + ms.report.finetune_solves
    ]
    identity = ms.scores(
        pretrain, finetune, test, pretrain_solver=Identity(), finetune_solver=Identity()
    )
    m = len(pretrain[1])
    chosen = spread(scores, config.removals)
    at_optimum = _save(pre.params), _save(fine.params)
    gradient_g = per_example_norms(ms, (pretrain[0][chosen], pretrain[1][chosen]))
    measured, gradients = [], []
    for i in progress(chosen, desc="converged leave-one-out"):
        pre.weights = torch.full((m,), 1 / m, dtype=torch.float64)
        pre.weights[i] = 0.0
        kept, cached = torch.arange(m) != i, [hessian_g]

        def h_loo() -> Tensor:  # the optimum's Hessian first, then the moved point's
            if cached:
                return cached.pop()
            subset = pretrain[0][kept], pretrain[1][kept]  # noqa: B023
            return at_current().pretrain_hessian(subset).to_dense()

        g_pre = _newton(pre, h_loo, config.tol)
        fine, g_fine = finetuned()
        measured.append(summed_loss(model, test) - original)
        gradients.append((g_pre, g_fine))
        pre.weights = None
        _load(pre.params, at_optimum[0])
        _load(fine.params, at_optimum[1])
    predicted = (-scores[chosen] / m).tolist()
    identity_predicted = (-identity[chosen] / m).tolist()
    return {
        "config": config.as_dict(),
        "m": m,
        "n_test": len(test[1]),
        "parameters": {
            "pretraining": sum(p.numel() for p in pre.params),
            "finetuning": sum(p.numel() for p in fine.params),
        },
        "gradient_norms": {"pretraining": grad_pre, "finetuning": grad_fine},
        "hessian_extremes": [float(eigenvalues[0]), float(eigenvalues[-1])],
        "removed_gradient_norms": gradient_g,  # ||grad g(z)||, beside the tol above
        "solves": solves,
        "indices": chosen,
        "predicted": predicted,
        "identity_predicted": identity_predicted,
        "measured": measured,
        "retrained_gradient_norms": gradients,
        "agreement": dataclasses.asdict(agreement(predicted, measured)),
        "identity": dataclasses.asdict(agreement(identity_predicted, measured)),
    }


def per_example_norms(ms: MultiStage, examples: Pair) -> list[float]:
    """``||grad g(z)||`` over (W, U) for each example: the size of the perturbation it makes."""
    return ms.candidate_gradients(examples).norm(dim=1).tolist()


# ---- rung 2 ---------------------------------------------------------------------------------


@dataclass
class Proximal:
    """``base() + eps * extra() + lambda/2 ||params - anchor||^2 - slope . params``.

    :meth:`at` anchors it at the current parameters phi_s with ``slope = grad base(phi_s)``, so
    that phi_s is its minimizer at eps = 0; :func:`~experiments.train.fit_lbfgs` minimizes it.
    """

    params: list[nn.Parameter]
    base: Callable[[], Tensor]
    damping: float
    anchor: list[Tensor]
    slope: list[Tensor]
    extra: Callable[[], Tensor] | None = None
    eps: float = 0.0

    @classmethod
    def at(
        cls, params: list[nn.Parameter], base: Callable[[], Tensor], damping: float
    ) -> Proximal:
        slope = list(torch.autograd.grad(base(), params))
        return cls(params, base, damping, _save(params), slope)

    def value(self) -> Tensor:
        value = self.base()
        if self.eps:
            value = value + self.eps * self.extra()
        for p, a, g in zip(self.params, self.anchor, self.slope):  # summed in float64
            step = (p - a).double()
            value = value + self.damping / 2 * (step**2).sum() - (g.double() * p).sum()
        return value

    def gradient_norm(self) -> float:
        return _norm(torch.autograd.grad(self.value(), self.params))


def descend(
    objective: Proximal, step: float, *, tol: float, max_iter: int, patience: int = 20
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
        norm = _norm(grads)
        if norm <= tol:
            return norm
        stale = 0 if norm < 0.99 * best else stale + 1
        best = min(best, norm)
        if stale >= patience:
            break
        start, t = _save(params), step
        for _ in range(30):
            with torch.no_grad():
                for p, s, g in zip(params, start, grads):
                    p.copy_(s - t * g)
                if objective.value() <= value:
                    break
            t /= 2
    return objective.gradient_norm()


def accelerate(
    objective: Proximal, step: float, strong: float, *, tol: float, max_iter: int
) -> float:
    """Nesterov's accelerated gradient with a fixed step, ``step`` = 1 / the largest curvature
    and ``strong`` the smallest (both of the proximal objective, damping included).

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
    previous = _save(params)
    for _ in range(max_iter):
        grads = torch.autograd.grad(objective.value(), params)  # at the look-ahead point
        if _norm(grads) <= tol:
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
    _load(params, previous)
    return objective.gradient_norm()


@dataclass(frozen=True)
class ProximalConfig:
    """Rung 2 on a stored section-4.1 experiment, in Case 1 or Case 2."""

    pretrain_damping: float | None = None  # lambda_1 on H; None: max(0.1, 2 |h_min(H_G)|)
    # lambda_2 on H_F. Case 1's head is a softmax, so H_F is PSD; Case 2's K need not be, and
    # lambda_2 is raised to 2 |k_min(K)| where that is larger
    finetune_damping: float = 1e-2
    # |S|, G's examples (None: the experiment's hessian_examples). 250, not Appendix B's 1,000:
    # each response re-optimizes G_S by full-batch descent, and on 2 CPU cores 1,000 images
    # and 30 removals would take hours
    sample_size: int | None = 250
    # F's examples (None: the experiment's finetune_hessian_examples, all where that is None).
    # Case 2 re-optimizes the whole network on them, so its runs use a sample, as K does
    finetune_sample_size: int | None = None
    # None: the experiment's. "updated" on a Case 1 experiment: Case 2 finetuning (eq. 12, the
    # experiment's alpha) from the same pretraining, over the same removals
    case: str | None = None
    removals: int = 16  # evenly spread over the stored removals
    linearity: int = 3  # of them, also measured at eps / 2
    # None: 0.1/|S|, a tenth of a copy of z, divided by ||grad g(z)|| where that exceeds 1.
    # At -1/|S| (a whole copy taken away) the term -eps grad^2 g(z) can outweigh lambda_1
    # for a large-gradient z, and the perturbed objective then has no minimum near phi_s
    eps: float | None = None
    # divide eps by ||grad g(z)|| for every z, not only where that exceeds 1, so that every
    # push is eps: a z with a tiny gradient otherwise pushes below the float32 floor
    equal_push: bool = False
    # stage 1 by :func:`accelerate` (fixed steps) instead of :func:`descend` (line search):
    # where the push is so small that the decrease it makes is below the value's rounding
    accelerated: bool = False
    float64: bool = False  # convert the weights (the losses are summed in float64 anyway)
    # gradient norm each stage stops at. Table A's max pooling makes G only piecewise smooth
    # and float32 sums have a floor: the result records the norms actually reached
    tol: float = 1e-7
    # steps of each stage: stage 1's descent (or accelerated steps), stage 2's L-BFGS
    # iterations (Case 1) or accelerated steps (Case 2)
    max_iter: int = 300
    cg_iters: int = 1000

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _case_weights(
    experiment: dict[str, Any], case: str | None
) -> tuple[TransferConfig, TransferData, TrainedTransfer]:
    """The experiment's trained weights, or, for ``case="updated"`` on a Case 1 experiment,
    Case 2 finetuning of its pretrained weights (the pretraining and the removals are shared).

    Rung 2 compares the scores with a response measured from these same weights, so it needs
    the experiment's config and removals but not its stored measurements: the weights are not
    checked against them (the result records both test losses).
    """
    tc, data, trained, _ = measured_weights(experiment, check=False)
    if case is None or case == tc.case:
        return tc, data, trained
    if (tc.case, case) != ("fixed", "updated"):
        raise ValueError(
            f"case: a {tc.case!r} experiment can be measured as itself or, if 'fixed', "
            f"as 'updated'; got {case!r}"
        )
    updated = tc.replace(case="updated")
    return updated, data, train_transfer(updated, data, pretrained_by=tc)


def proximal_response(
    experiment: dict[str, Any], config: ProximalConfig = ProximalConfig()
) -> dict[str, Any]:
    """Rung 2: the damped scores against the two-stage proximal response, by central differences.

    G is the mean loss over the Hessian's own sample S (``hessian_examples``, or a smaller
    ``sample_size`` drawn the same way), so the removal and the Hessian that predicts it are
    one consistent pair; eps defaults to a tenth of one copy of z beside S (``0.1/|S|``),
    divided by ``||grad g(z)||`` where that exceeds 1.
    Stage 1 re-optimizes (W_bar, U) on ``G_S + eps g(z)`` with the proximity term lambda_1
    (:func:`descend`). Stage 2 re-optimizes finetuning on the moved embedding with lambda_2:
    in Case 1, Theta on F over the moved features (L-BFGS); in Case 2, (W, Theta) on
    ``F + alpha ||W - W_bar(eps)||^2`` (eq. 12), whose W_bar stage 1 moved (:func:`accelerate`).
    Its linearization is eqs. 12-15 with ``K + lambda_2 I`` and ``H_G + lambda_1 I``.
    The weights stay in the dtype they were trained in (``float64=True`` converts them):
    a forward and backward pass of MNIST's Table A network costs 2.3 times as much in float64
    on a CPU (500 images, one thread), and a Case 2 response at |S| = 250 with 250 finetuning
    images took 2 to 5 minutes on 2 cores. Every loss is summed in float64 either way.
    """
    tc, data, trained = _case_weights(experiment, config.case)
    net = copy.deepcopy(trained.net)
    dtype = torch.float64 if config.float64 else next(net.embedding.parameters()).dtype
    emb, bar, head, fhead = (
        net.embedding,
        net.pretrained_embedding,
        net.pretrain_head,
        net.finetune_head,
    )
    for module in (emb, bar, head, fhead):  # bar is emb itself in Case 1
        module.to(dtype)
    sample = subsample(data.pretrain, config.sample_size or tc.hessian_examples, tc.seed)
    sample = sample[0].to(dtype), sample[1]
    finetune = subsample(
        data.finetune,
        config.finetune_sample_size or tc.finetune_hessian_examples,
        tc.seed,
    )
    finetune = finetune[0].to(dtype), finetune[1]
    test = data.test[0].to(dtype), data.test[1]
    ms = net.multistage(case=tc.case, alpha=tc.alpha)
    ritz = lanczos(ms.pretrain_hessian(sample), 40, dtype=ms.dtype)
    damping = config.pretrain_damping or max(0.1, 2 * abs(min(float(ritz[0]), 0.0)))
    ritz_f = lanczos(ms.finetune_hessian(finetune), 40, dtype=ms.dtype)
    finetune_damping = max(config.finetune_damping, 2 * abs(min(float(ritz_f[0]), 0.0)))
    stored = experiment["validation"]["indices"]
    k = min(config.removals, len(stored))
    chosen = [stored[j] for j in evenly_spaced(len(stored), k)]
    candidates = data.pretrain[0][chosen].to(dtype), data.pretrain[1][chosen]
    solvers = dict(
        pretrain_solver=CG(damping, config.cg_iters, tol=1e-10, squared=False),
        finetune_solver=CG(finetune_damping, config.cg_iters, tol=1e-10, squared=False),
    )
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", RuntimeWarning
        )  # Adam's optimum is not stationary
        scores = ms.scores(sample, finetune, test, candidates, **solvers)
        solves = [
            dataclasses.asdict(s)
            for s in ms.report.pretrain_solves + ms.report.finetune_solves
        ]
        identity = ms.scores(sample, finetune, test, candidates, Identity(), Identity())
    params = [*bar.parameters(), *head.parameters()]
    model = lambda x: fhead(emb(x))  # noqa: E731
    stage1 = Proximal.at(
        params,
        lambda: nnf.cross_entropy(head(bar(sample[0])).double(), sample[1]),
        damping,
    )
    step = 1 / (float(ritz[-1]) + damping)  # 1 / the largest curvature, H_G + lambda_1 I
    strong = float(ritz[0]) + damping  # the smallest
    if config.accelerated and strong <= 0:
        raise ValueError(
            f"pretrain_damping: {damping} does not make H_G + lambda_1 I positive definite "
            f"(h_min ~ {float(ritz[0]):.3g}); accelerated descent needs it"
        )
    if tc.case == "fixed":
        features: list[Tensor] = [in_chunks(emb, finetune[0])]  # the current embedding's
        stage2 = Proximal.at(
            list(fhead.parameters()),
            lambda: nnf.cross_entropy(fhead(features[0]).double(), finetune[1]),
            finetune_damping,
        )

        def finetune_stage() -> float:
            features[0] = in_chunks(emb, finetune[0])
            return fit_lbfgs(stage2, tol=config.tol, max_iter=config.max_iter, restarts=1)

    else:
        # W, and W_bar as stage 1 leaves it
        ws, anchors = list(emb.parameters()), list(bar.parameters())

        def case2() -> Tensor:
            value = nnf.cross_entropy(fhead(emb(finetune[0])).double(), finetune[1])
            return value + tc.alpha * sum(
                ((w - a.detach()).double() ** 2).sum() for w, a in zip(ws, anchors)
            )

        stage2 = Proximal.at([*ws, *fhead.parameters()], case2, finetune_damping)
        curvatures = (  # the smallest and the largest of K + lambda_2 I
            float(ritz_f[0]) + finetune_damping,
            float(ritz_f[-1]) + finetune_damping,
        )

        def finetune_stage() -> float:
            return accelerate(
                stage2,
                1 / curvatures[1],
                curvatures[0],
                tol=config.tol,
                max_iter=config.max_iter,
            )

    def response(x: Tensor, y: Tensor, eps: float) -> tuple[float, float, float]:
        """The summed test loss after both proximal stages at this eps, and the two gradient norms."""
        moved = dataclasses.replace(
            stage1,
            extra=lambda: nnf.cross_entropy(head(bar(x)).double(), y, reduction="sum"),
            eps=eps,
        )
        if config.accelerated:
            g1 = accelerate(moved, step, strong, tol=config.tol, max_iter=config.max_iter)
        else:
            g1 = descend(moved, step, tol=config.tol, max_iter=config.max_iter)
        g2 = finetune_stage()
        loss = summed_loss(model, test)
        _load(stage1.params, stage1.anchor)
        _load(stage2.params, stage2.anchor)
        return loss, g1, g2

    eps = config.eps or 0.1 / len(sample[1])
    grad_g = per_example_norms(ms, candidates)
    # a push eps ||grad g(z)|| of at most eps (of exactly eps with equal_push)
    steps = [eps / (n if config.equal_push else max(1.0, n)) for n in grad_g]
    measured, half, norms = [], [], []
    for j in progress(range(k), desc="proximal responses"):
        x, y = candidates[0][j : j + 1], candidates[1][j : j + 1]
        h = steps[j]
        (up, g1, g2), (down, h1, h2) = response(x, y, h), response(x, y, -h)
        measured.append((up - down) / (2 * h))
        norms.append((g1, g2, h1, h2))  # stage 1 and 2 at +eps, then at -eps
        if j < config.linearity:
            (up, *_), (down, *_) = response(x, y, h / 2), response(x, y, -h / 2)
            half.append((up - down) / h)
    predicted = scores.tolist()
    return {
        "config": config.as_dict(),
        "experiment": tc.as_dict(),
        # the weights' mean test loss, and the stored experiment's (equal where they are its)
        "test_loss": mean_loss(emb, fhead, test),
        "stored_test_loss": experiment["validation"]["original_loss"],
        "pretrain_damping": damping,
        "finetune_damping": finetune_damping,
        "eps": eps,
        "eps_per_removal": steps,
        "sample_size": len(sample[1]),
        "finetune_sample_size": len(finetune[1]),
        "hessian_extremes": [float(ritz[0]), float(ritz[-1])],
        "finetune_hessian_extremes": [float(ritz_f[0]), float(ritz_f[-1])],
        "solves": solves,
        "gradient_norms": {  # at the trained weights: ||grad G_S||, ||grad F|| (Case 2: of eq. 12)
            "pretraining": _norm(stage1.slope),
            "finetuning": _norm(stage2.slope),
        },
        "removed_gradient_norms": grad_g,
        "indices": chosen,
        "predicted": predicted,  # d(summed test loss) / d eps
        "identity_predicted": identity.tolist(),
        "measured": measured,
        "measured_at_half_eps": half,
        "response_gradient_norms": norms,
        "agreement": dataclasses.asdict(agreement(predicted, measured)),
        "identity": dataclasses.asdict(agreement(identity.tolist(), measured)),
    }
