"""Section 4.4's helpers: the parameter distance, the stored-score lookup, the two configs."""

from __future__ import annotations

import math

import torch
from torch import nn

from experiments import sec44
from experiments.configs import SECTION_44_CG, section44
from experiments.provenance import read_results, write_section

torch.set_num_threads(1)


def _pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    b = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    return a, b


def test_distance_is_the_euclidean_norm_of_the_parameter_difference():
    a, b = _pair()
    direct = torch.cat(
        [(p - q).detach().flatten() for p, q in zip(a.parameters(), b.parameters())]
    ).norm()
    assert math.isclose(sec44.distance(a, b), float(direct), rel_tol=1e-6)
    assert math.isclose(sec44.distance(a, b), sec44.distance(b, a), rel_tol=1e-12)
    assert sec44.distance(a, b) > 0


def test_distance_is_zero_for_identical_modules():
    a, _ = _pair()
    assert sec44.distance(a, a) == 0.0
    copy = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    copy.load_state_dict(a.state_dict())
    assert sec44.distance(a, copy) == 0.0


def test_distance_moves_with_a_single_parameter():
    a, _ = _pair()
    b = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        b[2].bias[1] += 0.5
    assert math.isclose(sec44.distance(a, b), 0.5, rel_tol=1e-6)


def test_stored_scores_is_none_for_a_missing_file(tmp_path):
    assert sec44.stored_scores(section44("quick")["C"], tmp_path / "absent.json") is None


def _results_file(tmp_path):
    """A small section-4.1-like results file, written as ``record_experiment`` writes it."""
    c, d = section44("quick").values()
    done = {
        "experiments": {
            "other": {"config": d.as_dict(), "scores": [9.0]},
            "match": {"config": c.as_dict(), "scores": [1.0, -2.0, 3.0]},
        }
    }
    path = tmp_path / "sec41.json"
    write_section(path, done, "quick")
    assert read_results(path)["results"]["experiments"]["match"]["scores"] == [1, -2, 3]
    return path, c, d


def test_stored_scores_is_none_for_a_config_the_file_does_not_hold(tmp_path):
    path, c, _ = _results_file(tmp_path)
    assert sec44.stored_scores(c.replace(cg_iters=c.cg_iters + 1), path) is None
    assert sec44.stored_scores(c.replace(seed=c.seed + 1), path) is None


def test_stored_scores_finds_the_experiment_with_the_same_config(tmp_path):
    path, c, d = _results_file(tmp_path)
    assert sec44.stored_scores(c, path) == [1.0, -2.0, 3.0]
    assert sec44.stored_scores(d, path) == [9.0]


def test_model_d_triples_model_c_finetuning_and_shares_the_rest():
    for scale in ("quick", "cpu", "paper"):
        c, d = section44(scale)["C"], section44(scale)["D"]
        assert c.case == d.case == "updated"
        assert d.finetune_size == 3 * c.finetune_size
        assert d.finetune_steps == 3 * c.finetune_steps
        same = {
            k: v
            for k, v in c.as_dict().items()
            if k not in ("finetune_size", "finetune_steps")
        }
        assert same == {k: d.as_dict()[k] for k in same}, scale
    assert section44("cpu")["C"].cg_iters == SECTION_44_CG
