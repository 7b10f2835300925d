"""MultiStage.scores under torchrun: the single-process scores from 2 and 3 ranks, and failures.

Each test starts ``torchrun --standalone`` on tests/distributed_worker.py with gloo on the CPU,
on the float64 toy problem of tests/test_multistage.py, and compares what every rank returns
with one process's scores. The resumable scores file is tested here too, in one process and
killed and resumed under torchrun.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from distributed_worker import solvers
from test_multistage import _ms

from experiments import toy as toys
from influence.distributed import shard
from influence.scores_file import ScoresFile, read

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "distributed_worker.py"
GUARD_S = 120  # a hung job fails the test instead of the CI run


@pytest.fixture(scope="module")
def problems(tmp_path_factory) -> dict[str, Path]:
    """Both cases trained once and saved for the workers: case -> file."""
    folder = tmp_path_factory.mktemp("problems")
    out = {}
    for case in ("fixed", "updated"):
        p = toys.make_problem()
        path = folder / f"{case}.pt"
        torch.save({"problem": p, "net": toys.train(p, case), "case": case}, path)
        out[case] = path
    return out


def single_process(problem: Path, n: int | None = None, **kw) -> torch.Tensor:
    """What one process returns for the worker's call."""
    saved = torch.load(problem, weights_only=False)
    p = saved["problem"]
    n = len(p.zy) if n is None else n
    return _ms(p, saved["net"], saved["case"]).scores(
        (p.zx, p.zy),
        (p.xx, p.xy),
        (p.tx, p.ty),
        (p.zx[:n], p.zy[:n]),
        **solvers(),
        batch_size=16,
        **kw,
    )


def torchrun(
    problem: Path, out: Path, nproc: int, *args: str
) -> subprocess.CompletedProcess:
    """Run the worker on ``nproc`` ranks; its outputs land in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "INFLUENCE_PROGRESS": "0",
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc-per-node={nproc}", str(WORKER), str(problem), str(out), *args]
    return subprocess.run(
        command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=GUARD_S
    )


def results(out: Path, nproc: int) -> list[dict]:
    """Every rank's ``{"scores", "report"}``, in rank order."""
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(nproc)]


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_shards_are_contiguous_in_rank_order_and_differ_by_at_most_one():
    for n, world in [(60, 2), (59, 3), (2, 3), (0, 2)]:
        blocks = [shard(n, r, world) for r in range(world)]
        assert [i for b in blocks for i in b] == list(range(n))
        assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


@pytest.mark.parametrize(
    "case, nproc, n",
    [("fixed", 2, None), ("updated", 2, None), ("fixed", 3, 59), ("updated", 3, 59)],
)
def test_ranks_return_the_single_process_scores(problems, tmp_path, case, nproc, n):
    """Uneven blocks on 3 ranks: 59 candidates are 20, 20 and 19; 40 finetuning rows 14, 13, 13."""
    args = [] if n is None else ["--candidates", str(n)]
    job = torchrun(problems[case], tmp_path, nproc, *args)
    assert job.returncode == 0, job.stderr[-3000:]
    expected = single_process(problems[case], n)
    for got in results(tmp_path, nproc):
        assert got["scores"].shape == expected.shape
        assert relative(got["scores"], expected) <= 1e-6
        assert got["report"]["communication_bytes"] > 0
    assert sum(g["report"]["scored_rows"] for g in results(tmp_path, nproc)) == len(
        expected
    )


def test_a_dataloader_per_test_scores_gathered_to_rank_0(problems, tmp_path):
    job = torchrun(
        problems["fixed"], tmp_path, 2, "--loader", "7", "--per-test", "--gather", "rank0"
    )
    assert job.returncode == 0, job.stderr[-3000:]
    rank0, rank1 = results(tmp_path, 2)
    expected = single_process(problems["fixed"], per_test=True)
    assert rank0["scores"].shape == expected.shape
    assert relative(rank0["scores"], expected) <= 1e-6
    assert rank1["scores"] is None


def test_a_rank_with_no_candidates(problems, tmp_path):
    job = torchrun(problems["updated"], tmp_path, 3, "--candidates", "2")
    assert job.returncode == 0, job.stderr[-3000:]
    expected = single_process(problems["updated"], 2)
    got = results(tmp_path, 3)
    assert [g["report"]["scored_rows"] for g in got] == [1, 1, 0]
    for g in got:
        assert relative(g["scores"], expected) <= 1e-6


def test_a_failing_rank_raises_its_error_on_every_rank(problems, tmp_path):
    """Candidate 50 is rank 1's (rows 30-59); rank 0 must hear of it, not wait for it."""
    job = torchrun(problems["fixed"], tmp_path, 2, "--fail-at", "50", "--timeout", "30")
    assert job.returncode != 0
    for r in range(2):
        error = (tmp_path / f"error{r}.txt").read_text()
        assert error.startswith("RankFailed")
        assert "rank 1: RuntimeError: cannot read candidate 50" in error


def test_scores_file_in_one_process(problems, tmp_path):
    path = tmp_path / "scores.npy"
    for per_test in (False, True):
        expected = single_process(problems["updated"], per_test=per_test)
        path.unlink(missing_ok=True)
        got = single_process(problems["updated"], per_test=per_test, scores_file=path)
        assert torch.equal(got, expected)
        on_disk = np.load(path, mmap_mode="r")
        assert on_disk["written"].all()
        np.testing.assert_array_equal(on_disk["score"], expected.numpy())
        scores, written = read(path)
        assert written.all() and torch.equal(scores, expected)
    with pytest.raises(ValueError, match="use a new path"):
        ScoresFile(path, 59, None)


def test_killed_and_resumed_run_gives_the_same_file(problems, tmp_path):
    """Rank 1 dies at candidate 50; the rerun scores only the rows not written."""
    clean, resumed = tmp_path / "clean.npy", tmp_path / "resumed.npy"
    same = ["--loader", "5"]  # the killed run's batches, so the rows match bit for bit
    job = torchrun(
        problems["fixed"], tmp_path / "clean", 2, *same, "--scores-file", str(clean)
    )
    assert job.returncode == 0, job.stderr[-3000:]
    killed = torchrun(
        problems["fixed"],
        tmp_path / "killed",
        2,
        *same,
        "--scores-file",
        str(resumed),
        "--kill-at",
        "50",
    )
    assert killed.returncode != 0
    _, written = read(resumed)
    assert written[30:50].all() and not written[50:].any()  # batches of 5 from row 30
    job = torchrun(
        problems["fixed"], tmp_path / "again", 2, *same, "--scores-file", str(resumed)
    )
    assert job.returncode == 0, job.stderr[-3000:]
    rerun = results(tmp_path / "again", 2)
    assert sum(g["report"]["scored_rows"] for g in rerun) == int((~written).sum())
    assert clean.read_bytes() == resumed.read_bytes()
    expected = single_process(problems["fixed"])
    assert relative(torch.from_numpy(np.load(resumed)["score"].copy()), expected) <= 1e-6


@pytest.mark.parametrize("kind", ["tensors", "sequential loader", "batch sampler"])
def test_a_block_of_examples_holds_exactly_its_rows(kind):
    """Examples.rows: sliced tensors, a rebuilt sequential loader, or a loader read through."""
    from torch.utils.data import (
        BatchSampler,
        DataLoader,
        SequentialSampler,
        TensorDataset,
    )

    from influence.examples import Examples

    x = torch.arange(23, dtype=torch.float64)[:, None]
    y = torch.arange(23)
    data = {
        "tensors": (x, y),
        "sequential loader": DataLoader(TensorDataset(x, y), batch_size=4),
        "batch sampler": DataLoader(
            TensorDataset(x, y),
            batch_sampler=BatchSampler(SequentialSampler(range(23)), 5, False),
        ),
    }[kind]
    examples = Examples(
        data, "candidates", device=torch.device("cpu"), dtype=torch.float64, batch_size=4
    )
    for block in (range(0, 8), range(7, 16), range(16, 23), range(23, 23)):
        view = examples.rows(block)
        got = [int(v) for _, yb in view for v in yb]
        assert got == list(block) and len(view) == len(block)
