"""Float32 scores agree with float64 ones, even on confident examples (losses evaluated in float64).

A confident example's loss derivative is a difference of nearly equal large numbers: for
cross-entropy in forward mode, ``t_y - sum_k p_k t_k`` with ``p_y`` near 1. Evaluated in
float32 it cancels to 0 or to a few ulps, so float32 scores were quantized or exactly 0.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from influence import Exact, MultiStage
from influence.autodiff import DataHessian, jvp_losses
from influence.losses import cross_entropy, precise


def _confident_problem(case: str):
    """A float32 two-stage model whose pretraining losses are mostly below 1e-5, and its float64 copy."""
    g = torch.Generator().manual_seed(0)
    d, h = 3, 6
    centers = 6 * torch.randn(3, d, generator=g)
    zy = torch.arange(60) % 3
    zx = centers[zy] + 0.3 * torch.randn(60, d, generator=g)
    xy = torch.arange(40) % 2
    xx = 3 * torch.randn(40, d, generator=g)
    tx, ty = 3 * torch.randn(8, d, generator=g), torch.arange(8) % 2
    torch.manual_seed(1)
    emb = nn.Sequential(nn.Linear(d, h), nn.Tanh())
    head_u, head_t = nn.Linear(h, 3), nn.Linear(h, 2)
    # Pretrain by full-batch Adam until the examples are confidently right.
    params = [*emb.parameters(), *head_u.parameters()]
    opt = torch.optim.Adam(params, lr=0.05)
    for _ in range(1500):
        opt.zero_grad()
        nn.functional.cross_entropy(head_u(emb(zx)), zy).backward()
        opt.step()
    with torch.no_grad():  # twice the margins: the same predictions, far more confident
        head_u.weight.mul_(2.0)
        head_u.bias.mul_(2.0)
    opt = torch.optim.Adam(head_t.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(head_t(emb(xx)), xy).backward()
        opt.step()
    modules32 = [emb, head_u, head_t]
    if case == "updated":
        modules32.append(copy.deepcopy(emb))  # W_bar; W* moved a little below
        with torch.no_grad():
            for p in emb.parameters():
                p.add_(1e-2 * torch.randn(p.shape, generator=g))
    modules64 = [copy.deepcopy(m).double() for m in modules32]
    data32 = dict(pretrain=(zx, zy), finetune=(xx, xy), test=(tx, ty))
    data64 = {k: (x.double(), y) for k, (x, y) in data32.items()}
    with torch.no_grad():
        losses = nn.functional.cross_entropy(head_u(emb(zx)), zy, reduction="none")
    return modules32, modules64, data32, data64, losses


def _ms(modules, case):
    kw = (
        dict(case="updated", alpha=0.05, pretrained_embedding=modules[3])
        if case == "updated"
        else {}
    )
    return MultiStage(*modules[:3], pretrain_l2=1e-3, finetune_l2=1e-3, **kw)


@pytest.mark.parametrize("case", ["fixed", "updated"])
def test_float32_scores_match_float64_on_confident_examples(case):
    m32, m64, d32, d64, losses = _confident_problem(case)
    assert (losses < 1e-5).float().mean() > 0.5, "the set-up must be confident"
    with pytest.warns(
        RuntimeWarning
    ):  # Adam does not reach a stationary point; the comparison does not need one
        s64 = _ms(m64, case).scores(
            **d64, pretrain_solver=Exact(), finetune_solver=Exact()
        )
        s32 = _ms(m32, case).scores(
            **d32, pretrain_solver=Exact(), finetune_solver=Exact()
        )
    assert s32.dtype == torch.float32 and s64.dtype == torch.float64
    big = s64.abs() > 1e-4 * s64.abs().max()
    relative = ((s32.double() - s64).abs() / s64.abs())[big]
    assert big.sum() >= 20
    assert relative.max() < 1e-2, (
        f"float32 vs float64: worst relative error {relative.max():.3g}"
    )
    assert not ((s32 == 0) & (s64 != 0)).any(), (
        "a float32 score is exactly 0 where the float64 one is not"
    )


def test_jvp_of_a_confident_loss_is_exact_with_precise_losses():
    """The defect at its root: a tangent of norm ~1e3 through cross-entropy with p_y ~ 1."""
    torch.manual_seed(0)
    net = nn.Linear(4, 5)
    x = torch.randn(200, 4)
    with torch.no_grad():
        y = net(x).argmax(1)
        net.weight.mul_(20.0)  # the same argmax, far more confident
        net.bias.mul_(20.0)
    tangent = 1e3 * torch.randn(sum(p.numel() for p in net.parameters()))
    net64 = copy.deepcopy(net).double()

    def losses_fn(model, loss):
        from influence.autodiff import ParamSpace, call

        space = ParamSpace.of(model)
        return space.flatten(model), lambda p: loss(
            call(model, space, p, x.to(p.dtype)), y
        )

    at64, fn64 = losses_fn(net64, cross_entropy)
    reference = jvp_losses(fn64, at64, tangent.double())
    assert (reference != 0).all()
    at32, naive = losses_fn(net, cross_entropy)
    _, fixed = losses_fn(net, precise(cross_entropy))
    plain = jvp_losses(naive, at32, tangent)
    stable = jvp_losses(fixed, at32, tangent)
    plain_error = (plain.double() - reference).abs() / reference.abs()
    stable_error = (stable.double() - reference).abs() / reference.abs()
    assert (plain == 0).sum() >= 10 and (plain_error > 0.1).sum() >= 20, (
        "float32 evaluation should show the defect"
    )
    assert stable_error.max() < 1e-3
    assert not (stable == 0).any()


def test_precise_losses_keep_custom_losses_and_their_hessians():
    """Any per-example loss, e.g. MSE with float targets, runs in float64 and its HVPs match float64."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    x, y = torch.randn(30, 3), torch.randn(30, 2)

    def mse(out, target):
        return ((out - target) ** 2).sum(-1)

    from influence.autodiff import ParamSpace, call

    space = ParamSpace.of(net)
    loss = precise(mse)
    out = loss(net(x), y)
    assert out.dtype == torch.float64 and out.shape == (30,)
    net64 = copy.deepcopy(net).double()
    h32 = DataHessian(
        lambda p, xb, yb: loss(call(net, space, p, xb), yb),
        space.flatten(net),
        lambda: [(x, y)],
    )
    h64 = DataHessian(
        lambda p, xb, yb: mse(call(net64, space, p, xb), yb),
        space.flatten(net64),
        lambda: [(x.double(), y.double())],
    )
    v = torch.randn(space.numel)
    hv32, hv64 = h32.matvec(v), h64.matvec(v.double())
    assert hv32.dtype == torch.float32
    assert ((hv32.double() - hv64).norm() / hv64.norm()).item() < 1e-5
