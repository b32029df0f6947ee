"""The built HTML book, read as files (no browser): it works offline, its chapters end with their
verdict tables, and its reference list is labelled the way the text cites.

The book is built once per session by the ``built_book`` fixture (``tests/conftest.py``): the
repository's ``_config.yml``, ``_toc.yml`` and ``book/`` built by ``jupyter-book build
--warningiserror`` in a temporary folder (about 10 s; nothing is executed).

- Offline: no page loads a script, stylesheet, font, image or frame from http(s) — neither
  through its tags nor through an ``@import`` or ``url(...)`` in its CSS — every local script
  and stylesheet a page names is in the build, and MathJax (``mathjax_path``) is one of them,
  with its fonts.
- Each chapter's "What reproduced and what did not" section holds a table: the generated
  verdict tables (Markdown from ``nrlib.plot.scoreboard``) are parsed as MyST, which has
  tables (``nb_render_markdown_format: myst``).
- The reference list uses the text's author–year style: each entry's label, e.g.
  ``[Karnine et al., 2024]``, reads exactly like the citations that link to it.
"""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

import pytest

from conftest import toc_pages

bs4 = pytest.importorskip("bs4", reason="beautifulsoup4 comes with the book extra (pydata-sphinx-theme)")

ROOT = Path(__file__).resolve().parent.parent
VERDICT_SECTION = "What reproduced and what did not"
PIPE_ROW = re.compile(r"\|\s*:?-{3,}:?\s*\|")          # a pipe table's |---| row left as text
# <link rel=...> values that make the browser fetch the linked resource
LOADING_RELS = {"stylesheet", "preload", "modulepreload", "prefetch", "icon", "shortcut",
                "apple-touch-icon", "manifest", "preconnect", "dns-prefetch", "mask-icon"}
# attributes through which a page loads something: tag -> attributes
LOADING_ATTRS = {"script": ("src",), "img": ("src", "srcset"), "iframe": ("src",), "embed": ("src",),
                 "source": ("src", "srcset"), "video": ("src", "poster"), "audio": ("src",),
                 "object": ("data",), "input": ("src",), "track": ("src",)}
REMOTE = re.compile(r"^\s*(https?:)?//", re.I)
# @import "http..." / @import url(http...) / url(http...) (fonts, images) in CSS; a url("data:...")
# that merely contains an xmlns="http://..." does not match
CSS_REMOTE = re.compile(r"""@import\s+(url\()?\s*['"]?\s*(https?:)?//|url\(\s*['"]?\s*(https?:)?//""", re.I)


def toc_chapters() -> list[str]:
    """The chapter pages: the ``_toc.yml`` entries that are executed notebooks in ``book/``."""
    return [p for p in toc_pages()[1:] if (ROOT / p).with_suffix(".ipynb").is_file()]


CHAPTERS = toc_chapters()


def soup(path: Path):
    return bs4.BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


@pytest.fixture(scope="module")
def pages(built_book) -> dict[Path, object]:
    """Every HTML page of the build, parsed (not the theme's template snippets in ``_static/``)."""
    found = {p: soup(p) for p in sorted(Path(built_book).rglob("*.html"))
             if not any(part.startswith("_") for part in p.relative_to(built_book).parts)}
    assert found, f"no HTML page in {built_book}"
    return found


def loaded_urls(page) -> list[tuple[str, str]]:
    """``(what, url)`` for everything the page's tags make a browser fetch."""
    out = []
    for link in page.find_all("link", href=True):
        rels = {r.lower() for r in (link.get("rel") or [])}
        if rels & LOADING_RELS:
            out.append((f"<link rel={' '.join(sorted(rels))}>", link["href"]))
    for tag, attrs in LOADING_ATTRS.items():
        for el in page.find_all(tag):
            for attr in attrs:
                value = el.get(attr)
                if not value:
                    continue
                urls = [u.strip().split()[0] for u in value.split(",") if u.strip()] if attr == "srcset" else [value]
                out += [(f"<{tag} {attr}>", u) for u in urls]
    return out


def local_file(page_path: Path, url: str) -> Path:
    """The file a relative URL of a page points to (query and fragment dropped)."""
    path = unquote(urlsplit(urldefrag(url)[0]).path)
    return (page_path.parent / path).resolve()


# --- offline -------------------------------------------------------------------------------------

def test_no_page_loads_anything_from_the_network(built_book, pages):
    remote = []
    for path, page in pages.items():
        rel = path.relative_to(built_book)
        remote += [f"{rel}: {what} {url}" for what, url in loaded_urls(page) if REMOTE.match(url)]
        for style in page.find_all("style"):
            remote += [f"{rel}: <style> {m.group(0)}" for m in CSS_REMOTE.finditer(style.get_text())]
        for el in page.find_all(style=True):
            remote += [f"{rel}: style= {m.group(0)}" for m in CSS_REMOTE.finditer(el["style"])]
    assert not remote, "pages load from the network, so they break offline:\n" + "\n".join(remote[:30])


def test_no_stylesheet_imports_or_fonts_from_the_network(built_book):
    sheets = sorted(Path(built_book).rglob("*.css"))
    assert sheets, "the build has no stylesheet"
    remote = [f"{css.relative_to(built_book)}: {m.group(0)}"
              for css in sheets for m in CSS_REMOTE.finditer(css.read_text(encoding="utf-8", errors="replace"))]
    assert not remote, "stylesheets @import or load fonts/images from the network:\n" + "\n".join(remote[:30])


def test_every_local_script_and_stylesheet_is_in_the_build(built_book, pages):
    missing = []
    for path, page in pages.items():
        for what, url in loaded_urls(page):
            if REMOTE.match(url) or url.startswith(("data:", "#", "javascript:")):
                continue
            if not local_file(path, url).is_file():
                missing.append(f"{path.relative_to(built_book)}: {what} {url}")
    assert not missing, "pages name files the build lacks:\n" + "\n".join(missing[:30])


def test_no_page_runs_a_script_twice(built_book, pages):
    """A script included twice runs twice; an inline one declaring a ``const`` (sphinx-thebe's
    THEBE_JS_URL) then throws a SyntaxError (book/_ext/nrbook_ext.py drops the second copy)."""
    twice = []
    for path, page in pages.items():
        seen = set()
        for script in page.find_all("script"):
            if script.get("type") not in (None, "", "text/javascript", "module"):
                continue                                   # data (JSON), not code
            key = script.get("src") or script.get_text().strip()
            if key in seen:
                twice.append(f"{path.relative_to(built_book)}: {key[:90]}")
            seen.add(key)
    assert not twice, "pages include a script twice:\n" + "\n".join(twice[:20])


def test_mathjax_is_shipped_with_the_book(built_book, pages):
    notation = Path(built_book) / "book" / "notation.html"
    assert notation in pages, "the build has no book/notation.html (the page with the most math)"
    srcs = [s["src"] for s in pages[notation].find_all("script", src=True) if "mathjax" in s["src"].lower()]
    assert srcs, "notation.html loads no MathJax script, so its TeX is shown raw"
    for src in srcs:
        assert not REMOTE.match(src), f"notation.html loads MathJax from the network: {src}"
        script = local_file(notation, src)
        assert script.is_file() and script.stat().st_size > 100_000, f"MathJax {src} is not in the build"
        fonts = script.parent / "output" / "chtml" / "fonts" / "woff-v2"
        assert (fonts / "MathJax_Main-Regular.woff").is_file(), f"MathJax's fonts are not beside {src}: {fonts}"
    # every page that uses MathJax uses the same shipped copy
    others = {s["src"].split("/")[-1] for p in pages.values() for s in p.find_all("script", src=True)
              if "mathjax" in s["src"].lower()}
    assert others == {srcs[0].split("/")[-1]}, f"pages load different MathJax files: {sorted(others)}"


# --- the chapters' verdict tables ----------------------------------------------------------------

def heading_text(h) -> str:
    return h.get_text(" ", strip=True).rstrip("#").strip()


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_verdict_section_has_a_table(built_book, pages, chapter):
    path = Path(built_book) / f"{chapter}.html"
    assert path in pages, f"{chapter}.html was not built"
    sections = [h.find_parent("section") for h in pages[path].find_all(["h1", "h2", "h3"])
                if re.fullmatch(rf"(\d+\.\s*)?{re.escape(VERDICT_SECTION)}", heading_text(h), re.I)]
    assert sections and sections[0] is not None, f"{chapter}.html has no section {VERDICT_SECTION!r}"
    section = sections[0]
    # a table rendered from Markdown (docutils), not a pandas DataFrame's own HTML (table.dataframe)
    tables = [t for t in section.find_all("table") if "dataframe" not in (t.get("class") or [])]
    assert tables, (
        f"{chapter}.html, {VERDICT_SECTION!r}: no <table> from the verdict table's Markdown — was it rendered "
        f"as MyST (nb_render_markdown_format: myst)? The section reads: {text_of(section)[:300]!r}")
    assert not PIPE_ROW.search(section.get_text()), (
        f"{chapter}.html, {VERDICT_SECTION!r}: a Markdown table shown as text: {PIPE_ROW.search(section.get_text())[0]!r}")


def test_the_book_has_chapters():
    assert CHAPTERS, "_toc.yml names no executed notebook in book/"


# --- citations -----------------------------------------------------------------------------------

AUTHOR_YEAR = re.compile(r"^(?P<authors>\S.*), (?P<year>\d{4}|n\.d\.)$")
ALPHA = re.compile(r"^[A-Z][A-Za-z]{0,3}\+?\d{2}[a-z]?$")       # pybtex's alpha labels: KAI24, MMS+18


def text_of(el) -> str:
    """An element's text as a reader sees it: "Karnine <em>et al.</em>, 2024" -> "Karnine et al., 2024"."""
    return " ".join(el.get_text().split())


def bibliography(built_book, pages) -> tuple[Path, dict[str, str]]:
    """The page with the reference list and its entries: citation id -> label (brackets dropped)."""
    for path, page in pages.items():
        entries = page.select("div.citation[id]")
        if entries:
            labels = {}
            for e in entries:
                label = e.find(class_="label")
                assert label is not None, f"{path.name}: a reference without a label: {e.get_text()[:80]!r}"
                labels[e["id"]] = text_of(label).strip("[]").strip()
            return path, labels
    pytest.fail(f"no page of {built_book} has a reference list (div.citation)")


def test_reference_labels_are_author_year(built_book, pages):
    _, labels = bibliography(built_book, pages)
    alpha = sorted(v for v in labels.values() if ALPHA.match(v))
    assert not alpha, f"alpha-style labels in the reference list, unlike the text's author-year: {alpha}"
    odd = sorted(v for v in labels.values() if not AUTHOR_YEAR.match(v))
    assert not odd, f"labels that are not 'Author(s), year': {odd}"
    assert len(set(labels.values())) == len(labels), f"two references share a label: {sorted(labels.values())}"


def test_citations_read_like_the_reference_labels(built_book, pages):
    bib_path, labels = bibliography(built_book, pages)
    checked, exact, wrong = 0, 0, []
    for path, page in pages.items():
        for a in page.select("a.reference.internal[href]"):
            target, frag = urldefrag(a["href"])
            dest = (path.parent / unquote(target)).resolve() if target else path.resolve()
            if dest != bib_path.resolve() or frag not in labels:
                continue
            label, text = labels[frag], text_of(a)
            m = AUTHOR_YEAR.match(label)
            first_author = m["authors"].split(" and ")[0].split(" et al.")[0].split(",")[0] if m else label
            checked += 1
            if text == label:
                exact += 1                                  # {cite:p}: "Karnine et al., 2024"
            elif m and (text == m["year"]                   # {cite:t}: Karnine et al. [2024]
                        or (text.startswith(first_author) and text.endswith(", " + m["year"]))):  # {cite:ps}
                continue
            else:
                wrong.append(f"{path.relative_to(built_book)}: cites {text!r}, the list says [{label}]")
    assert checked, "no citation links to the reference list"
    assert not wrong, "citations and reference labels differ:\n" + "\n".join(wrong[:20])
    assert exact, "no parenthetical citation reads exactly like its reference label"


# ---------------------------------------------------------------------------------------------
# a chapter page as a reader meets it: light, opened by the run's banner and the how-to-run box,
# with papermill's cells collapsed and no progress-bar or widget debris
# ---------------------------------------------------------------------------------------------
MAX_PAGE_BYTES = 10 * 2**20
PROGRESS_TEXT = re.compile(r"\d+%\|[^|\n]*\|\s*\d+/\d+")        # tqdm's "40%|████  | 2/5"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_page_is_light(built_book, chapter):
    size = (built_book / f"{chapter}.html").stat().st_size
    assert size <= MAX_PAGE_BYTES, f"{chapter}.html is {size / 2**20:.1f} MB, over {MAX_PAGE_BYTES / 2**20:.0f} MB"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_opens_with_the_run_banner_and_how_to_run_box(built_book, pages, chapter):
    page = pages[built_book / f"{chapter}.html"]
    body = page.find("article") or page
    boxes = body.find_all(class_="admonition")[:2]
    assert len(boxes) == 2, f"{chapter}: the page does not open with the banner and the box"
    banner, box = text_of(boxes[0]), text_of(boxes[1])
    assert "This page was executed with the" in banner
    # said plainly whether a full run exists
    assert ("This page shows a full run" in banner) != ("No full run of this chapter exists yet" in banner)
    for part in ("Paper.", "How to run it", "papermill notebooks/", "make run PROFILE="):
        assert part in box, f"{chapter}: the opening box lacks {part!r}"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_papermill_cells_are_collapsed(built_book, pages, chapter):
    page = pages[built_book / f"{chapter}.html"]
    cells = [c for c in page.find_all(class_="cell")
             if {"tag_parameters", "tag_injected-parameters"} & set(c.get("class", []))]
    assert len(cells) == 1, f"{chapter}: {len(cells)} parameters cells, expected one (the injected one folded in)"
    for c in cells:
        assert "tag_hide-cell" in c.get("class", []), f"{chapter}: a papermill cell is shown expanded"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_no_progress_bars_or_widget_placeholders(built_book, chapter):
    html = (built_book / f"{chapter}.html").read_text(encoding="utf-8")
    assert not PROGRESS_TEXT.search(html), f"{chapter}: a progress bar's text is in the page"
    assert "application/vnd.jupyter.widget-view+json" not in html, f"{chapter}: an ipywidgets placeholder"
    assert "application/vnd.jupyter.widget-state+json" not in html, f"{chapter}: saved widget state"
