"""Scoring beyond one process: the torch.distributed plumbing that :meth:`~influence.multistage.MultiStage.scores` uses.

Under ``torchrun`` (an initialized process group of more than one rank) a scoring run splits as
the cost model says it should:

- the two inverse-Hessian solves run once, on every rank in lockstep: each rank streams the
  Hessian-vector products over its own contiguous block of the pretraining and finetuning data,
  and :meth:`Group.all_sum` adds the parts, so each product costs ``1/world`` of the data per
  rank plus one all-reduce of ``p`` numbers;
- the candidates are split into contiguous blocks (:func:`shard`), each rank scores its block,
  and :meth:`Group.gather_rows` puts the scores back in candidate order.

Failures: a rank that raises must not leave the others waiting in a collective. Every
collective here carries a failure flag with its payload, and :meth:`Group.together` ends a
stretch of purely local work with the same exchange, so the ranks learn of a failure at the
same step and all raise :class:`RankFailed` with the failing rank's message. What no flag can
report (a rank killed outright) ends the others' collectives after ``timeout`` seconds, the
timeout of the private process group made here.

Devices: gloo communicates CPU tensors, and nothing is ever moved to CUDA under gloo (a CUDA
model's vectors go to the CPU for the exchange and come back); NCCL communicates CUDA tensors,
and a CPU model under NCCL is refused.
"""

from __future__ import annotations

import contextlib
import contextvars
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

#: How long a collective may wait for the other ranks before every rank gives up (seconds).
DEFAULT_TIMEOUT = 300.0

_ACTIVE: contextvars.ContextVar[Group | None] = contextvars.ContextVar(
    "influence_group", default=None
)
_GROUPS: dict[tuple[int, float], object] = {}


class RankFailed(RuntimeError):
    """Raised on every rank when one or more ranks failed; the message names each and why."""


def shard(n: int, rank: int, world: int) -> range:
    """Rank ``rank``'s contiguous block of ``n`` rows split over ``world`` ranks.

    The first ``n % world`` ranks take one row more, so blocks differ by at most one row and a
    rank gets none when ``n < world``. Concatenating the blocks in rank order gives ``range(n)``.
    """
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (rank < extra))


@dataclass
class Group:
    """The ranks scoring together: this rank, their number, and where their messages travel."""

    rank: int
    world: int
    process_group: object
    device: (
        torch.device
    )  # where communicated tensors live: CPU for gloo, this rank's GPU for NCCL
    timeout: float
    bytes_sent: int = field(default=0)  # payload this rank contributed to collectives

    # ---- failure propagation -----------------------------------------------------------------

    def _fail_together(self, failed: bool, message: str | None) -> None:
        """All ranks call this at the same step; if any failed, all raise with their messages."""
        if not failed:
            return
        messages: list[str | None] = [None] * self.world
        dist.all_gather_object(messages, message, group=self.process_group)
        said = "; ".join(f"rank {r}: {m}" for r, m in enumerate(messages) if m)
        raise RankFailed(f"scoring failed on {self.world} ranks, {said}")

    @contextlib.contextmanager
    def together(self) -> Iterator[None]:
        """Run a stretch of local work; at its end, every rank learns whether any rank failed.

        The block must hold no collective: a rank that fails inside it goes straight to the
        exchange at the end, where the others meet it.
        """
        message = None
        try:
            yield
        except Exception as error:  # noqa: BLE001  (every error must reach the other ranks)
            message = describe(error)
        flag = torch.tensor([0.0 if message is None else 1.0], device=self.device)
        dist.all_reduce(flag, group=self.process_group)
        self._fail_together(bool(flag.item()), message)

    # ---- the two collectives of scoring ----------------------------------------------------

    def all_sum(self, part: Tensor) -> Tensor:
        """The sum over ranks of ``part``, on ``part``'s device, every rank getting the same.

        One all-reduce carries the payload and a failure flag; see :meth:`sum_or_fail`.
        """
        return self.sum_or_fail(part, None)

    def sum_or_fail(self, part: Tensor, message: str | None) -> Tensor:
        """:meth:`all_sum`, where a rank that failed passes its message (and any ``part``)."""
        payload = torch.cat(
            [
                part.detach().reshape(-1).to(self.device, torch.float64),
                torch.tensor([0.0 if message is None else 1.0], device=self.device),
            ]
        )
        self.bytes_sent += payload.numel() * payload.element_size()
        dist.all_reduce(payload, group=self.process_group)
        self._fail_together(bool(payload[-1].item()), message)
        return payload[:-1].reshape(part.shape).to(part.device, part.dtype)

    def gather_rows(self, rows: Tensor, n: int, to_all: bool) -> Tensor | None:
        """Every rank's block of rows, concatenated in rank order (which is candidate order).

        ``rows`` is this rank's block ``[n_rank, ...]`` of the ``n`` rows in all. With
        ``to_all`` every rank gets ``[n, ...]``; otherwise rank 0 does and the others get None.
        Blocks differ in length by at most one row, so each is padded to the longest.
        """
        longest = len(shard(n, 0, self.world))
        padded = rows.new_zeros((longest, *rows.shape[1:]), device=self.device)
        padded[: len(rows)] = rows.to(self.device)
        self.bytes_sent += padded.numel() * padded.element_size()
        if to_all:
            parts = [torch.empty_like(padded) for _ in range(self.world)]
            dist.all_gather(parts, padded, group=self.process_group)
        else:
            parts = (
                [torch.empty_like(padded) for _ in range(self.world)]
                if self.rank == 0
                else None
            )
            dist.gather(padded, parts, dst=self._global(0), group=self.process_group)
            if self.rank != 0:
                return None
        blocks = [p[: len(shard(n, r, self.world))] for r, p in enumerate(parts)]
        return torch.cat(blocks).to(rows.device)

    def broadcast_flag(self, value: bool) -> bool:
        """Rank 0's ``value``, on every rank."""
        flag = torch.tensor([1.0 if value else 0.0], device=self.device)
        dist.broadcast(flag, src=self._global(0), group=self.process_group)
        return bool(flag.item())

    def _global(self, rank: int) -> int:
        return dist.get_global_rank(self.process_group, rank)


def describe(error: BaseException) -> str:
    """An error as one line: its type, message and the file and line that raised it."""
    where = traceback.extract_tb(error.__traceback__)
    site = f" (at {where[-1].filename}:{where[-1].lineno})" if where else ""
    return f"{type(error).__name__}: {error}{site}"


def detect(model_device: torch.device, timeout: float = DEFAULT_TIMEOUT) -> Group | None:
    """The scoring group when torch.distributed runs more than one rank, else None.

    The group is a private copy of the default one with its own ``timeout`` (seconds), made
    once per timeout and reused. gloo needs nothing on CUDA; NCCL needs the model on CUDA.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    if not timeout > 0:
        raise ValueError(
            f"timeout: expected a positive number of seconds, got {timeout!r}"
        )
    backend = str(dist.get_backend()).lower()
    if "nccl" in backend:
        if model_device.type != "cuda":
            raise ValueError(
                f"the process group's backend is NCCL, which communicates CUDA tensors, but the "
                f"modules are on {model_device}; use gloo for CPU models or move them to CUDA"
            )
        device = model_device
    else:
        device = torch.device("cpu")  # gloo: never move anything to CUDA for it
    key = (id(dist.group.WORLD), float(timeout))
    if key not in _GROUPS:
        _GROUPS[key] = dist.new_group(
            backend=dist.get_backend(), timeout=timedelta(seconds=timeout)
        )
    group = _GROUPS[key]
    return Group(dist.get_rank(group), dist.get_world_size(group), group, device, timeout)


def active() -> Group | None:
    """The group of the :meth:`~influence.multistage.MultiStage.scores` call in progress, or None in one process."""
    return _ACTIVE.get()


@contextlib.contextmanager
def activated(group: Group | None) -> Iterator[None]:
    """Make ``group`` the one :func:`active` returns while the block runs."""
    token = _ACTIVE.set(group)
    try:
        yield
    finally:
        _ACTIVE.reset(token)
