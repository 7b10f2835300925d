"""The conventions every chapter keeps, checked on the sources in book/ without running them.

Page order: a markdown cell ``# Title`` (title, opening paragraph, learning objectives), then
the ``parameters`` cell (``quick = True``, folded: ``hide-cell``) before any other code, then
the set-up. And no page names a chapter that ``_toc.yml`` lacks.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import papermill
import pytest

from tools.chapters import BOOK, ROOT, chapters, name, toc_files

NOTEBOOKS = sorted(
    p for p in BOOK.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts
)
PAGES = sorted(p for p in BOOK.rglob("*.md") if ".ipynb_checkpoints" not in p.parts)


def _id(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _tags(cell: nbformat.NotebookNode) -> list[str]:
    return cell.metadata.get("tags", [])


def test_every_toc_entry_exists():
    missing = [
        _id(p)
        for p in toc_files()
        if not (p.with_suffix(".ipynb").is_file() or p.with_suffix(".md").is_file())
    ]
    assert not missing, f"_toc.yml names pages that do not exist: {missing}"


def test_every_notebook_in_book_is_in_the_toc():
    orphans = sorted(set(map(_id, NOTEBOOKS)) - set(map(_id, chapters())))
    assert not orphans, f"not in _toc.yml, so never executed or rendered: {orphans}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_notebook_is_stored_without_outputs(path: Path):
    nb = nbformat.read(path, as_version=4)
    dirty = [
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and (c.outputs or c.execution_count is not None)
    ]
    assert not dirty, (
        f"{_id(path)}: cells {dirty} carry outputs; "
        f"strip them: python -m tools.strip_notebooks {_id(path)}"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_page_opens_with_its_title_then_the_parameters_cell(path: Path):
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.lstrip().startswith("# "), (
        f"{_id(path)}: the first cell must be a markdown cell starting with '# Title' "
        "(title, opening paragraph, learning objectives)"
    )
    code = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    tagged = [i for i, c in code if "parameters" in _tags(c)]
    assert len(tagged) == 1, (
        f"{_id(path)}: expected one code cell tagged 'parameters', found cells {tagged}"
    )
    assert tagged[0] == code[0][0], (
        f"{_id(path)}: the 'parameters' cell (cell {tagged[0]}) must come before every other "
        f"code cell; cell {code[0][0]} is code and comes first"
    )
    assert "hide-cell" in _tags(nb.cells[tagged[0]]), (
        f"{_id(path)}: tag the parameters cell 'hide-cell' too, so the page folds it"
    )
    found = papermill.inspect_notebook(
        str(path)
    )  # papermill's own parser: what it will see
    assert found.get("quick", {}).get("default") == "True", (
        f"{_id(path)}: the parameters cell must set `quick = True` in a form papermill "
        "parses (no '=' in its comment)"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_notebook_uses_the_python3_kernel(path: Path):
    kernelspec = nbformat.read(path, as_version=4).metadata.get("kernelspec", {})
    assert kernelspec.get("name") == "python3"


# ---- every chapter a page names is in _toc.yml ---------------------------------------------

TOC_PAGES = {p.relative_to(BOOK).as_posix() for p in toc_files() if BOOK in p.parents}
CHAPTERS = {name(c) for c in chapters()}
# `book/one_stage`, `book/one_stage.ipynb`, `book/api.md`; not a folder such as `book/results/`
BOOK_PATH = re.compile(r"\bbook/([A-Za-z0-9_\-]+)(?:\.(?:ipynb|md))?(?![A-Za-z0-9_\-/.])")
DOC_LINK = re.compile(r"\{doc\}`(?:[^`<]*<)?([^`>]+)>?`")
TABLE_ROW = re.compile(r"^\s*\|(.*)\|\s*$")
# A table column that lists chapters: every backticked name in it must be a toc page.
CHAPTER_COLUMNS = {"chapter", "notebook"}
NAME = re.compile(r"`([A-Za-z0-9_\-]+)(?:\.ipynb)?`")


def _texts() -> list[tuple[str, str]]:
    """(where, text) of every page's prose: markdown pages, notebook cells, the README."""
    found = [(_id(p), p.read_text(encoding="utf-8")) for p in PAGES]
    for path in NOTEBOOKS:
        for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
            found.append((f"{_id(path)} cell {i}", cell.source))
    found.append(("README.md", (ROOT / "README.md").read_text(encoding="utf-8")))
    return found


def _tables(text: str) -> list[list[list[str]]]:
    """Markdown tables in ``text`` as rows of cells, header first, delimiter row dropped."""
    tables, rows = [], []
    for line in [*text.splitlines(), ""]:
        if m := TABLE_ROW.match(line):
            cells = [c.strip() for c in m.group(1).split("|")]
            if not all(re.fullmatch(r":?-{3,}:?", c) for c in cells):
                rows.append(cells)
        elif rows:
            tables.append(rows)
            rows = []
    return tables


def _listed(table: list[list[str]]) -> list[str]:
    """The backticked names in a table's columns headed 'chapter' or 'notebook'."""
    columns = [i for i, h in enumerate(table[0]) if h.lower() in CHAPTER_COLUMNS]
    return [
        m.group(1)
        for row in table[1:]
        for i in columns
        if i < len(row)
        for m in NAME.finditer(row[i])
    ]


def named_chapters(text: str) -> list[tuple[int, str]]:
    """(line, name) for every book page ``text`` names: book/ paths, {doc} links and the
    backticked entries of a table column headed 'chapter' or 'notebook'."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        found += [(number, m.group(1)) for m in BOOK_PATH.finditer(line)]
        found += [
            (number, Path(m.group(1).strip()).name) for m in DOC_LINK.finditer(line)
        ]
        if (m := TABLE_ROW.match(line)) and (
            row := [c.strip() for c in m.group(1).split("|")]
        ):
            for table in _tables(text):
                if row in table[1:]:
                    found += [(number, n) for n in _listed([table[0], row])]
                    break
    return found


def test_named_chapters_are_recognised():
    text = (
        "See book/case1 and `book/ghost.ipynb`, {doc}`computing` and {doc}`the API <api>`.\n"
        "Results in book/results/sec41.json and book/.\n\n"
        "| order | chapter | notebook |\n|---|---|---|\n| 1 | Preface | `preface.ipynb`, ... |\n"
    )
    assert [n for _, n in named_chapters(text)] == [
        "case1",
        "ghost",
        "computing",
        "api",
        "preface",
    ]


def test_no_page_names_a_chapter_missing_from_the_toc():
    unknown = [
        f"{where}, line {line}: {chapter}"
        for where, text in _texts()
        for line, chapter in named_chapters(text)
        if chapter not in TOC_PAGES
    ]
    assert not unknown, "pages name chapters that _toc.yml lacks:\n" + "\n".join(unknown)


@pytest.mark.parametrize("page", ["README.md", "book/instructors.md"])
def test_chapter_tables_list_every_chapter(page: str):
    tables = [
        t
        for t in _tables((ROOT / page).read_text(encoding="utf-8"))
        if CHAPTER_COLUMNS & {h.lower() for h in t[0]}
    ]
    assert tables, f"{page}: no table with a 'chapter' or 'notebook' column"
    listed = set(_listed(tables[0]))
    missing = sorted(CHAPTERS - listed)
    assert not missing, (
        f"{page}: its chapter table leaves out chapters of _toc.yml: {missing}"
    )
