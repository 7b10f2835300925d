"""The book's chapters: which they are (every notebook `_toc.yml` names under book/) and how they run.

Each chapter is executed from a fresh kernel by papermill, which passes ``quick`` to the
cell tagged ``parameters``, and the executed copy is written to ``_build/executed/``,
the folder Jupyter Book renders from. The sources in book/ keep no outputs.

    python -m tools.chapters                # every chapter at quick scale
    python -m tools.chapters --full         # full scale (make book FULL=1)
    python -m tools.chapters preface        # only the chapters named
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
TOC = ROOT / "_toc.yml"
BOOK = ROOT / "book"
EXECUTED = ROOT / "_build" / "executed"
KERNEL = "python3"  # jupyter_client runs it with this interpreter, so the venv's packages are the ones used
# The kernel (ipykernel's IPKernelApp, a separate process whose stderr is ours) logs a warning at
# start-up, "Kernel is running over TCP without encryption", once per chapter. The kernel and
# papermill talk over loopback only, so the warning says nothing here: the kernel app logs
# errors alone. Warnings that chapter code raises still reach the page (they are cell output).
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]


class ChapterFailed(RuntimeError):
    """A chapter raised while executing; the message names the chapter and carries the cell's traceback."""

    def __init__(self, chapter: str, cause: BaseException) -> None:
        super().__init__(f"chapter {chapter} failed: {cause}")
        self.chapter = chapter


def _toc_entries(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("root", "file") and isinstance(value, str):
                yield value
            else:
                yield from _toc_entries(value)
    elif isinstance(node, list):
        for item in node:
            yield from _toc_entries(item)


def toc_files(toc: Path = TOC) -> list[Path]:
    """Every page `_toc.yml` names (root first, then in order), as paths without suffix."""
    entries = _toc_entries(yaml.safe_load(toc.read_text()))
    return [toc.parent / Path(entry).with_suffix("") for entry in entries]


def chapters(toc: Path = TOC) -> list[Path]:
    """The notebooks among the toc's pages under book/, in toc order."""
    pages = [page.with_suffix(".ipynb") for page in toc_files(toc)]
    return [page for page in pages if page.is_file() and BOOK in page.parents]


def name(chapter: Path) -> str:
    """A chapter's name: its path under book/ without suffix, e.g. ``preface``."""
    return chapter.relative_to(BOOK).with_suffix("").as_posix()


def executed_path(chapter: Path) -> Path:
    """Where the executed copy of ``chapter`` goes."""
    return EXECUTED / chapter.relative_to(ROOT)


def execute(chapter: Path, *, quick: bool = True) -> float:
    """Run ``chapter`` top to bottom in a fresh kernel; return its wall time in seconds.

    The kernel starts in the chapter's folder, as Jupyter would start it, with progress bars
    off (``INFLUENCE_PROGRESS=0``) so the rendered page carries no widgets. Raises
    :class:`ChapterFailed` naming the chapter when a cell fails.
    """
    import papermill

    os.environ["INFLUENCE_PROGRESS"] = (
        "0"  # the kernel inherits this process's environment
    )
    out = executed_path(chapter)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            chapter,
            out,
            parameters=dict(quick=quick),
            kernel_name=KERNEL,
            cwd=chapter.parent,
            progress_bar=False,
            log_output=False,
            extra_arguments=KERNEL_ARGUMENTS,
        )
    except Exception as err:  # papermill's errors carry the failing cell's traceback
        raise ChapterFailed(name(chapter), err) from err
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Execute the book's chapters with papermill."
    )
    parser.add_argument(
        "names",
        nargs="*",
        help="chapters to run (default: all in _toc.yml), e.g. preface",
    )
    parser.add_argument("--full", action="store_true", help="full scale: quick=False")
    args = parser.parse_args(argv)
    todo = chapters()
    unknown = set(args.names) - {name(c) for c in todo}
    if unknown:
        parser.error(f"not chapters in _toc.yml: {sorted(unknown)}")
    todo = [c for c in todo if not args.names or name(c) in args.names]
    scale = "full" if args.full else "quick"
    print(
        f"Executing {len(todo)} chapter(s) at {scale} scale into {EXECUTED.relative_to(ROOT)}/",
        flush=True,
    )
    failed = []
    for chapter in todo:
        start = time.perf_counter()
        try:
            seconds = execute(chapter, quick=not args.full)
            print(f"  {name(chapter):<40} {seconds:7.1f} s", flush=True)
        except ChapterFailed as err:
            print(
                f"  {name(chapter):<40} {time.perf_counter() - start:7.1f} s  FAILED\n{err}",
                file=sys.stderr,
                flush=True,
            )
            failed.append(name(chapter))
    if failed:
        print(f"Failed chapters: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
