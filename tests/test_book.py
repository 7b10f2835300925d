"""The built book, as a reader's browser shows it: math typeset, figures loaded and described,
nothing wider than its column, nothing from another host.

The book is built once per session (conftest's ``built_book``) from the chapters executed at
quick scale, served on 127.0.0.1, and every page is opened in headless Chromium. The first
page's screenshot goes to ``_build/screenshot.png`` (the README's picture is a copy of it).
"""

from __future__ import annotations

import functools
import os
import re
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from devtools import Chromium, find_chromium

from tools.chapters import ROOT, toc_files

SCREENSHOT = ROOT / "_build" / "screenshot.png"
ROOT_PAGE = (
    toc_files()[0].relative_to(ROOT).with_suffix(".html").as_posix()
)  # the first page a reader sees

# After MathJax has run, no TeX may be left in the prose: no $$, no \( \) \[ \] delimiters and
# no \command. Code cells and outputs are left out, since code may well contain all of these.
PAGE_STATE = """(async () => {
  const deadline = Date.now() + 30000;
  while (window.MathJax && !(MathJax.startup && MathJax.startup.promise) && Date.now() < deadline)
    await new Promise(r => setTimeout(r, 50));
  if (window.MathJax && MathJax.startup) await MathJax.startup.promise;
  const images = [...document.images];
  images.forEach(img => { img.loading = 'eager'; });
  await Promise.all(images.map(img => img.complete ? null :
    new Promise(r => { img.addEventListener('load', r); img.addEventListener('error', r); })));
  const prose = document.querySelector('main') || document.body;
  const copy = prose.cloneNode(true);
  copy.querySelectorAll('pre, code, script, style, mjx-container, .highlight, .cell_output').forEach(e => e.remove());
  const math = [...document.querySelectorAll('.math')];
  // An equation or a code block wider than its column: compare the scrolling box (the element
  // itself, or the nearest ancestor that scrolls sideways) with the column it sits in.
  const column = document.querySelector('article.bd-article') || prose;
  const columnRight = column.getBoundingClientRect().right + 1;
  const scroller = e => {
    for (let n = e; n && n !== column; n = n.parentElement) {
      const o = getComputedStyle(n).overflowX;
      if (o === 'auto' || o === 'scroll') return n;
    }
    return e;
  };
  const wide = [...document.querySelectorAll('mjx-container[display="true"], div.highlight pre')].flatMap(e => {
    const box = scroller(e);
    const overflow = box.scrollWidth - box.clientWidth;
    const outside = e.getBoundingClientRect().right - columnRight;
    if (overflow <= 1 && outside <= 0) return [];
    const kind = e.tagName.toLowerCase() === 'pre' ? 'code' : 'equation';
    const text = (kind === 'code' ? e.textContent : (e.querySelector('mjx-assistive-mml') || e).textContent)
      .trim().replace(/\\s+/g, ' ').slice(0, 60);
    return [{kind, text, overflow: Math.max(overflow, outside), width: box.clientWidth}];
  });
  return {
    mathjax: Boolean(window.MathJax && MathJax.version),
    math: math.length,
    typeset: math.filter(e => e.querySelector('mjx-container')).length,
    prose: copy.textContent,
    images: images.map(img => ({src: img.currentSrc || img.src, width: img.naturalWidth,
                                alt: (img.getAttribute('alt') || '').trim()})),
    wide,
  };
})()"""
RAW_TEX = re.compile(r"\$\$|\\[()\[\]]|\\[A-Za-z]+")
# A Markdown table that a chapter displayed but the build left as text: its delimiter row on a
# line of its own (smartquotes may have turned --- into an em dash).
RAW_TABLE = re.compile(r"^\|(\s*:?(-{3,}|\u2014):?\s*\|)+\s*$", re.MULTILINE)

# Tags and attributes through which a page loads something (plain <a href> links only link).
LOADING_ATTRIBUTES = {
    "script": "src",
    "img": "src",
    "iframe": "src",
    "source": "src",
    "video": "src",
    "audio": "src",
    "embed": "src",
    "object": "data",
    "input": "src",
    "track": "src",
}
EXTERNAL = re.compile(r"^\s*(https?:)?//", re.IGNORECASE)


class _ResourceLinks(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "link" and a.get("rel", "").lower() not in {
            "canonical",
            "alternate",
            "next",
            "prev",
            "index",
            "search",
        }:
            self.found.append(a.get("href", ""))
        elif tag in LOADING_ATTRIBUTES:
            self.found.append(a.get(LOADING_ATTRIBUTES[tag], ""))
            self.found.extend(
                part.split()[0] for part in a.get("srcset", "").split(",") if part.strip()
            )


def external_loads(html: str) -> list[str]:
    """Resource URLs in ``html`` that point at another host."""
    parser = _ResourceLinks()
    parser.feed(html)
    return [url for url in parser.found if EXTERNAL.match(url)]


def test_external_loads_are_recognised():
    page = (
        '<link rel="stylesheet" href="https://cdn.example/x.css"><a href="https://example.org">a link</a>'
        '<script src="//cdn.example/m.js"></script><img src="../_images/f.png"><link rel="canonical" href="https://x/">'
    )
    assert external_loads(page) == ["https://cdn.example/x.css", "//cdn.example/m.js"]
    assert (
        RAW_TEX.search("the loss $$f$$")
        and RAW_TEX.search(r"where \(x\)")
        and RAW_TEX.search(r"\sum_i")
    )
    assert not RAW_TEX.search("costs $5 and 10% more")


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def pages(html: Path) -> list[str]:
    """The book's pages, relative to ``html``: not the theme's template fragments under _static/."""
    found = (p.relative_to(html).as_posix() for p in html.rglob("*.html"))
    return sorted(
        p for p in found if not p.startswith(("_static/", "_sources/", "_images/"))
    )


@pytest.fixture(scope="module")
def site(built_book: Path) -> Iterator[str]:
    """The built HTML served on 127.0.0.1, as its base URL."""
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(built_book))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    if find_chromium() is None:
        message = "chromium not installed (apt-get install -y chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with Chromium() as chromium:
        yield chromium


@pytest.mark.slow
def test_no_page_loads_anything_from_another_host(built_book: Path):
    offenders = {}
    for page in pages(built_book):
        if found := external_loads((built_book / page).read_text(encoding="utf-8")):
            offenders[page] = found
    assert not offenders, f"pages that load from other hosts: {offenders}"


def test_raw_tables_are_recognised():
    assert RAW_TABLE.search("<p>| figure | r |\n|---|---|\n| 2a | 0.62 |</p>")
    assert RAW_TABLE.search("<p>| figure | r |\n|\u2014|\u2014|\n| 2a | 0.62 |</p>")
    assert not RAW_TABLE.search(
        '<table><tr><td>0.62</td></tr></table>\n<span class="s2">"|---|---|"</span>'
    )


@pytest.mark.slow
def test_markdown_outputs_render_as_tables(built_book: Path):
    raw = [
        page
        for page in pages(built_book)
        if RAW_TABLE.search((built_book / page).read_text(encoding="utf-8"))
    ]
    assert not raw, f"pages with a Markdown table left as text: {raw}"


@pytest.mark.slow
def test_pages_render_math_and_figures_offline(
    built_book: Path, site: str, browser: Chromium, stage_timer
):
    assert ROOT_PAGE in (built_book / "index.html").read_text(), (
        "index.html should redirect to the root page"
    )
    others = [
        p for p in pages(built_book) if p not in (ROOT_PAGE, "index.html")
    ]  # index.html only redirects
    problems: list[str] = []
    with stage_timer("browser test"):
        for page in [ROOT_PAGE, *others]:
            browser.goto(site + page)
            state = browser.evaluate(PAGE_STATE)
            if page == ROOT_PAGE:
                browser.screenshot(SCREENSHOT)
            if state["math"] and not state["mathjax"]:
                problems.append(f"{page}: MathJax did not load")
            if state["typeset"] != state["math"]:
                problems.append(
                    f"{page}: {state['math'] - state['typeset']} of {state['math']} equations not typeset"
                )
            if raw := sorted(set(RAW_TEX.findall(state["prose"]))):
                problems.append(f"{page}: raw TeX in the rendered text: {raw[:10]}")
            problems += [
                f"{page}: image did not load: {img['src']}"
                for img in state["images"]
                if img["width"] <= 0
            ]
            problems += [
                f"{page}: image without alt text: {img['src']}"
                for img in state["images"]
                if not img["alt"]
            ]
            problems += [
                f"{page}: {w['kind']} wider than its column by {w['overflow']:.0f}px of {w['width']}px: {w['text']!r}"
                for w in state["wide"]
            ]
            for request in browser.requests():
                url = request["url"]
                if url == site + "favicon.ico":
                    continue  # Chromium asks for it on its own; the pages do not
                if not url.startswith((site, "data:", "blob:", "about:")):
                    problems.append(f"{page}: request to another host: {url}")
                elif request["failed"] or (request["status"] or 0) >= 400:
                    problems.append(
                        f"{page}: {url} failed: {request['failed'] or request['status']}"
                    )
    assert SCREENSHOT.is_file()
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_root_page_has_equations_and_a_figure(
    built_book: Path, site: str, browser: Chromium
):
    browser.goto(site + ROOT_PAGE)
    state = browser.evaluate(PAGE_STATE)
    assert state["math"] >= 3 and state["typeset"] == state["math"]
    assert any(img["width"] > 0 and "_images/" in img["src"] for img in state["images"])
