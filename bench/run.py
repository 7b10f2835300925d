"""Benchmarks of the influence pipeline on the MNIST network of Table A: ratios, not seconds.

Absolute times on shared machines are noise; ratios between two passes measured side by
side are not. Each figure is the best of ``--repeats`` runs. Printed as a table and written
to ``bench/results.json`` with the hardware and the date.

    python bench/run.py            # or: make bench
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from timing import best_of  # bench/timing.py: scripts run from bench/

from experiments.models import table_a
from experiments.provenance import provenance
from influence import CG, MultiStage
from influence.autodiff import per_example_grads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=5000)
    parser.add_argument("--hessian-examples", type=int, default=1000)
    parser.add_argument("--finetune-examples", type=int, default=5000)
    parser.add_argument(
        "--iters",
        type=int,
        default=20,
        help="CG iterations of each solve in the whole-call ratio",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).with_name("results.json")
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    # an untrained net is not stationary and CG stops short: expected when timing, and only those
    for expected in ("stopped after", "has gradient norm"):
        warnings.filterwarnings("ignore", f".*{expected}", RuntimeWarning)

    torch.manual_seed(0)
    net = table_a("mnist", 4, 6)
    for module in (net.embedding, net.pretrain_head, net.finetune_head):
        module.to(device)
    ms = MultiStage(net.embedding, net.pretrain_head, net.finetune_head)
    # Timing does not depend on pixel values: MNIST-shaped inputs keep the benchmark offline.
    gen = torch.Generator().manual_seed(0)
    zx = torch.rand(args.candidates, 1, 28, 28, generator=gen, device="cpu").to(device)
    zy = torch.randint(0, 4, (args.candidates,), generator=gen).to(device)
    xx = torch.rand(args.finetune_examples, 1, 28, 28, generator=gen).to(device)
    xy = torch.randint(0, 6, (args.finetune_examples,), generator=gen).to(device)
    hx, hy = zx[: args.hessian_examples], zy[: args.hessian_examples]
    tx, ty = xx[:500], xy[:500]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed(fn: Callable[[], object]) -> float:
        def run() -> None:
            fn()
            sync()

        return best_of(run, args.repeats)

    at = ms.pretrain_point
    v2 = torch.randn_like(at)
    batch = 500

    def forward() -> None:
        with torch.no_grad():
            for i in range(0, args.candidates, batch):
                net.pretrain_head(net.embedding(zx[i : i + batch]))

    def batched_scores() -> torch.Tensor:
        return ms.score_candidates((zx, zy), v2, batch_size=batch)

    def vmap_scores() -> torch.Tensor:
        return torch.cat(
            [
                per_example_grads(
                    ms.pretrain_losses, at, zx[i : i + batch], zy[i : i + batch]
                )
                @ v2
                for i in range(0, args.candidates, batch)
            ]
        )

    def loop_scores() -> torch.Tensor:
        params = [p for m in (net.embedding, net.pretrain_head) for p in m.parameters()]
        out = torch.empty(args.candidates, device=device)
        v_parts = torch.split(v2, [p.numel() for p in params])
        for i in range(args.candidates):
            loss = torch.nn.functional.cross_entropy(
                net.pretrain_head(net.embedding(zx[i : i + 1])), zy[i : i + 1]
            )
            grads = torch.autograd.grad(loss, params)
            out[i] = sum((g.reshape(-1) * v).sum() for g, v in zip(grads, v_parts))
        return out

    scores_batched = batched_scores()
    agreement = ((scores_batched - loop_scores()).norm() / scores_batched.norm()).item()
    t_forward = timed(forward)
    t_batched = timed(batched_scores)
    t_vmap = timed(vmap_scores)
    t_loop = best_of(lambda: (loop_scores(), sync()), 1)

    h_g = ms.pretrain_hessian((hx, hy), batch_size=batch)
    h_f = ms.finetune_hessian((xx, xy), batch_size=batch)
    t_hvp = timed(lambda: h_g.matvec(v2))
    t_grad = timed(h_g.loss_gradient)
    t_hvp_f = timed(lambda: h_f.matvec(torch.randn(h_f.dim, device=device)))

    solvers = dict(
        pretrain_solver=CG(damping=1e-2, iters=args.iters, tol=1e-30),
        finetune_solver=CG(damping=1e-8, iters=args.iters, tol=1e-30),
    )
    data = dict(pretrain=(hx, hy), finetune=(xx, xy), test=(tx, ty), candidates=(zx, zy))
    t_whole = timed(lambda: ms.scores(**data, **solvers, batch_size=batch))
    products_g = ms.report.pretrain_solves[0].hessian_vector_products
    products_f = ms.report.finetune_solves[0].hessian_vector_products
    # lower bound: the Hessian-vector products both solves must make, plus one scoring pass
    bound = products_g * t_hvp + products_f * t_hvp_f + t_batched

    rows = [
        (
            "scoring: per-candidate backward loop / batched JVP",
            t_loop / t_batched,
            ">= 20x (GPU); on CPU the bound is the forward-pass ratio below",
        ),
        ("scoring: batched JVP / no-grad forward", t_batched / t_forward, "<= 3x"),
        (
            "scoring: chunked vmap(grad) / no-grad forward",
            t_vmap / t_forward,
            "(fallback path)",
        ),
        ("HVP / gradient, same 1,000 examples", t_hvp / t_grad, "<= 3x"),
        ("whole scores() / lower bound of its parts", t_whole / bound, "<= 1.3x"),
    ]
    print(
        f"\nMNIST network of Table A on {device} ({torch.get_num_threads()} threads), {args.candidates} candidates"
    )
    print(f"batched and looped scores agree to relative error {agreement:.1e}\n")
    print(f"{'ratio':55s} {'measured':>9s}  target")
    for name, value, target in rows:
        print(f"{name:55s} {value:8.2f}x  {target}")
    print(
        f"\nseconds: forward {t_forward:.2f}, batched {t_batched:.2f}, vmap {t_vmap:.2f}, loop {t_loop:.2f}, "
        f"HVP {t_hvp:.3f}, gradient {t_grad:.3f}, finetune HVP {t_hvp_f:.3f}, whole {t_whole:.2f}, bound {bound:.2f}"
    )
    result = {
        "ratios": {name: round(value, 3) for name, value, _ in rows},
        "targets": {name: target for name, _, target in rows},
        "seconds": dict(
            forward=t_forward,
            batched=t_batched,
            vmap=t_vmap,
            loop=t_loop,
            hvp=t_hvp,
            gradient=t_grad,
            finetune_hvp=t_hvp_f,
            whole=t_whole,
            bound=bound,
        ),
        "config": vars(args) | {"out": str(args.out)},
        "provenance": provenance(device),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
