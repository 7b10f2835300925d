"""Warnings an experiment expects, counted into its results; every other one still shown.

A long run's solvers warn in bulk where they are expected to (CG stopping at its iteration
budget, a minibatch-trained optimum that is not quite stationary), and the results file is
where those belong, as counts. Anything else, CG's "not positive definite" above all, is
emitted again so that nothing unexpected is hidden.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

# a kind's name, and the text its messages contain
EXPECTED = {"CG stopped short": "stopped after", "not stationary": "gradient norm"}


@contextlib.contextmanager
def counted_warnings(expected: dict[str, str] = EXPECTED) -> Iterator[dict[str, int]]:
    """Record the block's warnings into the dict it yields, as counts a kind.

    A warning whose message contains one of ``expected``'s texts is counted under that name;
    any other is counted under its message's first 60 characters and emitted again.
    """
    counts: dict[str, int] = {}
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as recorded:
            warnings.simplefilter("always")
            caught = recorded
            yield counts
    finally:  # shown again even where the block raised
        _count(caught, expected, counts)


def _count(
    caught: list[warnings.WarningMessage],
    expected: dict[str, str],
    counts: dict[str, int],
) -> None:
    for w in caught:
        message = str(w.message)
        kind = next((k for k, text in expected.items() if text in message), None)
        if kind is None:
            kind = message[:60]
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        counts[kind] = counts.get(kind, 0) + 1
