"""The built book as a reader meets it: every page of the table of contents opened in headless Chromium.

Run after the book is built (scripts/test.sh's last stage; not part of the unit tests, which run before the
build): ``python -m pytest browser_tests -q``. The book is read from ``_build/html`` (or ``$SFAM_BOOK_HTML``),
served by a local ``http.server``; the browser is Debian's Chromium (``/usr/bin/chromium``, or
``$SFAM_CHROMIUM``) driven by Playwright, so nothing is downloaded.

On every page: the page loads, no JavaScript error (console error or uncaught exception), no request leaves
localhost (and every local request succeeds); every image of the content is present, decoded and not blank;
math is typeset by the book's own MathJax (no raw TeX delimiters left, no TeX error, no automatic Sphinx
equation number: equations carry the paper's numbers or none); no line of code or output runs past the right
edge unseen (it fits, wraps, or scrolls with a visible scroll bar); every figure of a cell's output has a caption
and alt text. Every static slider (``.sfam-slider``)
changes its image and its read-out when moved. Screenshots go to ``_build/screenshots/``.

The checks are shown able to fail on small broken pages written in the test itself.
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import os
import struct
import threading
import zlib
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
HTML = Path(os.environ.get("SFAM_BOOK_HTML", ROOT / "_build" / "html")).resolve()
SHOTS = HTML.parent / "screenshots"
CHROMIUM = os.environ.get("SFAM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1366, "height": 768}        # a common laptop screen; its text column is 757 px
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 30_000
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


def toc_pages() -> list[str]:
    """Every file of ``_toc.yml``, root first, in the order of the book."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)
    walk({k: v for k, v in toc.items() if k != "root"})
    return list(dict.fromkeys(files))


# --------------------------------------------------------------------------------------------- infrastructure

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(directory: Path):
    """Serve ``directory`` on a free localhost port from a thread; yields the base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's chromium (scripts/setup_env.sh does it with apt-get) "
                    "or set SFAM_CHROMIUM to a Chromium binary", pytrace=False)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport=VIEWPORT, device_scale_factor=1, service_workers="block",
            ignore_default_args=["--hide-scrollbars"])   # draw scroll bars as a reader's browser does
        b.set_default_timeout(TIMEOUT_MS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def book_url():
    if not (HTML / "index.html").exists():
        pytest.fail(f"no built book at {HTML}: build it first (scripts/test.sh's book stage, or "
                    "`jupyter-book build .`), or set SFAM_BOOK_HTML", pytrace=False)
    with serve(HTML) as url:
        yield url


class Visit:
    """One page opened in the browser, with what the page did while loading."""

    def __init__(self, context, url: str):
        self.page = context.new_page()
        self.problems: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console error: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"uncaught JavaScript error: {e}"))
        self.page.on("requestfailed", self._failed)
        self.page.on("response", self._response)
        self.page.route("**/*", self._route)
        response = self.page.goto(url, wait_until="load")
        if response is None or response.status != 200:
            self.problems.append(f"page did not load: HTTP {None if response is None else response.status}")
        # MathJax typesets after load; its startup promise resolves when the first typesetting is done.
        self.page.evaluate("() => (window.MathJax && MathJax.startup && MathJax.startup.promise) || null")
        # Text is measured in the fonts the page ends up with, not in a fallback shown while they load.
        self.page.evaluate("() => document.fonts.ready.then(() => null)")

    def _route(self, route):
        host = urlparse(route.request.url).hostname
        if route.request.url.startswith(("data:", "blob:", "about:")) or host in LOCAL_HOSTS:
            route.continue_()
        else:
            self.problems.append(f"request to a non-local host: {route.request.url}")
            route.abort()

    def _failed(self, request):
        if urlparse(request.url).hostname in LOCAL_HOSTS:
            self.problems.append(f"local request failed: {request.url} ({request.failure})")

    def _response(self, response):
        if response.status >= 400:
            self.problems.append(f"HTTP {response.status} for {response.url}")

    def close(self):
        self.page.close()


# ------------------------------------------------------------------------------------------------------ checks

# The content of a page: Jupyter Book's article (the fixtures below use a bare <article>).
CONTENT = "article.bd-article, article"

IMAGES_JS = """async (sel) => {
  const root = document.querySelector(sel) || document.body;
  const imgs = [...root.querySelectorAll('img')];
  const out = [];
  for (const img of imgs) {
    img.loading = 'eager';
    try { await img.decode(); } catch (e) {}
    const r = {src: img.getAttribute('src'), complete: img.complete, w: img.naturalWidth, h: img.naturalHeight, variance: null};
    if (img.complete && img.naturalWidth > 0) {
      const c = document.createElement('canvas');
      const scale = Math.min(1, 512 / Math.max(img.naturalWidth, img.naturalHeight));
      c.width = Math.max(1, Math.round(img.naturalWidth * scale)); c.height = Math.max(1, Math.round(img.naturalHeight * scale));
      const g = c.getContext('2d');
      g.drawImage(img, 0, 0, c.width, c.height);
      const d = g.getImageData(0, 0, c.width, c.height).data;
      // variance of every RGBA channel over the pixels: 0 only for a single-colour (blank) image
      let n = d.length / 4, v = 0;
      for (let k = 0; k < 4; k++) {
        let s = 0, s2 = 0;
        for (let i = k; i < d.length; i += 4) { s += d[i]; s2 += d[i] * d[i]; }
        v += s2 / n - (s / n) * (s / n);
      }
      r.variance = v;
    }
    out.push(r);
  }
  return out;
}"""

MATH_JS = """(sel) => {
  const root = document.querySelector(sel) || document.body;
  const math = [...root.querySelectorAll('.math')];
  const untypeset = math.filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.trim().slice(0, 80));
  const errors = [...root.querySelectorAll('mjx-merror, [data-mjx-error]')].map(e => e.getAttribute('data-mjx-error') || e.textContent.slice(0, 80));
  const raw = [];
  const walk = document.createTreeWalker(root, NodeFilter.SHOW_TEXT, {acceptNode: n =>
    n.parentElement.closest('pre, code, script, style, mjx-container, .highlight, textarea')
      ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
  for (let n = walk.nextNode(); n; n = walk.nextNode()) {
    const t = n.textContent;
    for (const d of ['$$', '\\\\(', '\\\\[', '\\\\begin{']) {
      const i = t.indexOf(d);
      if (i >= 0) raw.push(t.slice(Math.max(0, i - 30), i + 50).replace(/\\s+/g, ' '));
    }
  }
  return {count: math.length, typeset: root.querySelectorAll('mjx-container').length, untypeset, errors, raw,
          eqno: [...root.querySelectorAll('span.eqno')].map(e => e.textContent.trim())};
}"""

# A line of code is cut off when one of its glyphs lies past the right edge of what its block shows, and the
# block does not scroll with a visible scroll bar; a line of printed output must fit without scrolling (chapters
# print at most 88 characters a line, and show tables as HTML). The glyphs themselves are measured (the text's boxes,
# from a Range), not the block's scrollWidth: scrollWidth counts the block's right padding, so a line that only
# reaches into the padding (every glyph seen) was reported as 5 px "cut off" on one Chromium and not on another.
# What the check allows, and why: 0.5 px for sub-pixel rounding, nothing more. The visible edge is the inner
# edge of the border, so the padding (16 px in the book's theme, about two characters or 2.4 % of the output
# column) is the margin that lets a line which fits in one browser's font still show every glyph in a font up
# to 2.4 % wider; past it the block must scroll with a bar a reader can see (at least 4 px), or the test fails.
# A line 5 % longer than its block fails (test_checks_catch_a_line_5_percent_too_long).
OVERFLOW_TOLERANCE_PX = 0.5
MIN_SCROLL_BAR_PX = 4
OVERFLOW_JS = """([sel, tolerance, minBar]) => {
  const root = document.querySelector(sel) || document.body;
  const bad = [];
  for (const e of root.querySelectorAll('pre')) {
    if (e.offsetParent === null) continue;                      // hidden (e.g. a collapsed cell)
    const box = e.getBoundingClientRect();
    const edge = box.left + e.clientLeft + e.clientWidth;      // inner edge of the border, vertical bar excluded
    if (e.scrollWidth <= e.clientWidth) continue;               // nothing reaches past the padding box
    // the right end of the visible characters: white space is left out, as a wrapping block lets the spaces at
    // a line's end hang past the edge, where no one misses them
    let right = -Infinity;
    const walk = document.createTreeWalker(e, NodeFilter.SHOW_TEXT);
    for (let n = walk.nextNode(); n; n = walk.nextNode()) {
      for (const m of n.data.matchAll(/\\S+/g)) {
        const range = document.createRange();
        range.setStart(n, m.index);
        range.setEnd(n, m.index + m[0].length);
        for (const r of range.getClientRects()) if (r.width > 0 && r.right > right) right = r.right;
      }
    }
    const past = right + e.scrollLeft - edge;                   // as if scrolled to the start
    if (!(past > tolerance)) continue;                          // every glyph is in sight (fits, or wraps)
    const longest = e.textContent.split('\\n').reduce((a, b) => b.length > a.length ? b : a, '');
    if (e.closest('div.cell_output')) {                         // printed output must fit, scroll bar or not
      bad.push(`output line ${Math.ceil(past)}px wider than the column: ${longest.slice(0, 60)}`);
      continue;
    }
    const s = getComputedStyle(e);
    const scrolls = s.overflowX === 'auto' || s.overflowX === 'scroll';
    const bar = e.offsetHeight - e.clientHeight - parseFloat(s.borderTopWidth) - parseFloat(s.borderBottomWidth);
    if (!(scrolls && bar >= minBar))
      bad.push(`code line ${Math.ceil(past)}px of text past the edge (overflow-x ${s.overflowX}, scroll bar ${bar}px): ` +
               longest.slice(0, 70));
  }
  return bad;
}"""


# A figure a chapter draws is shown with a caption that says what to look at and alt text that describes it (not
# the image's hashed file name); the static sliders' frames are the only images of cell outputs without one. No
# picture of a cell's output is stored wider than the column of a 1366 px screen (757 px, with a little margin):
# a wider one is shrunk to fit, and the text drawn in it with it.
MAX_IMAGE_PX = 770
CAPTIONS_JS = """([sel, maxWidth]) => {
  const root = document.querySelector(sel) || document.body;
  const bad = [];
  for (const img of root.querySelectorAll('div.cell_output img')) {
    if (img.naturalWidth > maxWidth)
      bad.push(`picture ${img.naturalWidth}px wide, shrunk with its text into the column: ${img.getAttribute('src').slice(-40)}`);
    if (img.closest('.sfam-slider')) continue;
    const figure = img.closest('figure'), caption = figure && figure.querySelector('figcaption');
    const alt = (img.getAttribute('alt') || '').trim();
    if (!caption || !caption.textContent.trim()) bad.push(`figure without a caption: ${img.getAttribute('src').slice(-40)}`);
    if (alt.split(/\\s+/).length < 5 || /\\.(png|jpe?g|svg)$/i.test(alt))
      bad.push(`figure without alt text (alt=${JSON.stringify(alt.slice(0, 40))}): ${img.getAttribute('src').slice(-40)}`);
  }
  return bad;
}"""


def page_problems(visit: Visit) -> list[str]:
    """Everything wrong with one loaded page (empty when the page is as a reader should see it)."""
    page, problems = visit.page, list(visit.problems)
    for img in page.evaluate(IMAGES_JS, CONTENT):
        if not img["complete"] or img["w"] == 0:
            problems.append(f"image not decoded: {img['src']}")
        elif not img["variance"]:
            problems.append(f"image is blank (one colour): {img['src']}")
    math = page.evaluate(MATH_JS, CONTENT)
    problems += [f"math not typeset: {m}" for m in math["untypeset"]]
    problems += [f"TeX error: {m}" for m in math["errors"]]
    problems += [f"raw TeX left in the text: {m!r}" for m in math["raw"]]
    problems += [f"automatic equation number {n} (label with the paper's number, \\tag{{n}}, or none)"
                 for n in math["eqno"]]
    problems += page.evaluate(OVERFLOW_JS, [CONTENT, OVERFLOW_TOLERANCE_PX, MIN_SCROLL_BAR_PX])
    problems += page.evaluate(CAPTIONS_JS, [CONTENT, MAX_IMAGE_PX])
    return problems


def slider_problems(page, root, shot_path: Path | None = None) -> list[str]:
    """Move one ``.sfam-slider`` and report what did not change (image source, read-out, the picture)."""
    rng, img, readout = (root.query_selector(s) for s in ('input[type="range"]', "img", ".sfam-slider-readout"))
    missing = [n for n, e in [("input[type=range]", rng), ("img", img), (".sfam-slider-readout", readout)] if e is None]
    if missing:
        return [f"slider lacks {', '.join(missing)}"]
    root.scroll_into_view_if_needed()
    before = {"src": img.get_attribute("src"), "text": readout.inner_text(), "shot": root.screenshot(),
              "picture": img.screenshot()}
    target = rng.evaluate("""r => {
      const lo = parseFloat(r.min || 0), hi = parseFloat(r.max || 100), v = parseFloat(r.value);
      const step = r.step && r.step !== 'any' ? parseFloat(r.step) : (hi - lo) / 100;
      const to = (v - lo) > (hi - lo) / 2 ? lo : Math.min(hi, v + Math.max(step, Math.round((hi - lo) / 2 / step) * step));
      r.value = String(to);
      r.dispatchEvent(new Event('input', {bubbles: true}));
      r.dispatchEvent(new Event('change', {bubbles: true}));
      return r.value;
    }""")
    img.evaluate("i => i.decode().catch(() => null)")
    after = {"src": img.get_attribute("src"), "text": readout.inner_text(), "shot": root.screenshot(),
             "picture": img.screenshot()}
    if shot_path is not None:
        shot_path.with_name(shot_path.stem + "-before.png").write_bytes(before["shot"])
        shot_path.with_name(shot_path.stem + "-after.png").write_bytes(after["shot"])
    problems = []
    if after["src"] == before["src"]:
        problems.append(f"moving the slider to {target} did not change the image source")
    if after["text"] == before["text"]:
        problems.append(f"moving the slider to {target} did not change the read-out ({before['text']!r})")
    if after["picture"] == before["picture"]:
        problems.append(f"moving the slider to {target} did not change the picture (identical screenshots of its image)")
    return problems


# ------------------------------------------------------------------------------------------ the book's pages

PAGES = toc_pages()
FULL_PAGE_SHOTS = {PAGES[0]}          # the front page whole; the other pages as the first screen a reader sees


@pytest.mark.parametrize("doc", PAGES)
def test_page_as_a_reader_sees_it(browser, book_url, doc):
    html = HTML / f"{doc}.html"
    assert html.exists(), f"{doc} is in _toc.yml but {html} was not built"
    visit = Visit(browser, f"{book_url}/{doc}.html")
    try:
        problems = page_problems(visit)
        SHOTS.mkdir(parents=True, exist_ok=True)
        shot = SHOTS / (doc.replace("/", "_") + ".png")
        visit.page.screenshot(path=str(shot), full_page=doc in FULL_PAGE_SHOTS)
    finally:
        visit.close()
    assert not problems, f"{doc}:\n  " + "\n  ".join(problems)


def test_math_loads_from_the_book_not_a_cdn():
    pages = [HTML / f"{doc}.html" for doc in PAGES]
    scripts = {line.strip() for p in pages if p.exists() for line in p.read_text().splitlines()
               if "mathjax" in line.lower() and "<script" in line and "src=" in line}
    assert scripts, "no MathJax script in the built pages"
    assert all("_static/mathjax/" in s and "://" not in s for s in scripts), scripts
    assert (HTML / "_static" / "mathjax" / "tex-chtml.js").exists()


def test_paper_equation_numbers_are_rendered(browser, book_url):
    """Chapters 1 and 2 show the paper's Eqs. 1-5 with the paper's numbers (MathJax's \\tag), and no others."""
    ids = {}
    for doc in ["notebooks/01_cis_derivation", "notebooks/02_cosine_proof"]:
        visit = Visit(browser, f"{book_url}/{doc}.html")
        try:
            ids[doc] = visit.page.evaluate("() => [...document.querySelectorAll('mjx-container [id^=\\'mjx-eqn\\']')]"
                                           ".map(e => e.id)")
            shown = visit.page.evaluate("() => [...document.querySelectorAll('mjx-container[display=\\'true\\']')]"
                                        ".map(c => c.textContent).join(' ')")
            for i in ids[doc][:1]:
                SHOTS.mkdir(parents=True, exist_ok=True)
                visit.page.locator(f"mjx-container:has([id='{i}'])").screenshot(
                    path=str(SHOTS / f"{doc.split('/')[-1]}_eq{i.split(':')[1]}.png"))
        finally:
            visit.close()
        assert all(f"({i.split(':')[1]})" in shown for i in ids[doc]), (doc, ids[doc])
    assert ids == {"notebooks/01_cis_derivation": ["mjx-eqn:1", "mjx-eqn:2", "mjx-eqn:4", "mjx-eqn:3"],
                   "notebooks/02_cosine_proof": ["mjx-eqn:5"]}, ids


def test_front_page_shows_the_localisation_tables(browser, book_url):
    """Tables 1-2 are pasted onto the front page from chapter 7's committed outputs (myst-nb glue, which has to
    work with execution off), labelled as synthetic-benchmark numbers."""
    visit = Visit(browser, f"{book_url}/{PAGES[0]}.html")
    try:
        tables = visit.page.evaluate("""() => [...document.querySelectorAll('article table.sfam-headline')].map(t => ({
            caption: t.caption ? t.caption.textContent : '', rows: t.tBodies[0].rows.length,
            sfam: [...t.tBodies[0].rows].filter(r => r.cells[0].textContent === 'SFAM').map(r => r.cells[1].textContent)}))""")
        shot = visit.page.query_selector("article table.sfam-headline")
        if shot is not None:
            SHOTS.mkdir(parents=True, exist_ok=True)
            shot.screenshot(path=str(SHOTS / "front_page_table1.png"))
    finally:
        visit.close()
    assert [t["caption"].split(",")[0] for t in tables] == ["Table 1: FRN", "Table 2: GPW"], tables
    for t in tables:
        assert "on the synthetic benchmark" in t["caption"] and t["rows"] >= 5, t
        assert len(t["sfam"]) == 1 and "±" in t["sfam"][0], t


PHONE_PAGES = [PAGES[0], "notebooks/07_localisation", "notebooks/08_sanity_checks"]


@pytest.mark.parametrize("doc", PHONE_PAGES)
def test_page_on_a_phone_does_not_scroll_sideways(browser, book_url, doc):
    """At a phone's 390 px the page itself never scrolls sideways: text and captions wrap, and a table or block
    too wide for the screen scrolls inside its own box. Screenshots at both widths go to _build/screenshots/."""
    visit = Visit(browser, f"{book_url}/{doc}.html")
    try:
        SHOTS.mkdir(parents=True, exist_ok=True)
        name = doc.replace("/", "_")
        visit.page.screenshot(path=str(SHOTS / f"{name}-1366.png"), full_page=True)
        visit.page.set_viewport_size(PHONE)
        visit.page.evaluate("() => document.fonts.ready.then(() => null)")
        visit.page.screenshot(path=str(SHOTS / f"{name}-390.png"), full_page=True)
        sideways = visit.page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
        wide = visit.page.evaluate("""() => [...document.querySelectorAll('article *')].filter(e => {
            const r = e.getBoundingClientRect();
            return r.width > 0 && r.right > document.documentElement.clientWidth + 1 && !e.closest('pre, .highlight, div.output, .MathJax, mjx-container, table');
          }).slice(0, 5).map(e => e.tagName + '.' + e.className + ': ' + (e.textContent || '').trim().slice(0, 40))""")
    finally:
        visit.close()
    assert sideways <= 1 and wide == [], f"{doc} at 390 px scrolls sideways by {sideways}px: {wide}"


def test_sliders_move(browser, book_url):
    found = 0
    SHOTS.mkdir(parents=True, exist_ok=True)
    problems = []
    for doc in PAGES:
        if "sfam-slider" not in (HTML / f"{doc}.html").read_text():
            continue
        visit = Visit(browser, f"{book_url}/{doc}.html")
        try:
            for i, root in enumerate(visit.page.query_selector_all(".sfam-slider")):
                found += 1
                problems += [f"{doc} slider {i}: {p}" for p in
                             slider_problems(visit.page, root, SHOTS / f"slider-{doc.replace('/', '_')}-{i}.png")]
            problems += [f"{doc}: {p}" for p in visit.problems]
        finally:
            visit.close()
    assert found, "no page of the book has a static slider (.sfam-slider): chapter 9 shows four"
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- the checks fail on pages that are broken

def _png(width: int, height: int, pixel) -> bytes:
    """A PNG written by hand (RGB, 8 bit), ``pixel(x, y) -> (r, g, b)``."""
    raw = b"".join(b"\x00" + bytes(c for x in range(width) for c in pixel(x, y)) for y in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


GOOD_PAGE = """<!doctype html><html><head><meta charset="utf-8"></head><body><article>
<p>A figure:</p><div class="cell_output"><figure><img src="ramp.png" alt="a ramp of colours from dark to light">
<figcaption>A ramp: the colours grow lighter to the right.</figcaption></figure></div>
<pre>short = "line"</pre>
<pre style="white-space: pre-wrap; overflow-wrap: anywhere; width: 300px">{long}</pre>
<pre style="overflow-x: scroll; width: 300px">{long}</pre>
<div class="cell_output"><pre style="width: 300px; padding: 0">fits = "yes"</pre></div>
<pre style="overflow-x: hidden; width: 40ch; padding: 0 2ch 0 0; margin: 0; border: 0">{into_padding}</pre>
</article></body></html>"""

BROKEN_PAGE = """<!doctype html><html><head><meta charset="utf-8"></head><body><article>
<script>console.error("a console error"); undefinedFunction();</script>
<img src="white.png"><img src="missing.png"><img src="http://example.invalid/remote.png">
<div class="cell_output"><img src="ramp.png" alt="3f9a0c.png"><img src="wide.png" alt="a wide grey test strip"></div>
<p>Raw: $$ x^2 $$ and <span class="math">\\(y\\)</span></p>
<pre style="overflow: hidden; width: 300px">{long}</pre>
<span class="eqno">(6)</span>
<div class="cell_output"><pre style="overflow-x: auto; width: 300px">{long}</pre></div>
</article></body></html>"""

# A block exactly 40 characters wide (the ch unit: the width of one monospace character in whatever font the
# browser picks), no padding, holding a line of 42 characters: 5 % longer than its column. Cut off, and in a
# scrolling block whose bar a reader cannot see (an overlay bar, as some platforms draw): both must fail.
TOO_LONG_PAGE = """<!doctype html><html><head><meta charset="utf-8"></head><body><article>
<pre style="font-family: monospace; width: 40ch; padding: 0; margin: 0; border: 0; overflow-x: hidden">{line}</pre>
<pre style="font-family: monospace; width: 40ch; padding: 0; margin: 0; border: 0; overflow-x: auto;
            scrollbar-width: none">{line}</pre>
</article></body></html>"""

SLIDER = """<div class="sfam-slider" style="width: 220px"><input type="range" min="0" max="2" step="1" value="0">
<img src="{first}" width="64" height="64"><span class="sfam-slider-readout">threshold 0</span></div>"""

SLIDER_SCRIPT = """<script>for (const s of document.querySelectorAll('.sfam-slider')) {
  const r = s.querySelector('input'), i = s.querySelector('img'), o = s.querySelector('.sfam-slider-readout');
  r.addEventListener('input', () => { i.src = ['ramp.png', 'white.png', 'ramp2.png'][r.value]; o.textContent = 'threshold ' + r.value; });
}</script>"""


@pytest.fixture(scope="module")
def fixture_site(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    long = "x = " + "+".join(["value"] * 80)
    (site / "ramp.png").write_bytes(_png(64, 64, lambda x, y: (4 * x, 4 * y, 128)))
    (site / "ramp2.png").write_bytes(_png(64, 64, lambda x, y: (255 - 4 * x, 60, 4 * y)))
    (site / "white.png").write_bytes(_png(64, 64, lambda x, y: (255, 255, 255)))
    (site / "wide.png").write_bytes(_png(MAX_IMAGE_PX + 1, 2, lambda x, y: (x % 256, 90, 90)))
    # a 41-character line in a 40-character block with two characters of right padding: every glyph is in sight
    (site / "good.html").write_text(GOOD_PAGE.format(long=long, into_padding="y" * 41))
    (site / "broken.html").write_text(BROKEN_PAGE.format(long=long))
    (site / "too_long.html").write_text(TOO_LONG_PAGE.format(line="z" * 42))
    page = "<!doctype html><html><body><article>{}</article>{}</body></html>"
    (site / "slider.html").write_text(page.format(SLIDER.format(first="ramp.png"), SLIDER_SCRIPT))
    (site / "dead_slider.html").write_text(page.format(SLIDER.format(first="ramp.png"), ""))
    with serve(site) as url:
        yield url


def test_checks_pass_a_good_page(browser, fixture_site):
    visit = Visit(browser, f"{fixture_site}/good.html")
    try:
        assert page_problems(visit) == []
    finally:
        visit.close()


def test_checks_catch_a_broken_page(browser, fixture_site):
    visit = Visit(browser, f"{fixture_site}/broken.html")
    try:
        problems = "\n".join(page_problems(visit))
    finally:
        visit.close()
    for expected in ["console error: a console error", "uncaught JavaScript error", "undefinedFunction",
                     "request to a non-local host: http://example.invalid/remote.png", "HTTP 404 for",
                     "image is blank (one colour):", "white.png", "image not decoded: missing.png",
                     "raw TeX left in the text: 'Raw: $$", "math not typeset: \\(y\\)",
                     "automatic equation number (6)", "past the edge (overflow-x hidden",
                     "figure without a caption: ramp.png", 'figure without alt text (alt="3f9a0c.png")',
                     "wider than the column: x = value+value", f"picture {MAX_IMAGE_PX + 1}px wide"]:
        assert expected in problems, f"{expected!r} not reported; reported:\n{problems}"


def test_checks_catch_a_line_5_percent_too_long(browser, fixture_site):
    visit = Visit(browser, f"{fixture_site}/too_long.html")
    try:
        problems = page_problems(visit)
    finally:
        visit.close()
    assert len(problems) == 2, problems
    assert "(overflow-x hidden" in problems[0] and "(overflow-x auto, scroll bar 0px)" in problems[1], problems
    assert all(p.startswith("code line ") and "z" * 42 in p for p in problems), problems


def test_slider_check_passes_a_working_slider_and_catches_a_dead_one(browser, fixture_site, tmp_path):
    for name, expected in [("slider", []), ("dead_slider", ["image source", "read-out", "picture"])]:
        visit = Visit(browser, f"{fixture_site}/{name}.html")
        try:
            problems = slider_problems(visit.page, visit.page.query_selector(".sfam-slider"), tmp_path / f"{name}.png")
        finally:
            visit.close()
        assert len(problems) == len(expected) and all(e in p for e, p in zip(expected, problems)), (name, problems)
        assert (tmp_path / f"{name}-before.png").exists() and (tmp_path / f"{name}-after.png").exists()
