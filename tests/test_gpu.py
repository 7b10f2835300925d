"""The exact and CG checks again on CUDA, where a GPU is present."""

from __future__ import annotations

import copy

import pytest
import torch
from test_multistage import _rel, dense_scores

from experiments import toy as toys
from influence import CG, Exact, MultiStage

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]


@pytest.mark.parametrize("case", ["fixed", "updated"])
def test_exact_and_cg_on_cuda(case):
    p = toys.make_problem()
    t = toys.train(p, case)
    expected = dense_scores(p, t, case)
    cuda = torch.device("cuda")
    emb, hu, ht, emb_bar = (
        copy.deepcopy(m).to(cuda)
        for m in (t.embedding, t.pretrain_head, t.finetune_head, t.pretrained_embedding)
    )
    kw = dict(pretrained_embedding=emb_bar, alpha=p.alpha) if case == "updated" else {}
    ms = MultiStage(
        emb, hu, ht, pretrain_l2=p.pretrain_l2, finetune_l2=p.finetune_l2, case=case, **kw
    )
    data = dict(
        pretrain=(p.zx, p.zy), finetune=(p.xx, p.xy), test=(p.tx, p.ty)
    )  # CPU data: moved batch by batch
    exact = ms.scores(**data, pretrain_solver=Exact(), finetune_solver=Exact())
    assert exact.device.type == "cuda"
    assert _rel(exact.cpu(), expected) <= 1e-8
    cg = ms.scores(
        **data,
        pretrain_solver=CG(iters=500, tol=1e-12),
        finetune_solver=CG(iters=500, tol=1e-12),
    )
    assert _rel(cg.cpu(), expected) <= 1e-5
