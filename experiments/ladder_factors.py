"""Between rungs 3 and 1 of section 4.1's ladder: which difference moves r, one at a time.

Rung 3 (:mod:`.converged_loo`) and rung 1 (Appendix B, ``sec41.json``) differ in three ways at
once: the network (:func:`~experiments.models.small_mnist` against Table A), the weight decay and
data size (0.03 and m = 2,000 against none and every image of digits 0-3), and the retraining
(converged Newton/L-BFGS against 100 + 100 continued Adam steps). This module changes one of
them on rung 3's network, data and removals:

- :func:`protocol_factor`: Appendix B's retraining in place of converged retraining. From
  rung 3's optimum, 100 continued Adam steps of pretraining without the removed example, then
  100 of finetuning, minus the same steps with nothing removed (the controlled difference of
  :mod:`.validation`), for several batch orders.
- :func:`decay_factor`: rung 3 itself at another weight decay, on the same removals.
- :func:`table_a_cost`: what one converged retraining of Table A's network at rung 3's data
  size would cost, measured on a few full-batch float64 evaluations.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .configs import MNIST_FIXED, RETEST_SEED
from .converged_loo import (
    ConvergedConfig,
    ConvergedOptimum,
    converged_loo,
    converged_optimum,
    converged_scores,
)
from .fit import fit_adam, restore, snapshot
from .models import MultiStageNet, small_mnist, table_a
from .objectives import StageObjective, finetune_objective
from .removals import per_example_norms, spread
from .stats import agreement


@dataclass(frozen=True)
class ProtocolConfig:
    """Appendix B's continued training (rung 1's steps, batch size, learning rate and batch
    orders) applied at rung 3's optimum, to rung 3's removals."""

    converged: ConvergedConfig = ConvergedConfig()
    pretrain_steps: int = MNIST_FIXED.retrain_pretrain_steps
    finetune_steps: int = MNIST_FIXED.retrain_finetune_steps
    batch_size: int = MNIST_FIXED.batch_size
    lr: float = MNIST_FIXED.lr
    # rung 1's first batch order, then its retest's, then one more: the mean over orders is a
    # less noisy ground truth, as in experiments.sec41.mean_of_orders
    seeds: tuple[int, ...] = (MNIST_FIXED.continuation_seed, RETEST_SEED, RETEST_SEED + 1)
    # Rung 1 resumes the moment estimates Adam ended training with, so its continued training
    # starts without a jolt. Rung 3 ended with Newton, not Adam: its moments are made by
    # ``burn_in`` Adam steps from the optimum with nothing removed (seed ``burn_in_seed``,
    # none of the orders'), the weights then put back. A fresh Adam, whose first steps move
    # every weight by about ``lr``, is measured beside it on the first order alone.
    burn_in: int = 100
    burn_in_seed: int = 0
    fresh_too: bool = True

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Dropped(StageObjective):
    """G with example weights held fixed (rung 3's: 1/m, a removed example 0), whose
    minibatch estimate is ``sum(m * w_i * loss_i) / batch`` over the batch drawn: unbiased
    for the full objective, and, as in Appendix B, equal to the control's on every batch that
    does not draw the removed example. (:class:`~experiments.objectives.StageObjective`
    renormalizes each batch to the total weight instead, which scales every batch by
    ``(m - 1) / m`` once an example is removed.)"""

    def value(self, index: Tensor | None = None) -> Tensor:
        """The objective, or with ``index`` its unrenormalized minibatch estimate."""
        if index is None or self.weights is None:
            return super().value(index)
        losses = self.loss(self.forward(self.x[index]), self.y[index])
        return (len(self.y) * self.weights[index] * losses).mean() + self.regularizer()


AdamStates = tuple[
    dict | None, dict | None
]  # pretraining's and finetuning's, or None: fresh


def burned_in_states(opt: ConvergedOptimum, config: ProtocolConfig) -> AdamStates:
    """Each stage's Adam moments after ``config.burn_in`` steps from the optimum ``opt`` holds,
    nothing removed; the weights are put back. What continued training resumes from, as rung
    1 resumes the state Adam ended training with."""
    pre = opt.pre
    at = snapshot(pre.params), snapshot(list(opt.fhead.parameters()))
    adam = dict(batch_size=config.batch_size, lr=config.lr, seed=config.burn_in_seed)
    first = fit_adam(pre, steps=config.burn_in, desc="burn-in: pretraining", **adam)
    stage2 = finetune_objective("fixed", opt.emb, opt.fhead, *opt.finetune, l2=pre.l2)
    second = fit_adam(stage2, steps=config.burn_in, desc="burn-in: finetuning", **adam)
    restore(pre.params, at[0])
    restore(list(opt.fhead.parameters()), at[1])
    return first.state, second.state


def continued_test_loss(
    opt: ConvergedOptimum,
    config: ProtocolConfig,
    seed: int,
    remove: int | None = None,
    states: AdamStates = (None, None),
) -> tuple[float, float, float]:
    """The summed test loss after Appendix B's continued training from the optimum ``opt``
    holds, without pretraining example ``remove`` (None: the control, nothing removed).

    Pretraining continues on rung 3's G (its weight decay included) with the removed example's
    weight 0 and the others' 1/m, rung 3's convention, so that ``-score / m`` predicts the
    change; it is still drawn, so the batches are the control's, and a batch that draws it
    leaves it out without renormalizing (:class:`Dropped`). Finetuning then continues on
    the moved embedding. Each stage's Adam resumes ``states`` (None: starts afresh), the same
    start for a removal and its control. The weights are restored afterwards. Returns the
    test loss and each stage's full-batch gradient norm where it stopped.
    """
    pre, m = opt.pre, len(opt.pretrain[1])
    at = snapshot(pre.params), snapshot(list(opt.fhead.parameters()))
    weights = torch.full((m,), 1 / m, dtype=torch.float64, device=pre.x.device)
    if remove is not None:
        weights[remove] = 0.0
    stage1 = Dropped(pre.params, pre.forward, pre.x, pre.y, l2=pre.l2, weights=weights)
    adam = dict(batch_size=config.batch_size, lr=config.lr, seed=seed)
    fit_adam(
        stage1,
        steps=config.pretrain_steps,
        state=states[0],
        desc="continued pretraining",
        **adam,
    )
    stage2 = finetune_objective("fixed", opt.emb, opt.fhead, *opt.finetune, l2=pre.l2)
    fit_adam(
        stage2,
        steps=config.finetune_steps,
        state=states[1],
        desc="continued finetuning",
        **adam,
    )
    out = opt.test_loss(), stage1.gradient_norm(), stage2.gradient_norm()
    restore(pre.params, at[0])
    restore(list(opt.fhead.parameters()), at[1])
    return out


def orders_summary(
    predicted: Sequence[float],
    identity: Sequence[float],
    orders: Sequence[Sequence[float]],
) -> dict[str, Any]:
    """The scores' and the identity's agreement with the mean of several batch orders'
    measurements, their pairwise test-retest r, and the noise ceiling (the square root of
    Spearman-Brown's reliability of the mean), as :func:`experiments.sec41.mean_of_orders`."""
    pairs = [
        agreement(a, b).pearson_r for i, a in enumerate(orders) for b in orders[i + 1 :]
    ]
    k, r_tt = len(orders), sum(pairs) / len(pairs)
    reliability = k * r_tt / (1 + (k - 1) * r_tt)
    mean = [sum(column) / k for column in zip(*orders)]
    return {
        "orders": k,
        "mean": mean,
        "score": dataclasses.asdict(agreement(predicted, mean)),
        "identity": dataclasses.asdict(agreement(identity, mean)),
        "test-retest r": pairs,
        "mean test-retest r": r_tt,
        "ceiling": max(reliability, 0.0) ** 0.5,
    }


def measure_orders(
    opt: ConvergedOptimum,
    config: ProtocolConfig,
    chosen: Sequence[int],
    seeds: Sequence[int],
    states: AdamStates,
) -> dict[str, Any]:
    """The controlled differences of removing each of ``chosen``, once a batch order of
    ``seeds``, with each order's control: its test loss, its drift from the optimum's and the
    gradient norms continued training left it at."""
    original = opt.test_loss()
    orders, controls, seconds = [], [], []
    for seed in seeds:
        start = time.perf_counter()
        control, g_pre, g_fine = continued_test_loss(opt, config, seed, None, states)
        losses = [continued_test_loss(opt, config, seed, i, states)[0] for i in chosen]
        orders.append([loss - control for loss in losses])
        controls.append(
            {
                "seed": seed,
                "test_loss": control,
                "drift": control - original,  # what the steps alone do to the test loss
                "gradient_norms": {"pretraining": g_pre, "finetuning": g_fine},
            }
        )
        seconds.append(time.perf_counter() - start)
    return {"orders_measured": orders, "controls": controls, "seconds_per_order": seconds}


def protocol_factor(config: ProtocolConfig = ProtocolConfig()) -> dict[str, Any]:
    """Rung 3's network, data, weight decay, scores and removals, measured by Appendix B's
    continued training instead of converged retraining (:func:`continued_test_loss`), once
    for each batch order of ``config.seeds``, from burned-in Adam moments
    (:func:`burned_in_states`); with ``config.fresh_too``, also from a fresh Adam on the
    first order (``"fresh"``).

    ``predicted``, ``identity_predicted`` and ``measured`` (the first order's controlled
    differences) are laid out as rung 3's, so the ladder reads both alike.
    """
    c = config.converged
    opt = converged_optimum(c)
    scores, identity, _, _ = converged_scores(opt)
    m = len(opt.pretrain[1])
    chosen = spread(scores, c.removals)
    removed = (opt.pretrain[0][chosen], opt.pretrain[1][chosen])
    pushes = [g / m for g in per_example_norms(opt.multistage(), removed)]
    predicted = (-scores[chosen] / m).tolist()
    identity_predicted = (-identity[chosen] / m).tolist()
    run = measure_orders(opt, config, chosen, config.seeds, burned_in_states(opt, config))
    first = run["orders_measured"][0]
    out = {
        "config": config.as_dict(),
        "m": m,
        "n_test": len(opt.test[1]),
        "parameters": {
            "pretraining": sum(p.numel() for p in opt.pre.params),
            "finetuning": sum(p.numel() for p in opt.fhead.parameters()),
        },
        "optimum_gradient_norms": dict(
            zip(("pretraining", "finetuning"), opt.gradient_norms)
        ),
        "original_test_loss": opt.test_loss(),
        "indices": chosen,
        "pushes": pushes,  # ||grad g(z)|| / m of each removal
        "predicted": predicted,
        "identity_predicted": identity_predicted,
        "measured": first,
        **run,
        "agreement": dataclasses.asdict(agreement(predicted, first)),
        "identity": dataclasses.asdict(agreement(identity_predicted, first)),
        "mean_of_orders": orders_summary(
            predicted, identity_predicted, run["orders_measured"]
        ),
    }
    if config.fresh_too:
        fresh = measure_orders(opt, config, chosen, config.seeds[:1], (None, None))
        measured = fresh["orders_measured"][0]
        out["fresh"] = {
            **fresh,
            "measured": measured,
            "agreement": dataclasses.asdict(agreement(predicted, measured)),
            "identity": dataclasses.asdict(agreement(identity_predicted, measured)),
        }
    return out


def coarse_to_fine(n: int) -> list[int]:
    """The positions ``0 .. n-1`` in an order whose every prefix is spread over the range
    (0, the middle, the quarters, ...), so that a run cut short keeps removals of every rank."""
    order: list[int] = []
    k = 1
    while len(order) < n:
        k = min(2 * k, n)
        order += [
            p
            for p in sorted({round(j * (n - 1) / max(k - 1, 1)) for j in range(k)})
            if p not in order
        ]
    return order


def decay_factor(
    l2: float,
    indices: Sequence[int],
    converged: ConvergedConfig = ConvergedConfig(),
    budget_minutes: float | None = None,
) -> dict[str, Any]:
    """Rung 3 at weight decay ``l2`` on the removals ``indices`` (rung 3's own), taken in
    :func:`coarse_to_fine` order so that a run stopped by ``budget_minutes`` keeps a spread.

    Where H_G is not positive definite at the optimum there is no isolated minimum to
    linearize around; that is recorded, not raised. Whether each retraining converged is in
    ``retrained_gradient_norms``, beside the pushes ``||grad g(z)|| / m``.
    """
    order = [int(indices[p]) for p in coarse_to_fine(len(indices))]
    config = dataclasses.replace(converged, l2=l2, removals=len(order))
    try:
        run = converged_loo(
            config, choose=lambda s, n: order, budget_minutes=budget_minutes
        )
    except RuntimeError as error:  # converged_optimum: not an isolated minimum
        return {
            "config": config.as_dict(),
            "l2": l2,
            "isolated": False,
            "error": str(error),
        }
    return {**run, "l2": l2, "isolated": True, "budget_minutes": budget_minutes}


def gradient_cost(
    net: MultiStageNet, pair: tuple[Tensor, Tensor], repeats: int = 3
) -> dict[str, Any]:
    """The pretraining objective of ``net`` on ``pair`` in float64 on this machine: its
    parameters, the memory of its dense Hessian, and the seconds of one full-batch gradient
    and of one Hessian-vector product (the units of L-BFGS and of building H_G a column at a
    time), each the best of ``repeats``."""
    x, y = pair
    emb, head = net.embedding.double(), net.pretrain_head.double()
    params = [*emb.parameters(), *head.parameters()]
    objective = StageObjective(params, lambda v: head(emb(v)), x.double(), y)
    p = sum(q.numel() for q in params)

    def gradient() -> tuple[Tensor, ...]:
        return torch.autograd.grad(objective.value(), params, create_graph=True)

    v = [torch.randn_like(q) for q in params]

    def hvp() -> None:
        torch.autograd.grad(gradient(), params, v)

    def best(f: Callable[[], Any]) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            f()
            times.append(time.perf_counter() - start)
        return min(times)

    seconds_hvp = best(hvp)
    return {
        "parameters": p,
        "dense_hessian_gib": p * p * 8 / 2**30,
        "seconds_per_gradient": best(gradient),
        "seconds_per_hvp": seconds_hvp,
        "hours_per_dense_hessian": p * seconds_hvp / 3600,
    }


def table_a_cost(
    converged: ConvergedConfig = ConvergedConfig(), repeats: int = 3
) -> dict[str, Any]:
    """Table A's MNIST network beside rung 3's on rung 3's pretraining images: what one
    full-batch gradient, one Hessian-vector product and a dense H_G cost each
    (:func:`gradient_cost`). Rung 3's converged retraining is built from these units."""
    c = converged
    data = c.transfer_data()
    pair = tuple(t.cpu() for t in data.pretrain)
    torch.manual_seed(c.seed)
    return {
        "config": {**c.as_dict(), "repeats": repeats},
        "m": c.pretrain_size,
        "threads": torch.get_num_threads(),
        "table_a": gradient_cost(table_a("mnist", 4, 6), pair, repeats),
        "rung3": gradient_cost(small_mnist(4, 6, c.channels), pair, repeats),
    }
