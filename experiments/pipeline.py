"""One transfer experiment as a pipeline, data flowing once: data -> fit -> score -> validate.

- :class:`Lab` is where experiments run: the results store, the weight cache and the device,
  each passed in once (``tools/reproduce.py`` passes ``ResultsStore(Path("book/results"))``);
- :class:`Run` is one config in a lab: its data and trained weights, made on first use and
  kept, and the scoring and validation of those weights.

Sections take a :class:`Lab` and make a :class:`Run` per config, instead of threading paths,
caches and devices through every call.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from influence.multistage import Report
from influence.solvers import Solver

from .cache import WeightCache
from .configs import TransferConfig
from .devices import resolve
from .evaluation import mean_loss
from .scoring import solvers_for, transfer_scores
from .store import ResultsStore
from .transfer_data import TransferData, load_transfer_data
from .transfer_training import TrainedTransfer, train_transfer
from .validation import Validation, validate


@dataclass(eq=False)
class Run:
    """One config, with the weight cache its training uses and the store its results go to.

    ``pretrained_by``: a config whose cached pretraining this run finetunes from
    (:func:`~experiments.transfer_training.train_transfer`).
    """

    config: TransferConfig
    cache: WeightCache | None = None
    store: ResultsStore | None = None
    pretrained_by: TransferConfig | None = None

    @property
    def device(self) -> torch.device:
        """Where the data, the network and the solver vectors live."""
        return resolve(self.config.device)

    @functools.cached_property
    def data(self) -> TransferData:
        """The two tasks, on the run's device (loaded once)."""
        return load_transfer_data(self.config)

    @functools.cached_property
    def trained(self) -> TrainedTransfer:
        """Both stages trained, or loaded from the cache (once)."""
        return train_transfer(
            self.config,
            self.data,
            cache=self.cache if self.cache is not None else False,
            pretrained_by=self.pretrained_by,
        )

    def solvers(self, *, identity: bool = False) -> dict[str, Solver]:
        """The config's solvers (:func:`~experiments.scoring.solvers_for`)."""
        return solvers_for(self.config, identity=identity)

    def scores(self, **options: Any) -> tuple[Tensor, Report]:
        """:func:`~experiments.scoring.transfer_scores` of the trained weights."""
        return transfer_scores(self.config, self.data, self.trained, **options)

    def validate(self, scores: Tensor, indices: Tensor) -> Validation:
        """:func:`~experiments.validation.validate` the removals ``indices``."""
        return validate(self.config, self.data, self.trained, scores, indices)

    def test_loss(self) -> float:
        """The finetuned model's mean test loss."""
        net = self.trained.net
        return mean_loss(net.embedding, net.finetune_head, self.data.test)


@dataclass(frozen=True)
class Lab:
    """Where experiments run: the results store (None: results are only returned), the weight
    cache (None: always train) and the device (None: each config's own)."""

    store: ResultsStore | None = None
    cache: WeightCache | None = field(default_factory=WeightCache.from_env)
    device: str | None = None

    @classmethod
    def of(cls, where: Lab | ResultsStore | str | Path, section: str) -> Lab:
        """A lab from what a caller passed: a lab, a store, or the path of ``section``'s results
        file (as the chapters pass it; the file must be named ``<section>.json``)."""
        if isinstance(where, Lab):
            lab = where
        elif isinstance(where, ResultsStore):
            lab = cls(where)
        else:
            store, name = ResultsStore.holding(where)
            if name != section:
                raise ValueError(
                    f"path: {section}'s results file is {section}.json, got {where}"
                )
            lab = cls(store)
        if lab.store is None:
            raise ValueError(
                f"lab: {section} reads and writes results, so it needs a store"
            )
        return lab

    @property
    def resolved_device(self) -> torch.device:
        """The device provenance names: this lab's, or ``"auto"``'s."""
        return resolve(self.device or "auto")

    def config(self, config: TransferConfig) -> TransferConfig:
        """``config`` on this lab's device."""
        return config if self.device is None else config.replace(device=self.device)

    def run(
        self, config: TransferConfig, *, pretrained_by: TransferConfig | None = None
    ) -> Run:
        """A :class:`Run` of ``config`` in this lab."""
        return Run(
            self.config(config),
            self.cache,
            self.store,
            None if pretrained_by is None else self.config(pretrained_by),
        )

    def record_all(
        self,
        section: str,
        scale: str,
        runs: dict[str, Callable[[], dict[str, Any]]],
        only: Iterable[str] | None = None,
    ) -> dict[str, Any]:
        """Run the experiments ``runs`` (name: what runs it) into ``section``'s results, each
        filed with its provenance as it finishes. ``only`` names those to (re)run; the others
        stay as they are in the file."""
        if self.store is None:
            raise ValueError(f"{section} writes results, so the lab needs a store")
        unknown = set(only or ()) - set(runs)
        if unknown:
            raise ValueError(
                f"only: expected some of {sorted(runs)}, got {sorted(unknown)}"
            )
        done = self.store.results(section)
        for name, run in runs.items():
            if not only or name in only:
                self.store.record(section, done, name, scale, run, self.resolved_device)
        return done


def measured_weights(
    experiment: dict[str, Any], *, check: bool = True, lab: Lab | None = None
) -> tuple[TransferConfig, TransferData, TrainedTransfer, float]:
    """The config, data and trained weights a stored experiment measured its removals from.

    Retrains (or loads) them from the stored config and checks that they are those weights:
    the original test loss must match the stored one to 1e-6. Returns that loss too.
    ``check=False`` skips the check, for a use that needs the config's weights but not the
    stored measurements (retraining on another thread count can land elsewhere).
    """
    run = (lab or Lab()).run(TransferConfig.from_dict(experiment["config"]))
    stored = experiment["validation"]["original_loss"]
    original = run.test_loss()
    if check and abs(original - stored) > 1e-6:
        raise RuntimeError(
            f"the retrained weights differ from the measured ones: test loss {original!r}, "
            f"stored {stored!r}; the stored differences do not belong to them"
        )
    return run.config, run.data, run.trained, original
