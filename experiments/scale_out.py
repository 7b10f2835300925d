"""The computing chapter's worked torchrun example: the toy problem scored on several processes.

    torchrun --standalone --nproc-per-node=2 -m experiments.scale_out --out scores.pt

Every rank trains the same float64 toy problem (the same seed everywhere, so the same optimum),
makes the same :meth:`influence.MultiStage.scores` call one process would, and gets every score
back in candidate order. Rank 0 saves them, with the bytes it sent, for the chapter to compare
with one process.
"""

from __future__ import annotations

import argparse

import torch
import torch.distributed as dist

from influence import MultiStage

from . import toy


def problem(case: str) -> tuple[toy.Problem, MultiStage]:
    """The toy problem of the theory chapters, trained for ``case``, and its scorer."""
    p = toy.make_problem(m=60, n=40, n_test=6, seed=0)
    t = toy.train(p, case)
    return p, t.multistage(
        pretrain_l2=p.pretrain_l2, finetune_l2=p.finetune_l2, case=case, alpha=p.alpha
    )


def score(p: toy.Problem, ms: MultiStage) -> torch.Tensor | None:
    """The scores of every pretraining example, the same call in one process or under torchrun."""
    return ms.scores((p.zx, p.zy), (p.xx, p.xy), (p.tx, p.ty), batch_size=16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="fixed", choices=["fixed", "updated"])
    parser.add_argument("--out", default="scores.pt")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")  # torchrun's environment says where the others are
    p, ms = problem(args.case)
    scores = score(p, ms)
    if dist.get_rank() == 0:
        torch.save({"scores": scores, "bytes": ms.report.communication_bytes}, args.out)
        print(
            f"{dist.get_world_size()} processes scored {len(scores)} candidates; "
            f"rank 0 sent {ms.report.communication_bytes:,} bytes"
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
