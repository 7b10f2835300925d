"""Rung 2 of section 4.1's ladder of ground truths: the proximal response of a stored network.

The stored Table A network, whatever Adam left it at. Each stage is re-optimized from its
trained weights phi_s with a proximity term ``lambda/2 ||phi - phi_s||^2`` and with
``grad G(phi_s) . phi`` subtracted, so that phi_s is exactly stationary when nothing is
perturbed (:class:`~experiments.objectives.Proximal`). Setting the gradient of
``G(phi) + eps g(z; phi) + lambda/2 ||phi - phi_s||^2 - grad G(phi_s) . phi`` to zero and
differentiating at eps = 0 gives ``dphi/deps = -(H_G + lambda I)^-1 grad g(z)``: the damped
influence function (damping on H, not on H^2) is the exact linearization of this response,
a proximal Bregman response in the sense of Bae et al. (2022) with the loss in place of the
Bregman divergence. It is measured by central differences at +eps and -eps, in float32 on
Table A's network, whose max pooling makes the objective only piecewise smooth. In Case 2,
stage 2 re-optimizes (W, Theta) on ``F + alpha ||W - W_bar||^2`` (eq. 12) around the W_bar
that stage 1 moved, and its linearization is eqs. 12-15 with the same dampings.
Rung 3 is :mod:`experiments.converged_loo`.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from influence import CG, Identity
from influence.progress import progress
from influence.spectrum import lanczos

from .configs import TransferConfig
from .devices import resolve
from .evaluation import mean_loss
from .fit import accelerate, descend, fit_lbfgs, restore
from .models import in_chunks
from .objectives import Proximal, norm
from .pipeline import Lab, measured_weights
from .removals import evenly_spaced, per_example_norms, summed_loss
from .scoring import describe_solvers
from .stats import agreement
from .transfer_data import TransferData, subsample
from .transfer_training import TrainedTransfer, train_transfer
from .warning_counts import counted_warnings


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
    device: str = "auto"  # experiments.devices.resolve: "auto" is CUDA where there is one

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _case_weights(
    experiment: dict[str, Any], case: str | None, lab: Lab | None = None
) -> tuple[TransferConfig, TransferData, TrainedTransfer]:
    """The experiment's trained weights, or, for ``case="updated"`` on a Case 1 experiment,
    Case 2 finetuning of its pretrained weights (the pretraining and the removals are shared).

    Rung 2 compares the scores with a response measured from these same weights, so it needs
    the experiment's config and removals but not its stored measurements: the weights are not
    checked against them (the result records both test losses).
    """
    lab = lab or Lab()
    tc, data, trained, _ = measured_weights(experiment, check=False, lab=lab)
    if case is None or case == tc.case:
        return tc, data, trained
    if (tc.case, case) != ("fixed", "updated"):
        raise ValueError(
            f"case: a {tc.case!r} experiment can be measured as itself or, if 'fixed', "
            f"as 'updated'; got {case!r}"
        )
    updated = tc.replace(case="updated")
    cache = lab.cache if lab.cache is not None else False
    return updated, data, train_transfer(updated, data, cache=cache, pretrained_by=tc)


def _finetune_stage(
    tc: TransferConfig,
    config: ProximalConfig,
    modules: tuple[nn.Module, nn.Module, nn.Module],
    finetune: tuple[Tensor, Tensor],
    finetune_damping: float,
    ritz_f: Tensor,
) -> tuple[Proximal, Callable[[], float]]:
    """Stage 2's proximal objective at the trained weights, and the function that re-optimizes
    it on the embedding stage 1 moved: in Case 1, Theta on F over the moved features (L-BFGS);
    in Case 2, (W, Theta) on eq. 12 around the moved W_bar (:func:`accelerate`). The modules
    are (W, W_bar, Theta); W_bar is W itself in Case 1."""
    emb, bar, fhead = modules
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

    return stage2, finetune_stage


def proximal_response(
    experiment: dict[str, Any],
    config: ProximalConfig = ProximalConfig(),
    lab: Lab | None = None,
) -> dict[str, Any]:
    """Rung 2: the damped scores against the two-stage proximal response, by central differences.

    G is the mean loss over the Hessian's own sample S (``hessian_examples``, or a smaller
    ``sample_size`` drawn the same way), so the removal and the Hessian that predicts it are
    one consistent pair; eps defaults to a tenth of one copy of z beside S (``0.1/|S|``),
    divided by ``||grad g(z)||`` where that exceeds 1. The stored experiment's weights come
    from ``lab``'s cache (default: ``$INFLUENCE_CACHE``), trained on its device where they
    are not there.
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
    tc, data, trained = _case_weights(experiment, config.case, lab)
    net = copy.deepcopy(trained.net)
    device = resolve(config.device)
    dtype = torch.float64 if config.float64 else next(net.embedding.parameters()).dtype
    emb, bar, head, fhead = (
        net.embedding,
        net.pretrained_embedding,
        net.pretrain_head,
        net.finetune_head,
    )
    for module in (emb, bar, head, fhead):  # bar is emb itself in Case 1
        module.to(device, dtype)

    def placed(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return x.to(device, dtype), y.to(device)

    sample = placed(
        *subsample(data.pretrain, config.sample_size or tc.hessian_examples, tc.seed)
    )
    finetune = placed(
        *subsample(
            data.finetune,
            config.finetune_sample_size or tc.finetune_hessian_examples,
            tc.seed,
        )
    )
    test = placed(*data.test)
    ms = net.multistage(case=tc.case, alpha=tc.alpha)
    ritz = lanczos(ms.pretrain_hessian(sample), 40, dtype=ms.dtype)
    damping = config.pretrain_damping or max(0.1, 2 * abs(min(float(ritz[0]), 0.0)))
    ritz_f = lanczos(ms.finetune_hessian(finetune), 40, dtype=ms.dtype)
    finetune_damping = max(config.finetune_damping, 2 * abs(min(float(ritz_f[0]), 0.0)))
    stored = experiment["validation"]["indices"]
    k = min(config.removals, len(stored))
    chosen = [stored[j] for j in evenly_spaced(len(stored), k)]
    candidates = placed(data.pretrain[0][chosen], data.pretrain[1][chosen])
    solvers = dict(
        pretrain_solver=CG(damping, config.cg_iters, tol=1e-10, operator="H"),
        finetune_solver=CG(finetune_damping, config.cg_iters, tol=1e-10, operator="H"),
    )
    with counted_warnings() as warned:  # Adam's optimum is not stationary
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
    stage2, finetune_stage = _finetune_stage(
        tc, config, (emb, bar, fhead), finetune, finetune_damping, ritz_f
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
        restore(stage1.params, stage1.anchor)
        restore(stage2.params, stage2.anchor)
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
        "solvers": describe_solvers(solvers),
        "solves": solves,
        "gradient_norms": {  # at the trained weights: ||grad G_S||, ||grad F|| (Case 2: of eq. 12)
            "pretraining": norm(stage1.slope),
            "finetuning": norm(stage2.slope),
        },
        "warnings": warned,  # of the two scorings, by kind
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
