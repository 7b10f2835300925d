"""Leave-one-out validation as Appendix B runs it: remove an example, continue both stages from
the trained weights, and measure the change in test loss twice: against the original model (the
paper's raw difference) and against the same continued training without the removal (the
controlled difference).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from influence.progress import progress

from .configs import TransferConfig
from .evaluation import mean_loss
from .fit import batch_indices
from .transfer_data import TransferData
from .transfer_training import TrainedTransfer, finetune_stage, pretrain_stage


@dataclass
class Validation:
    """Leave-one-out retraining of ``indices``: the measured changes in mean test loss."""

    indices: list[int]
    # -score / (m * n_test): the first-order change in mean test loss
    predicted: list[float]
    # how often continued pretraining drew the example (0: the removal changed nothing)
    draws: list[int]
    # loss after removal and continued training, minus the original model's loss
    raw: list[float]
    # the same, minus the same continued training without the removal
    controlled: list[float]
    original_loss: float
    control_loss: float

    def as_dict(self) -> dict[str, Any]:
        """The JSON-ready fields."""
        return dataclasses.asdict(self)


def retrained_loss(
    config: TransferConfig,
    data: TransferData,
    trained: TrainedTransfer,
    remove: int | None,
) -> float:
    """Mean test loss after continuing both stages from the trained weights, without example ``remove``.

    ``remove=None`` is the control: the same steps, batches and seed with nothing removed.
    Pretraining resumes from (W_bar, U*) and Adam's state; finetuning then resumes from
    Theta* (and, in Case 2, from the new W_bar), as Appendix B's "starting from the original
    models' weights".
    """
    x, y = data.pretrain
    m = len(y)
    weights = None
    if remove is not None:
        weights = torch.full((m,), 1 / (m - 1), device=x.device)
        weights[remove] = 0.0
    embedding = copy.deepcopy(trained.net.pretrained_embedding)
    head_u = copy.deepcopy(trained.net.pretrain_head)
    head_t = copy.deepcopy(trained.net.finetune_head)
    pretrain_stage(
        config,
        embedding,
        head_u,
        data.pretrain,
        steps=config.retrain_pretrain_steps,
        seed=config.continuation_seed,
        state=trained.pretrain_adam,
        weights=weights,
        desc="retraining: pretraining",
    )
    pretrained = copy.deepcopy(embedding)
    finetune_stage(
        config,
        embedding,
        head_t,
        pretrained,
        data.finetune,
        steps=config.retrain_finetune_steps,
        seed=config.continuation_seed,
        state=trained.finetune_adam,
        desc="retraining: finetuning",
    )
    return mean_loss(embedding, head_t, data.test)


def validate(
    config: TransferConfig,
    data: TransferData,
    trained: TrainedTransfer,
    scores: Tensor,
    indices: Tensor,
) -> Validation:
    """Retrain without each of ``indices`` and compare with ``-scores / (m * n_test)``."""
    m, n_test = len(data.pretrain[1]), len(data.test[1])
    original = mean_loss(trained.net.embedding, trained.net.finetune_head, data.test)
    control = retrained_loss(config, data, trained, None)
    raw, controlled = [], []
    for i in progress(indices.tolist(), desc="leave-one-out"):
        loss = retrained_loss(config, data, trained, i)
        raw.append(loss - original)
        controlled.append(loss - control)
    predicted = (-scores.cpu()[indices.cpu()] / (m * n_test)).tolist()
    draws = removal_draws(config, m, indices.tolist())
    return Validation(
        indices.tolist(), predicted, draws, raw, controlled, original, control
    )


def removal_draws(config: TransferConfig, m: int, indices: list[int]) -> list[int]:
    """How often :func:`retrained_loss`'s continued pretraining draws each example.

    An example it never draws changes nothing: its removal leaves the retrained model, and so
    the controlled difference, exactly as the control's.
    """
    drawn = torch.cat(
        list(
            batch_indices(
                m,
                steps=config.retrain_pretrain_steps,
                batch_size=config.batch_size,
                seed=config.continuation_seed,
            )
        )
    )
    counts = torch.bincount(drawn, minlength=m)
    return [int(counts[i]) for i in indices]
