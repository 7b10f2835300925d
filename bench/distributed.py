"""Strong scaling of MultiStage.scores under torchrun: 1 process against 2, as ratios.

The MNIST network of Table A (random weights, MNIST-shaped random inputs: timing does not
depend on pixel values) scored once on 1 process and once on 2 (gloo, one thread each), the
same call both times. Printed: the speed-up, each run's share of time spent in Hessian-vector
products (all-reduce included), the share spent scoring, and the bytes each rank sent to the
collectives for one test set. The other way to run the solves once, on rank 0 with v2
broadcast, is costed from the same measurements: the 1-process solve time plus the 2-process
scoring time.

    python bench/distributed.py          # launches torchrun itself
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def worker(args: argparse.Namespace) -> None:
    """One rank: time the scores call and the parts of it, write rank 0's figures as JSON."""
    import torch.distributed as dist

    from experiments.models import table_a
    from influence import CG, MultiStage
    from influence.autodiff import DataHessian

    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo")
    for expected in (
        "stopped after",
        "has gradient norm",
    ):  # random weights: not stationary
        warnings.filterwarnings("ignore", f".*{expected}", RuntimeWarning)
    torch.manual_seed(0)
    net = table_a("mnist", 4, 6)
    ms = MultiStage(net.embedding, net.pretrain_head, net.finetune_head)
    gen = torch.Generator().manual_seed(0)
    zx = torch.rand(args.candidates, 1, 28, 28, generator=gen)
    zy = torch.randint(0, 4, (args.candidates,), generator=gen)
    xx = torch.rand(args.finetune_examples, 1, 28, 28, generator=gen)
    xy = torch.randint(0, 6, (args.finetune_examples,), generator=gen)
    data = dict(
        pretrain=(zx[: args.hessian_examples], zy[: args.hessian_examples]),
        finetune=(xx, xy),
        test=(xx[:100], xy[:100]),
        candidates=(zx, zy),
    )
    solvers = dict(
        pretrain_solver=CG(damping=1e-2, iters=args.iters, tol=1e-30),
        finetune_solver=CG(damping=1e-8, iters=args.iters, tol=1e-30),
    )
    spent = {"hvp": 0.0, "scoring": 0.0}

    def timed(fn, key):  # wrap a method, adding its wall time to spent[key]
        def wrapper(*a, **kw):
            start = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[key] += time.perf_counter() - start

        return wrapper

    DataHessian.matvec = timed(DataHessian.matvec, "hvp")
    ms._score_rows = timed(ms._score_rows, "scoring")
    best = None
    for _ in range(args.repeats):
        spent.update(hvp=0.0, scoring=0.0)
        dist.barrier()
        start = time.perf_counter()
        ms.scores(**data, **solvers, batch_size=250)
        total = time.perf_counter() - start
        if best is None or total < best["total"]:
            best = {"total": total, **spent}
    best["bytes"] = ms.report.communication_bytes
    best["hvp_products"] = sum(
        s.hessian_vector_products
        for s in ms.report.pretrain_solves + ms.report.finetune_solves
    )
    best["parameters"] = ms.pretrain_point.numel()
    if dist.get_rank() == 0:
        Path(args.out).write_text(json.dumps(best))
    dist.destroy_process_group()


def launch(nproc: int, threads: int, args: argparse.Namespace, out: Path) -> dict:
    """Run this script under torchrun on ``nproc`` processes; rank 0's figures."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "INFLUENCE_PROGRESS": "0"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc-per-node={nproc}", __file__, "--worker", "--out", str(out)]
    command += ["--threads", str(threads)] + [
        f"--{k.replace('_', '-')}={getattr(args, k)}"
        for k in (
            "candidates",
            "hessian_examples",
            "finetune_examples",
            "iters",
            "repeats",
        )
    ]
    subprocess.run(command, env=env, check=True, cwd=ROOT)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=4000)
    parser.add_argument("--hessian-examples", type=int, default=1000)
    parser.add_argument("--finetune-examples", type=int, default=1000)
    parser.add_argument("--iters", type=int, default=10, help="CG iterations per solve")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    with tempfile.TemporaryDirectory() as folder:
        one = launch(1, 1, args, Path(folder) / "one.json")
        two = launch(2, 1, args, Path(folder) / "two.json")
    solve1, solve2 = one["total"] - one["scoring"], two["total"] - two["scoring"]
    rank0_broadcast = solve1 + two["scoring"]  # solves on one rank, scoring still sharded
    rows = [
        (
            "speed-up, 2 processes over 1 (1 thread each)",
            f"{one['total'] / two['total']:.2f}x",
        ),
        (
            "  Hessian-vector products' share, 1 process",
            f"{one['hvp'] / one['total']:.0%}",
        ),
        (
            "  Hessian-vector products' share, 2 processes",
            f"{two['hvp'] / two['total']:.0%}",
        ),
        ("  scoring's share, 1 process", f"{one['scoring'] / one['total']:.0%}"),
        ("  solves' speed-up (all but scoring)", f"{solve1 / solve2:.2f}x"),
        ("  scoring's speed-up", f"{one['scoring'] / two['scoring']:.2f}x"),
        (
            "sharded solves / solves on rank 0 + broadcast (costed)",
            f"{two['total'] / rank0_broadcast:.2f}",
        ),
        ("bytes each rank sent, per test set", f"{two['bytes']:,}"),
        (
            "  of which: all-reduces of p numbers (p, products)",
            f"{two['parameters']:,}, {two['hvp_products']}",
        ),
    ]
    print(
        f"{args.candidates} candidates, {args.hessian_examples} Hessian examples, "
        f"{args.finetune_examples} finetuning examples, CG {args.iters} iterations a solve"
    )
    for name, value in rows:
        print(f"{name:<58} {value}")


if __name__ == "__main__":
    main()
