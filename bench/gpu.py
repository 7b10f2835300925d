"""Score every CIFAR-10 pretraining example on one GPU, beside the paper's 230 s on a V100.

Section 4.2 of the paper: "the time for computing influence function with respect to all
pretraining data is 230 seconds on a single Tesla V100 GPU, where 200 iterations of Conjugate
Gradient for 2 IHVPs". This script times the same computation with the Table A CIFAR network
in the setup of section 4.1 (Appendix B, ``experiments.configs.PAPER["cifar10-fixed"]``): bird
vs frog pretraining (all 10,000 training images are scored), 5,000 finetuning images of the other
eight classes, every test image of those classes, H_G on 1,000 sampled pretraining images, and
two CG solves of 200 iterations each (tol 1e-30, so that every iteration runs), in float32.
Each phase is timed apart, beside the no-grad forward pass over the same images (the ratio of
DESIGN.md section 6). Then float32 scores are checked against a float64 copy of the model
(DESIGN.md section 3: about 1e-3 relative).

    python bench/gpu.py --prepare                 # here: writes .gpu-data/cifar10-subset.npz
    PYTHONPATH=. python3 bench/gpu.py             # on the GPU machine (carry .gpu-data)
    python bench/gpu.py --smoke --device cpu      # seconds on CPU: the same code, tiny

Real CIFAR-10 images are used when ``.gpu-data/cifar10-subset.npz`` exists, else random images
of the same shapes (timing does not depend on pixel values). Results go to ``$OUT/gpu.json``
when ``OUT`` is set, or to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("INFLUENCE_PROGRESS", "0")  # before influence is imported

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if (
    str(ROOT) not in sys.path
):  # run as a script from anywhere, without installing the package
    sys.path.insert(0, str(ROOT))

from experiments.configs import PAPER  # noqa: E402
from experiments.models import MultiStageNet, table_a  # noqa: E402
from influence import CG, MultiStage  # noqa: E402

CONFIG = PAPER["cifar10-fixed"]  # section 4.1, W fixed: Appendix B's numbers, typed once
PAPER_SECONDS = 230.0  # section 4.2, on one Tesla V100
TRAIN_PER_CLASS, TEST_PER_CLASS = 5000, 1000  # CIFAR-10
DATA_FILE = ROOT / ".gpu-data" / "cifar10-subset.npz"
MAX_DATA_BYTES = (
    40 * 2**20
)  # what may travel to the GPU machine, with room to spare under 64 MiB


@dataclass(frozen=True)
class Sizes:
    """How many examples each part uses; the defaults are the paper's setup."""

    candidates: int = (
        len(CONFIG.pretrain_classes) * TRAIN_PER_CLASS
    )  # all pretraining images
    hessian: int = CONFIG.hessian_examples  # pretraining images defining H_G
    finetune: int = CONFIG.finetune_size  # finetuning images defining F's Hessians
    test: int = (
        len(CONFIG.finetune_classes) * TEST_PER_CLASS
    )  # every test image of those classes
    iters: int = CONFIG.cg_iters  # CG iterations of each of the two solves
    batch: int = (
        1000  # examples a batch in the library's streamed sums and in the forward pass
    )
    train_steps: int = 300  # Adam steps of each stage before the precision check
    # The float32 vs float64 check: a subset, with fewer CG iterations.
    check_candidates: int = 500
    check_hessian: int = 300
    check_finetune: int = 500
    check_test: int = 200
    check_iters: int = 50
    # A smaller slice also in float64 on the CPU (only when the main device is a GPU).
    cpu_candidates: int = 100
    cpu_hessian: int = 50
    cpu_finetune: int = 100
    cpu_test: int = 50
    cpu_iters: int = 10


SMOKE = Sizes(
    candidates=32,
    hessian=8,
    finetune=16,
    test=8,
    iters=2,
    batch=16,
    train_steps=3,
    check_candidates=16,
    check_hessian=8,
    check_finetune=8,
    check_test=4,
    check_iters=2,
    cpu_candidates=8,
    cpu_hessian=4,
    cpu_finetune=4,
    cpu_test=2,
    cpu_iters=2,
)


# ---- data ----------------------------------------------------------------------------------------


def prepare(path: Path = DATA_FILE, limit: int = MAX_DATA_BYTES) -> dict[str, Any]:
    """Write the CIFAR-10 images this benchmark needs as one compressed uint8 npz under ``limit`` bytes.

    Run where ``INFLUENCE_DATA`` holds CIFAR-10. The pretraining images (bird, frog: every
    training image) come first; the finetuning images (5,000 sampled from the other eight
    classes, as the experiments sample them) and their test images fill what is left, two
    thirds and one third (F's Hessian runs over the finetuning images; the test images only
    enter one gradient). Whatever does not fit is tiled at run time: a repeated image costs
    the same time as a new one.
    """
    from experiments.data import load_cifar10, task_split

    x, y = load_cifar10(train=True, raw=True)
    tx, ty = load_cifar10(train=False, raw=True)
    pre = task_split(x, y, CONFIG.pretrain_classes)
    fin = task_split(
        x, y, CONFIG.finetune_classes, n=CONFIG.finetune_size, seed=CONFIG.seed
    )
    test = task_split(tx, ty, CONFIG.finetune_classes)
    test_order = torch.randperm(
        len(test[1]), generator=torch.Generator().manual_seed(CONFIG.seed)
    )  # a prefix of the test set then holds every class
    test = test[0][test_order], test[1][test_order]
    per_image = 0.95 * pre[0][0].numel()  # CIFAR-10 compresses to about 91% under zlib
    room = int(limit / per_image)
    n_pre = min(len(pre[1]), room)
    rest = max(room - n_pre, 0)
    n_fin = min(len(fin[1]), rest * 2 // 3)
    n_test = min(len(test[1]), rest - n_fin)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        arrays = dict(
            pretrain_x=pre[0][:n_pre],
            pretrain_y=pre[1][:n_pre],
            finetune_x=fin[0][:n_fin],
            finetune_y=fin[1][:n_fin],
            test_x=test[0][:n_test],
            test_y=test[1][:n_test],
        )
        np.savez_compressed(
            path,
            **{k: v.numpy().astype(np.uint8) for k, v in arrays.items()},
            pretrain_classes=np.array(CONFIG.pretrain_classes),
            finetune_classes=np.array(CONFIG.finetune_classes),
        )
        size = path.stat().st_size
        if size <= limit:
            break
        n_test, n_fin = int(0.9 * n_test), int(0.9 * n_fin)  # then the pretraining images
        if n_fin == 0:
            n_pre = int(0.95 * n_pre)
    info = dict(
        path=str(path),
        mib=round(size / 2**20, 2),
        pretrain=n_pre,
        pretrain_all=len(pre[1]),
        finetune=n_fin,
        finetune_all=len(fin[1]),
        test=n_test,
        test_all=len(test[1]),
    )
    print(
        f"wrote {path} ({info['mib']} MiB, limit {limit / 2**20:.0f} MiB): "
        f"{n_pre} of {len(pre[1])} pretraining images (classes {CONFIG.pretrain_classes}), "
        f"{n_fin} of {len(fin[1])} finetuning images and {n_test} of {len(test[1])} test images "
        f"(classes {CONFIG.finetune_classes})"
    )
    return info


def tiled(x: Tensor, y: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """The first ``n`` examples, repeating the set from its start where it holds fewer."""
    reps = -(-n // len(y))
    return x.repeat(reps, 1, 1, 1)[:n], y.repeat(reps)[:n]


def load_data(sizes: Sizes, synthetic: bool = False) -> dict[str, Any]:
    """The pretraining, finetuning and test images as uint8 [N, 3, 32, 32] with labels 0..k-1.

    Real images from :data:`DATA_FILE` where it exists (and ``synthetic`` is False), tiled to the
    sizes asked for; else random images and labels of the same shapes.
    """
    n_pre = max(
        sizes.candidates, sizes.hessian, sizes.check_candidates + sizes.check_hessian
    )
    n_fin, n_test = (
        max(sizes.finetune, sizes.check_finetune),
        max(sizes.test, sizes.check_test),
    )
    if DATA_FILE.is_file() and not synthetic:
        with np.load(DATA_FILE) as npz:
            parts = {
                k: torch.from_numpy(npz[k]) for k in npz.files if k.endswith(("_x", "_y"))
            }
        unique = {s: len(parts[f"{s}_y"]) for s in ("pretrain", "finetune", "test")}
        out = {
            s: tiled(parts[f"{s}_x"], parts[f"{s}_y"].long(), n)
            for s, n in (("pretrain", n_pre), ("finetune", n_fin), ("test", n_test))
        }
        return dict(
            **out, kind="real", unique=unique, file=str(DATA_FILE.relative_to(ROOT))
        )
    gen = torch.Generator().manual_seed(0)

    def random_images(n: int, classes: int) -> tuple[Tensor, Tensor]:
        x = torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)
        return x, torch.randint(0, classes, (n,), generator=gen)

    return dict(
        pretrain=random_images(n_pre, len(CONFIG.pretrain_classes)),
        finetune=random_images(n_fin, len(CONFIG.finetune_classes)),
        test=random_images(n_test, len(CONFIG.finetune_classes)),
        kind="synthetic",
        unique={"pretrain": n_pre, "finetune": n_fin, "test": n_test},
        file=None,
    )


def on(
    pair: tuple[Tensor, Tensor], device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """uint8 images as ``dtype`` in [0, 1] (as ``experiments.data.to_unit``), on ``device``."""
    x, y = pair
    return x.to(device).to(dtype).div_(255), y.to(device)


def first(pair: tuple[Tensor, Tensor], n: int, start: int = 0) -> tuple[Tensor, Tensor]:
    """Examples ``start`` to ``start + n`` of a pair."""
    return pair[0][start : start + n], pair[1][start : start + n]


# ---- the network ---------------------------------------------------------------------------------


def modules(net: MultiStageNet) -> list[nn.Module]:
    """The three parameter blocks W, U, Theta (Case 1: W_bar is the embedding itself)."""
    return [net.embedding, net.pretrain_head, net.finetune_head]


def moved(net: MultiStageNet, device: torch.device, dtype: torch.dtype) -> MultiStageNet:
    """A copy of ``net`` on ``device`` in ``dtype``."""
    return MultiStageNet(
        *(copy.deepcopy(m).to(device=device, dtype=dtype) for m in modules(net))
    )


def train_briefly(
    net: MultiStageNet,
    pretrain: tuple[Tensor, Tensor],
    finetune: tuple[Tensor, Tensor],
    steps: int,
    batch: int = CONFIG.batch_size,
) -> dict[str, float]:
    """Adam on (W, U) over the pretraining images, then on Theta with W frozen (Case 1).

    Far from converged: enough that the losses are not those of the initialization, so the
    precision check sees a network's gradients rather than noise. Returns the final mean losses.
    """
    gen = torch.Generator().manual_seed(CONFIG.seed)
    losses = {}
    for stage, (x, y), params, head in (
        (
            "pretrain",
            pretrain,
            [*net.embedding.parameters(), *net.pretrain_head.parameters()],
            net.pretrain_head,
        ),
        ("finetune", finetune, list(net.finetune_head.parameters()), net.finetune_head),
    ):
        opt = torch.optim.Adam(params, lr=CONFIG.lr)
        for _ in range(steps):
            index = torch.randint(0, len(y), (min(batch, len(y)),), generator=gen).to(
                y.device
            )
            opt.zero_grad()
            nn.functional.cross_entropy(
                head(net.embedding(x[index])), y[index]
            ).backward()
            opt.step()
        with torch.no_grad():
            n = min(len(y), 2000)
            losses[stage] = nn.functional.cross_entropy(
                head(net.embedding(x[:n])), y[:n]
            ).item()
    return losses


# ---- timing --------------------------------------------------------------------------------------


@contextlib.contextmanager
def expected_warnings() -> Iterator[None]:
    """Silence the two warnings this benchmark causes by design, and only those: tol=1e-30 is
    never reached, and briefly trained weights are not stationary. Any other warning, CG's
    "not positive definite" among them, is shown."""
    with warnings.catch_warnings():
        for expected in ("stopped after", "has gradient norm"):
            warnings.filterwarnings("ignore", f".*{expected}", RuntimeWarning)
        yield


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that wall-clock times are the work's."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def solvers(iters: int, damping: float | None = None) -> tuple[CG, CG]:
    """Appendix B's two CG solves, (pretraining, finetuning), running all ``iters`` iterations.

    ``damping`` replaces both of Appendix B's dampings (1e-8 and 1e-6) where given.
    """
    return (
        CG(
            damping=CONFIG.pretrain_damping if damping is None else damping,
            iters=iters,
            tol=1e-30,
        ),
        CG(
            damping=CONFIG.finetune_damping if damping is None else damping,
            iters=iters,
            tol=1e-30,
        ),
    )


def phased_scores(
    ms: MultiStage,
    pretrain: tuple[Tensor, Tensor],
    finetune: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    candidates: tuple[Tensor, Tensor],
    iters: int,
    batch: int,
    damping: float | None = None,
) -> tuple[Tensor, dict[str, float], Tensor]:
    """Algorithm 1 by MultiStage's public steps, each timed: scores, seconds per phase, and v2.

    The phases are ``setup`` (test gradient, the Hessians' data, Case 1's feature cache),
    ``v1`` (the finetuning solve), ``u`` (the pullback to W), ``v2`` (the pretraining solve)
    and ``scoring`` (one JVP a batch of candidates). ``damping`` as in :func:`solvers`.
    """
    pretrain_solver, finetune_solver = solvers(iters, damping)
    seconds: dict[str, float] = {}
    result: dict[str, Any] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        synchronize(ms.device)
        start = time.perf_counter()
        result[name] = fn()
        synchronize(ms.device)
        seconds[name] = time.perf_counter() - start
        return result[name]

    def setup() -> tuple[Tensor, Any, Any]:
        return (
            ms.test_gradient(test, batch_size=batch),
            ms.finetune_hessian(finetune, batch_size=batch),
            ms.pretrain_hessian(pretrain, batch_size=batch),
        )

    with expected_warnings():
        grad, h_f, h_g = timed("setup", setup)
        v1 = timed("v1", lambda: ms.first_ihvp(grad, h_f, finetune_solver))
        u = timed("u", lambda: ms.pullback(v1, grad, finetune, batch_size=batch))
        v2 = timed("v2", lambda: ms.second_ihvp(u, h_g, pretrain_solver))
        scores = timed(
            "scoring", lambda: ms.score_candidates(candidates, v2, batch_size=batch)
        )
    seconds["total"] = sum(seconds.values())
    return scores, seconds, v2


def forward_seconds(net: MultiStageNet, x: Tensor, batch: int) -> float:
    """The no-grad forward pass of the pretraining model over ``x``, ``batch`` at a time."""
    device = x.device
    with torch.no_grad():
        net.pretrain_head(net.embedding(x[:batch]))  # warm-up
        synchronize(device)
        start = time.perf_counter()
        for i in range(0, len(x), batch):
            net.pretrain_head(net.embedding(x[i : i + batch]))
        synchronize(device)
    return time.perf_counter() - start


def time_scoring(
    net: MultiStageNet, data: dict[str, Any], sizes: Sizes, device: torch.device
) -> dict[str, Any]:
    """The paper's timing: both solves and the scoring of every candidate, in float32, phase by phase.

    A short warm-up run first absorbs one-off costs (CUDA context, cuDNN plans, forward-mode
    decompositions). Then the same computation as one ``MultiStage.scores`` call, timed whole.
    """
    pre = on(data["pretrain"], device, torch.float32)
    candidates = first(pre, sizes.candidates)
    hessian_index = torch.randperm(
        len(pre[1]), generator=torch.Generator().manual_seed(CONFIG.seed)
    )
    hessian = (
        pre[0][hessian_index[: sizes.hessian].to(device)],
        pre[1][hessian_index[: sizes.hessian].to(device)],
    )
    finetune = first(on(data["finetune"], device, torch.float32), sizes.finetune)
    test = first(on(data["test"], device, torch.float32), sizes.test)
    ms = net.multistage()
    warm = sizes.batch  # one batch of each, at the batch shapes of the timed run
    phased_scores(
        ms,
        first(hessian, warm),
        first(finetune, warm),
        first(test, warm),
        first(candidates, warm),
        2,
        sizes.batch,
    )
    scores, seconds, _ = phased_scores(
        ms, hessian, finetune, test, candidates, sizes.iters, sizes.batch
    )
    forward = forward_seconds(net, candidates[0], sizes.batch)
    pretrain_solver, finetune_solver = solvers(sizes.iters)
    with expected_warnings():
        synchronize(device)
        start = time.perf_counter()
        whole = ms.scores(
            pretrain=hessian,
            finetune=finetune,
            test=test,
            candidates=candidates,
            pretrain_solver=pretrain_solver,
            finetune_solver=finetune_solver,
            batch_size=sizes.batch,
        )
        synchronize(device)
        one_call = time.perf_counter() - start
    report = ms.report
    paper_candidates = len(CONFIG.pretrain_classes) * TRAIN_PER_CLASS
    scale = paper_candidates / sizes.candidates
    return dict(
        seconds={k: round(v, 4) for k, v in seconds.items()},
        scores_call_seconds=round(one_call, 4),
        scores_call_vs_phased=rel_error(whole, scores),
        forward_seconds=round(forward, 4),
        scoring_over_forward=round(seconds["scoring"] / forward, 3),
        candidates=sizes.candidates,
        paper_candidates=paper_candidates,
        total_scaled_to_paper=round(
            seconds["total"] - seconds["scoring"] + scale * seconds["scoring"], 4
        ),
        solves=dict(
            finetune=asdict(report.finetune_solves[0]),
            pretrain=asdict(report.pretrain_solves[0]),
        ),
        gradient_norms=dict(
            pretrain=report.pretrain_gradient_norm, finetune=report.finetune_gradient_norm
        ),
        parameters=dict(W=ms.W.numel, U=ms.U.numel, Theta=ms.Theta.numel),
    )


# ---- precision -----------------------------------------------------------------------------------


def rel_error(a: Tensor, b: Tensor) -> float:
    """||a - b|| / ||b||, in float64 on the CPU."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def compare(s: Tensor, reference: Tensor) -> dict[str, float]:
    """How far scores ``s`` are from ``reference``: relative error of the vector, the worst
    relative error of one score (over scores above 1e-3 of the largest, where a relative error
    means something), and Pearson r."""
    s, reference = s.detach().double().cpu(), reference.detach().double().cpu()
    big = reference.abs() > 1e-3 * reference.abs().max()
    each = (s - reference).abs() / reference.abs()
    return dict(
        rel_error=rel_error(s, reference),
        max_rel_error=each[big].max().item() if bool(big.any()) else float("nan"),
        compared=int(big.sum()),
        pearson_r=torch.corrcoef(torch.stack([s, reference]))[0, 1].item(),
        zeros_in_s=int(((s == 0) & (reference != 0)).sum()),
    )


def check_scores(
    net: MultiStageNet,
    data: dict[str, Any],
    n: tuple[int, int, int, int],
    iters: int,
    device: torch.device,
    dtype: torch.dtype,
    batch: int,
    damping: float | None = None,
) -> tuple[Tensor, Tensor, MultiStage]:
    """The check problem's scores with a copy of ``net`` on ``device`` in ``dtype``, its v2, and its MultiStage.

    ``n`` is (candidates, Hessian, finetuning, test) sizes: the first candidates of the
    pretraining images are scored, the next ones define H_G. ``damping`` as in :func:`solvers`.
    """
    n_c, n_h, n_f, n_t = n
    ms = moved(net, device, dtype).multistage()
    scores, _, v2 = phased_scores(
        ms,
        on(first(data["pretrain"], n_h, start=n_c), device, dtype),
        on(first(data["finetune"], n_f), device, dtype),
        on(first(data["test"], n_t), device, dtype),
        on(first(data["pretrain"], n_c), device, dtype),
        iters,
        batch,
        damping,
    )
    return scores, v2, ms


def precision_check(
    net: MultiStageNet, data: dict[str, Any], sizes: Sizes, device: torch.device
) -> dict[str, Any]:
    """Float32 scores against float64 ones, on a subset, with the same weights and the same solves.

    ``end_to_end`` compares whole scorings (both CG solves and the scoring, each in its own
    dtype); ``scoring_only`` feeds the float64 v2 to both models, isolating line 5 of
    Algorithm 1. Where ``device`` is a GPU, a smaller slice is also computed in float64 on the
    CPU, and float32 with TF32 allowed is measured beside the strict float32 of the main run.
    ``end_to_end_few_iters`` repeats the end-to-end comparison with 5 CG iterations a solve: at
    Appendix B's tiny dampings CG amplifies rounding as it iterates (a 1-thread CPU preview,
    64 candidates, H_G on 32 images, 50 iterations: end to end 0.25 relative, scoring alone
    3e-6), so the two show where float32 loses agreement. ``end_to_end_damping_1e-2`` repeats
    it with both dampings at 1e-2 instead of Appendix B's 1e-8 and 1e-6.
    """
    batch = sizes.batch
    n = (
        sizes.check_candidates,
        sizes.check_hessian,
        sizes.check_finetune,
        sizes.check_test,
    )
    start = time.perf_counter()
    s32, _, ms32 = check_scores(
        net, data, n, sizes.check_iters, device, torch.float32, batch
    )
    s64, v2_64, _ = check_scores(
        net, data, n, sizes.check_iters, device, torch.float64, batch
    )
    pre32 = on(first(data["pretrain"], sizes.check_candidates), device, torch.float32)
    along = ms32.score_candidates(pre32, v2_64.float(), batch_size=batch)
    out: dict[str, Any] = dict(
        sizes=dict(zip(("candidates", "hessian", "finetune", "test"), n)),
        cg_iters=sizes.check_iters,
        end_to_end=compare(s32, s64),
        scoring_only=compare(along, s64),
        reference=f"{device.type} float64",
    )
    few = min(5, sizes.check_iters)
    if few < sizes.check_iters:
        f32, _, _ = check_scores(net, data, n, few, device, torch.float32, batch)
        f64, _, _ = check_scores(net, data, n, few, device, torch.float64, batch)
        out["few_iters"] = few
        out["end_to_end_few_iters"] = compare(f32, f64)
    # The same solves with both dampings at 1e-2 (Appendix B's MNIST H_G): a better-conditioned system.
    d32, _, _ = check_scores(
        net, data, n, sizes.check_iters, device, torch.float32, batch, 1e-2
    )
    d64, _, _ = check_scores(
        net, data, n, sizes.check_iters, device, torch.float64, batch, 1e-2
    )
    out["end_to_end_damping_1e-2"] = compare(d32, d64)
    if device.type == "cuda":
        with tf32(True):
            s_tf32, _, _ = check_scores(
                net, data, n, sizes.check_iters, device, torch.float32, batch
            )
        out["end_to_end_tf32"] = compare(s_tf32, s64)
        cpu = torch.device("cpu")
        m = (sizes.cpu_candidates, sizes.cpu_hessian, sizes.cpu_finetune, sizes.cpu_test)
        c32, _, _ = check_scores(
            net, data, m, sizes.cpu_iters, device, torch.float32, batch
        )
        c64, _, _ = check_scores(
            net, data, m, sizes.cpu_iters, device, torch.float64, batch
        )
        r64, _, _ = check_scores(net, data, m, sizes.cpu_iters, cpu, torch.float64, batch)
        out["cpu_slice"] = dict(
            sizes=dict(zip(("candidates", "hessian", "finetune", "test"), m)),
            cg_iters=sizes.cpu_iters,
            cuda_float32_vs_cpu_float64=compare(c32, r64),
            cuda_float64_vs_cpu_float64=compare(c64, r64),
        )
    out["seconds"] = round(time.perf_counter() - start, 2)
    return out


# ---- the run -------------------------------------------------------------------------------------


class tf32:
    """Context manager: allow TF32 in float32 matmuls and convolutions (True) or forbid it (False)."""

    def __init__(self, allow: bool) -> None:
        self.allow = allow

    def __enter__(self) -> None:
        self.saved = tf32_state()
        set_tf32(self.allow)

    def __exit__(self, *exc: object) -> None:
        set_tf32(self.saved)


def tf32_state() -> bool:
    """Whether float32 convolutions may use TF32 now."""
    if hasattr(torch.backends, "fp32_precision"):
        return torch.backends.cudnn.conv.fp32_precision == "tf32"
    return bool(torch.backends.cudnn.allow_tf32)


def set_tf32(allow: bool) -> None:
    """Allow or forbid TF32 in float32 matmuls and convolutions (torch >= 2.9's API where present)."""
    if hasattr(torch.backends, "fp32_precision"):
        precision = "tf32" if allow else "ieee"
        torch.backends.cuda.matmul.fp32_precision = precision
        torch.backends.cudnn.conv.fp32_precision = precision
    else:
        torch.backends.cuda.matmul.allow_tf32 = allow
        torch.backends.cudnn.allow_tf32 = allow


def pick_device(name: str) -> torch.device:
    """``name``, or the CPU with a message where CUDA was asked for and is absent."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        print(
            f"--device {name}: CUDA is not available here; running on the CPU instead (slow unless --smoke)"
        )
        return torch.device("cpu")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """The accelerator's name, or the CPU's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads)"


def run(
    sizes: Sizes, device: torch.device, synthetic: bool = False, allow_tf32: bool = False
) -> dict[str, Any]:
    """Load the data, train briefly, time the paper's scoring, check float32 against float64."""
    started = time.perf_counter()
    set_tf32(allow_tf32)
    data = load_data(sizes, synthetic)
    print(
        f"data: {data['kind']}"
        + (
            f" CIFAR-10 from {data['file']} (unique images: {data['unique']}; tiled to the sizes asked for)"
            if data["kind"] == "real"
            else f" random images of CIFAR-10's shape ({DATA_FILE.relative_to(ROOT)} absent or --synthetic)"
        )
    )
    torch.manual_seed(CONFIG.seed)
    net = moved(
        table_a("cifar10", len(CONFIG.pretrain_classes), len(CONFIG.finetune_classes)),
        device,
        torch.float32,
    )
    start = time.perf_counter()
    losses = train_briefly(
        net,
        on(data["pretrain"], device, torch.float32),
        on(data["finetune"], device, torch.float32),
        sizes.train_steps,
    )
    trained_s = time.perf_counter() - start
    print(
        f"weights: {sizes.train_steps} Adam steps a stage on {device.type} ({trained_s:.1f} s), far from converged; "
        f"mean losses pretrain {losses['pretrain']:.3f}, finetune {losses['finetune']:.3f} "
        "(timing does not depend on them)"
    )
    timing = time_scoring(net, data, sizes, device)
    name = device_name(device)
    s = timing["seconds"]
    print(
        f"Table A CIFAR network ({sum(timing['parameters'].values()):,} parameters: {timing['parameters']}), "
        f"float32{' (TF32 allowed)' if allow_tf32 else ' (TF32 off)'}, {sizes.iters} CG iterations a solve; "
        f"H_G on {sizes.hessian}, F on {sizes.finetune}, {sizes.test} test images, {sizes.candidates} candidates"
    )
    for phase in ("setup", "v1", "u", "v2", "scoring", "total"):
        print(f"  {phase:8s} {s[phase]:9.3f} s")
    print(
        f"  one MultiStage.scores() call: {timing['scores_call_seconds']:.3f} s "
        f"(its scores vs the phased ones: relative difference {timing['scores_call_vs_phased']:.1e})"
    )
    print(
        f"  no-grad forward over the {sizes.candidates} candidates: {timing['forward_seconds']:.4f} s; "
        f"scoring / forward = {timing['scoring_over_forward']:.2f}x (DESIGN.md section 6 target: <= 3x)"
    )
    if sizes.candidates < timing["paper_candidates"]:
        print(
            f"  scored {sizes.candidates} of the paper's {timing['paper_candidates']} pretraining images: "
            f"total {s['total']:.2f} s as run, {timing['total_scaled_to_paper']:.2f} s with scoring scaled to all"
        )
    paper = Sizes()
    as_paper = (sizes.hessian, sizes.finetune, sizes.test, sizes.iters) == (
        paper.hessian,
        paper.finetune,
        paper.test,
        paper.iters,
    )
    print(
        f"paper: {PAPER_SECONDS:.0f} s on a V100; ours: {timing['total_scaled_to_paper']:.2f} s on {name}"
        + (
            ""
            if as_paper
            else " (NOT comparable: smaller Hessian, finetuning or test sets, or fewer CG iterations)"
        )
    )
    precision = precision_check(net, data, sizes, device)
    print(
        f"precision check ({precision['seconds']:.1f} s): {precision['sizes']}, {precision['cg_iters']} CG "
        f"iterations a solve (few_iters: {precision.get('few_iters', '-')}), float32 with TF32 off unless named"
    )
    for key in (
        "end_to_end",
        "end_to_end_few_iters",
        "end_to_end_damping_1e-2",
        "scoring_only",
        "end_to_end_tf32",
    ):
        if key in precision:
            c = precision[key]
            print(
                f"float32 vs {precision['reference']}, {key}: ||s32 - s64|| / ||s64|| = {c['rel_error']:.2e}, "
                f"max relative {c['max_rel_error']:.2e} (over {c['compared']}), Pearson r {c['pearson_r']:.8f}"
            )
    if "cpu_slice" in precision:
        for key in ("cuda_float32_vs_cpu_float64", "cuda_float64_vs_cpu_float64"):
            c = precision["cpu_slice"][key]
            print(
                f"cpu slice, {key}: relative {c['rel_error']:.2e}, max relative {c['max_rel_error']:.2e}"
            )
    return dict(
        benchmark="bench/gpu.py",
        device=str(device),
        device_name=name,
        torch=torch.__version__,
        cuda=torch.version.cuda,
        tf32=allow_tf32,
        data=dict(kind=data["kind"], file=data["file"], unique=data["unique"]),
        config={k: v for k, v in CONFIG.as_dict().items()},
        sizes=asdict(sizes),
        training=dict(
            steps=sizes.train_steps, seconds=round(trained_s, 2), losses=losses
        ),
        paper_seconds=PAPER_SECONDS,
        comparable_to_paper=as_paper,
        timing=timing,
        precision=precision,
        wall_seconds=round(time.perf_counter() - started, 2),
        date=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    """Parse the options, then prepare the data or run the benchmark and write its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--prepare",
        action="store_true",
        help=f"write {DATA_FILE.relative_to(ROOT)} and stop",
    )
    parser.add_argument(
        "--device", default="cuda", help="default cuda; falls back to cpu with a message"
    )
    parser.add_argument(
        "--iters", type=int, help="CG iterations of each solve (default 200)"
    )
    parser.add_argument(
        "--candidates", type=int, help="pretraining images to score (default: all 10,000)"
    )
    parser.add_argument("--batch", type=int, help="examples a batch (default 1000)")
    parser.add_argument(
        "--smoke", action="store_true", help="everything tiny: seconds on a CPU"
    )
    parser.add_argument(
        "--synthetic",
        action="store_true",
        help="random images even where the data file exists",
    )
    parser.add_argument(
        "--tf32",
        action="store_true",
        help="allow TF32 in float32 convolutions and matmuls",
    )
    parser.add_argument(
        "--out", type=Path, help="the JSON (default: $OUT/gpu.json when OUT is set)"
    )
    args = parser.parse_args(argv)
    if args.prepare:
        prepare()
        return None
    sizes = SMOKE if args.smoke else Sizes()
    changes = {
        k: getattr(args, k)
        for k in ("iters", "candidates", "batch")
        if getattr(args, k) is not None
    }
    sizes = replace(sizes, **changes)
    result = run(
        sizes, pick_device(args.device), synthetic=args.synthetic, allow_tf32=args.tf32
    )
    result["smoke"] = args.smoke
    out = args.out or (
        Path(os.environ["OUT"]) / "gpu.json" if os.environ.get("OUT") else None
    )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
