"""MultiStage against dense algebra, finite differences and leave-one-out retraining."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call, hessian, jacrev

from experiments import toy as toys
from experiments.models import MultiStageNet
from experiments.objectives import StageObjective, finetune_objective
from influence import CG, Exact, Identity, MultiStage


def _unflatten(module: nn.Module, vec: Tensor) -> dict[str, Tensor]:
    out, i = {}, 0
    for name, p in module.named_parameters():
        out[name] = vec[i : i + p.numel()].view_as(p)
        i += p.numel()
    return out


def _vec(*modules: nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for m in modules for p in m.parameters()])


def dense_parts(
    p: toys.Problem, t: MultiStageNet, g_loss=None, f_loss=None
) -> dict[str, Tensor]:
    """H_G, dg(z), d2F (over (W, Theta), with its L2 term) and df(x_t), by torch.func.hessian / jacrev.

    ``g_loss`` and ``f_loss`` are per-example losses (default cross-entropy); the modules are
    evaluated as they are (put them in eval mode first where that matters).
    """
    emb_bar, emb, hu, ht = (
        t.pretrained_embedding,
        t.embedding,
        t.pretrain_head,
        t.finetune_head,
    )
    nw = sum(q.numel() for q in emb.parameters())
    g_loss = g_loss or (
        lambda out, y: nn.functional.cross_entropy(out, y, reduction="none")
    )
    f_loss = f_loss or (
        lambda out, y: nn.functional.cross_entropy(out, y, reduction="none")
    )

    def g_losses(wu: Tensor, x: Tensor, y: Tensor) -> Tensor:
        feats = functional_call(emb_bar, _unflatten(emb_bar, wu[:nw]), (x,))
        return g_loss(functional_call(hu, _unflatten(hu, wu[nw:]), (feats,)), y)

    def f_losses(wt: Tensor, x: Tensor, y: Tensor) -> Tensor:
        feats = functional_call(emb, _unflatten(emb, wt[:nw]), (x,))
        return f_loss(functional_call(ht, _unflatten(ht, wt[nw:]), (feats,)), y)

    wu0, wt0 = _vec(emb_bar, hu), _vec(emb, ht)
    return dict(
        nw=nw,
        h_g=hessian(
            lambda v: g_losses(v, p.zx, p.zy).mean() + p.pretrain_l2 / 2 * (v**2).sum()
        )(wu0),
        grads_g=jacrev(lambda v: g_losses(v, p.zx, p.zy))(wu0),  # [m, p1]
        h_f=hessian(
            lambda v: f_losses(v, p.xx, p.xy).mean() + p.finetune_l2 / 2 * (v**2).sum()
        )(wt0),
        test_grads=jacrev(lambda v: f_losses(v, p.tx, p.ty))(wt0),  # [n_test, p2]
    )


def dense_scores(
    p: toys.Problem, t: MultiStageNet, case: str, per_test: bool = False, **losses
) -> Tensor:
    """Theorem 1 (eqs. 6, 9, 10) or eqs. 13-15 written out with torch.linalg.solve."""
    d = dense_parts(p, t, **losses)
    nw, h_f, test_grads = d["nw"], d["h_f"], d["test_grads"]
    i_wbar = -torch.linalg.solve(d["h_g"], d["grads_g"].T)[
        :nw
    ]  # eq. 9 / 14, one column per z
    if case == "fixed":
        h_tt, h_tw = h_f[nw:, nw:], h_f[nw:, :nw]
        i_theta = torch.linalg.solve(h_tt, h_tw @ (-i_wbar))  # eq. 10
        per = test_grads[:, nw:] @ i_theta + test_grads[:, :nw] @ i_wbar  # eq. 6
    else:
        k = h_f.clone()
        k[:nw, :nw] += 2 * p.alpha * torch.eye(nw, dtype=k.dtype)
        rhs = torch.cat(
            [
                2 * p.alpha * i_wbar,
                torch.zeros(k.shape[0] - nw, i_wbar.shape[1], dtype=k.dtype),
            ]
        )
        per = test_grads @ torch.linalg.solve(k, rhs)  # eqs. 13, 15
    return per.T if per_test else per.sum(0)


def _ms(p: toys.Problem, t: MultiStageNet, case: str) -> MultiStage:
    kw = (
        dict(pretrained_embedding=t.pretrained_embedding, alpha=p.alpha)
        if case == "updated"
        else {}
    )
    return MultiStage(
        t.embedding,
        t.pretrain_head,
        t.finetune_head,
        pretrain_l2=p.pretrain_l2,
        finetune_l2=p.finetune_l2,
        case=case,
        **kw,
    )


def _data(p: toys.Problem) -> dict:
    return dict(pretrain=(p.zx, p.zy), finetune=(p.xx, p.xy), test=(p.tx, p.ty))


def _rel(a: Tensor, b: Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module", params=["fixed", "updated"])
def trained(request):
    p = toys.make_problem()
    return request.param, p, toys.train(p, request.param)


def test_exact_matches_dense(trained):
    case, p, t = trained
    ms = _ms(p, t, case)
    got = ms.scores(**_data(p), pretrain_solver=Exact(), finetune_solver=Exact())
    assert _rel(got, dense_scores(p, t, case)) <= 1e-8


def test_report_records_each_stage_solver_damping_and_operator(trained):
    """The defaults are DEFAULT_*_SOLVER (eq. 16, dampings 1e-2 and 1e-8), and the report says so."""
    from influence.multistage import DEFAULT_FINETUNE_SOLVER, DEFAULT_PRETRAIN_SOLVER

    case, p, t = trained
    ms = _ms(p, t, case)
    ms.scores(**_data(p))
    stages = ms.report.stages()
    assert stages["pretrain"]["solver"] == repr(DEFAULT_PRETRAIN_SOLVER)
    assert (stages["pretrain"]["damping"], stages["pretrain"]["operator"]) == (1e-2, "H2")
    assert stages["finetune"]["solver"] == repr(DEFAULT_FINETUNE_SOLVER)
    assert (stages["finetune"]["damping"], stages["finetune"]["operator"]) == (1e-8, "H2")
    ms.scores(
        **_data(p), pretrain_solver=Exact(0.5), finetune_solver=Exact(0.0, operator="H2")
    )
    stages = ms.report.stages()
    assert (stages["pretrain"]["damping"], stages["pretrain"]["operator"]) == (0.5, "H")
    assert stages["finetune"]["operator"] == "H2" and stages["finetune"]["solves"] == 1
    assert stages["pretrain"]["converged"] and stages["pretrain"]["positive_definite"]


@pytest.mark.parametrize("squared", [True, False])
def test_cg_matches_dense(trained, squared):
    case, p, t = trained
    solvers = dict(
        pretrain_solver=CG(iters=500, tol=1e-12, squared=squared),
        finetune_solver=CG(iters=500, tol=1e-12, squared=squared),
    )
    got = _ms(p, t, case).scores(**_data(p), **solvers)
    assert _rel(got, dense_scores(p, t, case)) <= 1e-5


def test_per_test_matches_dense_and_sums(trained):
    case, p, t = trained
    ms = _ms(p, t, case)
    per = ms.scores(
        **_data(p),
        pretrain_solver=Exact(),
        finetune_solver=Exact(),
        per_test=True,
        test_block=4,
    )
    assert per.shape == (len(p.zy), len(p.ty))
    assert _rel(per, dense_scores(p, t, case, per_test=True)) <= 1e-8
    summed = ms.scores(**_data(p), pretrain_solver=Exact(), finetune_solver=Exact())
    assert _rel(per.sum(1), summed) <= 1e-10
    per_cg = ms.scores(
        **_data(p),
        pretrain_solver=CG(iters=300, tol=1e-12),
        finetune_solver=CG(iters=300, tol=1e-12),
        per_test=True,
    )
    assert _rel(per_cg.sum(1), summed) <= 1e-6


def test_candidates_subset_and_dataloader(trained):
    case, p, t = trained
    ms = _ms(p, t, case)
    full = ms.scores(**_data(p), pretrain_solver=Exact(), finetune_solver=Exact())
    ms.feature_cache_bytes = (
        0  # Case 1: recompute the embedding's outputs at every product
    )

    def loader(x, y, bs):
        return torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(x, y), batch_size=bs
        )  # noqa: E731

    streamed = ms.scores(
        pretrain=loader(p.zx, p.zy, 7),
        finetune=loader(p.xx, p.xy, 9),
        test=loader(p.tx, p.ty, 4),
        candidates=(p.zx[5:15], p.zy[5:15]),
        pretrain_solver=Exact(),
        finetune_solver=Exact(),
    )
    assert _rel(streamed, full[5:15]) <= 1e-10


def test_identity_replaces_every_inverse(trained):
    """Fig. 3's ablation: Algorithm 1 with both inverse Hessians replaced by I."""
    case, p, t = trained
    got = _ms(p, t, case).scores(
        **_data(p), pretrain_solver=Identity(), finetune_solver=Identity()
    )
    d = dense_parts(p, t)
    nw, grad_f = d["nw"], d["test_grads"].sum(0)
    if case == "fixed":
        u_w = d["h_f"][nw:, :nw].T @ grad_f[nw:] - grad_f[:nw]
    else:
        u_w = -2 * p.alpha * grad_f[:nw]
    assert _rel(got, d["grads_g"][:, :nw] @ u_w) <= 1e-10


def _central_difference(
    p: toys.Problem, t: MultiStageNet, case: str, i: int, eps: float
) -> float:
    def loss_at(e: float) -> float:
        weights = torch.full((len(p.zy),), 1 / len(p.zy), dtype=torch.float64)
        weights[i] += e
        return toys.summed_test_loss(p, toys.train(p, case, weights=weights, start=t))

    return (loss_at(eps) - loss_at(-eps)) / (2 * eps)


def test_finite_differences(trained):
    case, p, t = trained
    scores = _ms(p, t, case).scores(
        **_data(p), pretrain_solver=Exact(), finetune_solver=Exact()
    )
    for i in scores.abs().argsort(descending=True)[:3].tolist():
        fd = _central_difference(p, t, case, i, eps=1e-3)
        assert abs(fd - scores[i].item()) <= 1e-2 * abs(scores[i].item()), (
            i,
            fd,
            scores[i].item(),
        )


@pytest.mark.parametrize("case", ["fixed", "updated"])
def test_leave_one_out_correlation(case):
    """Retrain both stages without each of 25 examples: -score/m predicts the change in test loss.

    The L2 terms (3e-2) keep every example's pull small, so the first-order picture holds;
    with 1e-2 a few near-separable points move the optimum far enough to break linearity.
    """
    p = toys.make_problem(
        m=1000, n=200, n_test=20, seed=1, pretrain_l2=3e-2, finetune_l2=3e-2
    )
    t = toys.train(p, case)
    m = len(p.zy)
    scores = _ms(p, t, case).scores(
        **_data(p),
        pretrain_solver=CG(iters=300, tol=1e-10),
        finetune_solver=CG(iters=300, tol=1e-10),
    )
    base = toys.summed_test_loss(p, t)
    # the 10 largest |scores|, 5 smallest and 10 at random: a spread, not only the tails
    order = scores.abs().argsort(descending=True)
    picks = list(
        dict.fromkeys(
            order[:10].tolist()
            + order[-5:].tolist()
            + torch.randperm(m, generator=torch.Generator().manual_seed(0))[:10].tolist()
        )
    )
    predicted, actual = [], []
    for i in picks:
        weights = torch.full((m,), 1 / (m - 1), dtype=torch.float64)
        weights[i] = 0.0
        actual.append(
            toys.summed_test_loss(p, toys.train(p, case, weights=weights, start=t)) - base
        )
        predicted.append(-scores[i].item() / m)
    r = torch.corrcoef(torch.tensor([predicted, actual]))[0, 1].item()
    assert len(picks) >= 25 and r >= 0.99, (len(picks), r)


def test_squared_cg_handles_indefinite_hessian():
    """Eq. 16: CG on H^2 recovers H^-1 b for an indefinite H, where plain CG breaks down.

    H has eigenvalues +-lambda in pairs and b weighs each pair equally, so b^T H b = 0:
    plain CG's first step divides by a vanishing curvature and never recovers.
    """
    from influence.solvers import Matrix

    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(30, 30, generator=g, dtype=torch.float64))
    lam = torch.linspace(0.5, 3.0, 15, dtype=torch.float64)
    h = q @ torch.diag(torch.cat([lam, -lam])) @ q.T
    c = torch.rand(15, generator=g, dtype=torch.float64) + 0.5
    b = q @ torch.cat([c, c])
    exact = torch.linalg.solve(h, b)

    x, info = CG(iters=200, tol=1e-12, squared=True).solve(Matrix(h), b)
    assert _rel(x, exact) <= 1e-8
    assert info.converged

    plain = CG(iters=200, tol=1e-12, squared=False)
    with pytest.warns(RuntimeWarning, match="not positive definite"):
        x, info = plain.solve(Matrix(h), b)
    assert not info.converged
    assert not _rel(x, exact) < 1.0  # diverged (or NaN): no digit of H^-1 b is right


def _regression_problem(case: str) -> tuple[toys.Problem, MultiStageNet, dict]:
    """Two regression stages with different losses: MSE with float targets, then log-cosh."""
    g = torch.Generator().manual_seed(3)

    def mse(out: Tensor, y: Tensor) -> Tensor:
        return ((out - y) ** 2).sum(-1)

    def log_cosh(out: Tensor, y: Tensor) -> Tensor:
        return torch.log(torch.cosh(out - y)).sum(-1)

    def data(k: int, outputs: int) -> tuple[Tensor, Tensor]:
        x = torch.randn(k, 3, generator=g, dtype=torch.float64)
        return x, torch.tanh(x[:, :outputs] * 1.5) + 0.1 * torch.randn(
            k, outputs, generator=g, dtype=torch.float64
        )

    p = toys.Problem(
        *data(50, 2),
        *data(30, 1),
        *data(5, 1),
        pretrain_l2=1e-2,
        finetune_l2=1e-2,
        alpha=0.05,
    )
    torch.manual_seed(0)
    emb, hu, ht = (
        nn.Sequential(nn.Linear(3, 4), nn.Tanh()).double(),
        nn.Linear(4, 2).double(),
        nn.Linear(4, 1).double(),
    )
    toys._fit(
        StageObjective(
            [*emb.parameters(), *hu.parameters()],
            lambda x: hu(emb(x)),
            p.zx,
            p.zy,
            loss=mse,
            l2=p.pretrain_l2,
        )
    )
    if case == "fixed":
        objective = finetune_objective("fixed", emb, ht, p.xx, p.xy, l2=p.finetune_l2)
        net = MultiStageNet(emb, hu, ht)
    else:
        emb_star = copy.deepcopy(emb)
        objective = finetune_objective(
            "updated",
            emb_star,
            ht,
            p.xx,
            p.xy,
            pretrained=emb,
            alpha=p.alpha,
            l2=p.finetune_l2,
        )
        net = MultiStageNet(emb_star, hu, ht, emb)
    objective.loss = log_cosh
    toys._fit(objective)
    return p, net, dict(g_loss=mse, f_loss=log_cosh)


@pytest.mark.parametrize("case", ["fixed", "updated"])
def test_custom_losses_are_scored_as_given(case):
    """pretrain_loss and finetune_loss reach g and f, each in its own stage (a swap would fail here)."""
    p, net, losses = _regression_problem(case)
    ms = net.multistage(
        pretrain_loss=losses["g_loss"],
        finetune_loss=losses["f_loss"],
        pretrain_l2=p.pretrain_l2,
        finetune_l2=p.finetune_l2,
        alpha=p.alpha,
    )
    got = ms.scores(**_data(p), pretrain_solver=Exact(), finetune_solver=Exact())
    want = dense_scores(p, net, case, **losses)
    assert _rel(got, want) <= 1e-8
    swapped = dense_scores(p, net, case, g_loss=losses["f_loss"], f_loss=losses["g_loss"])
    assert _rel(swapped, want) > 1e-2  # the check can tell the two losses apart


def test_scores_are_taken_in_eval_mode():
    """Dropout and BatchNorm act as at inference while scoring, and the modules' modes are restored."""
    p = toys.make_problem()
    torch.manual_seed(0)
    emb = nn.Sequential(
        nn.Linear(3, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Dropout(0.5)
    ).double()
    hu, ht = nn.Linear(6, 3).double(), nn.Linear(6, 2).double()
    with (
        torch.no_grad()
    ):  # running statistics far from a fresh BatchNorm's, so train mode would differ
        for _ in range(20):
            emb(3 * p.zx + 1)
    net = MultiStageNet(emb, hu, ht)
    for m in (emb, hu, ht):
        m.train()
    ms = net.multistage(pretrain_l2=0.1, finetune_l2=0.1)
    with pytest.warns(
        RuntimeWarning, match="gradient norm"
    ):  # untrained: not stationary, and that is fine here
        got = ms.scores(**_data(p), pretrain_solver=Exact(), finetune_solver=Exact())
    assert emb.training and hu.training and ht.training
    for m in (emb, hu, ht):
        m.eval()
    q = dataclasses.replace(p, pretrain_l2=0.1, finetune_l2=0.1)
    assert _rel(got, dense_scores(q, net, "fixed")) <= 1e-8
