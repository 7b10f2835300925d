"""Section 4.4's helpers: the parameter distance and the two configs.

The stored-score lookup is now a ResultsStore read (ResultsStore.find); its tests are in
test_store.py.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from experiments import sec44
from experiments.configs import SECTION_44_CG, section44

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
