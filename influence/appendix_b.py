"""The configurations of Appendix B, and the scaled-down ones this book runs on CPU.

Three scales for each experiment of section 4.1:

- ``paper``: exactly Appendix B (for a GPU);
- ``cpu``: the largest that fits a few hours on 2 CPU cores; MNIST is at Appendix B scale,
  CIFAR-10 retrains for fewer steps and samples fewer finetuning examples for F's Hessian;
- ``quick``: minutes on 2 CPU cores, for CI; small enough to run, large enough to draw every plot.

Where the paper is silent (learning rate, steps "to convergence", how many examples were
validated), the choice is ours and is named here.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .experiment import TransferConfig, load_transfer_data, rescore, run_validation, train_transfer, validate
from .plots import agreement
from .provenance import provenance, read_results, write_results

MNIST_FIXED = TransferConfig(
    dataset="mnist", pretrain_classes=(0, 1, 2, 3), finetune_classes=(4, 5, 6, 7, 8, 9), case="fixed",
    batch_size=512, pretrain_steps=2000, finetune_steps=2000,  # ours: Appendix B says "to convergence"
    retrain_pretrain_steps=100, retrain_finetune_steps=100,
    pretrain_damping=1e-2, finetune_damping=1e-8, hessian_examples=1000, cg_iters=200,
    removals=90,  # ours: the paper does not say
)
CIFAR_FIXED = TransferConfig(
    dataset="cifar10", pretrain_classes=(2, 6), finetune_classes=(0, 1, 3, 4, 5, 7, 8, 9), case="fixed",
    batch_size=128, pretrain_steps=3000, finetune_steps=2000,
    retrain_pretrain_steps=6000, retrain_finetune_steps=3000,
    pretrain_damping=1e-8, finetune_damping=1e-6, hessian_examples=1000, cg_iters=200,
    removals=60,
)
CIFAR_UPDATED = CIFAR_FIXED.replace(case="updated", alpha=0.01, retrain_finetune_steps=1000)

PAPER = {"mnist-fixed": MNIST_FIXED, "cifar10-fixed": CIFAR_FIXED, "cifar10-updated": CIFAR_UPDATED}

# CIFAR-10 on 2 CPU cores: one retraining of Appendix B (9,000 Adam steps) takes about 25 minutes,
# and 60 removals with their controls would take two days. Each removal here continues training for
# 150 + 75 (fixed) or 150 + 50 (updated) steps instead, 20 removals are validated in each, and in
# Case 2, where K's Hessian-vector products run through the whole network, F's Hessian is
# sampled on 1,000 of the 5,000 finetuning examples, with 100 CG iterations a solve.
# Measured: W fixed 97 minutes (scoring 29, validation 7, the per-test solves of the three Fig. 4
# pairs 55); W updated 48 minutes (scoring 40, validation 8); each retest of 20 removals 9-10.
CPU = {
    "mnist-fixed": MNIST_FIXED,
    "cifar10-fixed": CIFAR_FIXED.replace(retrain_pretrain_steps=150, retrain_finetune_steps=75, removals=20),
    "cifar10-updated": CIFAR_UPDATED.replace(retrain_pretrain_steps=150, retrain_finetune_steps=50,
                                             finetune_hessian_examples=1000, cg_iters=100, removals=20),
}

QUICK = {
    "mnist-fixed": MNIST_FIXED.replace(pretrain_size=2000, finetune_size=500, test_size=500, batch_size=128,
                                       pretrain_steps=150, finetune_steps=150, retrain_pretrain_steps=20,
                                       retrain_finetune_steps=10, hessian_examples=200, cg_iters=20, removals=6),
    "cifar10-fixed": CIFAR_FIXED.replace(pretrain_size=600, finetune_size=300, test_size=300, batch_size=64,
                                         pretrain_steps=60, finetune_steps=60, retrain_pretrain_steps=10,
                                         retrain_finetune_steps=5, hessian_examples=100,
                                         finetune_hessian_examples=100, cg_iters=10, removals=6),
    "cifar10-updated": CIFAR_UPDATED.replace(pretrain_size=600, finetune_size=300, test_size=300, batch_size=64,
                                             pretrain_steps=60, finetune_steps=60, retrain_pretrain_steps=10,
                                             retrain_finetune_steps=5, hessian_examples=100,
                                             finetune_hessian_examples=100, cg_iters=10, removals=6),
}

SCALES = {"paper": PAPER, "cpu": CPU, "quick": QUICK}

# The paper's Pearson r (Figs. 2 and 3)
PAPER_R = {"mnist-fixed": 0.47, "cifar10-fixed": 0.62, "cifar10-updated": 0.40, "mnist-identity": 0.17}
FIGURE = {"mnist-fixed": "Fig. 2b", "cifar10-fixed": "Fig. 2a", "cifar10-updated": "Fig. 2c"}

# Section 4.1: the three experiments of Fig. 2; MNIST also runs the identity ablation of Fig. 3.
# Fig. 4 pairs come from the two fixed-embedding models (the paper does not say which it used);
# on CPU the per-test solves of Case 2 would cost about as much as the rest of that experiment.
SECTION_41 = {"mnist-fixed": dict(identity=True), "cifar10-fixed": {}, "cifar10-updated": dict(pairs=0)}
# After each experiment, how many of its removals :func:`retest` measures again (None: all), and with which seed.
RETEST_SIZE = {"mnist-fixed": 30, "cifar10-fixed": None, "cifar10-updated": None}
RETEST_SEED = 7


def reproduce_section41(path: str | Path, scale: str = "cpu", only: Sequence[str] | None = None,
                        retest_too: bool = True) -> dict[str, Any]:
    """Run section 4.1 at ``scale`` and write the results, with provenance, to ``path``.

    Each experiment is written as soon as it finishes, into the ``experiments`` of the file,
    so an interrupted run keeps what it finished and a later run can add the rest (``only``).
    With ``retest_too``, each experiment's removals are then measured again (:func:`retest`,
    ``RETEST_SIZE`` of them, seed ``RETEST_SEED``).
    """
    if scale not in SCALES:
        raise ValueError(f"scale: expected one of {sorted(SCALES)}, got {scale!r}")
    names = list(SECTION_41) if only is None else list(only)
    unknown = [n for n in names if n not in SECTION_41]
    if unknown:
        raise ValueError(f"only: unknown experiments {unknown}; expected some of {list(SECTION_41)}")
    path = Path(path)
    done = read_results(path)["results"] if path.exists() else {"experiments": {}}
    for name in names:
        config = SCALES[scale][name]
        start, source = time.perf_counter(), provenance()  # the code as it was when the run began
        result = run_validation(config, **SECTION_41[name])
        done["experiments"][name] = {"scale": scale, "minutes": (time.perf_counter() - start) / 60,
                                     "provenance": source, **result}
        config_of_file = {"scale": scale, "experiments": {n: e["config"] for n, e in done["experiments"].items()}}
        write_results(path, config_of_file, done)
        if retest_too:
            size = RETEST_SIZE[name]
            size = None if size is None else min(size, len(done["experiments"][name]["validation"]["indices"]))
            done["experiments"][name]["retest"] = retest(done["experiments"][name], RETEST_SEED, size)
            write_results(path, config_of_file, done)
    return done


def retest(experiment: dict[str, Any], retrain_seed: int, size: int | None = None) -> dict[str, Any]:
    """Measure an experiment's removals again, with continued training drawing other batches.

    ``experiment`` is one entry of a section-4.1 results file (or :func:`run_validation`'s
    result with its ``config``). The batch order of Appendix B's continued training is an
    arbitrary choice. Where the measured change of a removal depends on it, the "true" loss
    difference is partly noise, and no score can correlate with it better than the two
    measurements correlate with each other (their test-retest r; the attainable r is about its
    square root). ``size`` retests that many of the removals, evenly spread (all where None).
    """
    config = TransferConfig.from_dict(experiment["config"])
    if retrain_seed == config.continuation_seed:
        raise ValueError(f"retrain_seed: {retrain_seed} is the seed the first measurement used; pick another")
    config = config.replace(retrain_seed=retrain_seed)
    v = experiment["validation"]
    positions = list(range(len(v["indices"])))
    if size is not None:
        if not 3 <= size <= len(positions):
            raise ValueError(f"size: expected 3 to {len(positions)} removals, got {size}")
        positions = [round(j * (len(positions) - 1) / (size - 1)) for j in range(size)]  # distinct: spacing >= 1
    start, source = time.perf_counter(), provenance()
    data = load_transfer_data(config)
    trained = train_transfer(config, data)
    indices = torch.tensor([v["indices"][j] for j in positions])
    again = validate(config, data, trained, torch.tensor(experiment["scores"]), indices)
    before = [v["controlled"][j] for j in positions]
    return {
        "retrain_seed": retrain_seed, "positions": positions, "validation": again.as_dict(),
        "agreement": {"with the first measurement": dataclasses.asdict(agreement(before, again.controlled)),
                      "with the prediction": dataclasses.asdict(agreement(again.predicted, again.controlled)),
                      "first measurement with the prediction": dataclasses.asdict(agreement(again.predicted, before))},
        "minutes": (time.perf_counter() - start) / 60, "provenance": source,
    }


def retest_section41(path: str | Path, name: str, retrain_seed: int, size: int | None = None) -> dict[str, Any]:
    """:func:`retest` experiment ``name`` of the results file at ``path``; writes ``experiments[name]["retest"]``."""
    path = Path(path)
    stored = read_results(path)
    experiments = stored["results"].get("experiments", {})
    if name not in experiments:
        raise ValueError(f"name: {path} holds no experiment {name!r}; run it first")
    experiments[name]["retest"] = retest(experiments[name], retrain_seed, size)
    write_results(path, stored["config"], stored["results"])
    return experiments[name]["retest"]


def rescore_section41(path: str | Path, only: Sequence[str] | None = None) -> dict[str, Any]:
    """:func:`~influence.experiment.rescore` each experiment of the results file at ``path``, in place.

    Fig. 4's per-test solves are recomputed where they are cheap (MNIST) and kept otherwise.
    """
    path = Path(path)
    stored = read_results(path)
    experiments = stored["results"]["experiments"]
    for name in only or list(experiments):
        cheap_pairs = len(experiments[name].get("pairs", [])) if name == "mnist-fixed" else 0
        experiments[name] = rescore(experiments[name], identity="identity" in experiments[name], pairs=cheap_pairs)
        write_results(path, stored["config"], stored["results"])
    return stored


@dataclass(frozen=True)
class PaperNumber:
    """One number the paper reports, and where a results file holds ours.

    Results files keep ``results["experiments"][experiment]``, each with the ``scale`` it ran
    at; ``path`` leads from there to our value.
    """

    where: str  # the paper's figure, table or section
    what: str
    paper: float
    results: str  # the results file's stem under book/results/
    experiment: str
    path: tuple[str, ...]

    def ours(self, results_dir: str | Path) -> tuple[float, str] | None:
        """Our value and the scale it ran at, or None where no results file holds it yet."""
        file = Path(results_dir) / f"{self.results}.json"
        if not file.exists():
            return None
        node: Any = read_results(file)["results"].get("experiments", {}).get(self.experiment)
        scale = node.get("scale", "?") if isinstance(node, dict) else None
        for key in self.path:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return float(node), scale


R_CONTROLLED = ("agreement", "controlled", "pearson_r")
PAPER_NUMBERS: list[PaperNumber] = [
    PaperNumber("Fig. 2a", "Pearson r, CIFAR-10, embedding fixed", 0.62, "sec41", "cifar10-fixed", R_CONTROLLED),
    PaperNumber("Fig. 2b", "Pearson r, MNIST, embedding fixed", 0.47, "sec41", "mnist-fixed", R_CONTROLLED),
    PaperNumber("Fig. 2c", "Pearson r, CIFAR-10, embedding updated", 0.40, "sec41", "cifar10-updated", R_CONTROLLED),
    PaperNumber("Fig. 3", "Pearson r, MNIST, every inverse Hessian replaced by I", 0.17, "sec41", "mnist-fixed",
                ("identity", *R_CONTROLLED)),
]
