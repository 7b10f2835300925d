"""Classroom assignments: the book's chapters with their exercise solutions removed.

    python tools/make_assignments.py                      # every book/*.ipynb -> _build/assignments/
    python tools/make_assignments.py book/one_stage.ipynb # only the chapters named
    python tools/make_assignments.py --out DIR            # somewhere else

A solution is any cell tagged ``solution`` (chapter convention: the derivation's dropdown
markdown cell and the code cell that checks the answer with ``assert``). Every other cell is
kept, in order, and code cells lose their outputs and execution counts, so a student's copy
shows the tasks but neither the answers nor what the answers print. ``make assignments``
runs this script.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import nbformat
from nbformat import NotebookNode

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
OUT = ROOT / "_build" / "assignments"
SOLUTION_TAG = "solution"


def is_solution(cell: NotebookNode) -> bool:
    """True for a cell tagged ``solution``."""
    return SOLUTION_TAG in cell.get("metadata", {}).get("tags", [])


def strip_solutions(nb: NotebookNode) -> tuple[NotebookNode, int]:
    """A copy of ``nb`` without its solution cells and without outputs; also returns how many cells went."""
    out = copy.deepcopy(nb)
    kept = [cell for cell in out.cells if not is_solution(cell)]
    removed = len(out.cells) - len(kept)
    for cell in kept:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cell.get("metadata", {}).pop(
            "papermill", None
        )  # what an executed copy records about its run
    out.cells = kept
    out.metadata.pop("papermill", None)
    return out, removed


def chapters(book: Path = BOOK) -> list[Path]:
    """Every chapter notebook in ``book`` (not in subfolders, not Jupyter's checkpoints)."""
    return sorted(book.glob("*.ipynb"))


def exercise_count(nb: NotebookNode) -> int:
    return sum(
        1
        for cell in nb.cells
        if cell.cell_type == "markdown"
        for line in cell.source.splitlines()
        if line.startswith("### Exercise")
    )


def _shown(path: Path) -> str:
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "notebooks",
        nargs="*",
        type=Path,
        help="chapters to convert (default: every book/*.ipynb)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=OUT,
        help="folder for the assignments (default: _build/assignments)",
    )
    args = parser.parse_args(argv)
    notebooks = args.notebooks or chapters()
    if not notebooks:
        print(f"error: no notebooks in {_shown(BOOK)}", file=sys.stderr)
        return 1
    missing = [str(p) for p in notebooks if not p.is_file()]
    if missing:
        print(f"error: not found: {', '.join(missing)}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        assignment, removed = strip_solutions(nb)
        target = args.out / path.name
        nbformat.write(assignment, target)
        cells = "cell" if removed == 1 else "cells"
        print(
            f"wrote {_shown(target)}: {exercise_count(assignment)} exercises, {removed} solution {cells} removed"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
