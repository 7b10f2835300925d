"""Shared test set-up: quiet progress bars, the offline data folder, and the book's stages run once and timed.

Stages (chapters, book build, browser test) are session fixtures, so the chapter tests and
the browser test share one execution and one build. Their wall times, and the install time
``.ci/run`` passes in ``INFLUENCE_CI_INSTALL_S``, are printed at the end of the run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Set before any test imports influence: bars would clutter the output and slow loops down.
os.environ["INFLUENCE_PROGRESS"] = "0"
if not os.environ.get("INFLUENCE_DATA") and (ROOT.parent / "shared" / "data").is_dir():
    os.environ["INFLUENCE_DATA"] = str((ROOT.parent / "shared" / "data").resolve())

_stage_seconds: dict[str, float] = {}
_session_start = time.perf_counter()


@contextmanager
def _timed(stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        _stage_seconds[stage] = (
            _stage_seconds.get(stage, 0.0) + time.perf_counter() - start
        )


@pytest.fixture(scope="session")
def stage_timer() -> Callable[[str], AbstractContextManager[None]]:
    """``with stage_timer("name"):`` adds the block's wall time to that stage in the closing summary."""
    return _timed


@pytest.fixture(scope="session")
def executed_chapters() -> dict[str, str | None]:
    """Every chapter in _toc.yml executed at quick scale: chapter name -> None, or the error it raised."""
    from tools.chapters import ChapterFailed, chapters, execute, name

    results: dict[str, str | None] = {}
    with _timed("chapters"):
        for chapter in chapters():
            try:
                execute(chapter, quick=True)
                results[name(chapter)] = None
            except ChapterFailed as err:
                results[name(chapter)] = str(err)
    return results


@pytest.fixture(scope="session")
def built_book(executed_chapters: dict[str, str | None]) -> Path:
    """The HTML book built from the executed chapters with ``-W -n --keep-going``; its folder."""
    from tools.build_book import BuildError, assemble, build

    failed = [chapter for chapter, error in executed_chapters.items() if error]
    if failed:
        pytest.fail(f"book not built: chapters failed: {', '.join(failed)}")
    with _timed("book build"):
        try:
            return build(assemble())
        except BuildError as err:
            pytest.fail(str(err))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    total = time.perf_counter() - _session_start
    rows = []
    if install := os.environ.get("INFLUENCE_CI_INSTALL_S"):
        rows.append(("install (.ci/run)", float(install)))
    rows.append(("pytest: library tests", total - sum(_stage_seconds.values())))
    rows += [(f"pytest: {stage}", seconds) for stage, seconds in _stage_seconds.items()]
    terminalreporter.section("stage timings")
    for stage, seconds in rows:
        terminalreporter.write_line(f"{stage:<28} {seconds:8.1f} s")
