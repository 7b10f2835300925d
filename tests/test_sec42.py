"""experiments.sec42: which examples a condition removes, the paired summary, and resuming."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from test_experiment import TINY

from experiments import configs, sec42
from experiments.data import DatasetNotFoundError
from experiments.provenance import read_results
from experiments.transfer_data import load_transfer_data


def test_removed_examples_takes_the_tails_or_a_seeded_draw():
    scores = torch.tensor([0.5, -2.0, 3.0, 0.0, -1.0, 2.0, 1.0, -0.5, 4.0, -3.0])
    top = sec42.removed_examples(scores, "top", 0.3, seed=0)
    bottom = sec42.removed_examples(scores, "bottom", 0.3, seed=0)
    assert sorted(scores[top].tolist()) == [2.0, 3.0, 4.0]
    assert sorted(scores[bottom].tolist()) == [-3.0, -2.0, -1.0]
    first = sec42.removed_examples(scores, "random", 0.3, seed=1)
    assert len(first) == 3 and len(set(first.tolist())) == 3
    assert torch.equal(first, sec42.removed_examples(scores, "random", 0.3, seed=1))
    assert len(sec42.removed_examples(scores, "none", 0.3, seed=0)) == 0
    assert len(sec42.removed_examples(scores, "top", 0.01, seed=0)) == 0  # rounds to 0
    with pytest.raises(ValueError, match="kind"):
        sec42.removed_examples(scores, "largest", 0.1, seed=0)


def test_summary_pairs_by_seed_and_matches_scipys_paired_t_test():
    runs = [
        {"kind": "none", "fraction": 0.0, "seed": s, "accuracy": a}
        for s, a in [(0, 0.50), (1, 0.52), (2, 0.51)]
    ] + [
        {"kind": "top", "fraction": 0.1, "seed": s, "accuracy": a}
        for s, a in [(0, 0.51), (1, 0.525), (2, 0.52)]
    ]
    runs.append({"kind": "random", "fraction": 0.1, "seed": 0, "accuracy": 0.49})
    runs.append({"kind": "top", "fraction": 0.2, "seed": 0, "accuracy": 0.9})  # other
    summary = sec42.summarize(runs, 0.1)
    top = summary["top"]
    assert top["seeds"] == [0, 1, 2]
    assert top["mean"] == pytest.approx(np.mean([0.51, 0.525, 0.52]))
    assert top["difference"]["values"] == pytest.approx([0.01, 0.005, 0.01])
    expected = stats.ttest_rel([0.51, 0.525, 0.52], [0.50, 0.52, 0.51]).pvalue
    assert top["difference"]["paired_t_p"] == pytest.approx(expected)
    # one paired seed: a difference, but no test and no spread
    assert summary["random"]["difference"]["mean"] == pytest.approx(-0.01)
    assert "paired_t_p" not in summary["random"]["difference"]
    assert np.isnan(summary["random"]["std"])


def test_runs_come_most_needed_first():
    runs = configs.section42_runs("cpu")
    assert len(runs) == len(set(runs))
    seeds = configs.SECTION_42_SEEDS["cpu"]
    core = {
        (k, f, s)
        for s in seeds
        for k, f in [("none", 0.0), ("top", 0.1), ("random", 0.1)]
    }
    assert set(runs[: len(core)]) == core
    assert runs[0] == ("none", 0.0, seeds[0])


@pytest.fixture
def tiny_scale(monkeypatch, tmp_path):
    monkeypatch.setenv("INFLUENCE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(configs.SCALES, "tiny", {"cifar10-fixed": TINY})
    monkeypatch.setitem(configs.SECTION_42_SEEDS, "tiny", (0, 1))
    try:
        load_transfer_data(TINY)
    except DatasetNotFoundError as error:
        pytest.skip(f"needs MNIST: {error}")
    return "tiny"


def test_an_interrupted_run_resumes_without_training_again(
    tiny_scale, tmp_path, monkeypatch
):
    path = tmp_path / "sec42.json"
    sec42.reproduce_section42(path, tiny_scale, limit=3)
    first = read_results(path)["results"]["experiments"]["cifar10-fixed"]
    assert [(r["kind"], r["seed"]) for r in first["runs"]] == [
        ("none", 0),
        ("top", 0),
        ("random", 0),
    ]
    trained = []
    original = sec42.retrain_without

    def counting(config, data, removed, seed):
        trained.append(seed)
        return original(config, data, removed, seed)

    monkeypatch.setattr(sec42, "retrain_without", counting)
    sec42.reproduce_section42(path, tiny_scale, limit=4)
    again = read_results(path)["results"]["experiments"]["cifar10-fixed"]
    assert trained == [1]  # only the missing run: ("none", 0.0, seed 1)
    assert again["runs"][:3] == first["runs"] and again["scores"] == first["scores"]
    assert set(again["summary"]) == {"none", "top", "random"}
