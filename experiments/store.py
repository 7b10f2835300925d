"""Where a section's results live: ``<root>/<section>.json``, each with its provenance.

The experiment layer names no folder of its own. Whoever runs a section passes the store in:
``tools/reproduce.py`` passes ``ResultsStore(Path("book/results"))``, a test a temporary one.
The file format is :mod:`experiments.provenance`'s; this class only says which file a section
is and what reading, writing and filing an experiment there mean.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch

from .provenance import read_results, record_experiment, write_results, write_section


class StoredConfig(Protocol):
    """A config that recognizes itself read back from a results file (as ``TransferConfig``)."""

    def is_stored_as(self, fields: dict[str, Any] | None) -> bool: ...


class ResultsStore:
    """The results files of a folder, one per section: ``<root>/<section>.json``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.root)!r})"

    @classmethod
    def holding(cls, path: str | Path) -> tuple[ResultsStore, str]:
        """The store a results file lies in, and its section: ``a/b/sec41.json`` -> ``(a/b, "sec41")``."""
        path = Path(path)
        if path.suffix != ".json":
            raise ValueError(f"path: expected a results file <section>.json, got {path}")
        return cls(path.parent), path.stem

    def path(self, section: str) -> Path:
        """The results file of ``section``."""
        return self.root / f"{section}.json"

    def exists(self, section: str) -> bool:
        """Whether ``section`` has a results file yet."""
        return self.path(section).exists()

    def read(self, section: str) -> dict[str, Any]:
        """The whole file: ``{"config", "provenance", "results"}``; a missing file says what to run."""
        return read_results(self.path(section))

    def results(self, section: str) -> dict[str, Any]:
        """The section's ``results``, or an empty ``{"experiments": {}}`` where none are stored."""
        if not self.exists(section):
            return {"experiments": {}}
        return self.read(section)["results"]

    def write(
        self,
        section: str,
        config: dict[str, Any],
        results: dict[str, Any],
        device: torch.device | str = "cpu",
    ) -> Path:
        """Write ``section``'s file with the provenance of ``device``."""
        return write_results(self.path(section), config, results, device)

    def write_section(
        self,
        section: str,
        done: dict[str, Any],
        scale: str,
        device: torch.device | str = "cpu",
    ) -> Path:
        """Write ``done`` (``{"experiments": ...}``) as ``section``'s file at ``scale``."""
        return write_section(self.path(section), done, scale, device)

    def record(
        self,
        section: str,
        done: dict[str, Any],
        name: str,
        scale: str,
        run: Callable[[], dict[str, Any]],
        device: torch.device | str = "cpu",
    ) -> dict[str, Any]:
        """Run one experiment and file it as ``done["experiments"][name]`` of ``section``
        (:func:`~experiments.provenance.record_experiment`). Returns the entry."""
        return record_experiment(self.path(section), done, name, scale, run, device)

    def find(self, section: str, config: StoredConfig) -> dict[str, Any] | None:
        """The experiment of ``section`` that was run with ``config``, or None where none was."""
        for experiment in self.results(section).get("experiments", {}).values():
            if isinstance(experiment, dict) and config.is_stored_as(
                experiment.get("config")
            ):
                return experiment
        return None
