"""The one timing rule of the benchmarks: the best of a few repeats, after a warm-up call."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` calls of ``fn``, after one untimed warm-up call.

    The warm-up absorbs one-off costs (allocators, forward-mode decompositions traced on first
    use); the minimum is the least noisy estimate on a shared machine.
    """
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)
