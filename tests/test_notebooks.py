"""The conventions every chapter keeps, checked on the sources in book/ without running them."""
from __future__ import annotations

from pathlib import Path

import nbformat
import papermill
import pytest

from tools.chapters import BOOK, ROOT, chapters, toc_files

NOTEBOOKS = sorted(p for p in BOOK.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def _id(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_every_toc_entry_exists():
    missing = [_id(p) for p in toc_files() if not (p.with_suffix(".ipynb").is_file() or p.with_suffix(".md").is_file())]
    assert not missing, f"_toc.yml names pages that do not exist: {missing}"


def test_every_notebook_in_book_is_in_the_toc():
    orphans = sorted(set(map(_id, NOTEBOOKS)) - set(map(_id, chapters())))
    assert not orphans, f"not in _toc.yml, so never executed or rendered: {orphans}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_notebook_is_stored_without_outputs(path: Path):
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert not dirty, f"{_id(path)}: cells {dirty} carry outputs; strip them: python -m tools.strip_notebooks {_id(path)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_first_cell_is_the_parameters_cell_with_quick(path: Path):
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "code" and "parameters" in first.metadata.get("tags", []), (
        f"{_id(path)}: the first cell must be a code cell tagged 'parameters'"
    )
    found = papermill.inspect_notebook(str(path))  # papermill's own parser: what it will see
    assert found.get("quick", {}).get("default") == "True", (
        f"{_id(path)}: the parameters cell must set `quick = True` in a form papermill parses (no '=' in its comment)"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_notebook_uses_the_python3_kernel(path: Path):
    assert nbformat.read(path, as_version=4).metadata.get("kernelspec", {}).get("name") == "python3"

