"""The results committed in book/results/, read as the chapters read them."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "book" / "results"


def stored(name: str) -> dict:
    """The ``results`` part of ``book/results/<name>.json``."""
    return json.loads((RESULTS / f"{name}.json").read_text())["results"]
