"""Section 4.1's ladder: rung 3 (converged leave-one-out), rung 2 (the proximal response), spread removals."""

from __future__ import annotations

import pytest
import torch
from test_experiment import TINY, cache, tiny_data  # noqa: F401

from experiments import sec41
from experiments.converged_loo import ConvergedConfig, converged_loo
from experiments.data import DatasetNotFoundError
from experiments.evaluation import mean_loss
from experiments.proximal_response import ProximalConfig, proximal_response
from experiments.removals import spread
from experiments.transfer_training import train_transfer


def test_spread_takes_both_extremes_and_distinct_ranks():
    scores = torch.tensor([5.0, -3.0, 0.5, 9.0, 1.0, -7.0, 2.0])
    chosen = spread(scores, 4)
    assert chosen[0] == 5 and chosen[-1] == 3  # the smallest and the largest score
    assert len(set(chosen)) == 4
    assert scores[chosen].tolist() == sorted(scores[chosen].tolist())
    with pytest.raises(ValueError, match="k"):
        spread(scores, 2)


def test_proximal_response_agrees_with_the_damped_scores(tiny_data, cache):  # noqa: F811
    stored = sec41.run_validation(TINY.replace(removals=6), pairs=0)
    result = proximal_response(
        stored, ProximalConfig(sample_size=None, removals=4, linearity=1, cg_iters=300)
    )
    assert result["agreement"]["n"] == 4
    assert result["agreement"]["pearson_r"] > 0.99
    predicted, measured = (
        torch.tensor(result["predicted"]),
        torch.tensor(result["measured"]),
    )
    # in size too, to within the solver's floor: float32 descent on this tiny, max-pooled
    # model stops at gradient norms of about a twentieth of the push eps ||grad g(z)||
    assert (measured - predicted).norm() / predicted.norm() < 0.2
    # and halving eps moves the measured derivative by no more than that floor allows
    assert result["measured_at_half_eps"][0] == pytest.approx(measured[0].item(), rel=0.2)


def test_case_2_proximal_response_agrees_with_the_damped_scores(tiny_data, cache):  # noqa: F811
    """Case 2 (eq. 12): stage 2 re-optimizes (W, Theta) near the W_bar that stage 1 moved.

    Its push is the stage-1 move times 2 alpha, so the run is trained further than TINY (a
    smaller |k_min(K)|, hence a smaller lambda_2) and pushed by a whole copy of z, to stand
    above the float32 floor of the stage-2 gradient.
    """
    config = TINY.replace(pretrain_steps=200, finetune_steps=200)
    trained = train_transfer(config, tiny_data)
    stored = {  # rung 2 needs the config and the removals, not Appendix B's measurements
        "config": config.as_dict(),
        "validation": {
            "indices": list(range(0, 120, 20)),
            "original_loss": mean_loss(
                trained.net.embedding, trained.net.finetune_head, tiny_data.test
            ),
        },
    }
    result = proximal_response(
        stored,
        ProximalConfig(
            sample_size=None,
            removals=4,
            linearity=1,
            cg_iters=300,
            case="updated",
            eps=1 / config.hessian_examples,
        ),
    )
    assert result["experiment"]["case"] == "updated"
    assert result["agreement"]["n"] == 4
    assert result["agreement"]["pearson_r"] > 0.99
    predicted, measured = (
        torch.tensor(result["predicted"]),
        torch.tensor(result["measured"]),
    )
    assert (measured - predicted).norm() / predicted.norm() < 0.1
    # halving eps moves the derivative by no more than that floor, on the scale of the scores
    half = result["measured_at_half_eps"][0]
    assert abs(half - measured[0].item()) < 0.1 * measured.abs().max().item()
    with pytest.raises(ValueError, match="case"):
        proximal_response(stored, ProximalConfig(case="sideways"))


def test_converged_leave_one_out_is_predicted_by_the_scores():
    """Rung 3 at a tiny scale: every retraining converges, and the scores predict it to the
    rung's target (removing one of 200 examples is a larger step than one of 2,000)."""
    try:
        result = converged_loo(
            ConvergedConfig(
                pretrain_size=200,
                finetune_size=100,
                test_size=50,
                adam_steps=300,
                removals=6,
            )
        )
    except DatasetNotFoundError as error:
        pytest.skip(f"needs MNIST: {error}")
    assert result["hessian_extremes"][0] > 0  # an isolated minimum
    push = min(result["removed_gradient_norms"]) / result["m"]
    assert max(max(pair) for pair in result["retrained_gradient_norms"]) < 1e-3 * push
    assert result["agreement"]["n"] == 6
    assert result["agreement"]["pearson_r"] > 0.95


def test_ladder_and_damping_figures_draw_what_they_are_given():
    import matplotlib

    matplotlib.use("Agg")
    from experiments import plots

    fit = {"pearson_r": 0.9, "spearman_rho": 0.8, "n": 30}
    ax = plots.ladder(
        [
            {"label": "3", "score": fit, "identity": {**fit, "pearson_r": 0.3}},
            {"label": "1", "score": {**fit, "pearson_r": -0.2}, "identity": None},
        ]
    )
    assert [t.get_text() for t in ax.get_xticklabels()] == ["3", "1"]
    assert len(ax.containers) == 3  # two scores and one identity, each with its interval
    rows = [
        {
            "stage": "pretrain",
            "on": "H^2",
            "damping": d,
            "controlled": {"pearson_r": r},
            "relative_residual": residual,
        }
        for d, r, residual in ((1e-4, 0.1, 3e-2), (1e-2, -0.2, 1e-7))
    ] + [{"stage": "pretrain", "on": "H", "damping": 1e-4, "skipped": "not PD"}]
    sweep = {
        "rows": rows,
        "identity": {"controlled": {"pearson_r": 0.3}},
        "appendix_b": {"pretrain": 1e-2},
        "ritz_values": [-0.01, 0.05, 0.4],
    }
    left, right = plots.damping_sweep(sweep, k=1000)
    (curve,) = [
        line for line in left.get_lines() if line.get_label().startswith("pretrain")
    ]
    assert list(curve.get_ydata()) == [0.1, -0.2]  # the skipped row is not drawn
    hollow = [line for line in left.get_lines() if line.get_markerfacecolor() == "white"]
    assert [list(line.get_ydata()) for line in hollow] == [[0.1]]  # stopped short
    assert left.get_xscale() == "log" and right.get_xscale() == "log"
