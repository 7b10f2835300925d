"""House style: `ruff check` and `ruff format --check` pass on the code and the chapters.

The rules live in pyproject.toml's ``[tool.ruff]`` (line length 90, Python 3.10, lint rules
E, F, W and I, notebooks included). To fix what this test reports:

    .venv/bin/ruff format influence experiments tests tools bench book
    .venv/bin/ruff check --fix influence experiments tests tools bench book
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED = [
    "influence",
    "experiments",
    "tests",
    "tools",
    "bench",
    *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "book").glob("*.ipynb")),
]


def _ruff(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        import ruff  # noqa: F401  (the wheel ships the binary that `python -m ruff` runs)
    except ImportError:
        message = "ruff not installed: pip install -e '.[dev]'"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_ruff_check_passes():
    result = _ruff("check", "--output-format", "json", "--no-fix", *CHECKED)
    assert result.returncode in (0, 1), f"ruff check could not run:\n{result.stderr}"
    found = json.loads(result.stdout or "[]")
    by_file: dict[str, list[str]] = {}
    for v in found:
        where = Path(v["filename"]).resolve().relative_to(ROOT).as_posix()
        row = v["location"]["row"] if v.get("location") else "?"
        by_file.setdefault(where, []).append(f"{row}: {v['code']} {v['message']}")
    report = "\n".join(
        f"{f} ({len(rows)}): " + "; ".join(rows[:3]) + (" ..." if len(rows) > 3 else "")
        for f, rows in sorted(by_file.items())
    )
    if by_file:
        pytest.fail(
            f"ruff check: {len(found)} problems in {len(by_file)} files\n{report}"
        )


def test_ruff_format_is_clean():
    result = _ruff("format", "--check", "--output-format", "concise", *CHECKED)
    if result.returncode == 2:  # a ruff older than --output-format for `format`
        result = _ruff("format", "--check", *CHECKED)
    assert result.returncode in (0, 1), f"ruff format could not run:\n{result.stderr}"
    # "path:1:1: unformatted: ..." (concise) or "Would reformat: path" (older ruff)
    pattern = re.compile(r"^(?:Would reformat: (.+)|(.+?):\d+:\d+: unformatted\b.*)$")
    unformatted = sorted(
        {
            m.group(1) or m.group(2)
            for line in (result.stdout + result.stderr).splitlines()
            if (m := pattern.match(line.strip()))
        }
    )
    if result.returncode == 1 or unformatted:
        pytest.fail(
            f"not in ruff's format ({len(unformatted)} files; run `ruff format` on them):\n"
            + "\n".join(unformatted)
        )
