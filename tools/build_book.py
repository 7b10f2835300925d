"""Build the HTML book from the executed chapters, with MathJax served from the book itself.

Jupyter Book does not execute anything here (``execute_notebooks: off``). This script lays
out a source tree under ``_build/src`` (the config, the toc, references.bib, book/ with each notebook
replaced by its executed copy from ``_build/executed``, and MathJax), then runs
``jupyter-book build -W -n --keep-going -q`` on it: any warning fails the build, and only
warnings and errors are printed.
The result is ``_build/html/index.html``.

    python -m tools.build_book    # after python -m tools.chapters; or simply: make book
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

from tools.chapters import BOOK, ROOT, chapters, executed_path, name

SRC = ROOT / "_build" / "src"
HTML = ROOT / "_build" / "html"
MATHJAX_PACKAGE = ROOT / "tools" / "mathjax"
MATHJAX = MATHJAX_PACKAGE / "node_modules" / "mathjax" / "es5"
MATHJAX_SITE_DIR = (
    Path("_extra") / "_static" / "mathjax"
)  # html_extra_path copies _extra/ to the site root


# House style (pyproject.toml [tool.ruff]) wraps code at 90 characters; at the theme's code font
# a 1280-pixel window's column holds about 80. This style sheet sets code small enough for 90 and
# wraps long printed output lines, so nothing scrolls sideways (tests/test_book.py checks it).
# Jupyter Book links every .css file of the source tree's _static/ folder into each page.
BOOK_CSS = """\
div.highlight pre { font-size: 0.72rem; }
div.cell_output div.highlight pre, div.cell_output pre { white-space: pre-wrap; overflow-wrap: anywhere; }
"""


class BuildError(RuntimeError):
    """The book could not be built; the message says which step and why."""


def ensure_mathjax() -> Path:
    """The MathJax 3 distribution, installed from the npm lock file on first use."""
    if not (MATHJAX / "tex-chtml.js").is_file():
        npm = shutil.which("npm")
        if npm is None:
            raise BuildError(
                "npm is needed once to fetch MathJax (tools/mathjax): apt-get install -y npm"
            )
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=MATHJAX_PACKAGE,
            check=True,
        )
    return MATHJAX


HIDING_TAGS = {
    "hide-cell",
    "hide-input",
    "hide-output",
    "remove-cell",
    "remove-input",
    "remove-output",
}


def _tag(cell: nbformat.NotebookNode, tag: str) -> None:
    tags = cell.metadata.get("tags", [])
    if not HIDING_TAGS & set(
        tags
    ):  # a cell that already says how to hide itself keeps its choice
        cell.metadata["tags"] = [*tags, tag]


def fold_for_reading(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Prepare an executed chapter for reading: what changes is only what is shown.

    - Solution cells (tag ``solution``) fold behind a toggle (myst-nb's ``hide-cell``).
    - Where papermill injected parameters, the page shows that cell, the values the chapter
      really ran with, folded like the ``parameters`` cell it follows (``hide-cell``), and
      drops that cell's defaults (``remove-cell``, replacing its own hiding tag).
    """
    tags = [set(cell.metadata.get("tags", [])) for cell in nb.cells]
    injected = any("injected-parameters" in t for t in tags)
    for cell, t in zip(nb.cells, tags):
        if "solution" in t:
            _tag(cell, "hide-cell")
        elif "parameters" in t and injected:
            kept = [
                tag for tag in cell.metadata.get("tags", []) if tag not in HIDING_TAGS
            ]
            cell.metadata["tags"] = [*kept, "remove-cell"]
        elif "injected-parameters" in t:
            _tag(cell, "hide-cell")
    return nb


def assemble(src: Path = SRC) -> Path:
    """Lay out the tree Jupyter Book builds from; fail naming any chapter not yet executed."""
    missing = [name(c) for c in chapters() if not executed_path(c).is_file()]
    if missing:
        raise BuildError(
            f"chapters not executed yet: {', '.join(missing)} (run: python -m tools.chapters)"
        )
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    for config in ("_config.yml", "_toc.yml", "references.bib"):
        shutil.copy2(ROOT / config, src / config)
    # Markdown pages, images and results travel as they are; notebooks only as executed copies.
    shutil.copytree(
        BOOK,
        src / "book",
        ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints", "__pycache__"),
    )
    for chapter in chapters():
        nb = nbformat.read(executed_path(chapter), as_version=4)
        nbformat.write(fold_for_reading(nb), src / chapter.relative_to(ROOT))
    shutil.copytree(ensure_mathjax(), src / MATHJAX_SITE_DIR)
    (src / "_static").mkdir(exist_ok=True)
    (src / "_static" / "book.css").write_text(BOOK_CSS)
    return src


def build(src: Path = SRC) -> Path:
    """Run Jupyter Book on ``src`` with warnings as errors; return the HTML folder."""
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    command = [
        str(jupyter_book),
        "build",
        str(src),
        "--path-output",
        str(ROOT),
        "-W",
        "-n",
        "--keep-going",
        "-q",
    ]
    result = subprocess.run(command, cwd=ROOT)
    if result.returncode != 0:
        raise BuildError(
            f"jupyter-book build failed (exit {result.returncode}); its warnings are printed above"
        )
    return HTML


def main() -> int:
    try:
        html = build(assemble())
    except BuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"The book is built. Open file://{html / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
