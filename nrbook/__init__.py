"""nrbook — the tooling that makes the book, kept apart from the science library ``nrlib``
(as d2l keeps ``d2lbook`` apart from ``d2l``): a reader imports ``nrlib``; ``nrbook`` executes
the notebooks and writes the book's pages.

* ``python -m nrbook.runbook`` — executes ``notebooks/*.ipynb`` with papermill into ``book/``,
  labels each copy (profile, device, date) and tracks which copies are stale (``runbook``);
* ``results_page`` — the generated ``book/results.md``: a scoreboard of every paper claim
  (``nrlib.papers``) against the runs' results JSON, then each chapter's numbers;
* ``python -m nrbook.bench`` — speed benchmarks of nrlib's fast paths on this device.

nrbook imports nrlib; nrlib never imports nrbook (``tests/test_layout.py`` checks it).
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
