"""Every source notebook is clean, parametrised, and runs end to end at the smoke profile.

The smoke runs go through the book's runbook (``nrbook.runbook``), as ``make book`` does, but
write nowhere in the repository: the executed copy and the results page go to a temporary
``--out``, and the results JSON, checkpoints and caches to a temporary data root
(``$NRLIB_DATA``, with the datasets linked in; see ``conftest.isolated_data_root``).
"""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from nrlib import papers

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def paper_keys(notebook: str, profile: str) -> list[str]:
    """The metric keys the chapter's paper file names for runs at ``profile``: each claim's key and
    the keys its rule compares it with (claims judged only at other profiles are left out)."""
    doc = papers.for_notebook(notebook)
    if doc is None:
        return []
    keys = [k for c in doc["claims"] if profile in c.get("profiles", papers.PROFILES) for k in papers.claim_metrics(c)]
    return list(dict.fromkeys(keys))


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found in notebooks/"


def test_both_chapters_have_a_paper_file():
    for path in NOTEBOOKS:
        assert papers.for_notebook(path.stem) is not None, f"nrlib/papers/ has no file for {path.stem}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_source_notebook_is_clean_and_parametrised(path):
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged 'parameters', expected exactly 1"
    assert "profile" in tagged[0].source, f"{path.name}: the parameters cell must set `profile`"
    for i, c in enumerate(nb.cells):
        if c.cell_type == "code":
            assert not c.outputs, f"{path.name}: cell {i} carries outputs; source notebooks are committed stripped"
            assert c.execution_count is None, f"{path.name}: cell {i} has an execution count"


MAX_CELL_LINES, MAX_LINE = 15, 100      # a short cell; code that fits the book's page without scrolling


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_code_cells_are_short_and_fit_the_page(path):
    nb = nbformat.read(path, as_version=4)
    long_cells = {i: len(c.source.splitlines()) for i, c in enumerate(nb.cells)
                  if c.cell_type == "code" and len(c.source.splitlines()) > MAX_CELL_LINES}
    wide = [(i, len(line)) for i, c in enumerate(nb.cells) if c.cell_type == "code"
            for line in c.source.splitlines() if len(line) > MAX_LINE]
    assert not long_cells, f"{path.name}: cells over {MAX_CELL_LINES} lines (cell: lines): {long_cells}"
    assert not wide, f"{path.name}: code lines over {MAX_LINE} characters (cell, length): {wide}"


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_at_smoke_profile(path, tmp_path, isolated_data_root):
    pytest.importorskip("papermill")
    from nrbook import runbook

    book_copy = ROOT / "book" / path.name
    before = book_copy.stat().st_mtime_ns if book_copy.exists() else None
    repo_results = ROOT / "data" / "results" / path.stem / "smoke.json"
    repo_before = repo_results.stat().st_mtime_ns if repo_results.exists() else None
    out = tmp_path / "book"
    try:
        rc = runbook.main(["--profile", "smoke", "--notebooks", path.stem, "--out", str(out)])
    except SystemExit as e:            # the runbook's message names the failing cell's error
        pytest.fail(str(e))
    assert rc == 0

    nb = nbformat.read(out / path.name, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert nb.metadata["nrbook"]["profile"] == "smoke"
    assert runbook.BANNER_TAG in nb.cells[0].metadata.get("tags", [])
    assert nb.cells[0].source.startswith("# ") and "How to run it" in nb.cells[0].source

    # the book's copy: static slider panels, no ipywidgets, papermill's cells collapsed
    src = nbformat.read(path, as_version=4)
    n_panels = sum(c.source.count("widgets.panel(") for c in src.cells if c.cell_type == "code")
    html = [o.data["text/html"] for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if "text/html" in o.get("data", {})]
    assert sum(h.count('class="nrlib-static-panel"') for h in html) == n_panels >= 1
    assert "widgets" not in nb.metadata
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
                if runbook.WIDGET_VIEW in o.get("data", {})]
    tagged = [c.metadata.get("tags", []) for c in nb.cells]
    assert sum("parameters" in t and runbook.HIDE_TAG in t for t in tagged) == 1     # one, folded
    assert not [t for t in tagged if "injected-parameters" in t]
    params = next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert 'profile = "smoke"' in params and "set for this run" in params.splitlines()[0]
    assert "## Scoreboard" in (out / "results.md").read_text()

    # the last cell writes the headline numbers of the smoke run, into the temporary data root
    res = json.loads((isolated_data_root / "results" / path.stem / "smoke.json").read_text())
    assert res["profile"] == "smoke" and res["metrics"], "results file has no metrics"
    assert res["wall_seconds"] == nb.metadata["nrbook"]["seconds"] >= sum(res["seconds"].values())
    # every slider panel recorded how long its redraws took (the cpu profile's are checked below)
    assert len([k for k in res["metrics"] if k.startswith("widget_s/")]) == n_panels
    # (a paired difference of two accuracies, stored under papers.diff_key "a - b", is in points)
    pct = [v for k, v in res["metrics"].items() if k.split("/")[0].endswith("_acc")
           and papers.diff_key("", "") not in k]
    assert all(0.0 <= v <= 100.0 for v in pct), "accuracies must be percentages"
    # every metric the chapter's paper file names (what the scoreboard reads) was written
    unclaimed = [k for k in paper_keys(path.stem, "smoke") if k not in res["metrics"]]
    assert not unclaimed, (f"{path.stem}: the paper file nrlib/papers/{papers.for_notebook(path.stem)['name']}.json "
                           f"names metrics the smoke run did not write: {unclaimed}")

    # nothing was written into the repository's book/ or data/
    assert (book_copy.stat().st_mtime_ns if book_copy.exists() else None) == before
    assert (repo_results.stat().st_mtime_ns if repo_results.exists() else None) == repo_before


# A slider move answers within about a second on a 2-core CPU at the cpu profile: the slowest
# redraw (a call of the panel's render at a new value, figure drawn) of each panel of the
# committed cpu run of each chapter, where that run has them.
SLIDER_BUDGET_S = 1.5


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_slider_redraws_are_fast_at_the_cpu_profile(path):
    res_path = ROOT / "data" / "results" / path.stem / "cpu.json"
    if not res_path.exists():
        pytest.skip(f"no committed cpu run of {path.stem}")
    res = json.loads(res_path.read_text())
    times = {k: v for k, v in res["metrics"].items() if k.startswith("widget_s/")}
    src = nbformat.read(path, as_version=4)
    n_panels = sum(c.source.count("widgets.panel(") for c in src.cells if c.cell_type == "code")
    assert len(times) == n_panels, f"{path.stem}: the cpu run recorded {sorted(times)} for {n_panels} panels"
    slow = {k: round(v, 2) for k, v in times.items() if v > SLIDER_BUDGET_S}
    assert not slow, f"{path.stem}: slider redraws slower than {SLIDER_BUDGET_S} s at the cpu profile: {slow}"


FIGSIZE = __import__("re").compile(r"figsize\s*=\s*\(\s*([0-9.]+)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_figures_are_at_most_max_fig_width(path):
    """nrlib.plot.MAX_FIG_WIDTH in the sources (every literal figsize), and in the executed chapter
    what that limit protects: every inline figure and slider-panel frame (its CSS width, which
    bbox_inches="tight" widens where titles or labels overhang the axes) is shown with 11 pt tick
    labels of at least nrlib.plot.MIN_TEXT_PX pixels once the book shrinks it to its column."""
    import re

    from nrlib import plot

    nb = nbformat.read(path, as_version=4)
    wide = [(i, float(w)) for i, c in enumerate(nb.cells) if c.cell_type == "code"
            for w in FIGSIZE.findall(c.source) if float(w) > plot.MAX_FIG_WIDTH]
    assert not wide, f"{path.name}: figsize wider than MAX_FIG_WIDTH={plot.MAX_FIG_WIDTH} in (cell, in): {wide}"
    book = ROOT / "book" / path.name
    if not book.exists():
        pytest.skip(f"no executed copy of {path.stem}")
    limit = 11 / 72 * plot.STYLE_DPI * plot.CONTENT_PX / plot.MIN_TEXT_PX     # CSS px where 11 pt text hits the floor
    assert plot.shown_text_px(11, limit / plot.STYLE_DPI) == pytest.approx(plot.MIN_TEXT_PX)
    shown = []
    for i, c in enumerate(nbformat.read(book, as_version=4).cells):
        for o in c.get("outputs", []) if c.cell_type == "code" else []:
            w = o.get("metadata", {}).get("image/png", {}).get("width")
            shown += [(i, w)] if w else []
            shown += [(i, int(x)) for x in re.findall(r'<img [^>]*width="(\d+)"', o.get("data", {}).get("text/html", ""))]
    too_wide = [(i, w) for i, w in shown if w > limit]
    assert shown and not too_wide, (f"{book.name}: figures wider than {limit:.0f} CSS px, whose tick labels the book "
                                    f"shrinks below {plot.MIN_TEXT_PX} px (cell, px): {too_wide}")
