"""The transfer experiments of section 4: pretrain on some classes, finetune on others,
score every pretraining example, and validate the scores by retraining without them.

- :class:`TransferConfig` names every choice of Appendix B in one frozen dataclass;
- :func:`load_transfer_data` cuts the real datasets into the two tasks;
- :func:`train_transfer` trains both stages with Adam, cached on disk under a key made of
  the config, so that a chapter re-run does not retrain and a changed config never reuses
  stale weights;
- :func:`transfer_scores` runs :class:`influence.MultiStage` with the config's solvers;
- :func:`validate` removes examples one at a time, continues both stages from the trained
  weights as Appendix B does, and measures the change in test loss twice: against the
  original model (the paper's raw difference) and against the same continued training
  without the removal (the controlled difference).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import pickle
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from influence import CG, Identity, MultiStage
from influence.multistage import Report
from influence.progress import progress
from influence.solvers import Solver

from . import data as datasets
from .configs import TransferConfig
from .fit import AdamRun, batch_indices, fit_adam
from .models import MultiStageNet, in_chunks, table_a
from .objectives import StageObjective, finetune_objective
from .provenance import provenance
from .stats import agreement

Pair = tuple[Tensor, Tensor]


@dataclass
class TransferData:
    """The examples of both tasks; labels relabelled to 0..k-1 within each task."""

    pretrain: Pair
    finetune: Pair
    test: Pair  # finetuning test points x_t
    pretrain_test: Pair  # the pretraining task's test images, for its accuracy


def load_transfer_data(config: TransferConfig) -> TransferData:
    """The pretraining and finetuning tasks of ``config`` from the real dataset (``experiments.data``)."""
    load = {"mnist": datasets.load_mnist, "cifar10": datasets.load_cifar10}.get(
        config.dataset
    )
    if load is None:
        raise ValueError(
            f"dataset: expected 'mnist' or 'cifar10', got {config.dataset!r}"
        )
    x, y = load(train=True, raw=True)
    xt, yt = load(train=False, raw=True)

    def split(
        images: Tensor, labels: Tensor, classes: tuple[int, ...], n: int | None
    ) -> Pair:
        xs, ys = datasets.task_split(images, labels, classes, n=n, seed=config.seed)
        return datasets.to_unit(
            xs
        ), ys  # convert after selecting: all of CIFAR-10 as float is 600 MB

    return TransferData(
        pretrain=split(x, y, config.pretrain_classes, config.pretrain_size),
        finetune=split(x, y, config.finetune_classes, config.finetune_size),
        test=split(xt, yt, config.finetune_classes, config.test_size),
        pretrain_test=split(xt, yt, config.pretrain_classes, config.test_size),
    )


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


def _pretrain(
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
    objective = StageObjective(
        [*embedding.parameters(), *head.parameters()],
        lambda x: head(embedding(x)),
        *data,
        weights=weights,
    )
    return fit_adam(
        objective,
        steps=steps,
        batch_size=config.batch_size,
        lr=config.lr,
        seed=seed,
        state=state,
        desc=desc,
    )


def _finetune(
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
    objective = finetune_objective(
        config.case, embedding, head, *data, pretrained=pretrained, alpha=config.alpha
    )
    return fit_adam(
        objective,
        steps=steps,
        batch_size=config.batch_size,
        lr=config.lr,
        seed=seed,
        state=state,
        desc=desc,
    )


def _assembled(
    config: TransferConfig, net: MultiStageNet, pretrained: nn.Module
) -> MultiStageNet:
    """The trained weights: W_bar alone where finetuning froze W, else W* beside W_bar."""
    if config.case == "fixed":  # the finetuned copy of W equals W_bar: keep one module
        return MultiStageNet(pretrained, net.pretrain_head, net.finetune_head)
    return MultiStageNet(net.embedding, net.pretrain_head, net.finetune_head, pretrained)


def cache_dir() -> Path:
    """Where trained weights are kept: ``$INFLUENCE_CACHE``, else ``~/.cache/influence``."""
    return Path(os.environ.get("INFLUENCE_CACHE", Path.home() / ".cache" / "influence"))


PRETRAINING_FIELDS = (
    "dataset",
    "pretrain_classes",
    "pretrain_size",
    "batch_size",
    "lr",
    "pretrain_steps",
    "seed",
)


def train_transfer(
    config: TransferConfig,
    data: TransferData,
    *,
    cache: bool = True,
    pretrained_by: TransferConfig | None = None,
) -> TrainedTransfer:
    """Pretrain on ``data.pretrain``, then finetune on ``data.finetune`` (Case 1: the head; Case 2: all, near W_bar).

    With ``cache``, the weights are stored under :func:`cache_dir` in a file named by
    :meth:`TransferConfig.training_key`, holding the config that made them; a file whose
    config differs, or that cannot be read, is retrained and overwritten.

    ``pretrained_by``: another config whose pretraining is this one's (the same
    ``PRETRAINING_FIELDS``); its trained, cached weights supply W_bar and U, and only
    finetuning runs. Pretraining draws nothing from the global generator, so the result is
    the one pretraining from scratch would give.
    """
    path = cache_dir() / f"{config.dataset}-{config.case}-{config.training_key()}.pt"
    net = table_a(
        config.dataset, len(config.pretrain_classes), len(config.finetune_classes)
    )
    pretrained = copy.deepcopy(net.embedding)
    if cache and path.exists():
        try:
            saved = torch.load(path, weights_only=False)
            if saved["config"] != config.training_fields():
                raise ValueError("stale: made by another config")
            for module, name in (
                (net.embedding, "embedding"),
                (net.pretrain_head, "pretrain_head"),
                (net.finetune_head, "finetune_head"),
                (pretrained, "pretrained_embedding"),
            ):
                module.load_state_dict(saved["weights"][name])
            return TrainedTransfer(
                _assembled(config, net, pretrained),
                saved["pretrain_adam"],
                saved["finetune_adam"],
                saved["history"],
            )
        except (
            OSError,
            KeyError,
            ValueError,
            RuntimeError,
            EOFError,
            pickle.UnpicklingError,
        ) as error:
            warnings.warn(
                f"retraining: the cached weights at {path} cannot be used ({error})",
                stacklevel=2,
            )

    torch.manual_seed(config.seed)
    net = table_a(
        config.dataset, len(config.pretrain_classes), len(config.finetune_classes)
    )
    if pretrained_by is None:
        pre = _pretrain(
            config,
            net.embedding,
            net.pretrain_head,
            data.pretrain,
            steps=config.pretrain_steps,
            seed=config.seed,
        )
    else:
        differ = [
            f
            for f in PRETRAINING_FIELDS
            if getattr(config, f) != getattr(pretrained_by, f)
        ]
        if differ:
            raise ValueError(
                f"pretrained_by: its pretraining differs from this config's in {differ}"
            )
        source = train_transfer(pretrained_by, load_transfer_data(pretrained_by))
        net.embedding.load_state_dict(source.net.pretrained_embedding.state_dict())
        net.pretrain_head.load_state_dict(source.net.pretrain_head.state_dict())
        pre = AdamRun(source.history["pretrain"], source.pretrain_adam)
    pretrained = copy.deepcopy(net.embedding)  # W_bar
    fine = _finetune(
        config,
        net.embedding,
        net.finetune_head,
        pretrained,
        data.finetune,
        steps=config.finetune_steps,
        seed=config.seed,
    )
    trained = TrainedTransfer(
        _assembled(config, net, pretrained),
        pre.state,
        fine.state,
        {"pretrain": pre.history, "finetune": fine.history},
    )
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        weights = {
            "embedding": net.embedding.state_dict(),
            "pretrain_head": net.pretrain_head.state_dict(),
            "finetune_head": net.finetune_head.state_dict(),
            "pretrained_embedding": pretrained.state_dict(),
        }
        torch.save(
            {
                "config": config.training_fields(),
                "weights": weights,
                "pretrain_adam": pre.state,
                "finetune_adam": fine.state,
                "history": trained.history,
            },
            path,
        )
    return trained


def mean_loss(embedding: nn.Module, head: nn.Module, data: Pair) -> float:
    """Mean cross-entropy of ``head(embedding(x))`` over ``data``."""
    x, y = data
    losses = nnf.cross_entropy(
        in_chunks(lambda xb: head(embedding(xb)), x), y, reduction="none"
    )
    return losses.double().mean().item()


def accuracy(embedding: nn.Module, head: nn.Module, data: Pair) -> float:
    """Fraction of ``data`` that ``head(embedding(x))`` classifies correctly."""
    x, y = data
    return (
        (in_chunks(lambda xb: head(embedding(xb)), x).argmax(1) == y)
        .double()
        .mean()
        .item()
    )


def subsample(data: Pair, n: int | None, seed: int) -> Pair:
    """``n`` examples of ``data`` drawn without replacement by a seeded generator (all where None)."""
    x, y = data
    if n is None or n >= len(y):
        return data
    index = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n]
    return x[index], y[index]


def transfer_scores(
    config: TransferConfig,
    data: TransferData,
    trained: TrainedTransfer,
    *,
    identity: bool = False,
    test: Pair | None = None,
    per_test: bool = False,
    candidates: Pair | None = None,
    solvers: dict[str, Solver] | None = None,
) -> tuple[Tensor, Report]:
    """Scores of every pretraining example (or of ``candidates``) on the summed test loss (eq. 8),
    or per test point, with the report of the solves.

    H_G is the Hessian over ``config.hessian_examples`` sampled pretraining examples, as in
    Appendix B. ``identity=True`` replaces both inverse Hessians by I (Fig. 3); ``solvers``
    (``pretrain_solver``, ``finetune_solver``) replaces the config's CG solvers.
    """
    if solvers is None:
        solvers = (
            dict(pretrain_solver=Identity(), finetune_solver=Identity())
            if identity
            else dict(
                pretrain_solver=CG(config.pretrain_damping, config.cg_iters),
                finetune_solver=CG(config.finetune_damping, config.cg_iters),
            )
        )
    ms = trained.multistage(config)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = ms.scores(
            pretrain=subsample(data.pretrain, config.hessian_examples, config.seed),
            finetune=subsample(
                data.finetune, config.finetune_hessian_examples, config.seed
            ),
            test=data.test if test is None else test,
            candidates=data.pretrain if candidates is None else candidates,
            per_test=per_test,
            **solvers,
        )
    for w in caught:  # keep them visible, once each
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return scores, ms.report


def pick_removals(scores: Tensor, k: int, seed: int = 0) -> Tensor:
    """Which examples to validate: a third with the largest scores, a third with the smallest, a third at random.

    Koh and Liang removed only the largest |scores|; the tails alone inflate a correlation,
    so random examples from the bulk are mixed in.
    """
    k = min(k, len(scores))
    order = scores.argsort(descending=True)
    third = k // 3
    chosen = list(
        dict.fromkeys(order[:third].tolist() + order[len(order) - third :].tolist())
    )
    rest = torch.tensor(sorted(set(range(len(scores))) - set(chosen)))
    extra = rest[
        torch.randperm(len(rest), generator=torch.Generator().manual_seed(seed))[
            : k - len(chosen)
        ]
    ]
    return torch.tensor(chosen + extra.tolist())


@dataclass
class Validation:
    """Leave-one-out retraining of ``indices``: the measured changes in mean test loss."""

    indices: list[int]
    predicted: list[
        float
    ]  # -score / (m * n_test): the first-order change in mean test loss
    draws: list[
        int
    ]  # how often continued pretraining drew the example (0: the removal changed nothing)
    raw: list[
        float
    ]  # loss after removal and continued training, minus the original model's loss
    controlled: list[
        float
    ]  # the same, minus the same continued training without the removal
    original_loss: float
    control_loss: float

    def as_dict(self) -> dict[str, Any]:
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
    m = len(data.pretrain[1])
    weights = None
    if remove is not None:
        weights = torch.full((m,), 1 / (m - 1))
        weights[remove] = 0.0
    embedding = copy.deepcopy(trained.net.pretrained_embedding)
    head_u = copy.deepcopy(trained.net.pretrain_head)
    head_t = copy.deepcopy(trained.net.finetune_head)
    _pretrain(
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
    _finetune(
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
    predicted = (-scores[indices] / (m * n_test)).tolist()
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


def _rounded(values: Tensor) -> list[float]:
    return [float(f"{v:.6g}") for v in values.tolist()]


def misclassified(trained: TrainedTransfer, test: Pair, k: int, seed: int = 0) -> Tensor:
    """``k`` finetuning test points the finetuned model gets wrong, drawn at random (Fig. 4)."""
    x, y = test
    predicted = in_chunks(
        lambda xb: trained.net.finetune_head(trained.net.embedding(xb)), x
    ).argmax(1)
    wrong = (predicted != y).nonzero().flatten()
    return wrong[
        torch.randperm(len(wrong), generator=torch.Generator().manual_seed(seed))[:k]
    ]


def _agreements(validation: Validation) -> dict[str, Any]:
    """r and rho of the prediction against the raw and the controlled differences (and the drawn removals alone)."""
    out = {
        "raw": dataclasses.asdict(agreement(validation.predicted, validation.raw)),
        "controlled": dataclasses.asdict(
            agreement(validation.predicted, validation.controlled)
        ),
    }
    seen = [j for j, d in enumerate(validation.draws) if d > 0]
    if (
        len(seen) >= 3
    ):  # removals that continued pretraining drew at least once: the others changed nothing
        out["controlled, drawn only"] = dataclasses.asdict(
            agreement(
                [validation.predicted[j] for j in seen],
                [validation.controlled[j] for j in seen],
            )
        )
    return out


def _identity_ablation(
    config: TransferConfig,
    data: TransferData,
    trained: TrainedTransfer,
    validation: Validation,
) -> dict[str, Any]:
    """Fig. 3: the same removals predicted with every inverse Hessian replaced by I."""
    m, n_test = len(data.pretrain[1]), len(data.test[1])
    ablation, _ = transfer_scores(config, data, trained, identity=True)
    predicted = (-ablation[torch.tensor(validation.indices)] / (m * n_test)).tolist()
    return {
        "scores": _rounded(ablation),
        "predicted": predicted,
        "agreement": {
            "raw": dataclasses.asdict(agreement(predicted, validation.raw)),
            "controlled": dataclasses.asdict(agreement(predicted, validation.controlled)),
        },
    }


def _influential_pairs(
    config: TransferConfig, data: TransferData, trained: TrainedTransfer, pairs: int
) -> list[dict[str, Any]]:
    """Fig. 4: ``pairs`` misclassified test points, each with its most harmful pretraining example."""
    wrong = misclassified(trained, data.test, pairs, seed=config.seed)
    if not len(wrong):
        return []
    x, y = data.test
    per_test, _ = transfer_scores(
        config, data, trained, test=(x[wrong], y[wrong]), per_test=True
    )
    with torch.no_grad():
        predicted_labels = trained.net.finetune_head(
            trained.net.embedding(x[wrong])
        ).argmax(1)
    return [
        {
            "test_index": int(t),
            "test_label": int(y[t]),
            "predicted_label": int(p),
            "pretrain_index": int(per_test[:, j].argmax()),
            "pretrain_label": int(data.pretrain[1][per_test[:, j].argmax()]),
            "score": float(per_test[:, j].max()),
        }
        for j, (t, p) in enumerate(zip(wrong.tolist(), predicted_labels.tolist()))
    ]


def run_validation(
    config: TransferConfig, *, identity: bool = False, pairs: int = 3
) -> dict[str, Any]:
    """One experiment of section 4.1, end to end, as a JSON-ready dict.

    Trains (or loads) both stages, scores every pretraining example on the summed test loss,
    validates ``config.removals`` of them by retraining (:func:`validate`), and with
    ``identity`` scores the same removals with every inverse Hessian replaced by I (Fig. 3).
    ``pairs`` misclassified test points get their most harmful pretraining example (Fig. 4).
    """
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    data = load_transfer_data(config)
    trained = train_transfer(config, data)
    seconds["training (or cache)"] = time.perf_counter() - start

    start = time.perf_counter()
    scores, report = transfer_scores(config, data, trained)
    seconds["scores"] = time.perf_counter() - start

    indices = pick_removals(scores, config.removals, seed=config.seed)
    start = time.perf_counter()
    validation = validate(config, data, trained, scores, indices)
    seconds["validation"] = time.perf_counter() - start
    result: dict[str, Any] = {
        "config": config.as_dict(),
        "m": len(data.pretrain[1]),
        "n_test": len(data.test[1]),
        "pretrain_accuracy": accuracy(
            trained.net.pretrained_embedding,
            trained.net.pretrain_head,
            data.pretrain_test,
        ),
        "finetune_accuracy": accuracy(
            trained.net.embedding, trained.net.finetune_head, data.test
        ),
        "scores": _rounded(scores),
        "solves": dataclasses.asdict(report),
        "validation": validation.as_dict(),
        "agreement": _agreements(validation),
    }
    if identity:
        start = time.perf_counter()
        result["identity"] = _identity_ablation(config, data, trained, validation)
        seconds["identity scores"] = time.perf_counter() - start
    if pairs:
        start = time.perf_counter()
        result["pairs"] = _influential_pairs(config, data, trained, pairs)
        seconds["per-test scores"] = time.perf_counter() - start
    result["seconds"] = seconds
    return result


def measured_weights(
    experiment: dict[str, Any], *, check: bool = True
) -> tuple[TransferConfig, TransferData, TrainedTransfer, float]:
    """The config, data and trained weights a stored experiment measured its removals from.

    Retrains (or loads) them from the stored config and checks that they are those weights:
    the original test loss must match the stored one to 1e-6. Returns that loss too.
    ``check=False`` skips the check, for a use that needs the config's weights but not the
    stored measurements (retraining on another thread count can land elsewhere).
    """
    config = TransferConfig.from_dict(experiment["config"])
    data = load_transfer_data(config)
    trained = train_transfer(config, data)
    stored = experiment["validation"]["original_loss"]
    original = mean_loss(trained.net.embedding, trained.net.finetune_head, data.test)
    if check and abs(original - stored) > 1e-6:
        raise RuntimeError(
            f"the retrained weights differ from the measured ones: test loss {original!r}, "
            f"stored {stored!r}; the stored differences do not belong to them"
        )
    return config, data, trained, original


def rescore(
    experiment: dict[str, Any], *, identity: bool = False, pairs: int = 0
) -> dict[str, Any]:
    """An experiment of a results file, scored again by the current library; its measurements kept.

    Retraining a removal is the expensive part of an experiment, and it does not depend on the
    scores. This retrains (or loads) the same weights from the stored config, checks that they
    are the weights the measurements were made from (the original test loss must match to
    1e-6), scores again, and recomputes every prediction and r against the stored differences.
    Returns the updated experiment, with ``"rescored"`` saying what changed.
    """
    start = time.perf_counter()
    config, data, trained, original = measured_weights(experiment)
    stored = experiment["validation"]
    scores, report = transfer_scores(config, data, trained)
    m, n_test = len(data.pretrain[1]), len(data.test[1])
    indices = torch.tensor(stored["indices"])
    validation = Validation(
        **{**stored, "predicted": (-scores[indices] / (m * n_test)).tolist()}
    )
    old = torch.tensor(experiment["scores"])
    out = {
        **experiment,
        "scores": _rounded(scores),
        "solves": dataclasses.asdict(report),
        "validation": validation.as_dict(),
        "agreement": _agreements(validation),
    }
    if identity:
        out["identity"] = _identity_ablation(config, data, trained, validation)
    if pairs:
        out["pairs"] = _influential_pairs(config, data, trained, pairs)
    if "retest" in experiment:
        retest = experiment["retest"]
        again = retest["validation"]
        positions = retest["positions"]
        predicted = (-scores[torch.tensor(again["indices"])] / (m * n_test)).tolist()
        before = [stored["controlled"][j] for j in positions]
        out["retest"] = {
            **retest,
            "validation": {**again, "predicted": predicted},
            "agreement": {
                **retest["agreement"],
                "with the prediction": dataclasses.asdict(
                    agreement(predicted, again["controlled"])
                ),
                "first measurement with the prediction": dataclasses.asdict(
                    agreement(predicted, before)
                ),
            },
        }
    out["rescored"] = {
        "why": "scores recomputed with the loss evaluated in float64 (influence.losses); measurements unchanged",
        "before": {
            "exact zeros": int((old == 0).sum()),
            "distinct values": int(old.unique().numel()),
            "agreement": experiment["agreement"],
            **(
                {"identity agreement": experiment["identity"]["agreement"]}
                if "identity" in experiment
                else {}
            ),
            **(
                {"retest agreement": experiment["retest"]["agreement"]}
                if "retest" in experiment
                else {}
            ),
        },
        "after": {
            "exact zeros": int((scores == 0).sum()),
            "distinct values": int(scores.unique().numel()),
        },
        "weights check: original test loss": original,
        "pairs": "recomputed"
        if pairs
        else "kept from the first run (computed before the float64 fix)",
        "minutes": (time.perf_counter() - start) / 60,
        "provenance": provenance(),
    }
    return out
