"""Every source notebook is clean, parametrised, and runs end to end at the smoke profile."""
from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

MODELS, EPS = ("shallow", "base", "dense"), (0.1, 0.2, 0.3, 0.5)
# the metrics each chapter's results file must carry (the book's results page reads them)
REQUIRED = {
    "04_dominant_filters": [f"clean_acc/{m}" for m in MODELS]
    + [f"{a}_acc/{m}/eps={e}" for a in ("fgsm", "pgd") for m in MODELS for e in EPS]
    + [f"{k}/base/benign+{a}/{s}" for k in ("split_ft", "full_at") for a in ("pgd", "fgsm") for s in ("clean", "adv")]
    + ["time_s/split_ft/base/pgd", "time_s/full_at/base/pgd"],
    # at the smoke profile the sizes are 5, 10 and 50 (cpu and full add 100, 500, 1000)
    "05_toggle_activity": ["clean_acc/resnet18"]
    + [f"toggle/{k}/total/{d}/n={n}" for k in ("binary", "ternary") for d in ("clean", "clean+fgsm") for n in (5, 10, 50)]
    + [f"toggle_gain/{k}/n={n}" for k in ("binary", "ternary") for n in (5, 10, 50)]
    + [f"toggle_gain/{k}/max_over_eps" for k in ("binary", "ternary")],
}


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found in notebooks/"


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


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_at_smoke_profile(path, tmp_path):
    papermill = pytest.importorskip("papermill")
    out = tmp_path / path.name
    papermill.execute_notebook(str(path), str(out), parameters={"profile": "smoke"},
                               cwd=str(path.parent), kernel_name="python3", progress_bar=False)
    nb = nbformat.read(out, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    # the last cell writes the headline numbers of the smoke run
    data_root = Path(os.environ.get("NRLIB_DATA", ROOT / "data"))
    res = json.loads((data_root / "results" / path.stem / "smoke.json").read_text())
    assert res["profile"] == "smoke" and res["metrics"], "results file has no metrics"
    missing = [k for k in REQUIRED.get(path.stem, []) if k not in res["metrics"]]
    assert not missing, f"{path.stem}: results lack {missing}"
    pct = [v for k, v in res["metrics"].items() if k.split("/")[0].endswith("_acc")]
    assert all(0.0 <= v <= 100.0 for v in pct), "accuracies must be percentages"
