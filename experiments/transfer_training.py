"""Training a transfer experiment's two stages as Appendix B does: minibatch Adam, pretraining
on one task, then finetuning on the other (Case 1: the head; Case 2: all of it, near W_bar).

:func:`train_transfer` trains both, or loads them from the :class:`~experiments.cache.WeightCache`;
:func:`pretrain_stage` and :func:`finetune_stage` run one stage, for retraining too.
Everything runs on the config's device (:func:`experiments.devices.resolve`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from influence import MultiStage

from .cache import WeightCache
from .configs import PRETRAINING_FIELDS, TransferConfig
from .devices import resolve
from .fit import AdamRun, fit_adam
from .models import MultiStageNet, table_a
from .objectives import StageObjective, finetune_objective
from .transfer_data import Pair, TransferData, load_transfer_data


@dataclass
class TrainedTransfer:
    """Both stages trained: the network (embedding W*, and W_bar), and Adam's states to resume from."""

    net: MultiStageNet
    pretrain_adam: dict
    finetune_adam: dict
    history: dict[str, list[float]]

    def multistage(self, config: TransferConfig) -> MultiStage:
        """The :class:`MultiStage` view of these weights, with the config's case and alpha."""
        return self.net.multistage(case=config.case, alpha=config.alpha)


def _adam(config: TransferConfig) -> dict[str, Any]:
    """Appendix B's Adam settings of ``config``: its batch size and learning rate."""
    return {"batch_size": config.batch_size, "lr": config.lr}


def pretrain_stage(
    config: TransferConfig,
    embedding: nn.Module,
    head: nn.Module,
    data: Pair,
    *,
    steps: int,
    seed: int,
    state: dict | None = None,
    weights: Tensor | None = None,
    desc: str = "pretraining",
) -> AdamRun:
    """Adam on G over (W, U) for ``steps`` steps; ``weights`` per example (leave-one-out)."""
    objective = StageObjective(
        [*embedding.parameters(), *head.parameters()],
        lambda x: head(embedding(x)),
        *data,
        weights=weights,
    )
    return fit_adam(
        objective, steps=steps, seed=seed, state=state, desc=desc, **_adam(config)
    )


def finetune_stage(
    config: TransferConfig,
    embedding: nn.Module,
    head: nn.Module,
    pretrained: nn.Module,
    data: Pair,
    *,
    steps: int,
    seed: int,
    state: dict | None = None,
    desc: str = "finetuning",
) -> AdamRun:
    """Adam on F for ``steps`` steps, in the config's case (near ``pretrained`` = W_bar in Case 2)."""
    objective = finetune_objective(
        config.case, embedding, head, *data, pretrained=pretrained, alpha=config.alpha
    )
    return fit_adam(
        objective, steps=steps, seed=seed, state=state, desc=desc, **_adam(config)
    )


def transfer_net(config: TransferConfig) -> MultiStageNet:
    """The Table A network of ``config``, freshly initialized from the global generator, on its device."""
    net = table_a(
        config.dataset, len(config.pretrain_classes), len(config.finetune_classes)
    )
    device = resolve(config.device)
    for module in (net.embedding, net.pretrain_head, net.finetune_head):
        module.to(device)
    return net


def _assembled(
    config: TransferConfig, net: MultiStageNet, pretrained: nn.Module
) -> MultiStageNet:
    """The trained weights: W_bar alone where finetuning froze W, else W* beside W_bar."""
    if config.case == "fixed":  # the finetuned copy of W equals W_bar: keep one module
        return MultiStageNet(pretrained, net.pretrain_head, net.finetune_head)
    return MultiStageNet(net.embedding, net.pretrain_head, net.finetune_head, pretrained)


def _modules(net: MultiStageNet, pretrained: nn.Module) -> dict[str, nn.Module]:
    """The four modules a cache file holds, by name."""
    return {
        "embedding": net.embedding,
        "pretrain_head": net.pretrain_head,
        "finetune_head": net.finetune_head,
        "pretrained_embedding": pretrained,
    }


def train_transfer(
    config: TransferConfig,
    data: TransferData,
    *,
    cache: WeightCache | bool = True,
    pretrained_by: TransferConfig | None = None,
) -> TrainedTransfer:
    """Pretrain on ``data.pretrain``, then finetune on ``data.finetune``, on the config's device.

    ``cache``: a :class:`WeightCache`, True for the one at ``$INFLUENCE_CACHE``, or False. A
    cached file made by this config's training fields, network and device type is loaded
    instead of training; one that cannot be used is retrained and overwritten.

    ``pretrained_by``: another config whose pretraining is this one's (the same
    ``PRETRAINING_FIELDS``); its trained, cached weights supply W_bar and U, and only
    finetuning runs. Pretraining draws nothing from the global generator, so the result is
    the one pretraining from scratch would give.
    """
    if cache is True:
        cache = WeightCache.from_env()
    device = resolve(config.device)
    net = transfer_net(config)
    pretrained = copy.deepcopy(net.embedding)
    if cache:
        saved = cache.load(config, _modules(net, pretrained), device)
        if saved is not None:
            return TrainedTransfer(
                _assembled(config, net, pretrained),
                saved["pretrain_adam"],
                saved["finetune_adam"],
                saved["history"],
            )

    torch.manual_seed(config.seed)
    net = transfer_net(config)
    if (
        config.finetune_seed is not None
    ):  # a finetuning replicate: its own head initialization
        torch.manual_seed(config.finetune_seed)
        for module in net.finetune_head.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    if pretrained_by is None:
        pre = pretrain_stage(
            config,
            net.embedding,
            net.pretrain_head,
            data.pretrain,
            steps=config.pretrain_steps,
            seed=config.seed,
        )
    else:
        pre = _pretrained_by(config, net, pretrained_by, cache)
    pretrained = copy.deepcopy(net.embedding)  # W_bar
    fine = finetune_stage(
        config,
        net.embedding,
        net.finetune_head,
        pretrained,
        data.finetune,
        steps=config.finetune_steps,
        seed=config.finetuning_seed,
    )
    trained = TrainedTransfer(
        _assembled(config, net, pretrained),
        pre.state,
        fine.state,
        {"pretrain": pre.history, "finetune": fine.history},
    )
    if cache:
        cache.save(
            config,
            _modules(net, pretrained),
            device,
            pretrain_adam=pre.state,
            finetune_adam=fine.state,
            history=trained.history,
        )
    return trained


def _pretrained_by(
    config: TransferConfig,
    net: MultiStageNet,
    source: TransferConfig,
    cache: WeightCache | bool,
) -> AdamRun:
    """Load ``source``'s pretrained W_bar and U into ``net``; its pretraining run, as if made here."""
    differ = [f for f in PRETRAINING_FIELDS if getattr(config, f) != getattr(source, f)]
    if differ:
        raise ValueError(
            f"pretrained_by: its pretraining differs from this config's in {differ}"
        )
    source = source.replace(
        device=config.device
    )  # the same weights, on this run's device
    trained = train_transfer(source, load_transfer_data(source), cache=cache or True)
    net.embedding.load_state_dict(trained.net.pretrained_embedding.state_dict())
    net.pretrain_head.load_state_dict(trained.net.pretrain_head.state_dict())
    return AdamRun(trained.history["pretrain"], trained.pretrain_adam)
