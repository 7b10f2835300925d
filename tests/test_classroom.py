"""The nbgrader course made from the chapters (tools/classroom.py, ``make assignments``/``make grade``).

Without running anything: every chapter with exercises converts, each exercise with an
autograded check; the split of a solution cell into answer and checks; hidden checks and points
tags; bad folders of submissions refused with a clear message; the points table of
book/instructors.md matching the chapters.

Slow (marked ``slow``), one course built and graded once for the module, as ``make grade`` does:

- the solution notebooks of the preface and the theory chapters autograde to full marks;
- the released stubs score zero on every coding exercise, "not answered", without a crash;
- a submission with one deliberate mistake loses exactly that exercise's points;
- a notebook that raises in an early cell still has its later cells graded (nbgrader goes on).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from tools import classroom
from tools.classroom import (
    MANUAL,
    NOT_ANSWERED,
    ClassroomError,
    Row,
    split_checks,
)

THEORY = ["preface", "one_stage", "multistage_training", "case1", "case2", "computing"]


def test_split_checks_cuts_at_the_closing_asserts():
    source = (
        "x = 1\n"
        "for i in range(3):\n"
        "    assert i < 3  # inside the computation: stays in the answer\n"
        "    x += i\n"
        "print(x)\n"
        "# the checks\n"
        "assert x == 4\n"
        "if x:\n"
        "    for k in (1, 2):\n"
        "        assert k\n"
    )
    answer, checks = split_checks(source)
    assert answer.endswith("print(x)") and "assert i < 3" in answer
    assert checks.startswith("# the checks\nassert x == 4") and checks.endswith(
        "assert k"
    )
    assert split_checks("y = 2") == ("y = 2", "")
    assert split_checks("assert True") == ("", "assert True")


def _small_chapter() -> nbformat.NotebookNode:
    return new_notebook(
        cells=[
            new_code_cell("quick = True", metadata={"tags": ["parameters"]}),
            new_markdown_cell("## Exercises"),
            new_markdown_cell("### Exercise 1: a derivation\n\nCheck: x is 2."),
            new_markdown_cell(
                "```{admonition} Solution\n:class: dropdown\nx is 1 + 1.\n```",
                metadata={"tags": ["solution"]},
            ),
            new_code_cell(
                "x = 1 + 1\nassert x == 2",
                metadata={"tags": ["solution", "hide-cell", "hidden-check", "points-3"]},
            ),
            new_markdown_cell("### Exercise 2: code\n\nCheck: y is 3."),
            new_code_cell(
                "y = 3\nassert y == 3", metadata={"tags": ["solution", "hide-cell"]}
            ),
            new_markdown_cell("## Summary"),
            new_code_cell("z = 0"),
        ]
    )


def test_source_notebook_has_nbgrader_cells():
    nb, parts = classroom.source_notebook(_small_chapter(), "small")
    meta = [c.metadata["nbgrader"] for c in nb.cells]
    assert [(p.exercise, p.kind, p.points) for p in parts] == [
        (1, "derivation", 2),
        (1, "code", 3),
        (2, "code", 2),
    ]
    derivation = nb.cells[3]
    assert meta[3]["solution"] and meta[3]["grade"] and meta[3]["points"] == 2
    assert derivation.source == "x is 1 + 1.", "the MyST fence is dropped"
    answer, hidden = nb.cells[4], nb.cells[5]
    assert answer.source == "### BEGIN SOLUTION\nx = 1 + 1\n### END SOLUTION"
    assert meta[4] | {"grade_id": None} == {
        "grade": False,
        "solution": True,
        "locked": False,
        "grade_id": None,
        "schema_version": 3,
    }
    assert "### BEGIN HIDDEN TESTS\nassert x == 2\n### END HIDDEN TESTS" in hidden.source
    assert meta[5]["grade"] and meta[5]["locked"] and meta[5]["points"] == 3
    assert nb.cells[8].source == "# Check of exercise 2 (2 points)\nassert y == 3"
    others = [0, 1, 2, 6, 9, 10]
    assert all(meta[i]["locked"] and not meta[i]["grade"] for i in others)
    ids = [m["grade_id"] for m in meta]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"[\w-]+", i) for i in ids)
    nbformat.validate(nb)


def test_an_exercise_without_closing_asserts_is_refused():
    nb = _small_chapter()
    nb.cells[6].source = "for y in (3,):\n    assert y == 3\n    print(y)"
    with pytest.raises(ClassroomError, match=r"small: exercise\(s\) \[2\]"):
        classroom.source_notebook(nb, "small")


def test_every_chapter_with_exercises_converts():
    chapters = classroom.graded_chapters()
    assert set(THEORY) <= set(chapters)
    assert "methods" not in chapters and "reproduction" not in chapters  # no exercises
    for name, path in chapters.items():
        parts = classroom.chapter_parts(path)
        numbers = {p.exercise for p in parts}
        checked = {p.exercise for p in parts if p.kind == "code"}
        assert numbers == checked == set(range(1, len(numbers) + 1)), name


def test_instructors_page_shows_the_points_per_chapter():
    parts = {
        name: classroom.chapter_parts(path)
        for name, path in classroom.graded_chapters().items()
    }
    page = (classroom.ROOT / "book" / "instructors.md").read_text()
    assert classroom.points_table(parts) in page, (
        "book/instructors.md: paste the table `python -m tools.classroom points` prints"
    )


def test_bad_submission_folders_are_refused(tmp_path: Path):
    course = tmp_path / "course"
    (course / "source" / "preface").mkdir(parents=True)
    (course / "source" / "preface" / "preface.ipynb").write_text("{}")
    with pytest.raises(ClassroomError, match="no such folder"):
        classroom.collect_submissions(tmp_path / "missing", course)
    empty = tmp_path / "empty"
    (empty / "ada").mkdir(parents=True)
    with pytest.raises(ClassroomError, match="no submissions"):
        classroom.collect_submissions(empty, course)
    (empty / "ada" / "chapter9.ipynb").write_text("{}")
    with pytest.raises(ClassroomError, match="'chapter9' is not a chapter"):
        classroom.collect_submissions(empty, course)
    assert (
        classroom.main(["--course", str(course), "grade"]) == 1
    )  # neither folder nor --collected


# --- the slow part: a course built and graded -----------------------------------------------


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Row]]:
    """A course of the theory chapters, graded for four students; its folder and rows."""
    root = tmp_path_factory.mktemp("classroom")
    course, submissions = root / "course", root / "submissions"
    chapters = classroom.graded_chapters()
    classroom.build_course({n: chapters[n] for n in THEORY}, course, verbose=False)
    classroom.write_samples("preface", course, submissions)  # solutions, stubs, mistake
    for name in THEORY[1:]:
        nb = nbformat.read(course / "source" / name / f"{name}.ipynb", as_version=4)
        nbformat.write(nb, submissions / "solutions" / f"{name}.ipynb")
    early = nbformat.read(submissions / "solutions" / "preface.ipynb", as_version=4)
    early.cells.insert(2, new_code_cell('raise RuntimeError("a student\'s stray cell")'))
    (submissions / "early").mkdir()
    nbformat.write(early, submissions / "early" / "preface.ipynb")
    assert classroom.main(["--course", str(course), "grade", str(submissions)]) == 0
    with (course / "grades.csv").open() as handle:
        rows = [
            Row(
                r["student"],
                r["chapter"],
                int(r["exercise"]),
                r["part"],
                float(r["points"]),
                float(r["max_points"]),
                r["status"],
            )
            for r in csv.DictReader(handle)
        ]
    return course, rows


def _rows(rows: list[Row], student: str, chapter: str = "preface") -> list[Row]:
    return [r for r in rows if r.student == student and r.chapter == chapter]


@pytest.mark.slow
@pytest.mark.parametrize("chapter", THEORY)
def test_solutions_autograde_to_full_marks(graded, chapter: str):
    _, rows = graded
    mine = _rows(rows, "solutions", chapter)
    code = [r for r in mine if r.part == "code"]
    assert code and all(
        r.points == r.max_points > 0 and r.status == "ok" for r in code
    ), [(r.exercise, r.status) for r in code if r.status != "ok"]
    assert all(r.status == MANUAL for r in mine if r.part == "derivation")


@pytest.mark.slow
def test_stubs_score_zero_and_say_not_answered(graded):
    course, rows = graded
    mine = _rows(rows, "stubs")
    assert mine and all(r.points == 0 for r in mine)
    assert all(r.status == NOT_ANSWERED for r in mine if r.part == "code")
    assert all(r.status == "not answered" for r in mine if r.part == "derivation")
    assert (course / "feedback" / "stubs" / "preface" / "preface.html").is_file()


@pytest.mark.slow
def test_one_mistake_loses_exactly_that_exercise(graded):
    _, rows = graded
    right = {(r.exercise, r.part): r.points for r in _rows(rows, "solutions")}
    wrong = {(r.exercise, r.part): r for r in _rows(rows, "mistake")}
    assert wrong[1, "code"].points == 0 and wrong[1, "code"].status == "AssertionError"
    assert {k: r.points for k, r in wrong.items() if k != (1, "code")} == {
        k: p for k, p in right.items() if k != (1, "code")
    }


@pytest.mark.slow
def test_an_early_error_does_not_stop_the_grading(graded):
    course, rows = graded
    code = [r for r in _rows(rows, "early") if r.part == "code"]
    assert code and all(r.status == "ok" for r in code)
    autograded = course / "autograded" / "early" / "preface" / "preface.ipynb"
    errors = [
        o.ename
        for c in nbformat.read(autograded, as_version=4).cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "error"
    ]
    assert errors == ["RuntimeError"], "the stray cell raised, and it alone"


@pytest.mark.slow
def test_a_derivation_graded_by_hand_counts(graded):
    course, _ = graded
    classroom.set_manual_grade(course, "solutions", "preface", 1, 1.5)
    row = next(
        r
        for r in classroom.report(course)
        if (r.student, r.chapter, r.exercise, r.part)
        == ("solutions", "preface", 1, "derivation")
    )
    assert (row.points, row.status) == (1.5, "ok (graded by hand)")
    with pytest.raises(ClassroomError, match="must lie in"):
        classroom.set_manual_grade(course, "solutions", "preface", 1, 3)
