"""Strip outputs and execution counts from notebooks, as chapters are stored in git.

python -m tools.strip_notebooks book/*.ipynb
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat


def strip(path: Path) -> bool:
    """Clear ``path``'s code cell outputs and counts in place; True if anything changed."""
    nb = nbformat.read(path, as_version=4)
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code" and (
            cell.outputs or cell.execution_count is not None
        ):
            cell.outputs, cell.execution_count, changed = [], None, True
    if changed:
        nbformat.write(nb, path)
    return changed


def main(paths: list[str]) -> int:
    for path in map(Path, paths):
        if strip(path):
            print(f"stripped {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
