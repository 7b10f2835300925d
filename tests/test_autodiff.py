"""Double-backprop products and batched per-example derivatives against torch.func's dense ones."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import hessian, jacrev

from influence.autodiff import (
    DataHessian,
    ParamSpace,
    _jvp_by_double_backward,
    call,
    hvp,
    jvp_losses,
    mixed_vjp,
    per_example_grads,
)


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    space = ParamSpace.of(net)
    x = torch.randn(17, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (17,))

    def losses(p, xb, yb):
        return nn.functional.cross_entropy(call(net, space, p, xb), yb, reduction="none")

    return net, space, space.flatten(net), x, y, losses


def test_param_space_round_trip():
    net, space, at, *_ = _setup()
    assert space.numel == sum(p.numel() for p in net.parameters()) == at.numel()
    back = space.unflatten(at)
    for name, p in net.named_parameters():
        assert torch.equal(back[name], p.detach())


def test_hvp_and_blocks_match_dense_hessian():
    _, _, at, x, y, losses = _setup()
    h = hessian(lambda p: losses(p, x, y).mean())(at)
    v = torch.randn(2, at.numel(), dtype=torch.float64)
    assert torch.allclose(
        hvp(lambda p: losses(p, x, y).mean(), at, v[0]), h @ v[0], rtol=1e-10, atol=1e-12
    )
    assert torch.allclose(
        hvp(lambda p: losses(p, x, y).mean(), at, v), v @ h, rtol=1e-10, atol=1e-12
    )


def test_data_hessian_streams_the_mean_with_its_diagonal():
    _, _, at, x, y, losses = _setup()
    h = hessian(lambda p: losses(p, x, y).mean())(at) + 0.3 * torch.eye(
        at.numel(), dtype=torch.float64
    )
    batches = lambda: ((x[i : i + 5], y[i : i + 5]) for i in range(0, 17, 5))  # noqa: E731  uneven batches
    op = DataHessian(losses, at, batches, diagonal=0.3)
    v = torch.randn(at.numel(), dtype=torch.float64)
    assert torch.allclose(op.matvec(v), h @ v, rtol=1e-10, atol=1e-12)
    assert torch.allclose(op.to_dense(block=7), h, rtol=1e-10, atol=1e-12)
    g = torch.func.grad(lambda p: losses(p, x, y).mean())(at)
    assert torch.allclose(op.loss_gradient(), g, rtol=1e-10, atol=1e-13)


def test_mixed_vjp_matches_dense_block():
    _, space, at, x, y, losses = _setup()
    n1 = 3 * 5 + 5  # the first layer is "W", the rest "Theta"

    def fn(theta, w):
        return losses(torch.cat([w, theta]), x, y).mean()

    h = hessian(lambda p: losses(p, x, y).mean())(at)
    v = torch.randn(at.numel() - n1, dtype=torch.float64)
    got = mixed_vjp(fn, at[n1:], at[:n1], v)
    assert torch.allclose(got, h[n1:, :n1].T @ v, rtol=1e-10, atol=1e-12)


def test_jvp_and_per_example_grads_match_jacobian():
    _, _, at, x, y, losses = _setup()
    jac = jacrev(lambda p: losses(p, x, y))(at)  # [B, p]
    v = torch.randn(at.numel(), dtype=torch.float64)
    block = torch.randn(3, at.numel(), dtype=torch.float64)
    f = lambda p: losses(p, x, y)  # noqa: E731
    assert torch.allclose(jvp_losses(f, at, v), jac @ v, rtol=1e-10, atol=1e-12)
    assert torch.allclose(jvp_losses(f, at, block), jac @ block.T, rtol=1e-10, atol=1e-12)
    assert torch.allclose(
        _jvp_by_double_backward(f, at, v), jac @ v, rtol=1e-10, atol=1e-12
    )
    assert torch.allclose(
        _jvp_by_double_backward(f, at, block), jac @ block.T, rtol=1e-10, atol=1e-12
    )
    assert torch.allclose(
        per_example_grads(losses, at, x, y, chunk=4), jac, rtol=1e-10, atol=1e-12
    )


def test_jvp_losses_falls_back_only_where_forward_mode_is_missing(monkeypatch):
    """torch's fused CPU LSTM has no forward derivative: the double-backward path answers.
    Any other error, here a shape error, is the caller's and is raised as it is."""
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 4, batch_first=True).double()
    space = ParamSpace.of(lstm)
    at = space.flatten(lstm)
    x = torch.randn(5, 6, 3, dtype=torch.float64)

    def losses(p):
        return call(lstm, space, p, x)[0].pow(2).sum(dim=(1, 2))

    v = torch.randn_like(at)
    jac = torch.autograd.functional.jacobian(losses, at)
    assert torch.allclose(jvp_losses(losses, at, v), jac @ v, rtol=1e-10, atol=1e-12)

    def no_fallback(*args):
        raise AssertionError("fell back to double backward on an unrelated error")

    monkeypatch.setattr("influence.autodiff._jvp_by_double_backward", no_fallback)
    with pytest.raises(RuntimeError, match="shape|size"):
        jvp_losses(lambda p: (p[:7] @ torch.ones(6, dtype=p.dtype)).reshape(1), at, v)
