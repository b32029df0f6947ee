"""What the book's generated pages share: the chapters and their runs (``data/results``), their run
times, where a claim is shown (a chapter's headings and their anchors), and small Markdown helpers.

Pages built on it, each its own module: ``nrbook.results_page`` (``book/results.md``),
``nrbook.results_figure`` (each chapter's figure of ours against the paper's values),
``nrbook.intro_page`` (the introduction's recipe and run-time tables) and ``nrbook.readme_page``
(the README's "Results at a glance" and benchmark tables). ``python -m nrbook.runbook`` writes them
all from ``nrlib.papers``, ``data/results/`` and ``nrlib.train.RECIPES`` — nothing typed by hand.

Where a claim is shown: a paper file may hold ``"sections"``, ``{heading: [key pattern, ...]}``
in order (the first heading with a matching ``fnmatch`` pattern wins), and ``"section_page"``, the
book page holding those headings (default ``<notebook>.ipynb``). A heading is the exact text of a
Markdown heading of that page's source (``notebooks/<notebook>.ipynb``, or ``book/<page>.md``);
the link goes to its MyST heading anchor (``myst_heading_anchors`` in ``_config.yml``).
"""
from __future__ import annotations

import datetime as _dt
import fnmatch
import functools
import re
from pathlib import Path

import nbformat

from nrlib import papers
from nrlib.profiles import PROFILES
from nrlib.utils import atomic_write_bytes

from . import NOTEBOOKS, ROOT, chapter_notebooks

SHOWN_PROFILES = ("full", "cpu")      # the runs the book shows, best first (smoke numbers mean nothing)
TITLES = {"zoo": "The CIFAR-10 model zoo (`python -m nrlib.train`)"}
BOOK = ROOT / "book"                  # the sources of the book's Markdown pages (intro.md, ...)
FIGURES = Path("_static") / "results"  # the figures, relative to the page's folder


def chapter_names() -> list[str]:
    """The results names the page covers: every source notebook, then every other results name a
    paper file belongs to (the zoo)."""
    notebooks = [p.stem for p in chapter_notebooks()]
    extra = sorted({papers.load(n)["notebook"] for n in papers.names()} - set(notebooks))
    return notebooks + extra


def title(name: str) -> str:
    """A chapter's title: the first ``# `` heading of its source notebook."""
    if name in TITLES:
        return TITLES[name]
    for level, text in page_headings(f"{name}.ipynb"):
        if level == 1:
            return text
    return name


def read_result(notebook: str, profile: str) -> dict | None:
    from nrlib import results as _results       # imports torch: only when needed

    try:
        return _results.read(notebook, profile)
    except (FileNotFoundError, _results.CorruptResultsError):
        return None


def runs(name: str) -> dict[str, dict]:
    """``{profile: results record}`` of the shown profiles that have a readable results file, best first."""
    return {p: r for p in SHOWN_PROFILES if (r := read_result(name, p)) is not None}


def date_text(s) -> str:
    try:
        return _dt.datetime.fromisoformat(s).astimezone(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except (TypeError, ValueError):
        return str(s)


def run_label(profile: str, record: dict) -> str:
    """``"cpu · cpu (x86_64, 2 threads) · 2026-11-22"``: the profile, device and date of a run."""
    return f"{profile} · {record.get('device', '?')} · {str(record.get('date', '?'))[:10]}"


def _number(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def run_info(notebook: str) -> dict[str, dict]:
    """Per profile with a readable ``data/results/<notebook>/<profile>.json`` (best first: full, cpu,
    smoke): ``seconds`` (the wall time of the whole notebook run, ``wall_seconds``, or None when the
    file has none), ``stage_seconds`` (the sum of its timed stages), ``device``, ``date`` and
    ``git_commit``."""
    out = {}
    for profile in reversed(PROFILES):
        r = read_result(notebook, profile)
        if r is None:
            continue
        stages = r.get("seconds") if isinstance(r.get("seconds"), dict) else {}
        out[profile] = {"seconds": _number(r.get("wall_seconds")),
                        "stage_seconds": sum(v for v in map(_number, stages.values()) if v is not None),
                        "device": r.get("device"), "date": r.get("date"), "git_commit": r.get("git_commit")}
    return out


def duration(seconds: float) -> str:
    """A run time as the book prints it: ``"95 s"``, ``"1234 s (21 min)"`` from two minutes on."""
    return f"{seconds:.0f} s" + (f" ({seconds / 60:.0f} min)" if seconds >= 120 else "")


def run_time_text(info: dict) -> str:
    """The run time of one ``run_info`` entry: the whole run's wall time where the results file
    has it, else the sum of the timed stages, labelled so."""
    if info.get("seconds") is not None:
        return duration(info["seconds"])
    return f"{duration(info.get('stage_seconds') or 0.0)}, the sum of the timed stages"


_SLUG_DROP = re.compile(r"[^\w\u4e00-\u9fff\- ]")


def heading_slug(text: str) -> str:
    """The anchor MyST gives a heading (``myst_heading_anchors``): GitHub's slug of its text
    (lower case, spaces to '-', punctuation other than '-' and '_' dropped). Markup is not
    stripped: the book's section headings are plain text."""
    return _SLUG_DROP.sub("", text.lower().replace(" ", "-"))


_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")


def _markdown_headings(text: str) -> list[tuple[int, str]]:
    out, fence = [], None
    for line in text.splitlines():
        m = _FENCE.match(line)
        if m:
            fence = None if fence and m.group(1).startswith(fence) else (fence or m.group(1))
            continue
        h = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if h and fence is None:
            out.append((len(h.group(1)), h.group(2)))
    return out


@functools.lru_cache(maxsize=32)
def _headings(path: str, mtime_ns: int) -> tuple[tuple[int, str], ...]:
    if path.endswith(".ipynb"):
        cells = nbformat.read(path, as_version=4).cells
        return tuple(h for c in cells if c.cell_type == "markdown" for h in _markdown_headings(c.source))
    return tuple(_markdown_headings(Path(path).read_text(encoding="utf-8")))


def page_headings(page: str) -> list[tuple[int, str]]:
    """``[(level, text), ...]`` of a book page's source, in order: the markdown cells of
    ``notebooks/<stem>.ipynb`` for ``<stem>.ipynb``, ``book/<page>`` for a Markdown page; [] when
    the source is missing."""
    src = NOTEBOOKS / page if page.endswith(".ipynb") else BOOK / page
    return list(_headings(str(src), src.stat().st_mtime_ns)) if src.is_file() else []


def page_anchors(page: str) -> dict[str, str]:
    """``{heading text: anchor}`` of a page's headings; a repeated slug gets ``-1``, ``-2``, … as
    MyST numbers them (the first heading with a text keeps the plain one)."""
    seen: set[str] = set()
    out: dict[str, str] = {}
    for _, text in page_headings(page):
        slug = base = heading_slug(text)
        i = 1
        while slug in seen:
            slug, i = f"{base}-{i}", i + 1
        seen.add(slug)
        out.setdefault(text, slug)
    return out


def section_page(doc: dict) -> str:
    """The book page that shows a paper file's claims: its ``section_page``, else ``<notebook>.ipynb``."""
    return doc.get("section_page") or f"{doc['notebook']}.ipynb"


def claim_section(doc: dict, key: str) -> str | None:
    """The heading of ``section_page(doc)`` that shows the claim with metric ``key``: the first
    heading of the paper file's ``sections`` with a pattern that ``key`` matches; None without one."""
    for heading, patterns in (doc.get("sections") or {}).items():
        if any(fnmatch.fnmatchcase(key, pat) for pat in patterns):
            return heading
    return None


def _section_number(page: str, heading: str) -> str | None:
    """The number of the ``## N. …`` section that holds ``heading`` (itself, or its parent)."""
    number = None
    for level, text in page_headings(page):
        m = re.match(r"^(\d+)\.\s", text)
        if level <= 2:
            number = m.group(1) if m else None
        if text == heading:
            return number
    return None


def section_link(name: str, doc: dict, key: str) -> str:
    """A Markdown link to the section that shows a claim (``[04 §2](04_dominant_filters.ipynb#2-…)``:
    the chapter's short name and the number of its ``## N.`` section); the short name alone where
    no section is known."""
    short = name.split("_")[0]
    page = section_page(doc)
    heading = claim_section(doc, key)
    anchor = page_anchors(page).get(heading) if heading else None
    if anchor is None:
        return short
    number = _section_number(page, heading)
    text = f"{short} §{number}" if number else short
    return f"[{text}]({page}#{anchor})"


def other_fmt(key: str, v) -> str:
    if v is None:
        return "—"
    return f"{v:.1f} s" if key.startswith("time_s") else f"{v:.2f}"


def md_table(header: list[str], rows: list[list]) -> list[str]:
    return papers.pipe_table(header, rows).splitlines() + [""]


def replace_between(path: Path, start: str, end: str, lines: list[str]) -> bool:
    """Replace the text between ``start`` and ``end`` in ``path`` with ``lines`` (markers kept); False
    when the file lacks either marker. The file is rewritten only when its text changes."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if start not in text or end not in text.split(start, 1)[1]:
        return False
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    new = head + "\n".join([start, *lines, end]) + tail
    if new != text:
        atomic_write_bytes(path, new.encode())
    return True
