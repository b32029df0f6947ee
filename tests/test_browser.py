"""The static HTML book in a real browser: its slider panels move, and no page logs an error.

The book is built from the repository's committed pages (``_config.yml``, ``_toc.yml``, ``book/``)
by the session fixture ``built_book`` (jupyter-book, ``--warningiserror``, into a temporary folder)
and opened from ``file://`` in the system's headless Chromium (``/usr/bin/chromium`` driven through
``/usr/bin/chromedriver`` by Selenium; ``conftest.chromium``) with the network blocked, as a reader
without a connection would open it.

- Every chapter page has one static slider panel (``div.nrlib-static-panel``, written by
  ``nrlib.widgets.panel`` when the runbook executes a notebook for the book) per ``widgets.panel(``
  call in the chapter's source notebook in ``notebooks/``. Each panel's range inputs are moved with
  real key presses: the figure (``<img>``, a PNG data URI) and the value shown (``<output>``) change,
  and moving back restores both.
- No page of the book logs a SEVERE console entry (a JavaScript error, or a resource that failed to
  load: with the network blocked, anything fetched from a CDN).
- The notation page's math is typeset by MathJax from the build itself (no network).

``NRBOOK_TEST_HTML=DIR`` tests an HTML book already built in ``DIR`` (``_build/html`` of a
``jupyter-book build``) instead, e.g. one built from chapters executed at the smoke profile.
Without Chromium, chromedriver or selenium these tests are skipped, except under CI (``$CI`` set),
where they fail. They run in ``make test-browser`` (marked ``browser``), with chapter 5 in
JupyterLab, not in ``make test``.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
import pytest

from conftest import toc_pages

pytestmark = pytest.mark.browser        # make test-browser (not in make test: about 2 minutes)

ROOT = Path(__file__).resolve().parent.parent
HTML_ENV = "NRBOOK_TEST_HTML"
PANEL_CALL = "widgets.panel("


PAGES = toc_pages()
# the chapter pages: those executed from a source notebook in notebooks/
CHAPTERS = [p for p in PAGES if (ROOT / "notebooks" / f"{Path(p).name}.ipynb").is_file()]
# Sphinx's own pages, which every book has too
EXTRA_PAGES = ["genindex", "search"]


def panel_calls(page: str) -> int:
    """How many ``widgets.panel(`` calls the code cells of the page's source notebook make."""
    nb = nbformat.read(ROOT / "notebooks" / f"{Path(page).name}.ipynb", as_version=4)
    return sum(c.source.count(PANEL_CALL) for c in nb.cells if c.cell_type == "code")


@pytest.fixture(scope="module")
def html_dir(request) -> Path:
    """The HTML book under test: ``$NRBOOK_TEST_HTML`` when set, else ``built_book``."""
    given = os.environ.get(HTML_ENV)
    if given:
        path = Path(given).resolve()
        assert (path / f"{PAGES[0]}.html").is_file(), f"{HTML_ENV}={given}: not the html folder of a built book"
        return path
    return Path(request.getfixturevalue("built_book"))


@pytest.fixture(scope="module")
def browser(chromium):
    driver = chromium(offline=True)
    yield driver
    driver.quit()


def open_page(driver, html_dir: Path, page: str, *, settle: float = 0.3) -> None:
    """Load ``page`` from file:// as a first-time reader would (no local storage left by earlier pages),
    wait for the document and for MathJax's typesetting when the page loads it, and drop the console
    entries of earlier pages."""
    from selenium.webdriver.support.ui import WebDriverWait

    path = html_dir / f"{page}.html"
    assert path.is_file(), f"{path} was not built"
    driver.execute_script("try { localStorage.clear(); sessionStorage.clear(); } catch (e) {}")
    driver.get_log("browser")                     # what earlier pages logged is theirs
    driver.get(path.as_uri())
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
    driver.set_script_timeout(30)
    driver.execute_async_script(
        "var done = arguments[arguments.length - 1];"
        "var m = window.MathJax;"
        "if (m && m.startup && m.startup.promise) { m.startup.promise.then(function () { done(1); },"
        " function () { done(0); }); } else { done(0); }")
    time.sleep(settle)                            # late script errors (timers, failed loads)


def severe(driver) -> list[str]:
    return [f"[{e.get('source', '?')}] {e['message']}" for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_the_book_has_chapters():
    assert CHAPTERS, "_toc.yml names no page built from a notebook in notebooks/"
    assert "book/notation" in PAGES


@pytest.mark.parametrize("page", PAGES + EXTRA_PAGES)
def test_page_logs_no_console_error(page, html_dir, browser):
    open_page(browser, html_dir, page, settle=1.0)
    errors = severe(browser)
    assert not errors, (f"{page}.html, opened from file:// with the network blocked, logs "
                        f"{len(errors)} console error(s):\n" + "\n".join(errors))


@pytest.mark.parametrize("page", CHAPTERS)
def test_static_panels_move(page, html_dir, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    open_page(browser, html_dir, page)
    browser.get_log("browser")                    # what loading logs is test_page_logs_no_console_error's
    panels = browser.find_elements(By.CSS_SELECTOR, "div.nrlib-static-panel")
    expected = panel_calls(page)
    assert len(panels) == expected, (
        f"{page}.html has {len(panels)} static slider panel(s) (div.nrlib-static-panel); its source "
        f"notebook notebooks/{Path(page).name}.ipynb calls widgets.panel( {expected} time(s) — executed "
        f"without NRBOOK_STATIC, or before the panels were static? (python -m nrbook.runbook sets it)")

    def shown(img):
        return browser.execute_script(
            "var i = arguments[0]; return [i.getAttribute('src') || '', i.complete && i.naturalWidth > 0];", img)

    for n, panel in enumerate(panels, 1):
        where = f"{page}.html, panel {n}"
        img = panel.find_element(By.TAG_NAME, "img")
        inputs = panel.find_elements(By.CSS_SELECTOR, "input[type=range]")
        assert inputs, f"{where}: no range input"
        src, loaded = shown(img)
        png = src.startswith("data:image/png;base64,") and loaded
        assert png, f"{where}: the figure is not a PNG that loads"
        for i, inp in enumerate(inputs, 1):
            out = inp.find_element(By.XPATH, "following-sibling::output[1]")
            lo, hi, v = (int(inp.get_attribute(a)) for a in ("min", "max", "value"))
            assert hi > lo, f"{where}, slider {i}: has a single position, nothing to move"
            fwd, back = (Keys.ARROW_RIGHT, Keys.ARROW_LEFT) if v < hi else (Keys.ARROW_LEFT, Keys.ARROW_RIGHT)
            browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", inp)
            src0, text0 = shown(img)[0], out.text
            assert text0, f"{where}, slider {i}: its <output> shows nothing"

            inp.send_keys(fwd)                    # a key press: the browser fires `input`
            WebDriverWait(browser, 5).until(lambda d: int(inp.get_attribute("value")) != v,
                                            f"{where}, slider {i}: the arrow key did not move it")
            src1, loaded = shown(img)
            changed = src1 != src0                # (not in the assert: data URIs are long)
            assert changed, f"{where}, slider {i}: moved from {v}, but the figure did not change"
            assert loaded, f"{where}, slider {i}: the new figure does not load"
            assert out.text and out.text != text0, (
                f"{where}, slider {i}: moved from {v}, but its <output> still shows {out.text!r}")

            inp.send_keys(back)
            WebDriverWait(browser, 5).until(lambda d: int(inp.get_attribute("value")) == v,
                                            f"{where}, slider {i}: the arrow key did not move it back")
            restored = shown(img)[0] == src0 and out.text == text0
            assert restored, (
                f"{where}, slider {i}: moving back to {v} did not restore its figure and value")
    errors = severe(browser)
    assert not errors, f"{page}.html logs console errors while its sliders move:\n" + "\n".join(errors)


def test_notation_math_is_typeset_offline(html_dir, browser):
    from selenium.webdriver.common.by import By

    open_page(browser, html_dir, "book/notation")
    maths = browser.find_elements(By.CSS_SELECTOR, "div.math, span.math")
    assert maths, "notation.html has no math element (div.math / span.math)"
    raw = [m.get_attribute("textContent")[:80] for m in maths
           if not m.find_elements(By.CSS_SELECTOR, "mjx-container")]
    text = browser.execute_script("return document.body.innerText")
    assert not raw, (f"notation.html, opened with the network blocked: {len(raw)} of {len(maths)} math elements "
                     f"were not typeset by MathJax (no mjx-container), e.g. {raw[:3]} — does the build ship "
                     f"MathJax (not a CDN)?")
    assert "$$" not in text, "notation.html shows raw $$ in its text"


# --- the book at a desktop's and a phone's width ---

WIDTHS = {"desktop": (1400, 1000), "phone": (390, 844)}
ASPECT_TOLERANCE = 0.02                           # shown w/h within 2% of the image's own


@pytest.fixture(scope="module", params=list(WIDTHS))
def reader(request, chromium):
    """``(name, driver)``: a browser window of a desktop's (1400 px) or a phone's (390 px) width.
    The viewport is set through the DevTools protocol: headless Chromium's windows are at least
    500 px wide."""
    w, h = WIDTHS[request.param]
    driver = chromium(offline=True, size=(max(w, 500), h))
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": w, "height": h, "deviceScaleFactor": 1, "mobile": False})
    driver.get("about:blank")
    assert driver.execute_script("return window.innerWidth") == w, "the viewport was not resized"
    yield request.param, driver
    driver.quit()


def screenshot(driver, html_dir: Path, page: str, width: str) -> Path:
    """The page's first screen, saved beside the built book (``screens/<page>-<width>.png``) so a
    failure can be looked at."""
    out = html_dir.parent / "screens" / f"{Path(page).name}-{width}.png"
    out.parent.mkdir(exist_ok=True)
    driver.save_screenshot(str(out))
    return out


def _aspect_ratios(driver, page: str, width: str, shot: Path) -> list[str]:
    """Every figure is shown at its own aspect ratio."""
    shown = driver.execute_script(
        "return Array.from(document.querySelectorAll('.bd-article img')).map(function (i) {"
        " var r = i.getBoundingClientRect();"
        " return [(i.getAttribute('src') || '').slice(0, 40), r.width, r.height, i.naturalWidth,"
        " i.naturalHeight]; })")
    visible = [s for s in shown if s[1] > 0 and s[2] > 0 and s[3] > 0 and s[4] > 0]
    bad = [f"{src}…: shown {w:.0f}×{h:.0f}, drawn {nw}×{nh}" for src, w, h, nw, nh in visible
           if abs((w / h) / (nw / nh) - 1) > ASPECT_TOLERANCE]
    return [f"{page}.html at {WIDTHS[width][0]} px: {len(bad)} of {len(visible)} images are not shown "
            f"at their own aspect ratio (±{ASPECT_TOLERANCE:.0%}; first screen: {shot}):\n"
            + "\n".join(bad[:5])] if bad else []


OVERFLOW_JS = """
var vw = document.documentElement.clientWidth, out = [];
function clipped(e) {            // inside a box that scrolls or clips sideways
  for (var a = e.parentElement; a && a !== document.body; a = a.parentElement) {
    var o = getComputedStyle(a).overflowX;
    if (o === 'auto' || o === 'scroll' || o === 'hidden' || o === 'clip') return true;
  }
  return false;
}
document.querySelectorAll('body *').forEach(function (e) {
  var r = e.getBoundingClientRect();
  if (r.width === 0 || r.height === 0 || getComputedStyle(e).visibility === 'hidden') return;
  if ((r.right > vw + 1 || r.left < -1) && !clipped(e))
    out.push(e.tagName.toLowerCase() + '.' + (e.className || '').toString().split(' ').join('.') +
             ' [' + Math.round(r.left) + ', ' + Math.round(r.right) + ']');
});
return [vw, document.documentElement.scrollWidth, out.slice(0, 8), out.length];
"""


def _overflow(driver, page: str, width: str) -> list[str]:
    """No element reaches past the viewport's edge unless it sits in a box that scrolls sideways
    (a table, printed output, code): the page itself never scrolls sideways."""
    vw, scroll_width, wide, n = driver.execute_script(OVERFLOW_JS)
    return [] if scroll_width <= vw and not wide else [
        f"{page}.html at {WIDTHS[width][0]} px: the page is {scroll_width} px wide in a {vw} px viewport; "
        f"{n} element(s) run past its edge outside any scroll box, e.g.:\n" + "\n".join(wide)]


def _verdict_tables(driver, page: str, width: str) -> list[str]:
    """Every verdict table (``div.nrbook-verdicts``, folded ones opened): at a desktop's width the
    claim column takes at least a third of the table; on a phone each row is a stacked card."""
    shares = driver.execute_script(
        "document.querySelectorAll('details').forEach(function (d) { d.open = true; });"
        "return Array.from(document.querySelectorAll('div.nrbook-verdicts table')).map(function (t) {"
        " var r = t.tBodies[0].rows[0], c = r.cells[r.cells.length - 4];"
        " return [c.getBoundingClientRect().width / t.getBoundingClientRect().width,"
        " getComputedStyle(r).display]; })")
    if width == "desktop":
        narrow = [round(s, 2) for s, _ in shares if s < 1 / 3]
        return [f"{page}.html: {len(narrow)} verdict tables give the claim under a third: {narrow}"] if narrow else []
    return [] if all(d == "block" for _, d in shares) else [f"{page}.html at 390 px: verdict rows are not stacked"]


@pytest.mark.parametrize("page", PAGES)
def test_page_reads_at_a_desktops_and_a_phones_width(page, html_dir, reader):
    """One load of the page at each width: its figures keep their aspect ratio, nothing runs past
    the screen, and its verdict tables give the claim room (checked last: it opens the folds)."""
    width, driver = reader
    open_page(driver, html_dir, page)
    shot = screenshot(driver, html_dir, page, width)
    problems = [*_aspect_ratios(driver, page, width, shot), *_overflow(driver, page, width),
                *_verdict_tables(driver, page, width)]
    assert not problems, "\n".join(problems)


def test_one_search_box(html_dir, reader):
    width, driver = reader
    open_page(driver, html_dir, PAGES[0])
    shown = driver.execute_script(
        "return Array.from(document.querySelectorAll('.search-button-field, .search-button'))"
        ".filter(function (b) { var r = b.getBoundingClientRect();"
        " return r.width > 0 && r.height > 0 && getComputedStyle(b).visibility !== 'hidden'; })"
        ".map(function (b) { return b.closest('[class]').parentElement.className; })")
    assert len(shown) == 1, f"{PAGES[0]}.html at {WIDTHS[width][0]} px shows {len(shown)} search boxes: {shown}"


