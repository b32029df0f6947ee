"""nrbook.runbook and nrbook.results_page: staleness, the profile guard, the banner, a failed or
interrupted run, and the results page with its scoreboard (no notebook is run). The papers'
numbers are never typed here: they are read from nrlib.papers."""
from __future__ import annotations

import json

import nbformat
import pytest

import nrbook
from nrbook import results_page as rp
from nrbook import runbook as rb
from nrlib import papers


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


def test_a_prose_edit_is_synced_without_a_run(tmp_path, monkeypatch):
    monkeypatch.setenv("NRLIB_DATA", str(tmp_path / "data"))
    src = _notebook(tmp_path / "nb.ipynb", outputs=True)
    out = tmp_path / "book"
    out.mkdir()
    copy = nbformat.read(src, as_version=4)
    copy.metadata["nrbook"] = {"source_sha256": rb.source_sha256(src), "code_sha256": rb.code_sha256(src),
                               "profile": "cpu", "device": "cpu (test)", "date": "2026-01-02T00:00:00+00:00",
                               "seconds": 5.0}
    nbformat.write(copy, out / "nb.ipynb")
    assert rb.code_sha256(src) != rb.code_sha256(_notebook(tmp_path / "other.ipynb", source="x = 2"))

    edited = nbformat.read(src, as_version=4)
    edited.cells[0].source = "# Title\n\nThe paper, now published."
    nbformat.write(edited, src)
    assert rb.status(src, out)[0] == "prose"
    assert rb.decide("prose", "cpu", "cpu", only_stale=True, force=False)[0] == "sync"
    assert rb.decide("prose", "cpu", "cpu", only_stale=False, force=False)[0] == "run"
    assert rb.sync_prose(src, out / "nb.ipynb")
    synced = nbformat.read(out / "nb.ipynb", as_version=4)
    assert "The paper, now published." in synced.cells[0].source and "# Title" in synced.cells[0].source
    assert synced.cells[1].outputs == copy.cells[1].outputs           # outputs untouched
    assert rb.status(src, out)[0] == "fresh"

    edited.cells.insert(1, nbformat.v4.new_markdown_cell("a new paragraph"))   # cells no longer pair up
    nbformat.write(edited, src)
    assert rb.status(src, out)[0] == "prose" and not rb.sync_prose(src, out / "nb.ipynb")
    _notebook(src, source="x = 2")                                    # a code edit: stale
    assert rb.status(src, out)[0] == "stale"


SIZED = ('E = "ε, ∞"  # ε in pixel units: ∞-norm "8/255"\n'
         'S = {"smoke": dict(n=2),  # tiny\n'
         '     "cpu": dict(n=20),\n'
         '     "full": dict(n=200, steps=[1, 2])}[profile]; T = {"a": 1}\n'
         'print(S)')


def test_profile_view_reads_a_size_table_at_one_profile():
    cpu = rb.profile_view(SIZED, "cpu")
    assert '"cpu": dict(n=20)' in cpu and "n=200" not in cpu and "n=2)" not in cpu
    assert cpu.count("...") == 2 and cpu.endswith('[profile]; T = {"a": 1}\nprint(S)')
    assert cpu.startswith('E = "ε, ∞"\nS = {"smoke": ...,\n')    # bytes, not characters, were cut
    assert rb.profile_view(SIZED, None) == SIZED
    assert "# tiny" not in cpu and '"8/255"' not in cpu                # comments dropped
    hashed = 'x = "# not a comment"  # a comment\ny = 1'
    assert rb.profile_view(hashed, "cpu") == 'x = "# not a comment"\ny = 1'
    assert rb.profile_view("%matplotlib inline", "cpu") == "%matplotlib inline"
    other = 'D = {"smoke": 1, "cpu": 2}[profile]'              # not every profile: not a size table
    assert rb.profile_view(other, "cpu") == other


def test_resizing_another_profile_keeps_a_copy_and_syncs_its_code(tmp_path, monkeypatch):
    monkeypatch.setenv("NRLIB_DATA", str(tmp_path / "data"))
    src = _notebook(tmp_path / "nb.ipynb", source=SIZED, outputs=True)
    out = tmp_path / "book"
    out.mkdir()
    copy = nbformat.read(src, as_version=4)
    copy.metadata["nrbook"] = {"source_sha256": rb.source_sha256(src), "code_sha256": rb.code_sha256(src, "cpu"),
                               "profile": "cpu", "device": "cpu (test)", "date": "2026-01-02T00:00:00+00:00",
                               "seconds": 5.0}
    nbformat.write(copy, out / "nb.ipynb")
    as_full = rb.code_sha256(src, "full")
    _notebook(src, source=SIZED.replace("n=200", "n=100"), outputs=True)      # full resized
    assert rb.status(src, out)[0] == "prose"
    assert rb.sync_prose(src, out / "nb.ipynb")
    synced = nbformat.read(out / "nb.ipynb", as_version=4)
    assert "n=100" in synced.cells[1].source and synced.cells[1].outputs == copy.cells[1].outputs
    assert rb.status(src, out)[0] == "fresh"
    _notebook(src, source=SIZED.replace("# tiny", "# the smallest"), outputs=True)   # a comment
    assert rb.status(src, out)[0] == "prose"
    _notebook(src, source=SIZED.replace("n=20)", "n=30)"), outputs=True)      # cpu resized: stale
    assert rb.status(src, out)[0] == "stale"
    copy.metadata["nrbook"].update(profile="full", code_sha256=as_full)      # a full copy of SIZED
    nbformat.write(copy, out / "nb.ipynb")
    assert rb.status(src, out)[0] == "prose"                                  # its cpu entry resized
    _notebook(src, source=SIZED.replace("n=200", "n=100"), outputs=True)
    assert rb.status(src, out)[0] == "stale"                                  # its full entry resized


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


def _claim(name, key):
    return next(c for c in papers.load(name)["claims"] if c["key"] == key)


def _write_results(root, notebook, profile, metrics, date="2026-01-02T03:04:05+00:00"):
    record = {"profile": profile, "device": f"{profile}-device (test)", "date": date,
              "git_commit": "abc1234", "torch": "2.x", "seconds": {"train": 10.0}, "metrics": metrics}
    path = root / "results" / notebook / f"{profile}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def _row(page, *cells):
    """The markdown table rows of ``page`` that contain every one of ``cells``."""
    return [ln for ln in page.splitlines() if ln.startswith("|") and all(c in ln for c in cells)]


def _chapter_board(page, chapter):
    """The scoreboard's run line of one chapter (``**04 · Title** — run: …``) and its part of the board."""
    board = page[page.index("## Scoreboard"):page.index("\n## ", page.index("## Scoreboard"))]
    start = board.index(f"\n**{chapter} · ") + 1
    end = board.find("\n**", start)
    part = board[start:end if end > 0 else None]
    return part.splitlines()[0], part


def _badge(verdict):
    return f'<span class="nrbook-verdict nrbook-verdict-{verdict.replace(" ", "-")}">{verdict}</span>'


def test_results_page_without_runs_lists_every_claim_as_not_run(tmp_path, monkeypatch):
    monkeypatch.setenv("NRLIB_DATA", str(tmp_path / "data"))
    page = rp.write_results_page(tmp_path / "book").read_text()
    assert page.index("## Scoreboard") < page.index("No results yet")
    for name in papers.names():
        chapter = papers.load(name)["notebook"].split("_")[0]
        line, part = _chapter_board(page, chapter)
        assert "— run: no run —" in line, line
        for c in papers.load(name)["claims"]:
            assert _row(part, c["claim"][:60], _badge("not run")), (name, c["key"])


def test_results_page_scoreboard_and_details(tmp_path, monkeypatch):
    monkeypatch.setenv("NRLIB_DATA", str(tmp_path / "data"))
    base = _claim("karnine2024", "clean_acc/base")
    pgd = _claim("karnine2024", "pgd_acc/base/eps=0.3")
    ours_base = base["paper"] - 2 * base["rule"]["abs"]    # fails its tolerance rule
    metrics = {"clean_acc/base": ours_base, pgd["key"]: pgd["paper"] + pgd["rule"]["abs"] / 2,   # meets its tolerance
               "time_s/split_ft/base/pgd": 12.0, "extra/metric": 0.5}
    _write_results(tmp_path / "data", "04_dominant_filters", "cpu", metrics)
    _write_results(tmp_path / "data", "zoo", "cpu", {"test_acc/resnet18": 50.0})
    page = rp.write_results_page(tmp_path / "book").read_text()

    board = page[page.index("## Scoreboard"):page.index("## ", page.index("## Scoreboard") + 3)]
    run = "cpu · cpu-device (test) · 2026-01-02"
    assert papers.verdict(base, metrics) == "not reproduced"
    line, ch4 = _chapter_board(page, "04")
    assert f"— run: {run} —" in line
    assert _row(ch4, base["claim"], papers.fmt(ours_base, "%"), _badge("not reproduced"))
    assert _row(ch4, pgd["claim"], papers.fmt(metrics[pgd["key"]], "%"), _badge("reproduced") + " (no interval)")
    other = _claim("karnine2024", "clean_acc/shallow")
    assert _row(ch4, other["claim"], _badge("not run"))                 # the run lacks that metric
    assert "— run: no run —" in _chapter_board(page, "05")[0]           # chapter 5 has no results
    zoo = _claim("zoo", "test_acc/resnet18")                            # judged at the full profile only
    zoo_line, zoo_part = _chapter_board(page, "zoo")
    assert f"— run: {run} —" in zoo_line
    assert _row(zoo_part, zoo["claim"], "50.00%", '-judged-at-full-only">judged at full only</span>')
    counts = _row(board, "| 04 |", run, str(len(papers.load("karnine2024")["claims"])))
    assert counts, "the summary table counts chapter 4's claims"

    details = page[page.index("## Dominant filters"):]
    assert _row(details, "`clean_acc/base`", papers.paper_cell(base), papers.fmt(ours_base, "%"),
                f"{ours_base - base['paper']:+.2f}", "not reproduced",
                papers.rule_text(base["rule"]).replace("|", "\\|"))          # escaped in a table
    assert "`extra/metric`" in details and "12.0 s" in details     # other numbers, in the dropdown
    assert "`abc1234`" in details and "2026-01-02 03:04 UTC" in details
    assert "{cite}`karnine2024efficient`" in details


def test_results_page_prefers_the_full_run(tmp_path, monkeypatch):
    monkeypatch.setenv("NRLIB_DATA", str(tmp_path / "data"))
    zoo = _claim("zoo", "test_acc/resnet18")
    _write_results(tmp_path / "data", "zoo", "cpu", {"test_acc/resnet18": 10.0})
    _write_results(tmp_path / "data", "zoo", "full", {"test_acc/resnet18": zoo["rule"]["value"] + 1},
                   date="2026-02-03T00:00:00+00:00")
    rows = [r for r in rp.scoreboard_rows(["zoo"]) if r["key"] == zoo["key"]]
    assert rows[0]["verdict"] == "reproduced" and rows[0]["run"].startswith("full · full-device (test) · 2026-02-03")


def test_failed_copies_go_beside_a_temporary_out(tmp_path):
    assert rb.failed_dir(rb.ROOT / "book") == rb.ROOT / "_build" / "failed"
    assert rb.failed_dir(tmp_path / "out") == tmp_path / "out" / "_failed"


def test_profiles_are_nrlibs():
    from nrlib import profiles
    assert rb.RANK is profiles.RANK and rb.PROFILES is profiles.PROFILES


def test_interrupted_run_keeps_the_old_copy_and_exits_130(tmp_path, monkeypatch, capsys):
    # scripts/gpu_full.sh stops the runbook with SIGINT when its time budget runs out
    src_dir, out = tmp_path / "notebooks", tmp_path / "book"
    src_dir.mkdir()
    out.mkdir()
    _notebook(src_dir / "05_x.ipynb")
    (out / "05_x.ipynb").write_text("old copy")
    monkeypatch.setattr(nrbook, "NOTEBOOKS", src_dir)                # where the chapters are found

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rb, "execute", interrupted)
    assert rb.main(["--profile", "smoke", "--out", str(out)]) == 130
    assert (out / "05_x.ipynb").read_text() == "old copy"
    assert "interrupted while executing 05_x.ipynb" in capsys.readouterr().err


def test_strip_progress_removes_bars_and_keeps_results_and_sliders():
    """The rendered book shows no progress bars: tqdm.auto's widget outputs and
    stderr bars are dropped from executed copies; prints and slider panels stay."""
    import nbformat

    from nrbook.runbook import strip_progress

    widget = {"application/vnd.jupyter.widget-view+json": {"model_id": "x", "version_major": 2, "version_minor": 0}}
    bar = nbformat.v4.new_output("display_data", data={**widget, "text/plain": "thresholds 1/2:   0%|          | 0/4 [00:00<?, ?it/s]"})
    slider = nbformat.v4.new_output("execute_result", data={**widget, "text/plain": "VBox(children=(HBox(...)))"},
                                    execution_count=1)
    err_bar = nbformat.v4.new_output("stream", name="stderr", text="train:  40%|████      | 2/5 [00:03<00:04]\r")
    printed = nbformat.v4.new_output("stream", name="stdout", text="accuracy 99.1%\n")
    warning = nbformat.v4.new_output("stream", name="stderr", text="UserWarning: something real\n")
    cell = nbformat.v4.new_code_cell("x = 1", outputs=[bar, slider, err_bar, printed, warning])
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# t"), cell])
    assert strip_progress(nb) == 2
    assert nb.cells[1].outputs == [slider, printed, warning]


META = {"profile": "cpu", "device": "cpu (x86_64, 2 threads)", "date": "2026-01-02T03:04:05+00:00",
        "seconds": 2973.4}
SOURCE = ("# Dominant filters\n\n**Paper.** A. Author, *Title* (2024) {cite}`key`.\n\n"
          "**Claim.** Something holds.\n\nAll ε are in pixel units.")


def test_opening_cell_title_banner_and_box():
    text = rb.opening_cell(SOURCE, META, "04_dominant_filters", ["profile", "seed", "eps"], {})
    assert text.startswith("# Dominant filters\n")
    assert "No `full` run yet" in text and ":class: warning" in text          # said plainly
    box = text[text.index("::::{admonition}"):]
    for part in ("**Paper.**", "**Claim.**", "All ε are in pixel units.", "make run PROFILE=cpu NB=04",
                 "papermill notebooks/04_dominant_filters.ipynb", "`profile`, `seed`, `eps`"):
        assert part in box, part
    # the banner and the box give the same run time, this run's
    assert "(2973 s)" in text and "| `cpu` | 2973 s (50 min) | cpu (x86_64, 2 threads) | 2026-01-02 |" in text
    assert "| `full` | not run yet |" in text
    assert text.rstrip().endswith("::::")


def test_opening_cell_lists_the_other_profiles_run():
    runs = {"cpu": {"seconds": 600.0, "device": "cpu (4 threads)", "date": "2026-01-01T00:00:00+00:00"}}
    meta = dict(META, profile="full", device="NVIDIA H100", seconds=420.0)
    text = rb.opening_cell(SOURCE, meta, "04_dominant_filters", ["profile"], runs)
    assert "No `full` run yet" not in text and ":class: note" in text
    assert "| `cpu` | 600 s (10 min) | cpu (4 threads) | 2026-01-01 |" in text
    assert "| `full` | 420 s (7 min) | NVIDIA H100 | 2026-01-02 |" in text


def test_parameter_cells_are_collapsed_and_named():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# T"),
                nbformat.v4.new_code_cell("profile = 'cpu'   # a comment\nseed = 0\nif seed:\n    x = 1",
                                          metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("profile = 'smoke'", metadata={"tags": ["injected-parameters"]}),
                nbformat.v4.new_code_cell("y = 2")]
    assert rb.parameter_names(nb) == ["profile", "seed"]
    assert rb.merge_parameters(nb) == 1
    assert rb.hide_parameters(nb) == 1
    assert [c.metadata.get("tags", []) for c in nb.cells[1:]] == [["parameters", rb.HIDE_TAG], []]


def test_injected_values_are_folded_into_the_parameters_cell():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('profile = "cpu"   # smoke | cpu\nlabel = "ε"; seed = 0\nks = [1, 2]',
                                          metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell('# Parameters\nprofile = "smoke"\nseed = 0\nseed2 = 3\nlabel = "é"\n',
                                          metadata={"tags": ["injected-parameters"]}),
                nbformat.v4.new_code_cell("y = 2")]
    assert rb.merge_parameters(nb) == 4
    assert [c.source for c in nb.cells] == [
        "# set for this run (papermill -p): profile = \"smoke\" (the notebook's default: \"cpu\"); "
        "seed2 = 3; label = \"é\" (the notebook's default: \"ε\")\n"
        'profile = "smoke"   # smoke | cpu\nlabel = "é"; seed = 0\nks = [1, 2]\nseed2 = 3', "y = 2"]
    assert rb.merge_parameters(nb) == 0                       # nothing left to merge
    assert rb.parameter_names(nb) == ["profile", "label", "ks", "seed2"]   # (a name per line)


def test_strip_widgets_drops_widget_state_and_views():
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    view = nbformat.v4.new_output("display_data", data={rb.WIDGET_VIEW: {"model_id": "m"},
                                                        "text/plain": "VBox(children=(...))"})
    html = nbformat.v4.new_output("display_data", data={"text/html": "<div class='nrlib-static-panel'></div>"})
    nb.cells = [nbformat.v4.new_code_cell("panel", outputs=[view, html])]
    assert rb.strip_widgets(nb) == 1
    assert "widgets" not in nb.metadata and nb.cells[0].outputs == [html]


def test_verdict_tables_are_re_rendered_from_the_results_and_paper_files(tmp_path, monkeypatch):
    from nrlib import papers, plot, results

    monkeypatch.setenv("NRLIB_DATA", str(tmp_path / "data"))
    stem = "05_toggle_activity"
    doc = papers.for_notebook(stem)
    keys = [c["key"] for c in doc["claims"] if c["paper"] is not None][:2]
    metrics = {k: float(c["paper"]) for c in doc["claims"] if c["key"] in keys for k in papers.claim_metrics(c)}
    results.write(stem, "cpu", metrics)
    shown = [r for r in papers.scoreboard(stem, metrics, "cpu") if r["key"] in keys]
    new = plot.scoreboard(stem, metrics, keys=keys, profile="cpu")
    data, meta = new._repr_markdown_()
    # as IPython files it in an executed notebook: the metadata under the output's MIME type
    shell = __import__("IPython.core.interactiveshell", fromlist=["x"]).InteractiveShell.instance()
    _, filed = shell.display_formatter.format(new)
    assert filed["text/markdown"] == meta
    outdated = data.replace(shown[0]["claim"], shown[0]["claim"].rstrip(".") + " ;")   # a claim edited since
    assert outdated != data
    legacy = papers.markdown_table(shown)                     # a table as chapters wrote them before
    stale = legacy.replace(shown[0]["claim"], shown[0]["claim"].rstrip(".") + " ;")
    outputs = [nbformat.v4.new_output("display_data", data={"text/markdown": t}, metadata=m)
               for t, m in ((outdated, filed), (stale, {}), ("| claim | where | paper | ours | verdict | rule |\n"
                                                            "| --- |\n| no such claim | a | b | c | d | e |\n", {}),
                            (outdated, meta))]          # refreshed before the MIME-type filing was read
    nb = nbformat.v4.new_notebook(metadata={"nrbook": {"profile": "cpu"}})
    nb.cells = [nbformat.v4.new_code_cell("x", outputs=outputs)]
    assert rb.refresh_scoreboards(nb, stem) == 3              # the unmatched old table is kept as it was
    got = [o["data"]["text/markdown"] for o in nb.cells[0].outputs]
    assert got[0] == got[1] == got[3] == papers.verdict_markdown(shown) and got[2].startswith(rb.LEGACY_TABLE)
    for o in (nb.cells[0].outputs[i] for i in (0, 1, 3)):
        assert o["metadata"] == {"text/markdown": {papers.SCOREBOARD_META: {"notebook": stem, "keys": keys}}}
    assert rb.refresh_scoreboards(nbformat.v4.new_notebook(), stem) == 0           # no run recorded


def test_banner_says_what_full_runs_where_it_is_not_the_papers_scale():
    meta = {"profile": "cpu", "device": "cpu", "date": "2026-01-02T03:04:05+00:00", "seconds": 5.0}
    for stem in ("01_fragile_kernels", "02_one_neuron", "03_neuron_sensitivity", "05_toggle_activity"):
        assert f"a GPU, {papers.for_notebook(stem)['full_scale']})" in rb.banner_text(meta, stem)
    assert "a GPU, the paper's scale" in rb.banner_text(meta, "04_dominant_filters")
    assert "a GPU, the paper's scale" in rb.banner_text(meta)


def test_notebook_filters_match_chapter_names_and_a_bad_one_is_named():
    every = rb.select(None)
    assert [p.stem for p in rb.select(["05", "notebooks/01_fragile_kernels.ipynb", "05"])] == \
        ["05_toggle_activity", "01_fragile_kernels"]               # each once, in the order asked
    assert rb.select(["0"]) == every and len(every) >= 6           # a prefix may name several
    with pytest.raises(SystemExit, match="runbook: '99' is not a chapter: .*05_toggle_activity"):
        rb.select(["99"])
