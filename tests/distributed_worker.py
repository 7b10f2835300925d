"""One rank of a torchrun job for tests/test_distributed.py: score a saved toy problem.

Run as ``torchrun --standalone --nproc-per-node=N tests/distributed_worker.py PROBLEM OUT
[options]``. PROBLEM is a ``torch.save`` of ``{"problem": Problem, "net": MultiStageNet,
"case": str}``; each rank writes what it got to ``OUT/rank<r>.pt`` (scores and report figures),
or, when scoring raised, the error to ``OUT/error<r>.txt`` before exiting with status 1.
"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from influence import CG, MultiStage


def solvers() -> dict[str, CG]:
    """The defaults' dampings, solved to 1e-10: CG's default tol of 1e-6 would let the
    rounding of sums taken in another order move the scores by about that much."""
    return dict(
        pretrain_solver=CG(damping=1e-2, iters=500, tol=1e-10),
        finetune_solver=CG(damping=1e-8, iters=500, tol=1e-10),
    )


class Candidates(Dataset):
    """The candidates as a map-style dataset that can fail, or kill its process, at one index."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, fail_at: int, kill_at: int):
        self.x, self.y, self.fail_at, self.kill_at = x, y, fail_at, kill_at

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if i == self.fail_at:
            raise RuntimeError(f"cannot read candidate {i}")
        if i == self.kill_at:  # as if the job's time ran out: no cleanup, no message
            os.kill(os.getpid(), signal.SIGKILL)
        return self.x[i], self.y[i]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("problem")
    parser.add_argument("out")
    parser.add_argument("--candidates", type=int, default=None, help="score the first N")
    parser.add_argument(
        "--loader", type=int, default=0, help="candidates as a DataLoader"
    )
    parser.add_argument("--per-test", action="store_true")
    parser.add_argument("--gather", default="all")
    parser.add_argument("--scores-file", default=None)
    parser.add_argument("--fail-at", type=int, default=-1)
    parser.add_argument("--kill-at", type=int, default=-1)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--backend", default="gloo")
    parser.add_argument(
        "--cuda", action="store_true", help="the modules on this rank's GPU"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.cuda:  # NCCL needs one GPU a rank; gloo may share one
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
    dist.init_process_group(args.backend)
    rank = dist.get_rank()
    saved = torch.load(args.problem, weights_only=False)
    p, t, case = saved["problem"], saved["net"], saved["case"]
    if args.cuda:  # the data stays on the CPU: batches are moved as they are used
        for name in (
            "embedding",
            "pretrain_head",
            "finetune_head",
            "pretrained_embedding",
        ):
            setattr(t, name, getattr(t, name).cuda())
        if case == "fixed":
            t.pretrained_embedding = t.embedding
    kw = dict(pretrained_embedding=t.pretrained_embedding, alpha=p.alpha)
    ms = MultiStage(
        t.embedding,
        t.pretrain_head,
        t.finetune_head,
        pretrain_l2=p.pretrain_l2,
        finetune_l2=p.finetune_l2,
        case=case,
        **(kw if case == "updated" else {}),
    )
    n = len(p.zy) if args.candidates is None else args.candidates
    candidates = (p.zx[:n], p.zy[:n])
    if args.loader or args.fail_at >= 0 or args.kill_at >= 0:
        dataset = Candidates(*candidates, args.fail_at, args.kill_at)
        candidates = DataLoader(dataset, batch_size=args.loader or 5, shuffle=False)
    out = Path(args.out)
    try:
        scores = ms.scores(
            (p.zx, p.zy),
            (p.xx, p.xy),
            (p.tx, p.ty),
            candidates,
            per_test=args.per_test,
            **solvers(),
            batch_size=16,  # several batches per rank, so the sums really stream
            gather=args.gather,
            scores_file=args.scores_file,
            timeout=args.timeout,
        )
    except Exception as error:
        (out / f"error{rank}.txt").write_text(f"{type(error).__name__}: {error}")
        raise
    report = {
        "scored_rows": ms.report.scored_rows,
        "communication_bytes": ms.report.communication_bytes,
    }
    scores = None if scores is None else scores.cpu()
    torch.save({"scores": scores, "report": report}, out / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
