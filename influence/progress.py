"""Progress bars for the long loops (training, CG, scoring).

Bars show in notebooks and terminals. Set ``INFLUENCE_PROGRESS=0`` to silence them:
the tests and the book build do.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def enabled() -> bool:
    """False when the environment variable ``INFLUENCE_PROGRESS`` is 0, off or false."""
    return os.environ.get("INFLUENCE_PROGRESS", "1").strip().lower() not in {
        "0",
        "off",
        "false",
        "no",
    }


def progress(
    iterable: Iterable[T] | None = None,
    *,
    desc: str,
    total: int | None = None,
    **kwargs: Any,
) -> tqdm:
    """A tqdm bar over ``iterable`` that honours ``INFLUENCE_PROGRESS`` and clears itself when done."""
    kwargs.setdefault("leave", False)
    return tqdm(iterable, desc=desc, total=total, disable=not enabled(), **kwargs)
