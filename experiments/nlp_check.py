"""Section 4.5's check: the scores against the proximal response, re-optimized.

For a few sentences, one more copy of the sentence beside H_G's sample S moves the pretraining
optimum (:func:`proximal_pretrain`), finetuning follows on the moved states
(:func:`proximal_finetune`), and the first table tweet's loss is read at +eps and -eps;
:func:`proximal_check` sets the central difference beside the predicted score, and beside the
identity's score (both inverse Hessians replaced by I, :func:`identity_scores`), which says how
much of the agreement the inverse Hessians earn.
"""

from __future__ import annotations

import copy
import dataclasses
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import Tensor

from influence import Identity

from . import lm, text
from .fit import restore
from .nlp_scoring import multistage
from .nlp_task import Section45Config, TextData, stage_data
from .nlp_training import Trained
from .objectives import Proximal
from .stats import agreement


def _flat(modules: Sequence[torch.nn.Module]) -> list[torch.nn.Parameter]:
    return [p for m in modules for p in m.parameters()]


def proximal_pretrain(
    encoder: lm.Encoder,
    head: lm.LMHead,
    sample: Tensor,
    z: Tensor,
    eps: float,
    damping: float,
    iters: int,
    start: Sequence[Tensor] | None = None,
) -> tuple[lm.Encoder, lm.LMHead, float]:
    """argmin over phi = (W, U) of ``G_S(phi) + eps g(z; phi) + lambda_1/2 ||phi - phi_s||^2 - dG_S(phi_s) . phi``.

    G_S is the mean of g over the Hessian's sample S. The linear term makes phi_s exactly
    stationary at eps = 0, so the response to eps is what the damped influence function
    linearizes (eq. 4 with ``H_G + lambda_1 I``), whether or not Adam reached a minimum.
    ``start`` (flat parameter tensors) warm-starts L-BFGS. Returns the moved encoder and head,
    and the final gradient norm.
    """
    enc, hd = copy.deepcopy(encoder), copy.deepcopy(head)
    params = _flat([enc, hd])
    stage = Proximal.at(
        params, lambda: lm.lm_losses(hd(enc(sample)), sample).mean(), damping, dtype=None
    )
    if start is not None:
        restore(params, start)
    moved = dataclasses.replace(
        stage, extra=lambda: lm.lm_losses(hd(enc(z)), z).sum(), eps=eps
    )
    norm = lm.fit_full_batch(moved, tol=1e-9, max_iter=iters)
    return enc, hd, norm


def proximal_finetune(
    classifier: lm.Classifier,
    pooled_s: Tensor,
    pooled: Tensor,
    labels: Tensor,
    l2: float,
    damping: float,
) -> lm.Classifier:
    """argmin over Theta of ``F(Theta; W') + lambda_2/2 ||Theta - Theta_s||^2 - dF(Theta_s; W_s) . Theta``.

    In float64, on the mean-pooled states of the moved encoder."""
    head = copy.deepcopy(classifier).double()
    params = list(head.parameters())

    def f(features: Tensor) -> Tensor:
        return nnf.cross_entropy(head.ffn(features), labels) + l2 / 2 * sum(
            (p**2).sum() for p in params
        )

    # anchored where the encoder was, with the slope there; then F on the moved states
    stage = Proximal.at(params, lambda: f(pooled_s), damping)
    lm.fit_full_batch(
        dataclasses.replace(stage, base=lambda: f(pooled)), tol=1e-12, max_iter=500
    )
    return head


@dataclass
class CheckData:
    """What every response of the check reads, on the model's device: S, the finetuning
    tweets (with their float64 states under the unmoved encoder) and the first table tweet."""

    sample: Tensor  # S, padded
    train_ids: list[list[int]]
    train_y: Tensor
    pooled_s: Tensor
    test_ids: list[list[int]]
    test_y: Tensor


def check_data(data: TextData, trained: Trained, sample: list[int]) -> CheckData:
    """:class:`CheckData` for the first table tweet, with S the sentences ``sample`` indexes."""
    device = lm.device_of(trained.encoder)
    sample_x = text.pad(data.ids([data.sentences[i] for i in sample])).to(device)
    train_ids = data.ids(data.train[0])
    test_ids = data.ids([data.test[0][data.table[0]]])
    train_y = torch.tensor(data.train[1], device=device)
    test_y = torch.tensor([data.test[1][data.table[0]]], device=device)
    pooled_s = lm.pooled_features(trained.encoder, train_ids).double()
    return CheckData(sample_x, train_ids, train_y, pooled_s, test_ids, test_y)


def response(
    config: Section45Config,
    trained: Trained,
    fixed: CheckData,
    z: Tensor,
    eps: float,
    damping: float,
) -> tuple[float, list[float]]:
    """``d f(x_t)/d eps`` of sentence ``z`` by central differences, re-optimizing both stages at
    +eps and -eps, each from the trained weights; and the final gradient norms of the two
    pretraining re-optimizations (+eps, then -eps)."""
    losses, gradient_norms = {}, []
    for sign in (1, -1):
        enc, hd, norm = proximal_pretrain(
            trained.encoder,
            trained.head,
            fixed.sample,
            z,
            sign * eps,
            damping,
            config.loo_iters,
        )
        gradient_norms.append(norm)
        head = proximal_finetune(
            trained.classifier,
            fixed.pooled_s,
            lm.pooled_features(enc, fixed.train_ids).double(),
            fixed.train_y,
            config.finetune_l2,
            config.finetune_damping,
        )
        with torch.no_grad():
            test_logits = head.ffn(lm.pooled_features(enc, fixed.test_ids).double())
        losses[sign] = float(
            nnf.cross_entropy(test_logits, fixed.test_y, reduction="sum")
        )
    return (losses[1] - losses[-1]) / (2 * eps), gradient_norms


def sentence_gradient_norm(trained: Trained, z: Tensor) -> float:
    """||grad g(z)|| over (W, U) at the trained weights: how hard one sentence pushes."""
    params = _flat([trained.encoder, trained.head])
    loss = lm.lm_losses(trained.head(trained.encoder(z)), z).sum()
    grads = torch.autograd.grad(loss, params)
    return float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))


def identity_scores(
    config: Section45Config,
    data: TextData,
    trained: Trained,
    sample: list[int],
    chosen: list[int],
) -> list[float]:
    """The first table tweet's scores of the ``chosen`` sentences with both inverse Hessians
    replaced by the identity: the plain gradient products the inverses are there to correct."""
    staged = stage_data(config, data, sample)
    ids = data.ids([data.sentences[i] for i in chosen])
    candidates = text.padded_batches(ids, config.score_batch)  # in ``chosen`` order
    scores = multistage(config, trained).scores(
        staged["pretrain"],
        staged["finetune"],
        staged["test"],
        candidates,
        Identity(),
        Identity(),
        per_test=True,
        batch_size=config.score_batch,
    )
    return scores[:, 0].cpu().tolist()


def proximal_check(
    config: Section45Config,
    data: TextData,
    trained: Trained,
    scores: Tensor,
    sample: list[int],
    damping: float,
) -> dict[str, Any]:
    """Predicted against re-optimized ``d f(x_t)/d eps`` for the first table tweet, by central differences.

    Sentences: the ``loo_top`` of largest |score| and ``loo_random`` drawn at random from the
    rest. eps = 1/|S|, one more copy of the sentence beside S. Each response re-optimizes the
    pretraining objective (:func:`proximal_pretrain`), then finetuning on the moved embedding
    (:func:`proximal_finetune`), at +eps and -eps (:func:`response`). Each sentence's
    ||grad g(z)|| and the L-BFGS gradient norms of its two re-optimizations are recorded, and
    the identity's scores (:func:`identity_scores`) are set against the same measurements.
    """
    start = time.perf_counter()
    column = scores[:, 0]
    top = torch.argsort(column.abs(), descending=True)[: config.loo_top].tolist()
    rest = sorted(set(range(len(column))) - set(top))
    chosen = top + random.Random(config.seed + 2).sample(
        rest, min(config.loo_random, len(rest))
    )
    fixed = check_data(data, trained, sample)
    eps = 1 / len(sample)
    measured, gradient_norms, sentence_norms = [], [], []
    for i in chosen:
        z = text.pad(data.ids([data.sentences[i]])).to(fixed.sample.device)
        slope, norms = response(config, trained, fixed, z, eps, damping)
        measured.append(slope)
        gradient_norms.append(norms)
        sentence_norms.append(sentence_gradient_norm(trained, z))
    predicted = [float(column[i]) for i in chosen]
    identity = identity_scores(config, data, trained, sample, chosen)
    fit = agreement(predicted, measured)
    return {
        "indices": chosen,
        "top": len(top),
        "eps": eps,
        "predicted": predicted,
        "measured": measured,
        "agreement": dataclasses.asdict(fit),
        "interval": list(fit.interval()),
        "identity_predicted": identity,
        "identity": dataclasses.asdict(agreement(identity, measured)),
        "sentence_gradient_norms": sentence_norms,
        "gradient_norms": gradient_norms,  # L-BFGS's last, [+eps, -eps] a sentence
        "max_gradient_norm": max(max(n) for n in gradient_norms),
        "start": "trained weights, at +eps and at -eps",
        "minutes": (time.perf_counter() - start) / 60,
    }
