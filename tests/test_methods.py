"""The methods chapter's layer: LiSSA, the LDS, EK-FAC through kronfluence, and Bao et al.'s
formula and Theorem 1 against dense algebra on a tiny converged model in both cases."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as nnf
from tiny_models import TINY as TINY_MODEL
from torch import nn

from experiments.converged_loo import converged_optimum
from experiments.data import DatasetNotFoundError
from experiments.lds import lds, random_subsets, subset_predictions
from experiments.lissa import LiSSA
from influence import Exact
from influence.solvers import Matrix

kronfluence = pytest.importorskip("kronfluence")

# smaller than the removal tests' model: every method here solves with it many times
TINY = dataclasses.replace(
    TINY_MODEL,
    pretrain_size=60,
    finetune_size=40,
    test_size=10,
    channels=(2, 2),
    adam_steps=150,
)


# ---- LiSSA ------------------------------------------------------------------------------------


def _spd(n: int, low: float, high: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return q @ torch.diag(torch.linspace(low, high, n, dtype=torch.float64)) @ q.T


def test_lissa_converges_to_the_damped_inverse_at_its_predicted_rate():
    a = _spd(12, 0.5, 2.0)
    b = torch.randn(12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x, info = LiSSA(damping=0.1, depth=300, scale=2.5).solve(Matrix(a), b)
    exact = torch.linalg.solve(a + 0.1 * torch.eye(12, dtype=torch.float64), b)
    assert float((x - exact).norm() / exact.norm()) < 1e-12
    assert info.converged and info.hessian_vector_products == 301
    # the error shrinks by 1 - lambda_min / scale a step: 30 steps leave (1 - 0.6/2.5)^31
    short, _ = LiSSA(damping=0.1, depth=30, scale=2.5).solve(Matrix(a), b)
    error = float((short - exact).norm() / exact.norm())
    assert 0.1 * (1 - 0.6 / 2.5) ** 31 < error < 10 * (1 - 0.6 / 2.5) ** 31


def test_lissa_says_when_the_scale_is_too_small():
    with pytest.raises(RuntimeError, match="diverged"):
        LiSSA(depth=500, scale=0.5).solve(
            Matrix(_spd(6, 0.5, 2.0)), torch.ones(6).double()
        )
    with pytest.raises(ValueError, match="scale"):
        LiSSA(scale=0.0)


# ---- the LDS ----------------------------------------------------------------------------------


def test_random_subsets_are_halves_and_reproducible():
    kept = random_subsets(100, 8, 0.5, seed=3)
    assert kept.shape == (8, 100) and (kept.sum(1) == 50).all()
    assert torch.equal(kept, random_subsets(100, 8, 0.5, seed=3))
    assert not torch.equal(kept, random_subsets(100, 8, 0.5, seed=4))
    with pytest.raises(ValueError, match="fraction"):
        random_subsets(100, 8, 1.0)


def test_lds_is_one_for_a_linear_truth_and_near_zero_for_unrelated_scores():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(200, generator=g, dtype=torch.float64)
    kept = random_subsets(200, 60, seed=1)
    truth = subset_predictions(scores, kept)  # a world where effects add up exactly
    # subset_predictions is -sum(removed scores)/m: check it against the definition
    removed_sum = torch.stack([scores[~k].sum() for k in kept])
    assert torch.allclose(truth, -removed_sum / 200)
    exact = lds(truth, torch.exp(3 * truth))  # any increasing function of the truth
    assert exact.rho == pytest.approx(1.0) and exact.low == pytest.approx(1.0)
    # scores unrelated to the truth: rho centred on 0 (sd about 1/sqrt(60) a draw), and the
    # 95% interval covering 0 about 95% of the time
    draws = [
        lds(
            subset_predictions(torch.randn(200, generator=g).double(), kept),
            truth,
            resamples=300,
            seed=k,
        )
        for k in range(40)
    ]
    assert abs(np.mean([d.rho for d in draws])) < 0.07
    assert np.mean([d.low < 0 < d.high for d in draws]) >= 0.85
    noisy = lds(truth + 0.5 * truth.std() * torch.randn(60, generator=g).double(), truth)
    assert 0.6 < noisy.rho < 1.0 and noisy.low < noisy.rho < noisy.high


# ---- EK-FAC through kronfluence -------------------------------------------------------------


def _tiny_net() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8, 3)
    ).double()
    x = torch.randn(40, 1, 6, 6, dtype=torch.float64)
    return net, (x, torch.randint(0, 3, (40,)))


def _flat_grad(net: nn.Module, loss: torch.Tensor) -> torch.Tensor:
    return torch.cat(
        [g.reshape(-1) for g in torch.autograd.grad(loss, list(net.parameters()))]
    )


def test_ekfac_preconditioner_is_the_dense_inverse_of_kronfluence_factors(tmp_path):
    from experiments.ekfac import fit_ekfac

    net, data = _tiny_net()
    fitted = fit_ekfac(net, data, damping=0.1, batch_size=20, workdir=tmp_path)
    u = torch.randn(sum(p.numel() for p in net.parameters()), dtype=torch.float64)
    dense = fitted.dense()
    assert torch.allclose(dense, dense.T) and torch.linalg.eigvalsh(dense)[0] > -1e-12
    want = torch.linalg.solve(dense + 0.1 * torch.eye(len(u), dtype=torch.float64), u)
    got = fitted.precondition(u)
    assert float((got - want).norm() / want.norm()) < 1e-10
    with pytest.raises(ValueError, match="entries"):
        fitted.precondition(u[:-1])


def test_linear_functional_trick_matches_kronfluence_pairwise_scores(tmp_path):
    """A query gradient handed to EKFAC.precondition gives kronfluence's own pairwise scores,
    so a vector u that is no loss's gradient is preconditioned by the same map."""
    import logging

    from kronfluence.analyzer import Analyzer
    from kronfluence.arguments import ScoreArguments
    from torch.utils.data import TensorDataset

    from experiments.ekfac import _task, fit_ekfac

    net, (x, y) = _tiny_net()
    fitted = fit_ekfac(net, (x, y), damping=0.1, batch_size=20, workdir=tmp_path)
    xq, yq = x[:2] + 0.3, y[:2]
    query = _flat_grad(net, nnf.cross_entropy(net(xq), yq, reduction="sum"))
    train = torch.stack(
        [
            _flat_grad(net, nnf.cross_entropy(net(x[i : i + 1]), y[i : i + 1]))
            for i in range(40)
        ]
    )
    mine = train @ fitted.precondition(query)
    analyzer = Analyzer(
        "ekfac",
        fitted.model,
        _task(),
        cpu=True,
        disable_tqdm=True,
        output_dir=str(tmp_path),
        log_level=logging.WARNING,
    )
    f64 = torch.float64
    args = ScoreArguments(
        damping_factor=0.1,
        per_sample_gradient_dtype=f64,
        precondition_dtype=f64,
        score_dtype=f64,
        aggregate_query_gradients=True,
    )
    with pytest.warns(FutureWarning, match="GradScaler"):  # kronfluence's, on the CPU
        analyzer.compute_pairwise_scores(
            "s",
            "factors",
            query_dataset=TensorDataset(xq, yq),
            train_dataset=TensorDataset(x, y),
            per_device_query_batch_size=2,
            per_device_train_batch_size=20,
            score_args=args,
            overwrite_output_dir=True,
        )
    theirs = analyzer.load_pairwise_scores("s")["all_modules"][0]
    assert float((theirs - mine).norm() / theirs.norm()) < 1e-10


# ---- the formulas against dense algebra on a converged tiny model ----------------------------


@pytest.fixture(scope="module")
def tiny_optimum():
    try:
        return converged_optimum(TINY)
    except DatasetNotFoundError as error:
        pytest.skip(str(error))


def _dense_hessian(fn, at: torch.Tensor) -> torch.Tensor:
    return torch.autograd.functional.hessian(fn, at)


def test_case1_formulas_match_dense_algebra(tiny_optimum):
    from experiments.methods import Comparison

    opt = tiny_optimum
    c = Comparison(opt)
    ms, l2 = c.ms, TINY.l2
    (xp, yp), (xf, yf), (xt, yt) = opt.pretrain, opt.finetune, opt.test
    phi, p_w = ms.pretrain_point, ms.W.numel
    h_g = _dense_hessian(
        lambda v: ms.pretrain_losses(v, xp, yp).mean() + l2 / 2 * v.pow(2).sum(), phi
    )
    point = ms.finetune_point
    theta = point[p_w:]

    def fine(w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (
            ms.finetune_losses(torch.cat([w, t]), xf, yf).mean() + l2 / 2 * t.pow(2).sum()
        )

    full = _dense_hessian(lambda v: fine(v[:p_w], v[p_w:]), point)
    h_f, f_tw = full[p_w:, p_w:], full[p_w:, :p_w]
    grad_f = torch.autograd.functional.jacobian(
        lambda v: ms.finetune_losses(v, xt, yt).sum(), point
    )
    grads = torch.autograd.functional.jacobian(
        lambda v: ms.pretrain_losses(v, xp, yp), phi
    )
    pad = torch.zeros(ms.U.numel, dtype=torch.float64)

    # Bao et al.'s formula, Case 1 reading: -grad g^T H_G^-1 [df/dW; 0]
    bao_v2, _ = c.pretrain_solve(c.bao_u()[0], Exact())
    bao = c.scores(bao_v2)
    want = grads @ torch.linalg.solve(h_g, torch.cat([-grad_f[:p_w], pad]))
    assert float((bao - want).norm() / want.norm()) < 1e-8
    # Theorem 1 adds the cross term F_ThetaW^T H_F^-1 df/dTheta
    u, _ = c.cross_u(Exact())
    th1 = c.scores(c.pretrain_solve(u, Exact())[0])
    cross = f_tw.T @ torch.linalg.solve(h_f, grad_f[p_w:])
    want1 = grads @ torch.linalg.solve(h_g, torch.cat([cross - grad_f[:p_w], pad]))
    assert float((th1 - want1).norm() / want1.norm()) < 1e-8
    assert theta.numel() == h_f.shape[0]
    # and the cross term is not negligible here: the two scores differ
    assert float((th1 - bao).norm() / th1.norm()) > 0.05


def test_case2_bao_formula_is_theorem1_without_the_proximity_term(tiny_optimum):
    from experiments.converged_case2 import updated_finetuning
    from experiments.methods import Comparison

    opt, alpha, l2 = tiny_optimum, 0.05, TINY.l2
    ft = updated_finetuning(opt, alpha)
    c = Comparison(opt, ft)
    ms, p_w = c.ms, c.p_w
    (xp, yp), (xf, yf), (xt, yt) = opt.pretrain, opt.finetune, opt.test
    h_g = _dense_hessian(
        lambda v: ms.pretrain_losses(v, xp, yp).mean() + l2 / 2 * v.pow(2).sum(),
        ms.pretrain_point,
    )
    h_ft = _dense_hessian(
        lambda v: ms.finetune_losses(v, xf, yf).mean() + l2 / 2 * v.pow(2).sum(),
        ms.finetune_point,
    )
    grad_f = torch.autograd.functional.jacobian(
        lambda v: ms.finetune_losses(v, xt, yt).sum(), ms.finetune_point
    )
    grads = torch.autograd.functional.jacobian(
        lambda v: ms.pretrain_losses(v, xp, yp), ms.pretrain_point
    )
    pad = torch.zeros(ms.U.numel, dtype=torch.float64)

    # without eq. 12's proximity term F's Hessian over (W, Theta) is indefinite here: the
    # formula still applies its inverse (by LU), and says so
    with pytest.warns(RuntimeWarning, match="not positive definite"):
        u, _ = c.bao_u()
    bao = c.scores(c.pretrain_solve(u, Exact())[0])
    inner = -torch.linalg.solve(h_ft, grad_f)[:p_w]
    want = grads @ torch.linalg.solve(h_g, torch.cat([inner, pad]))
    assert float((bao - want).norm() / want.norm()) < 1e-7
    # eq. 15: K = H_ft + 2 alpha I on W, and u = -2 alpha [K^-1 grad f]_W
    k = h_ft.clone()
    k.diagonal()[:p_w] += 2 * alpha
    u1, _ = c.cross_u(Exact())
    th1 = c.scores(c.pretrain_solve(u1, Exact())[0])
    inner1 = -2 * alpha * torch.linalg.solve(k, grad_f)[:p_w]
    want1 = grads @ torch.linalg.solve(h_g, torch.cat([inner1, pad]))
    assert float((th1 - want1).norm() / want1.norm()) < 1e-7
    assert np.isfinite(th1.numpy()).all()
