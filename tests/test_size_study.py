"""Section 4.4's converged study: the summed-F Hessian, and how paired studies pick a damping."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from experiments import size_study
from experiments.data import DatasetNotFoundError
from experiments.krylov import krylov
from experiments.paired_solves import converged_damping, positive_dampings
from experiments.size_study import SummedF
from influence import MultiStage
from influence.solvers import Matrix

torch.set_num_threads(1)
ALPHA, N = 0.05, 7


def _case2(alpha: float = ALPHA) -> tuple[MultiStage, tuple[torch.Tensor, torch.Tensor]]:
    """A tiny float64 Case 2 model (W* moved off W_bar) and its finetuning data."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    emb = nn.Sequential(nn.Linear(3, 4), nn.Tanh()).double()
    head_u, head_t = nn.Linear(4, 3).double(), nn.Linear(4, 2).double()
    w_bar = copy.deepcopy(emb)
    with torch.no_grad():
        for p in emb.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    finetune = (
        torch.randn(20, 3, generator=g, dtype=torch.float64),
        torch.arange(20) % 2,
    )
    ms = MultiStage(  # the L2 term keeps K invertible along the softmax's flat directions
        emb,
        head_u,
        head_t,
        case="updated",
        alpha=alpha,
        pretrained_embedding=w_bar,
        finetune_l2=0.1,
    )
    return ms, finetune


def test_summed_f_is_the_hessian_of_the_summed_objective():
    ms, (x, y) = _case2()
    summed = SummedF(ms.finetune_hessian((x, y)), N, ms.alpha, ms.W.numel)
    w = ms.W.numel

    def objective(p: torch.Tensor) -> torch.Tensor:
        mean_f = ms.finetune_losses(p, x, y).mean() + ms.finetune_l2 / 2 * (p**2).sum()
        return N * mean_f + ms.alpha * ((p[:w] - ms.w_bar) ** 2).sum()

    direct = torch.autograd.functional.hessian(objective, ms.finetune_point)
    assert torch.allclose(summed.to_dense(), direct, rtol=1e-10, atol=1e-10)
    block = torch.randn(3, summed.dim, dtype=torch.float64)
    assert torch.allclose(summed.matvec(block), block @ direct, rtol=1e-10, atol=1e-10)


def test_summed_reading_is_the_mean_model_with_alpha_over_n():
    """``-2 alpha [K_sum^-1 df]_W`` = eq. 15 of a mean-F model whose coupling is alpha / n."""
    ms, finetune = _case2()
    weak, _ = _case2(ALPHA / N)
    df = torch.randn(ms.finetune_point.numel(), dtype=torch.float64)
    summed = SummedF(ms.finetune_hessian(finetune), N, ms.alpha, ms.W.numel)
    u_sum = ms.pullback(torch.linalg.solve(summed.to_dense(), df), df, finetune)
    k_weak = weak.finetune_hessian(finetune).to_dense()
    u_weak = weak.pullback(torch.linalg.solve(k_weak, df), df, finetune)
    assert torch.allclose(u_sum, u_weak, rtol=1e-9, atol=1e-12)
    assert u_sum.norm() > 0


def test_summed_f_refuses_an_empty_finetuning_set():
    ms, finetune = _case2()
    with pytest.raises(ValueError, match="n: expected"):
        SummedF(ms.finetune_hessian(finetune), 0, ms.alpha, ms.W.numel)


def _indefinite(n: int = 12) -> Matrix:
    g = torch.Generator().manual_seed(2)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    eig = torch.linspace(-0.5, 10.0, n, dtype=torch.float64)
    return Matrix(q @ torch.diag(eig) @ q.T)


def test_dampings_kept_lift_the_most_negative_ritz_value_with_a_margin():
    h = _indefinite()
    runs = krylov(h, torch.ones(2, h.dim, dtype=torch.float64), h.dim)
    low, high, kept = positive_dampings(runs, (1e-1, 1e-2, 1e-3))
    assert low == pytest.approx(-0.5, abs=1e-8) and high == pytest.approx(10.0)
    assert kept == [pytest.approx(1.0)]  # 0.1 and 0.01 of 10 do not lift -0.5 by 10%
    chosen, converged = converged_damping(runs, kept)
    assert chosen == kept[0] and converged[kept[0]]  # the full space: exact


def test_converged_damping_is_the_smallest_that_every_run_reached():
    h = Matrix(torch.diag(torch.logspace(-4, 1, 40, dtype=torch.float64)))
    runs = krylov(h, torch.ones(1, h.dim, dtype=torch.float64), 10)
    chosen, converged = converged_damping(runs, [1.0, 1e-1, 1e-4], tolerance=1e-3)
    assert converged[1.0] and not converged[1e-4]
    assert chosen == min(d for d, ok in converged.items() if ok)
    fallback, _ = converged_damping(runs, [1e-4, 1e-5], tolerance=1e-12)
    assert fallback == 1e-4  # none converged: the largest tried


@pytest.fixture(scope="module")
def quick_study() -> dict:
    try:
        return size_study.run_study("quick")
    except DatasetNotFoundError as error:
        pytest.skip(f"needs CIFAR-10: {error}")


def test_k_damping_sweep_at_the_study_damping_is_the_study(quick_study):
    """The sweep's row at the study's lambda_K gives the study's ratio: the same models, the
    same u, the same H_G (read at the same damping)."""
    lam_k = quick_study["mean"]["finetune_solves"]["damping"]
    sweep = size_study.k_damping_sweep("quick", also=(lam_k,))
    dampings = [r["k_damping"] for r in sweep["rows"]]
    assert dampings == sorted(dampings, reverse=True) and lam_k in dampings
    assert all(d > -sweep["k_ritz"]["smallest"] for d in dampings), (
        "each K + lambda I is PD"
    )
    assert sweep["h_g"]["damping"] == pytest.approx(quick_study["mean"]["damping"])
    (row,) = (r for r in sweep["rows"] if r["k_damping"] == lam_k)
    (study_row,) = quick_study["mean"]["replicates"]
    assert row["comparison"]["ratio_of_means"] == pytest.approx(
        study_row["comparison"]["ratio_of_means"], rel=1e-6
    )
    assert row["u_norm"]["C"] == pytest.approx(
        study_row["tasks"]["C"]["u_norm"], rel=1e-6
    )


def test_k_damping_sweep_refuses_an_indefinite_damping(quick_study):
    low = quick_study["mean"]["finetune_solves"]["ritz"]["smallest"]
    assert low < 0, "the quick K is indefinite, so a small damping leaves it so"
    with pytest.raises(ValueError, match="also: .* indefinite"):
        size_study.k_damping_sweep("quick", also=(abs(low) / 2,))


def test_at_study_damping_adds_a_new_seed_only_where_both_dampings_match():
    def cmp(x: float) -> dict:
        return {"ratio_of_means": x}

    study = {
        "finetune_solves": {"damping": 19.4},
        "damping": 12.0,
        "finetune_seeds": [None, 1],
        "replicates": [
            {"finetune_seed": None, "comparison": cmp(0.8)},
            {"finetune_seed": 1, "comparison": cmp(1.4)},
        ],
    }

    def sweep(h_g: float, rows: list) -> dict:
        return {
            "h_g": {"damping": h_g},
            "rows": [
                {"k_damping": d, "k_converged": ok, "comparison": cmp(x)}
                for d, ok, x in rows
            ],
        }

    sweeps = {
        None: sweep(
            12.0, [(19.4, True, 0.8), (0.5, True, 1.3)]
        ),  # a study seed: not again
        2: sweep(12.0, [(25.0, True, 9.0), (19.4, True, 1.1)]),
        3: sweep(6.0, [(19.4, True, 7.0)]),  # H_G read elsewhere
        4: sweep(12.0, [(19.4, False, 7.0)]),  # K short of the tolerance
    }
    got = size_study.at_study_damping(study, sweeps)
    assert [(s, c["ratio_of_means"]) for s, c in got] == [(None, 0.8), (1, 1.4), (2, 1.1)]
