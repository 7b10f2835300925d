"""The book as an nbgrader course: assignments that grade themselves.

    python -m tools.classroom assignments [CHAPTER ...]   # _build/course: source/ -> release/
    python -m tools.classroom grade SUBMISSIONS           # autograde + feedback -> grades.csv
    python -m tools.classroom grade --collected           # what `nbgrader collect` put in submitted/
    python -m tools.classroom manual STUDENT CHAPTER EXERCISE POINTS   # a derivation's grade
    python -m tools.classroom report                      # grades.csv again, from the gradebook
    python -m tools.classroom points                      # points per chapter, as a Markdown table
    python -m tools.classroom samples CHAPTER --out DIR   # solutions, stubs, one deliberate mistake

``make assignments`` and ``make grade SUBMISSIONS=dir`` run the first two. The book stays the one
source: the nbgrader version of a chapter is generated from its ``## Exercises`` section, whose
convention ``tests/test_exercises.py`` checks.

- A solution code cell (tagged ``solution``) is split where its closing asserts begin. The code
  before them becomes an autograded answer cell, the solution between ``### BEGIN SOLUTION`` and
  ``### END SOLUTION`` (the release replaces it with ``raise NotImplementedError()``); the asserts
  become a locked, autograded test cell worth 2 points. A ``points-N`` tag on the solution cell
  sets N points instead; a ``hidden-check`` tag hides the asserts from students
  (``### BEGIN HIDDEN TESTS``) where reading them would give the answer away.
- A derivation (a solution markdown cell, the MyST dropdown) becomes a manually graded answer cell
  worth 2 points (``points-N`` again overrides); students see "YOUR ANSWER HERE".
- Every other cell is read-only: autograde restores it from the source, so a submission cannot
  change the chapter its answers are checked against.

The course lives in ``_build/course/`` (``--course`` elsewhere), laid out as nbgrader expects:
``nbgrader_config.py``, ``gradebook.db``, ``source/<chapter>/``, ``release/<chapter>/``,
``submitted/<student>/<chapter>/``, ``autograded/``, ``feedback/`` and ``grades.csv``, one row per
student, chapter, exercise and part (code or derivation). Everything runs offline: nbgrader's
command-line apps, no JupyterHub and no exchange (see book/instructors.md for one with it).
"""

from __future__ import annotations

import argparse
import ast
import csv
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path

import nbformat
from nbformat import NotebookNode
from nbformat.v4 import new_code_cell, new_markdown_cell

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
COURSE = ROOT / "_build" / "course"
COURSE_ID = "influence"
SOLUTION_TAG = "solution"
HIDDEN_TAG = "hidden-check"
POINTS_TAG = re.compile(r"points-(\d+)$")
CHECK_POINTS = 2  # an exercise's autograded check
DERIVATION_POINTS = 2  # a derivation, graded by hand
# A chapter cell may train a model for a minute or two on a slow machine; nbgrader's default
# of 30 s per cell would time out cells that the book's CI runs fine.
CELL_TIMEOUT_S = 900
EXERCISE = re.compile(r"^### Exercise (\d+): (.+)$", re.MULTILINE)
SECTION = re.compile(r"^#{1,2} ", re.MULTILINE)
STUDENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
NOT_ANSWERED = "not answered (NotImplementedError)"
MANUAL = "needs manual grade"


class ClassroomError(RuntimeError):
    """Bad input or a failed nbgrader step; the message says what to do."""


# --- the nbgrader source version of a chapter ---------------------------------------------


@dataclass(frozen=True)
class Part:
    """One graded cell of a chapter: an exercise's autograded check or its derivation."""

    chapter: str
    exercise: int
    grade_id: str
    kind: str  # "code" (autograded) or "derivation" (graded by hand)
    points: int


def _tags(cell: NotebookNode) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _points(cell: NotebookNode, default: int) -> int:
    found = [int(m.group(1)) for t in _tags(cell) if (m := POINTS_TAG.match(t))]
    return found[0] if found else default


def exercise_of_cells(nb: NotebookNode) -> list[int | None]:
    """For each cell, the number of the exercise it belongs to, or None outside the exercises.

    The exercises run from a ``## Exercises`` heading to the next ``#`` or ``##`` heading; each
    starts at its ``### Exercise N: title`` cell (tests/test_exercises.py checks the convention).
    """
    owner: list[int | None] = [None] * len(nb.cells)
    inside, current = False, None
    for i, cell in enumerate(nb.cells):
        text = cell.source if cell.cell_type == "markdown" else ""
        lines = [line.strip() for line in text.splitlines()]
        if "## Exercises" in lines:
            inside, current = True, None
            continue
        if not inside:
            continue
        if match := EXERCISE.search(text):
            current = int(match.group(1))
        elif SECTION.search(text):
            inside, current = False, None
            continue
        owner[i] = current
    return owner


def _is_check(node: ast.stmt) -> bool:
    """An assert, or an ``if``/``for`` that holds nothing but checks (no computation to hide)."""
    if isinstance(node, ast.Assert):
        return True
    if isinstance(node, (ast.If, ast.For)):
        return all(_is_check(n) for n in [*node.body, *node.orelse])
    return False


def split_checks(source: str) -> tuple[str, str]:
    """``source`` cut where its closing checks begin: (the answer, the asserts after it).

    Comments right above the first closing assert travel with the checks. A cell that does not
    end in asserts is all answer; one that is all asserts has an empty answer.
    """
    body = ast.parse(source).body
    start = len(body)
    while start > 0 and _is_check(body[start - 1]):
        start -= 1
    if start == len(body):
        return source.strip(), ""
    if start == 0:
        return "", source.strip()
    lines = source.splitlines()
    cut = body[start].lineno - 1  # 0-based first line of the checks
    previous_end = body[start - 1].end_lineno or 0
    while cut > previous_end and lines[cut - 1].lstrip().startswith("#"):
        cut -= 1
    return "\n".join(lines[:cut]).strip(), "\n".join(lines[cut:]).strip()


def _nbgrader(cell: NotebookNode, grade_id: str, **flags: object) -> NotebookNode:
    meta = {"grade": False, "solution": False, "locked": False, "grade_id": grade_id}
    meta.update(flags)
    meta["schema_version"] = 3
    cell.metadata["nbgrader"] = meta
    return cell


def _unwrap_dropdown(source: str) -> str:
    """A solution dropdown's text without the MyST fence, which Jupyter would show raw."""
    lines = source.strip().splitlines()
    if lines and lines[0].startswith("```{admonition}"):
        lines = lines[1:]
        if lines and lines[0].startswith(":class:"):
            lines = lines[1:]
        if lines and lines[-1].strip() == "```":
            lines = lines[:-1]
    return "\n".join(lines).strip()


def source_notebook(nb: NotebookNode, chapter: str) -> tuple[NotebookNode, list[Part]]:
    """The nbgrader source version of a chapter, and its graded parts.

    Raises :class:`ClassroomError` when an exercise would have nothing to autograde.
    """
    out = nbformat.v4.new_notebook(metadata=dict(nb.metadata))
    out.metadata.pop("papermill", None)
    parts: list[Part] = []
    counters: dict[tuple[int, str], int] = {}

    def grade_id(number: int, role: str) -> str:
        n = counters[number, role] = counters.get((number, role), 0) + 1
        return f"ex{number}-{role}" + ("" if n == 1 else f"-{n}")

    for index, (cell, number) in enumerate(zip(nb.cells, exercise_of_cells(nb))):
        is_solution = SOLUTION_TAG in _tags(cell)
        tags = [t for t in _tags(cell) if t != SOLUTION_TAG]
        if number is None or not is_solution:
            # The chapter, and the exercise statements: read-only, restored by autograde.
            make = {
                "code": new_code_cell,
                "markdown": new_markdown_cell,
                "raw": nbformat.v4.new_raw_cell,
            }[cell.cell_type]
            copy = make(cell.source, metadata={"tags": tags} if tags else {})
            out.cells.append(_nbgrader(copy, f"cell-{index:03d}", locked=True))
            continue
        if cell.cell_type == "markdown":
            gid = grade_id(number, "derivation")
            points = _points(cell, DERIVATION_POINTS)
            answer = new_markdown_cell(_unwrap_dropdown(cell.source))
            out.cells.append(
                _nbgrader(answer, gid, grade=True, solution=True, points=points)
            )
            parts.append(Part(chapter, number, gid, "derivation", points))
            continue
        answer_code, checks = split_checks(cell.source)
        if answer_code:
            out.cells.append(
                _nbgrader(
                    new_code_cell(
                        f"### BEGIN SOLUTION\n{answer_code}\n### END SOLUTION",
                        metadata={"tags": tags},
                    ),
                    grade_id(number, "answer"),
                    solution=True,
                )
            )
        if checks:
            gid = grade_id(number, "check")
            points = _points(cell, CHECK_POINTS)
            if HIDDEN_TAG in tags:
                text = (
                    f"# Check of exercise {number} ({points} points): hidden, the grader runs it\n"
                    f"### BEGIN HIDDEN TESTS\n{checks}\n### END HIDDEN TESTS"
                )
            else:
                text = f"# Check of exercise {number} ({points} points)\n{checks}"
            out.cells.append(
                _nbgrader(
                    new_code_cell(text, metadata={"tags": tags}),
                    gid,
                    grade=True,
                    locked=True,
                    points=points,
                )
            )
            parts.append(Part(chapter, number, gid, "code", points))
    numbers = sorted({n for n in exercise_of_cells(nb) if n is not None})
    unchecked = [
        n for n in numbers if not any(p.exercise == n and p.kind == "code" for p in parts)
    ]
    if unchecked:
        raise ClassroomError(
            f"{chapter}: exercise(s) {unchecked} have no solution code cell ending in asserts, "
            "so nothing to autograde; move the asserts to the end of the solution cell"
        )
    if out.nbformat_minor < 5:
        out.nbformat_minor = 5
    for cell in out.cells:
        cell.setdefault("id", uuid.uuid4().hex[:8])
    return out, parts


def book_chapters(book: Path = BOOK) -> list[Path]:
    """The chapter notebooks in ``book``, in the order of the table of contents."""
    from tools.chapters import chapters

    in_toc = chapters() if book == BOOK else []
    return in_toc + [p for p in sorted(book.glob("*.ipynb")) if p not in in_toc]


def graded_chapters(book: Path = BOOK) -> dict[str, Path]:
    """Chapter name -> notebook, for the chapters that have exercises (others are skipped)."""
    found = {}
    for path in book_chapters(book):
        nb = nbformat.read(path, as_version=4)
        if any(n is not None for n in exercise_of_cells(nb)):
            found[path.stem] = path
    return found


def chapter_parts(path: Path) -> list[Part]:
    """The graded parts of one chapter, without writing anything."""
    return source_notebook(nbformat.read(path, as_version=4), path.stem)[1]


# --- the course folder and nbgrader --------------------------------------------------------

CONFIG = '''\
"""nbgrader's configuration for the book's course; written by tools/classroom.py."""

import os

c = get_config()  # noqa: F821 (nbgrader provides it)
here = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.root = here
c.CourseDirectory.course_id = {course_id!r}
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(here, "gradebook.db")
# A chapter cell may train a model for a minute or two; nbgrader's default is 30 s.
c.Execute.timeout = {timeout}
# Students' answers stand in for the solutions between these markers (nbgrader's defaults).
c.ClearSolutions.code_stub = {{"python": "# YOUR CODE HERE\\nraise NotImplementedError()"}}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
# With nbgrader's exchange (optional, see book/instructors.md), uncomment and pick a folder that
# teacher and students share:
# c.Exchange.root = "/srv/nbgrader/exchange"
'''


def _shown(path: Path) -> str:
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def _environment() -> dict[str, str]:
    """The environment nbgrader and its kernels run in: this checkout's packages first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    # nbgrader runs its helpers (alembic, for the gradebook) by name: this interpreter's first.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("INFLUENCE_PROGRESS", "0")
    shared = ROOT.parent / "shared" / "data"
    if not env.get("INFLUENCE_DATA") and shared.is_dir():
        env["INFLUENCE_DATA"] = str(shared.resolve())
    return env


def nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``nbgrader ARGS`` in the course folder; raise ClassroomError with its log on failure."""
    try:
        import nbgrader as _  # noqa: F401
    except ImportError as err:
        raise ClassroomError(
            "nbgrader is not installed: pip install -e '.[classroom]' (make venv installs it)"
        ) from err
    done = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args],
        cwd=course,
        env=_environment(),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise ClassroomError(
            f"nbgrader {' '.join(args)} failed (exit {done.returncode}):\n"
            f"{done.stdout}{done.stderr}"
        )
    return done


def build_course(
    chapters: dict[str, Path], course: Path = COURSE, *, verbose: bool = True
) -> dict[str, list[Part]]:
    """Write ``course``'s config and sources from the chapters, then release them with nbgrader."""
    course.mkdir(parents=True, exist_ok=True)
    (course / "nbgrader_config.py").write_text(
        CONFIG.format(course_id=COURSE_ID, timeout=CELL_TIMEOUT_S)
    )
    built: dict[str, list[Part]] = {}
    for chapter, path in chapters.items():
        nb, parts = source_notebook(nbformat.read(path, as_version=4), chapter)
        folder = course / "source" / chapter
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        nbformat.validate(nb)
        nbformat.write(nb, folder / f"{chapter}.ipynb")
        # Chapters read their committed results relative to their own folder, as in book/;
        # autograde copies the source folder's other files beside every submission.
        if 'Path("results")' in path.read_text() and (path.parent / "results").is_dir():
            shutil.copytree(path.parent / "results", folder / "results")
        nbgrader(course, "generate_assignment", chapter, "--force")
        built[chapter] = parts
        if verbose:
            auto = sum(p.points for p in parts if p.kind == "code")
            manual = sum(p.points for p in parts if p.kind == "derivation")
            exercises = len({p.exercise for p in parts})
            print(
                f"released {_shown(course / 'release' / chapter / (chapter + '.ipynb'))}: "
                f"{exercises} exercises, {auto} autograded points, {manual} derivation points"
            )
    return built


def _released(course: Path) -> set[str]:
    return {p.parent.name for p in (course / "source").glob("*/*.ipynb")}


def collect_submissions(submissions: Path, course: Path) -> list[tuple[str, str]]:
    """Copy ``submissions/<student>/<chapter>.ipynb`` into the course's ``submitted/``.

    Also accepts nbgrader's own layout, ``<student>/<chapter>/<chapter>.ipynb``. Returns the
    (student, chapter) pairs, sorted; raises ClassroomError on a folder it cannot read as such.
    """
    if not submissions.is_dir():
        raise ClassroomError(f"no such folder of submissions: {submissions}")
    found: dict[tuple[str, str], Path] = {}
    known = _released(course)
    problems = []
    for student_dir in sorted(p for p in submissions.iterdir() if p.is_dir()):
        student = student_dir.name
        if student.startswith("."):
            continue
        if not STUDENT.match(student):
            problems.append(
                f"{student_dir}: not a usable student id (letters, digits, _ . -)"
            )
            continue
        notebooks = [
            p
            for p in sorted(student_dir.rglob("*.ipynb"))
            if ".ipynb_checkpoints" not in p.parts
        ]
        for nb in notebooks:
            chapter = nb.stem
            if chapter not in known:
                problems.append(
                    f"{nb}: '{chapter}' is not a chapter of the course "
                    f"(one of: {', '.join(sorted(known))})"
                )
            elif (student, chapter) in found:
                problems.append(f"{nb}: a second submission of {chapter} by {student}")
            else:
                found[student, chapter] = nb
    if problems:
        raise ClassroomError(
            "cannot grade these submissions:\n  " + "\n  ".join(problems)
        )
    if not found:
        raise ClassroomError(
            f"no submissions in {submissions}: expected {submissions}/<student>/<chapter>.ipynb"
        )
    for (student, chapter), nb in found.items():
        target = course / "submitted" / student / chapter
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        shutil.copy(nb, target / f"{chapter}.ipynb")
    return sorted(found)


def grade(
    pairs: Iterable[tuple[str, str]], course: Path = COURSE, *, verbose: bool = True
) -> None:
    """``nbgrader autograde`` and ``generate_feedback`` for each (student, chapter) submitted."""
    for student, chapter in pairs:
        if verbose:
            print(f"grading {student}/{chapter} ...", flush=True)
        nbgrader(course, "autograde", chapter, "--student", student, "--force")
        nbgrader(course, "generate_feedback", chapter, "--student", student, "--force")


# --- the gradebook as a table ----------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One line of grades.csv."""

    student: str
    chapter: str
    exercise: int
    part: str  # code or derivation
    points: float
    max_points: float
    status: str


def _errors(course: Path, student: str, chapter: str) -> dict[str, tuple[str, str]]:
    """grade_id -> (ename, evalue) of each cell that raised in the autograded notebook."""
    path = course / "autograded" / student / chapter / f"{chapter}.ipynb"
    if not path.is_file():
        return {}
    found = {}
    for cell in nbformat.read(path, as_version=4).cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        for output in cell.get("outputs", []):
            if gid and output.output_type == "error":
                found[gid] = (output.ename, output.evalue)
    return found


def _status(row_kind: str, grades: list, errors: dict, exercise: int) -> str:
    score = sum(g.score for g in grades)
    top = sum(g.max_score for g in grades)
    if row_kind == "derivation":
        if any(g.needs_manual_grade for g in grades):
            return MANUAL
        if all(g.manual_score is None for g in grades) and score == 0:
            return "not answered"
        return "ok (graded by hand)"
    if score >= top:
        return "ok"
    # The first error says most: an answer that raised explains the check that then failed.
    answers = [gid for gid in errors if gid.startswith(f"ex{exercise}-answer")]
    if any(errors[gid][0] == "NotImplementedError" for gid in answers):
        return NOT_ANSWERED
    for gid in [*answers, *(g.name for g in grades)]:
        if gid in errors:
            ename, evalue = errors[gid]
            first = evalue.strip().splitlines()[0] if evalue.strip() else ""
            text = f"{ename}: {first}" if first else ename
            if gid in answers:
                text += " (in the answer)"
            return text if len(text) <= 80 else text[:77] + "..."
    return "failed"


def report(course: Path = COURSE) -> list[Row]:
    """Every graded submission in the course's gradebook, one row per exercise and part."""
    from nbgrader.api import Gradebook, MissingEntry

    rows: list[Row] = []
    db = f"sqlite:///{course / 'gradebook.db'}"
    with Gradebook(db, COURSE_ID) as gb:
        for assignment in sorted(gb.assignments, key=lambda a: a.name):
            for submission in sorted(assignment.submissions, key=lambda s: s.student.id):
                student = submission.student.id
                if not (course / "autograded" / student / assignment.name).is_dir():
                    continue  # submitted but never autograded
                for notebook in assignment.notebooks:
                    try:
                        sub = gb.find_submission_notebook(
                            notebook.name, assignment.name, student
                        )
                    except MissingEntry:
                        continue
                    errors = _errors(course, student, assignment.name)
                    groups: dict[tuple[int, str], list] = {}
                    for g in sub.grades:
                        match = re.match(r"ex(\d+)-(check|derivation)", g.name)
                        if match:
                            kind = "code" if match.group(2) == "check" else "derivation"
                            groups.setdefault((int(match.group(1)), kind), []).append(g)
                    for (number, kind), grades in sorted(groups.items()):
                        rows.append(
                            Row(
                                student,
                                assignment.name,
                                number,
                                kind,
                                sum(g.score for g in grades),
                                sum(g.max_score for g in grades),
                                _status(kind, grades, errors, number),
                            )
                        )
    return rows


def write_csv(rows: list[Row], path: Path) -> None:
    names = [f.name for f in fields(Row)]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(names)
        for row in rows:
            values = [getattr(row, n) for n in names]
            writer.writerow([f"{v:g}" if isinstance(v, float) else v for v in values])


def print_table(rows: list[Row]) -> None:
    header = ("student", "chapter", "ex", "part", "points", "status")
    body = [
        (
            r.student,
            r.chapter,
            str(r.exercise),
            r.part,
            f"{r.points:g}/{r.max_points:g}",
            r.status,
        )
        for r in rows
    ]
    widths = [max(len(x) for x in column) for column in zip(header, *body)]
    for line in (header, *body):
        print("  ".join(x.ljust(w) for x, w in zip(line, widths)).rstrip())


def set_manual_grade(
    course: Path, student: str, chapter: str, exercise: int, points: float
) -> None:
    """Record a derivation's grade (what nbgrader's formgrader would do, without a server)."""
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", COURSE_ID) as gb:
        try:
            g = gb.find_grade(f"ex{exercise}-derivation", chapter, chapter, student)
        except MissingEntry as err:
            raise ClassroomError(
                f"no graded derivation for exercise {exercise} of {chapter} by {student}: "
                "grade the submission first, and check the exercise has a derivation"
            ) from err
        if not 0 <= points <= g.max_score:
            raise ClassroomError(
                f"points must lie in [0, {g.max_score:g}], not {points:g}"
            )
        g.manual_score = points
        g.needs_manual_grade = False
        gb.db.commit()


# --- sample submissions ------------------------------------------------------------------------

# One deliberate mistake per chapter for the samples: (exercise, text in its answer, replacement).
MISTAKES = {
    # confuses the mean of the other m - 1 points with the first-order 1/m
    "preface": (1, "(z - w_bar) / (m - 1)", "(z - w_bar) / m"),
}


def write_samples(chapter: str, course: Path, out: Path) -> list[Path]:
    """Three submissions of ``chapter``: ``solutions``, ``stubs`` and ``mistake`` (one wrong answer)."""
    source = course / "source" / chapter / f"{chapter}.ipynb"
    release = course / "release" / chapter / f"{chapter}.ipynb"
    if not source.is_file() or not release.is_file():
        raise ClassroomError(
            f"{chapter} is not in {_shown(course)}: make assignments first"
        )
    if chapter not in MISTAKES:
        raise ClassroomError(
            f"no deliberate mistake written for {chapter}: {sorted(MISTAKES)}"
        )
    number, old, new = MISTAKES[chapter]
    nb = nbformat.read(source, as_version=4)
    answers = [
        c
        for c in nb.cells
        if c.metadata.get("nbgrader", {})
        .get("grade_id", "")
        .startswith(f"ex{number}-answer")
        and old in c.source
    ]
    if len(answers) != 1:
        raise ClassroomError(
            f"{chapter}: the mistake's text is not in exercise {number}'s answer"
        )
    answers[0].source = answers[0].source.replace(old, new)
    written = []
    for student, notebook in (
        ("solutions", nbformat.read(source, as_version=4)),
        ("stubs", nbformat.read(release, as_version=4)),
        ("mistake", nb),
    ):
        target = out / student / f"{chapter}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, target)
        written.append(target)
    return written


# --- command line --------------------------------------------------------------------------------


def _chapters_named(names: list[str]) -> dict[str, Path]:
    available = graded_chapters()
    if not names:
        skipped = [p.stem for p in book_chapters() if p.stem not in available]
        if skipped:
            print(f"skipped, no exercises: {', '.join(skipped)}")
        return available
    skipped = [n for n in names if (BOOK / f"{n}.ipynb").is_file() and n not in available]
    unknown = [n for n in names if not (BOOK / f"{n}.ipynb").is_file()]
    if unknown:
        raise ClassroomError(f"not chapters in book/: {unknown}")
    if skipped:
        print(f"skipped, no exercises: {', '.join(skipped)}")
    return {n: available[n] for n in names if n in available}


def _submitted(
    submissions: Path | None, collected: bool, course: Path
) -> list[tuple[str, str]]:
    """The (student, chapter) pairs to grade: a folder's, or those nbgrader collected."""
    if collected == (submissions is not None):
        raise ClassroomError(
            "name a folder of submissions (<student>/<chapter>.ipynb), or --collected"
        )
    if not (course / "nbgrader_config.py").is_file():
        print(f"no course in {_shown(course)} yet: building it first")
        build_course(graded_chapters(), course)
    if submissions is not None:
        return collect_submissions(submissions, course)
    pairs = sorted(
        (p.parents[1].name, p.parent.name)
        for p in (course / "submitted").glob("*/*/*.ipynb")
    )
    if not pairs:
        raise ClassroomError(f"nothing in {_shown(course / 'submitted')} to grade")
    return pairs


def points_table(parts: dict[str, list[Part]]) -> str:
    """Points per chapter as a Markdown table (book/instructors.md shows it)."""
    lines = [
        "| chapter | exercises | autograded points | derivation points |",
        "|---|---:|---:|---:|",
    ]
    totals = [0, 0, 0]
    for chapter, ps in parts.items():
        counts = [
            len({p.exercise for p in ps}),
            sum(p.points for p in ps if p.kind == "code"),
            sum(p.points for p in ps if p.kind == "derivation"),
        ]
        totals = [a + b for a, b in zip(totals, counts)]
        lines.append(f"| `{chapter}` | {counts[0]} | {counts[1]} | {counts[2]} |")
    lines.append(f"| **total** | {totals[0]} | {totals[1]} | {totals[2]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--course",
        type=Path,
        default=COURSE,
        help="course folder (default: _build/course)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("assignments", help="build source/ and release/ from the chapters")
    p.add_argument(
        "chapters", nargs="*", help="chapter names (default: all with exercises)"
    )
    p = sub.add_parser(
        "grade", help="autograde submissions, write feedback and grades.csv"
    )
    p.add_argument(
        "submissions", nargs="?", type=Path, help="folder of <student>/<chapter>.ipynb"
    )
    p.add_argument(
        "--collected",
        action="store_true",
        help="grade what is already in submitted/ (after nbgrader collect)",
    )
    p = sub.add_parser("manual", help="record the points of a derivation graded by hand")
    p.add_argument("student")
    p.add_argument("chapter")
    p.add_argument("exercise", type=int)
    p.add_argument("points", type=float)
    sub.add_parser("report", help="write grades.csv from the gradebook and print it")
    sub.add_parser("points", help="print the points per chapter as a Markdown table")
    p = sub.add_parser("samples", help="three sample submissions of a chapter")
    p.add_argument("chapter")
    p.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    course: Path = args.course.resolve()
    try:
        if args.command == "assignments":
            built = build_course(_chapters_named(args.chapters), course)
            auto = sum(p.points for ps in built.values() for p in ps if p.kind == "code")
            manual = sum(
                p.points for ps in built.values() for p in ps if p.kind != "code"
            )
            print(
                f"course in {_shown(course)}: {len(built)} chapters, {auto} autograded "
                f"and {manual} derivation points; students get release/<chapter>/"
            )
        elif args.command == "points":
            parts = {
                name: chapter_parts(path) for name, path in graded_chapters().items()
            }
            print(points_table(parts))
        elif args.command == "samples":
            for path in write_samples(args.chapter, course, args.out):
                print(f"wrote {_shown(path)}")
        elif args.command == "manual":
            set_manual_grade(
                course, args.student, args.chapter, args.exercise, args.points
            )
        elif args.command == "grade":
            grade(_submitted(args.submissions, args.collected, course), course)
        if args.command in ("grade", "manual", "report"):
            rows = report(course)
            write_csv(rows, course / "grades.csv")
            print_table(rows)
            print(
                f"wrote {_shown(course / 'grades.csv')}; feedback in {_shown(course / 'feedback')}/"
            )
    except ClassroomError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
