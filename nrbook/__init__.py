"""nrbook — the tooling that makes the book, kept apart from the science library ``nrlib``
(as d2l keeps ``d2lbook`` apart from ``d2l``): a reader imports ``nrlib``; ``nrbook`` executes
the notebooks and writes the book's pages.

* ``python -m nrbook.runbook`` — executes ``notebooks/*.ipynb`` with papermill into ``book/``,
  labels each copy (profile, device, date) and tracks which copies are stale (``runbook``);
* the generated pages, one module each, on what they share (``chapters``: the chapters, their
  runs and run times, where a claim is shown): ``results_page`` — ``book/results.md``, a
  scoreboard of every paper claim (``nrlib.papers``) against the runs' results JSON, then each
  chapter's numbers, with ``results_figure`` (each chapter's figure); ``intro_page`` — the
  introduction's recipe and run-time tables; ``readme_page`` — the README's results and benchmarks;
* ``python -m nrbook.bench`` — speed benchmarks of nrlib's fast paths on this device;
* ``python -m nrbook.budget`` — each chapter's ``full`` run estimated before it runs: its plan
  (``plans``, one module per chapter) of network passes, their FLOPs counted (``cost``), and the
  seconds and loans of a GPU machine they take;
* ``python -m nrbook.sweep`` — one chapter over a grid of parameters and seeds, each point a
  papermill run on a Dask cluster, gathered into tables with intervals over the seeds.

nrbook imports nrlib; nrlib never imports nrbook (``tests/test_layout.py`` checks it).
"""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def chapter_notebooks() -> list[Path]:
    """The source notebooks ``notebooks/*.ipynb``, in chapter order."""
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def find_chapters(name: str | os.PathLike, *, one: bool = False) -> list[Path]:
    """The chapters whose name starts with ``name``: a number (``05``), a name (``05_toggle_activity``),
    with or without a folder and ``.ipynb``. With ``one``, exactly one must match. Every tool that takes
    a chapter (``runbook``, ``budget``, ``sweep``, ``scripts/stage.py``) resolves it here; a name that
    matches none, or several where one is wanted, is a ValueError listing the chapters."""
    every = chapter_notebooks()
    key = Path(os.fspath(name)).name.removesuffix(".ipynb")
    hits = [p for p in every if key and p.stem.startswith(key)]
    if not hits or (one and len(hits) > 1):
        raise ValueError(f"{os.fspath(name)!r} is {'not one chapter' if hits else 'not a chapter'}: give a "
                         f"chapter's number or name, one of {[p.stem for p in every]}")
    return hits
