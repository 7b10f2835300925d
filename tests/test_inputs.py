"""Bad input is refused with an error that names the argument; a non-stationary model warns."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from experiments import toy as toys
from influence import CG, Exact, MultiStage


@pytest.fixture(scope="module")
def setup():
    p = toys.make_problem()
    return p, toys.train(p, "fixed")


def _ms(t, **kw):
    return MultiStage(t.embedding, t.pretrain_head, t.finetune_head, **kw)


def _data(p, **override):
    data = dict(
        pretrain=(p.zx, p.zy),
        finetune=(p.xx, p.xy),
        test=(p.tx, p.ty),
        pretrain_solver=Exact(),
        finetune_solver=Exact(),
    )
    data.update(override)
    return data


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(case="frozen"), ValueError, "case"),
        (dict(case="updated"), ValueError, "pretrained_embedding"),
        (dict(pretrain_l2=-1.0), ValueError, "pretrain_l2"),
        (dict(finetune_l2="0.1"), TypeError, "finetune_l2"),
        (dict(pretrain_loss="mse"), TypeError, "pretrain_loss"),
        (dict(alpha=-0.1), ValueError, "alpha"),
    ],
)
def test_bad_constructor_arguments(setup, kwargs, error, match):
    with pytest.raises(error, match=match):
        _ms(setup[1], **kwargs)


def test_updated_needs_positive_alpha_and_matching_embedding(setup):
    p, t = setup
    with pytest.raises(ValueError, match="alpha"):
        _ms(t, case="updated", pretrained_embedding=t.embedding, alpha=0.0)
    other = nn.Sequential(nn.Linear(3, 5), nn.Tanh()).double()
    with pytest.raises(ValueError, match="pretrained_embedding"):
        _ms(t, case="updated", pretrained_embedding=other)
    with pytest.raises(ValueError, match="pretrained_embedding"):
        _ms(
            t, pretrained_embedding=t.embedding
        )  # case "fixed": W* = W_bar, nothing to pass


def test_modules_must_be_modules_and_finite(setup):
    _, t = setup
    with pytest.raises(TypeError, match="pretrain_head"):
        MultiStage(t.embedding, lambda h: h, t.finetune_head)
    broken = copy.deepcopy(t.finetune_head)
    with torch.no_grad():
        broken.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="finetune_head.*NaN"):
        MultiStage(t.embedding, t.pretrain_head, broken)


def test_modules_must_share_dtype(setup):
    _, t = setup
    with pytest.raises(ValueError, match="dtype"):
        MultiStage(t.embedding, copy.deepcopy(t.pretrain_head).float(), t.finetune_head)


@pytest.mark.parametrize(
    "override, error, match",
    [
        (
            lambda p: dict(pretrain=(p.zx, p.zy[:-1])),
            ValueError,
            "pretrain: x and y have different lengths",
        ),
        (
            lambda p: dict(test=(p.tx[:, :2], p.ty)),
            ValueError,
            "test: .*cannot take x of shape",
        ),
        (
            lambda p: dict(finetune=(p.xx.float(), p.xy)),
            ValueError,
            "finetune: x is torch.float32",
        ),
        (lambda p: dict(finetune=p.xx), TypeError, "finetune: expected a pair"),
        (
            lambda p: dict(candidates=(p.zx[:0], p.zy[:0])),
            ValueError,
            "candidates: no examples",
        ),
        (
            lambda p: dict(pretrain=(torch.where(p.zx > 1, float("inf"), p.zx), p.zy)),
            ValueError,
            "pretrain: x holds NaN or Inf",
        ),
        (
            lambda p: dict(
                candidates=DataLoader(TensorDataset(p.zx, p.zy), shuffle=True)
            ),
            ValueError,
            "candidates: the DataLoader shuffles",
        ),
        # candidates default to pretrain, whose order then sets the scores' order: the same guard applies
        (
            lambda p: dict(pretrain=DataLoader(TensorDataset(p.zx, p.zy), shuffle=True)),
            ValueError,
            "pretrain: the DataLoader shuffles",
        ),
        (lambda p: dict(pretrain_solver="cg"), TypeError, "pretrain_solver"),
        (lambda p: dict(per_test=1), TypeError, "per_test"),
        (lambda p: dict(batch_size=0), ValueError, "batch_size"),
    ],
)
def test_bad_data(setup, override, error, match):
    p, t = setup
    with pytest.raises(error, match=match):
        _ms(t).scores(**_data(p, **override(p)))


def test_loss_must_be_per_example(setup):
    p, t = setup
    mean_loss = lambda out, y: nn.functional.cross_entropy(out, y)  # noqa: E731  reduced to a scalar
    with pytest.raises(
        ValueError, match=r"finetune_loss: expected per-example losses of shape \[2\]"
    ):
        _ms(t, finetune_loss=mean_loss).scores(**_data(p))


def test_untrained_model_warns_with_gradient_norm(setup):
    p, _ = setup
    emb, hu, ht = toys.make_modules(seed=3)
    with pytest.warns(
        RuntimeWarning, match=r"pretraining objective G has gradient norm \d"
    ):
        MultiStage(emb, hu, ht).scores(**_data(p))


def test_trained_model_does_not_warn(setup, recwarn):
    p, t = setup
    _ms(t, pretrain_l2=p.pretrain_l2, finetune_l2=p.finetune_l2).scores(**_data(p))
    assert not [w for w in recwarn if "gradient norm" in str(w.message)]


def test_float32_models_run(setup):
    p, t = setup
    t32 = [
        copy.deepcopy(m).float() for m in (t.embedding, t.pretrain_head, t.finetune_head)
    ]
    ms64 = _ms(t, pretrain_l2=p.pretrain_l2, finetune_l2=p.finetune_l2)
    ms32 = MultiStage(*t32, pretrain_l2=p.pretrain_l2, finetune_l2=p.finetune_l2)
    data32 = dict(
        pretrain=(p.zx.float(), p.zy),
        finetune=(p.xx.float(), p.xy),
        test=(p.tx.float(), p.ty),
    )
    s64 = ms64.scores(**_data(p))
    s32 = ms32.scores(
        **data32,
        pretrain_solver=CG(iters=200, tol=1e-5),
        finetune_solver=CG(iters=200, tol=1e-5),
    )
    assert s32.dtype == torch.float32
    assert ((s32.double() - s64).norm() / s64.norm()).item() < 1e-3


def test_modules_are_left_as_they_were(setup):
    p, t = setup
    before = [
        q.detach().clone()
        for m in (t.embedding, t.pretrain_head, t.finetune_head)
        for q in m.parameters()
    ]
    t.embedding.train()
    _ms(t, pretrain_l2=p.pretrain_l2, finetune_l2=p.finetune_l2).scores(**_data(p))
    assert t.embedding.training
    after = [
        q for m in (t.embedding, t.pretrain_head, t.finetune_head) for q in m.parameters()
    ]
    assert all(torch.equal(a, b) for a, b in zip(before, after))


def test_a_shuffled_pretrain_loader_is_fine_when_candidates_are_given(setup):
    """H_G is a mean, so its order does not matter; only the scored examples' order does."""
    p, t = setup
    shuffled = DataLoader(TensorDataset(p.zx, p.zy), batch_size=16, shuffle=True)
    l2 = dict(
        pretrain_l2=p.pretrain_l2, finetune_l2=p.finetune_l2
    )  # the objectives the toy minimized
    got = _ms(t, **l2).scores(**_data(p, pretrain=shuffled, candidates=(p.zx, p.zy)))
    want = _ms(t, **l2).scores(**_data(p))
    assert want.abs().max() < 1e3
    assert torch.allclose(got, want, rtol=1e-9, atol=0)
