"""nrlib.runbook: staleness, the profile guard, the banner and the results page (no notebook is run)."""
from __future__ import annotations

import json

import nbformat
import pytest

from nrlib import runbook as rb


def _notebook(path, source="x = 1", outputs=False):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(source)
    if outputs:
        cell.execution_count = 3
        cell.outputs = [nbformat.v4.new_output("stream", text="1\n")]
    nb.cells = [nbformat.v4.new_markdown_cell("# Title"), cell]
    nbformat.write(nb, path)
    return path


def test_source_hash_ignores_outputs_but_not_sources(tmp_path):
    a = rb.source_sha256(_notebook(tmp_path / "a.ipynb"))
    assert a == rb.source_sha256(_notebook(tmp_path / "b.ipynb", outputs=True))
    assert a != rb.source_sha256(_notebook(tmp_path / "c.ipynb", source="x = 2"))


def test_status_missing_stale_fresh(tmp_path):
    src = _notebook(tmp_path / "nb.ipynb")
    out = tmp_path / "book"
    out.mkdir()
    assert rb.status(src, out) == ("missing", {})
    copy = nbformat.read(src, as_version=4)
    copy.metadata["nrbook"] = {"source_sha256": rb.source_sha256(src), "profile": "full"}
    nbformat.write(copy, out / "nb.ipynb")
    assert rb.status(src, out)[0] == "fresh"
    _notebook(src, source="x = 2")
    state, meta = rb.status(src, out)
    assert state == "stale" and meta["profile"] == "full"


@pytest.mark.parametrize("state, recorded, profile, only_stale, force, action", [
    ("missing", None, "cpu", True, False, "run"),
    ("fresh", "cpu", "cpu", True, False, "skip"),
    ("fresh", "cpu", "full", True, False, "skip"),       # make book skips fresh copies
    ("stale", "cpu", "cpu", True, False, "run"),
    ("stale", "full", "cpu", True, False, "keep"),      # a full run is never replaced by a cpu run
    ("stale", "full", "cpu", True, True, "run"),
    ("fresh", "full", "cpu", False, False, "refuse"),   # explicit re-run
    ("fresh", "full", "cpu", False, True, "run"),
    ("fresh", "cpu", "cpu", False, False, "run"),
    ("stale", None, "smoke", False, False, "run"),      # a copy without nrbook metadata
])
def test_decide(state, recorded, profile, only_stale, force, action):
    assert rb.decide(state, recorded, profile, only_stale=only_stale, force=force)[0] == action


def test_banner_names_profile_device_date_and_time():
    text = rb.banner_text({"profile": "full", "device": "NVIDIA H100", "date": "2026-01-02T03:04:05+00:00",
                           "seconds": 1234.4})
    assert "**full** profile on NVIDIA H100 on 2026-01-02 (1234 s)" in text
    assert "(results.md)" in text


def test_results_page(tmp_path, monkeypatch):
    monkeypatch.setenv("NRLIB_DATA", str(tmp_path / "data"))
    out = tmp_path / "book"
    page = rb.write_results_page(out).read_text()
    assert "No results yet" in page
    record = {"profile": "cpu", "device": "cpu (test)", "date": "2026-01-02T03:04:05+00:00",
              "git_commit": "abc1234", "torch": "2.x", "seconds": {"train": 10.0},
              "metrics": {"clean_acc/base": 97.5, "time_s/split_ft/base/pgd": 12.0, "extra/metric": 0.5}}
    path = tmp_path / "data" / "results" / "04_dominant_filters" / "cpu.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))
    page = rb.write_results_page(out).read_text()
    assert "No results yet" not in page.split("## ")[1]
    assert "| `clean_acc/base` | 99.33 | 97.50 | -1.83 |" in page
    assert "| `time_s/split_ft/base/pgd` | not measured | 12.0 s |  |" in page
    assert "`extra/metric`" in page and "`abc1234`" in page and "2026-01-02 03:04 UTC" in page


def test_paper_values_are_percentages():
    for name, values in rb.PAPER.items():
        for key, v in values.items():
            assert v is None or 0.0 <= v <= 100.0, (name, key, v)


def test_interrupted_run_keeps_the_old_copy_and_exits_130(tmp_path, monkeypatch, capsys):
    # scripts/gpu_full.sh stops the runbook with SIGINT when its time budget runs out
    src_dir, out = tmp_path / "notebooks", tmp_path / "book"
    src_dir.mkdir()
    out.mkdir()
    _notebook(src_dir / "05_x.ipynb")
    (out / "05_x.ipynb").write_text("old copy")
    monkeypatch.setattr(rb, "NOTEBOOKS", src_dir)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rb, "execute", interrupted)
    assert rb.main(["--profile", "smoke", "--out", str(out)]) == 130
    assert (out / "05_x.ipynb").read_text() == "old copy"
    assert "interrupted while executing 05_x.ipynb" in capsys.readouterr().err
