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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
