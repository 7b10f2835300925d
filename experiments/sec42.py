"""Section 4.2 end to end: cleanse the pretraining data by score, and measure what it does.

The paper removes the 10% of pretraining examples with the largest scores (the most harmful to
the finetuning test loss), retrains, and reports the target accuracy rising from 58.15% to
58.36%, while a random 10% lowers it to 58.08%. A gain of 0.21 points is within the spread of
one seed, so here every condition is retrained from scratch with several seeds
(:func:`section42_runs`), the most negative scores (the most helpful examples) are removed too,
and the accuracy is traced over the fraction removed.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats as scipy_stats
from torch import Tensor

from .configs import SCALES, SECTION_42_FRACTION, TransferConfig, section42_runs
from .evaluation import accuracy, mean_loss
from .pipeline import Lab, Run
from .provenance import provenance
from .records import scores_record
from .store import ResultsStore
from .transfer_data import TransferData
from .transfer_training import finetune_stage, pretrain_stage, transfer_net

SECTION = "sec42"
SCORES_FROM = (
    "sec41"  # section 4.1 scores this very model (its CIFAR-10 "fixed" experiment)
)


def removed_examples(scores: Tensor, kind: str, fraction: float, seed: int) -> Tensor:
    """Which pretraining examples a condition removes, ``round(fraction * m)`` of them.

    ``"top"``: the largest scores (removal predicted to lower the test loss);
    ``"bottom"``: the most negative (predicted to raise it); ``"random"``: drawn with a
    generator seeded by ``seed``; ``"none"``: nothing.
    """
    k = round(fraction * len(scores))
    if kind == "none" or k == 0:
        return torch.empty(0, dtype=torch.int64)
    if kind == "top":
        return scores.argsort(descending=True)[:k]
    if kind == "bottom":
        return scores.argsort()[:k]
    if kind == "random":
        generator = torch.Generator().manual_seed(10_000 + seed)
        return torch.randperm(len(scores), generator=generator)[:k]
    raise ValueError(f"kind: expected 'none', 'top', 'bottom' or 'random', got {kind!r}")


def retrain_without(
    config: TransferConfig, data: TransferData, removed: Tensor, seed: int
) -> dict[str, float]:
    """Both stages trained from scratch without ``removed``, initialized and batched by ``seed``.

    The protocol of :func:`experiments.transfer_training.train_transfer` (same steps, batch
    size and learning rate), on the remaining pretraining examples, on the config's device.
    Returns the finetuning test accuracy and mean loss.
    """
    keep = torch.ones(len(data.pretrain[1]), dtype=torch.bool)
    keep[removed] = False
    keep = keep.to(data.pretrain[1].device)
    torch.manual_seed(seed)
    net = transfer_net(config)
    pretrain_stage(
        config,
        net.embedding,
        net.pretrain_head,
        (data.pretrain[0][keep], data.pretrain[1][keep]),
        steps=config.pretrain_steps,
        seed=seed,
        desc=f"pretraining, {int((~keep).sum())} removed",
    )
    finetune_stage(
        config,
        net.embedding,
        net.finetune_head,
        copy.deepcopy(net.embedding),
        data.finetune,
        steps=config.finetune_steps,
        seed=seed,
    )
    return {
        "accuracy": accuracy(net.embedding, net.finetune_head, data.test),
        "loss": mean_loss(net.embedding, net.finetune_head, data.test),
    }


def summarize(runs: Sequence[dict[str, Any]], fraction: float) -> dict[str, Any]:
    """Each condition's accuracy at ``fraction`` over seeds, and its difference from no removal.

    The difference is paired by seed (the seed fixes initialization and batch order in both), and
    tested with a paired t-test where at least two seeds have both, else reported without a test.
    """
    by_seed: dict[str, dict[int, float]] = {}
    for run in runs:
        if run["kind"] == "none" or run["fraction"] == fraction:
            by_seed.setdefault(run["kind"], {})[run["seed"]] = run["accuracy"]
    base = by_seed.get("none", {})
    out: dict[str, Any] = {}
    for kind, accs in by_seed.items():
        values = np.array(list(accs.values()))
        entry: dict[str, Any] = {
            "seeds": sorted(accs),
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else float("nan"),
        }
        paired = sorted(set(accs) & set(base))
        if kind != "none" and paired:
            diff = np.array([accs[s] - base[s] for s in paired])
            entry["difference"] = {
                "seeds": paired,
                "mean": float(diff.mean()),
                "values": diff.tolist(),
            }
            if len(paired) >= 2:
                entry["difference"]["paired_t_p"] = float(
                    scipy_stats.ttest_rel(
                        [accs[s] for s in paired], [base[s] for s in paired]
                    ).pvalue
                )
        out[kind] = entry
    return out


def _done_runs(entry: dict[str, Any]) -> set[tuple[str, float, int]]:
    return {(r["kind"], r["fraction"], r["seed"]) for r in entry["runs"]}


def _scores_entry(run: Run, scale: str) -> dict[str, Any]:
    """The file's entry before any retraining: the config, sizes and the scores that pick removals.

    The scores are section 4.1's for the same config where the lab's store holds them (the
    weights are the cached ones), else computed here.
    """
    config, data = run.config, run.data
    stored = None
    if scale != "quick" and run.store is not None:
        stored = run.store.find(SCORES_FROM, config)
    entry: dict[str, Any] = {
        "scale": scale,
        "config": config.as_dict(),
        "provenance": provenance(run.device),
        "m": len(data.pretrain[1]),
        "n_test": len(data.test[1]),
    }
    seconds: dict[str, float] = {}
    if stored is None:
        begin = time.perf_counter()
        scores, report = run.scores()
        seconds["scores"] = time.perf_counter() - begin
        record = scores_record(config, scores, report)
        entry.update(scores=record["scores"], solvers=record["solvers"])
        entry["scores_from"] = "computed here"
    else:
        entry["scores"] = stored["scores"]
        entry["scores_from"] = f"{SCORES_FROM}.json (the same config)"
    return {**entry, "seconds": seconds, "runs": [], "minutes": 0.0}


def reproduce_section42(
    lab: Lab | ResultsStore | str | Path,
    scale: str = "cpu",
    only: Any = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Run section 4.2 at ``scale``, writing the lab's results after every retraining.

    A file that already holds runs of the same config keeps them, and only the missing runs
    are trained: an interrupted run resumes. The seed-0 run without removal is the trained
    model itself, which is exactly that run. ``limit`` stops after the first ``limit`` runs.
    """
    lab = Lab.of(lab, SECTION)
    run = lab.run(SCALES[scale]["cifar10-fixed"])
    config, store, device = run.config, lab.store, run.device
    done = store.results(SECTION)
    entry = done["experiments"].get("cifar10-fixed")
    if entry is None or not config.is_stored_as(entry.get("config")):
        entry = None
    start = time.perf_counter()
    # Only scoring and the seed-0 run without removal need the trained model: a resumed run
    # whose file has both does not train it (minutes on CPU when the cache is cold).
    trained = None
    if entry is None or ("none", 0.0, config.seed) not in _done_runs(entry):
        trained = run.trained
    if entry is None:
        entry = done["experiments"]["cifar10-fixed"] = _scores_entry(run, scale)
    scores = torch.tensor(entry["scores"])
    have = _done_runs(entry)
    for kind, fraction, seed in section42_runs(scale)[:limit]:
        if (kind, fraction, seed) in have:
            continue
        begin = time.perf_counter()
        if kind == "none" and seed == config.seed:
            assert trained is not None
            net = trained.net
            result = {
                "accuracy": accuracy(net.embedding, net.finetune_head, run.data.test),
                "loss": mean_loss(net.embedding, net.finetune_head, run.data.test),
            }
        else:
            removed = removed_examples(scores, kind, fraction, seed)
            result = retrain_without(config, run.data, removed, seed)
        entry["runs"].append(
            {
                "kind": kind,
                "fraction": fraction,
                "seed": seed,
                **result,
                "seconds": time.perf_counter() - begin,
            }
        )
        entry["summary"] = summarize(entry["runs"], SECTION_42_FRACTION)
        entry["minutes"] += (time.perf_counter() - start) / 60
        start = time.perf_counter()
        store.write_section(SECTION, done, scale, device)
    return done
