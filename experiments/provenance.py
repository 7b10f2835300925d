"""Where a result came from: the commit, the hardware, the software and the date."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() + ("+uncommitted" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def hardware(device: torch.device | str = "cpu") -> str:
    """The device in words: a GPU's name, or the CPU with the threads torch uses."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def provenance(device: torch.device | str = "cpu") -> dict[str, str]:
    """Commit, hardware, Python and torch versions, and the UTC date, for a results file."""
    return {
        "commit": _commit(),
        "hardware": hardware(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_results(
    path: str | Path,
    config: dict[str, Any],
    results: dict[str, Any],
    device: torch.device | str = "cpu",
) -> Path:
    """Write ``{"config", "provenance", "results"}`` as JSON, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {"config": config, "provenance": provenance(device), "results": results},
            indent=1,
        )
        + "\n"
    )
    return path


def read_results(path: str | Path) -> dict[str, Any]:
    """Read a results file written by :func:`write_results`, with a clear error where it is missing."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"no results at {path}: run the full-scale command that writes it (see the chapter)"
        )
    return json.loads(path.read_text())


def record_experiment(
    path: str | Path,
    done: dict[str, Any],
    name: str,
    scale: str,
    run: Callable[[], dict[str, Any]],
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Run one experiment of a section and file it in ``done["experiments"][name]``, then write ``path``.

    The entry carries its scale, its minutes and the provenance of the code as it was when the
    run began (on ``device``'s hardware), so an interrupted section keeps what it finished.
    Experiments that another run wrote to ``path`` meanwhile are kept too. Returns the entry.
    """
    start, source = time.perf_counter(), provenance(device)
    result = run()
    done["experiments"][name] = {
        "scale": scale,
        "minutes": (time.perf_counter() - start) / 60,
        "provenance": source,
        **result,
    }
    if Path(path).exists():  # keep what another run of the same section filed meanwhile
        stored = read_results(path)["results"].get("experiments", {})
        done["experiments"].update({k: e for k, e in stored.items() if k != name})
    write_section(path, done, scale, device)
    return done["experiments"][name]


def write_section(
    path: str | Path,
    done: dict[str, Any],
    scale: str,
    device: torch.device | str = "cpu",
) -> Path:
    """Write a section's results file, its config being each experiment's config."""
    config = {
        "scale": scale,
        "experiments": {n: e["config"] for n, e in done["experiments"].items()},
    }
    return write_results(path, config, done, device)
