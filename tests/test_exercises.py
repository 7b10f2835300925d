"""The exercises that close each chapter, and the assignments made from them.

Checked on the sources in book/, without running them:

- every chapter with a ``## Exercises`` heading has 2-4 exercises, headed ``### Exercise N: title``;
- every exercise has a code cell tagged ``solution`` that checks the answer with ``assert``;
- solutions are hidden in the rendered book: solution code cells are tagged ``hide-cell``, and
  solution markdown cells are MyST dropdown admonitions;
- ``python tools/make_assignments.py`` (``make assignments``) writes notebooks with no solution
  cells and no solution code, and keeps every other cell, in order, without outputs.

That every solution *runs and gives the asserted result* is not checked here: CI executes every
chapter top to bottom with papermill at quick scale (tests/test_chapters.py, tools/chapters.py),
and a failing ``assert`` in a solution cell fails that chapter.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from tools.make_assignments import ROOT, chapters, is_solution, strip_solutions

TOOL = ROOT / "tools" / "make_assignments.py"
NOTEBOOKS = chapters()
HEADING = re.compile(r"^### Exercise (\d+): \S", re.MULTILINE)


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _lines(cell) -> list[str]:
    return cell.source.splitlines()


def _has_exercises(path: Path) -> bool:
    return any(
        cell.cell_type == "markdown"
        and any(line.strip() == "## Exercises" for line in _lines(cell))
        for cell in _read(path).cells
    )


EXERCISE_CHAPTERS = [p for p in NOTEBOOKS if _has_exercises(p)]


def _id(path: Path) -> str:
    return path.name


def exercises(nb) -> list[list]:
    """The cells of each exercise: from its ``### Exercise`` heading to the next one or the next section."""
    start = next(
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "markdown"
        and any(line.strip() == "## Exercises" for line in _lines(cell))
    )
    groups: list[list] = []
    for cell in nb.cells[start + 1 :]:
        lines = _lines(cell) if cell.cell_type == "markdown" else []
        if any(line.startswith("### Exercise") for line in lines):
            groups.append([cell])
        elif any(re.match(r"#{1,2} ", line) for line in lines):
            break  # a new section ends the exercises
        elif groups:
            groups[-1].append(cell)
    return groups


def asserts(source: str) -> bool:
    """True if the code contains an ``assert`` statement (not merely the word in a comment or string)."""
    try:
        return any(isinstance(node, ast.Assert) for node in ast.walk(ast.parse(source)))
    except SyntaxError:  # IPython magics; fall back to the line's first word
        return bool(re.search(r"^\s*assert\b", source, re.MULTILINE))


def test_some_chapter_has_exercises():
    assert EXERCISE_CHAPTERS, "no chapter in book/ has a '## Exercises' heading"


@pytest.mark.parametrize("path", EXERCISE_CHAPTERS, ids=_id)
def test_two_to_four_numbered_exercises(path: Path):
    nb = _read(path)
    groups = exercises(nb)
    assert 2 <= len(groups) <= 4, (
        f"{path.name}: {len(groups)} exercises; a chapter ends with 2-4"
    )
    numbers = [
        int(m.group(1)) for g in groups for m in [HEADING.search(g[0].source)] if m
    ]
    assert numbers == list(range(1, len(groups) + 1)), (
        f"{path.name}: exercise headings must read '### Exercise N: title' with N = 1, 2, ...; found {numbers}"
    )


@pytest.mark.parametrize("path", EXERCISE_CHAPTERS, ids=_id)
def test_every_exercise_has_a_solution_that_asserts(path: Path):
    for group in exercises(_read(path)):
        title = group[0].source.splitlines()[0]
        checks = [
            c
            for c in group
            if c.cell_type == "code" and is_solution(c) and asserts(c.source)
        ]
        assert checks, (
            f"{path.name}, {title!r}: no code cell tagged 'solution' checks the answer with assert"
        )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_solutions_are_hidden_in_the_rendered_book(path: Path):
    for i, cell in enumerate(_read(path).cells):
        if not is_solution(cell):
            continue
        if cell.cell_type == "code":
            assert "hide-cell" in cell.metadata.get("tags", []), (
                f"{path.name}: solution code cell {i} is not tagged 'hide-cell'"
            )
        else:
            assert (
                cell.source.lstrip().startswith("```{admonition}")
                and ":class: dropdown" in cell.source
            ), (
                f"{path.name}: solution markdown cell {i} must be a MyST admonition with ':class: dropdown'"
            )


@pytest.mark.parametrize("path", EXERCISE_CHAPTERS, ids=_id)
def test_every_solution_dropdown_is_tagged(path: Path):
    # An untagged dropdown is folded in the book but handed out by `make assignments`.
    for group in exercises(_read(path)):
        for cell in group:
            if cell.cell_type == "markdown" and cell.source.lstrip().startswith(
                "```{admonition} Solution"
            ):
                assert is_solution(cell), (
                    f"{path.name}, {group[0].source.splitlines()[0]!r}: tag the solution "
                    "dropdown 'solution'"
                )


def test_make_assignments_strips_solutions_and_keeps_the_rest(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, str(TOOL), "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for path in NOTEBOOKS:
        original, assignment = _read(path), _read(tmp_path / path.name)
        assert f"{path.name}:" in done.stdout, f"the tool did not report {path.name}"
        solutions = {c.source for c in original.cells if is_solution(c)}
        assert not [c for c in assignment.cells if is_solution(c)], (
            f"{path.name}: solution cells left"
        )
        leaked = [
            c.source
            for c in assignment.cells
            if c.cell_type == "code" and c.source in solutions and asserts(c.source)
        ]
        assert not leaked, f"{path.name}: solution code left in the assignment"
        kept = [(c.cell_type, c.source) for c in original.cells if not is_solution(c)]
        assert [(c.cell_type, c.source) for c in assignment.cells] == kept, (
            f"{path.name}: other cells lost or reordered"
        )
        assert all(
            not c.outputs and c.execution_count is None
            for c in assignment.cells
            if c.cell_type == "code"
        )
        nbformat.validate(assignment)


def test_strip_solutions_on_a_small_notebook():
    executed = new_code_cell(
        "x = 1",
        execution_count=3,
        outputs=[new_output("stream", name="stdout", text="1\n")],
    )
    cells = [
        new_code_cell("quick = True", metadata={"tags": ["parameters"]}),
        new_markdown_cell("## Exercises"),
        new_markdown_cell("### Exercise 1: t"),
        new_markdown_cell(
            "```{admonition} Solution\n:class: dropdown\nx\n```",
            metadata={"tags": ["solution"]},
        ),
        new_code_cell("assert 1 + 1 == 2", metadata={"tags": ["solution", "hide-cell"]}),
        executed,
    ]
    nb = new_notebook(cells=cells)
    out, removed = strip_solutions(nb)
    assert removed == 2
    assert [c.source for c in out.cells] == [
        "quick = True",
        "## Exercises",
        "### Exercise 1: t",
        "x = 1",
    ]
    assert out.cells[-1].outputs == [] and out.cells[-1].execution_count is None
    assert len(nb.cells) == 6 and nb.cells[-1].outputs, (
        "the original notebook must not change"
    )
    groups = exercises(nb)
    assert (
        len(groups) == 1
        and asserts(groups[0][2].source)
        and not asserts("# assert nothing")
    )


def test_make_assignments_refuses_a_missing_notebook(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, str(TOOL), "--out", str(tmp_path), "book/no_such_chapter.ipynb"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1 and "not found" in done.stderr
