"""Every chapter in _toc.yml runs top to bottom at quick scale, from a fresh kernel, through papermill."""

from __future__ import annotations

import pytest

from tools.chapters import chapters, name


@pytest.mark.slow
@pytest.mark.parametrize("chapter", [name(c) for c in chapters()])
def test_chapter_runs_at_quick_scale(
    chapter: str, executed_chapters: dict[str, str | None]
):
    error = executed_chapters[chapter]
    assert error is None, error
