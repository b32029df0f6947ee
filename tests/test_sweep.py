"""nrbook.sweep: papermill sweeps on Dask. The grid and its errors are checked without running
anything; the cluster's behaviours (the gathered tables equal the runs' own results, a failing
run reported without stopping the others, a worker killed mid-run and its run retried, resume and
--force) run on a 2-worker local cluster with a notebook of a few cells, so that they take
seconds; a real chapter's sweep (chapter 5, smoke, 2 seeds × 2 ε) is the `sweep`-marked test that
`make test-sweep` runs."""
from __future__ import annotations

import json
import math
import shutil
import socket

import nbformat
import pytest

from nrbook import results_page, sweep
from nrlib import papers
from nrlib.results import tag

DEMO = """\
import json, os, pathlib, time
if fail:
    raise RuntimeError("this run was asked to fail")
if die and not pathlib.Path(die).exists():      # the first try only: the worker running it dies
    pathlib.Path(die).touch()
    os.kill(os.getppid(), 9)
    time.sleep(30)
out = pathlib.Path(os.environ["NRLIB_DATA"]) / "results" / "sweep_demo"   # as nrlib.results puts it
out.mkdir(parents=True)                                        # (without importing torch: seconds)
(out / f"{profile}.json").write_text(json.dumps({"notebook": "sweep_demo", "profile": profile,
    "metrics": {"acc": 50 + 100 * eps + seed, "twice_eps": 2 * eps}}))"""


@pytest.fixture
def demo(tmp_path):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "cpu"\nseed = 0\neps = 8 / 255\nfail = False\ndie = ""')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(DEMO)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "sweep_demo.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("NRLIB_DATA", str(root))
    return root


def test_grid_types_values_and_puts_the_seed_last(demo):
    params = sweep.notebook_parameters(demo)
    assert params == {"profile": "cpu", "seed": 0, "eps": 8 / 255, "fail": False, "die": ""}
    grid = sweep.make_grid(params, [("seed", ["0", "1"]), ("eps", ["4/255", "0.1"])])
    assert grid == [{"eps": 4 / 255, "seed": 0}, {"eps": 4 / 255, "seed": 1},
                    {"eps": 0.1, "seed": 0}, {"eps": 0.1, "seed": 1}]
    assert [sweep.run_label(p) for p in grid[:2]] == ["eps-0.0157_seed-0", "eps-0.0157_seed-1"]
    assert sweep.make_grid(params, [("fail", ["true"])]) == [{"fail": True}]


def test_swept_values_read_as_the_book_writes_them():
    assert sweep.value_text("eps", 4 / 255, "05_toggle_activity") == "4/255"
    assert sweep.value_text("eps", 0.2, "04_dominant_filters") == "0.2"              # MNIST: decimals
    assert sweep.value_text("eps_mnist", 0.2, "01_fragile_kernels") == "0.2"         # by its name
    assert sweep.value_text("eps_cifar", "0.03137254901960784", "01_fragile_kernels") == "8/255"
    assert sweep.value_text("eps", 0.2) == "51/255"                  # no chapter: judged by the value
    assert sweep.value_text("seed", 1) == "1" and sweep.value_text("eps", "big") == "big"


def test_a_claim_measured_but_gated_at_another_eps_names_the_missing_number():
    """A run at ε = 4/255 measures the toggle gain but not the FGSM accuracy at the paper's 8/255
    that the claim's gate reads: the sweep's table says which number is missing."""
    claim = next(c for c in papers.load("prattico2022")["claims"] if c.get("gates"))
    gate = claim["gates"][0]["metric"]
    measured = dict.fromkeys(papers.claim_metrics(claim), 1.0)             # its own and compared ones
    rows = {r["key"]: r for r in papers.scoreboard("05_toggle_activity", measured, "cpu")}
    assert sweep._verdict_text(rows[claim["key"]]) == f"not run (no {gate})"
    other = next(k for k, r in rows.items() if r["ours"] is None)           # its own number missing
    assert sweep._verdict_text(rows[other]) == "not run"
    assert sweep._verdict_text({**rows[claim["key"]], "verdict": "not judged"}) == "not judged"


@pytest.mark.parametrize("swept, message", [
    ([], "the grid is empty"),
    ([("epsilon", ["0.1"])], "has no 'epsilon'"),
    ([("profile", ["cpu"])], "set with --profile"),
    ([("seed", ["0"]), ("seed", ["1"])], "given twice"),
    ([("seed", [])], "has no values"),
    ([("seed", ["0.5"])], "seed is an integer"),
    ([("eps", ["big"])], "eps is a number"),
    ([("fail", ["maybe"])], "give true or false"),
    ([("seed", ["1", "1"])], "repeats a run"),
])
def test_bad_grids_are_named_before_anything_runs(demo, swept, message):
    with pytest.raises(ValueError, match=message):
        sweep.make_grid(sweep.notebook_parameters(demo), swept)


def test_an_unknown_notebook_and_a_bad_profile_are_clear_errors(demo, tmp_path):
    with pytest.raises(ValueError, match="notebook=.99. is not a chapter"):
        sweep.resolve_notebook("99")
    assert sweep.resolve_notebook("05").stem == "05_toggle_activity"
    with pytest.raises(ValueError, match="--profile 'huge'"):
        sweep.sweep(demo, [("seed", ["0"])], profile="huge", out=tmp_path / "out")
    assert sweep.main(["99", "-p", "seed", "0", "--out", str(tmp_path / "o")]) == 2


def test_an_unreachable_scheduler_is_a_clear_error(demo, tmp_path, data_root, monkeypatch):
    monkeypatch.setattr(sweep, "CONNECT_TIMEOUT", "2s")
    with socket.socket() as s:             # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ValueError, match="no Dask scheduler answers"):
        sweep.sweep(demo, [("seed", ["0"])], out=tmp_path / "out", scheduler=f"tcp://127.0.0.1:{port}")


@pytest.mark.timeout(300)
def test_sweep_on_two_workers_gathers_faults_retries_and_resumes(demo, tmp_path, data_root):
    cluster = sweep.local_cluster(2)           # the local cluster `sweep` starts, here started once
    try:                                       # and given by address, as a real cluster is
        _two_workers(demo, tmp_path, data_root, cluster.scheduler_address)
    finally:
        cluster.close()


def _two_workers(demo, tmp_path, data_root, address):
    out = tmp_path / "out"
    marker = tmp_path / "died-once"
    recs = sweep.sweep(demo, [("eps", ["0.1", "0.2"]), ("seed", ["0", "1"])], out=out,
                       scheduler=address, progress=False)
    assert [r["status"] for r in recs] == ["ok"] * 4
    assert len({r["worker"] for r in recs}) == 2                           # both workers ran
    tables = sweep.gather(out)
    runs = tables["runs"].set_index(["eps", "seed"])
    for (eps, seed), row in runs.iterrows():                               # the table is the runs' JSON
        want = json.loads((out / sweep.run_label({"eps": eps, "seed": seed}) / "results.json").read_text())
        assert row["acc"] == want["metrics"]["acc"] == pytest.approx(50 + 100 * eps + seed)
    s = tables["seeds"].set_index(["eps", "metric"])
    assert s.loc[(0.2, "acc"), "mean"] == pytest.approx(70.5) and s.loc[(0.2, "acc"), "seeds"] == 2
    half = 12.706 * math.sqrt(0.5) / math.sqrt(2)                          # t(0.975, 1) · sd / √n
    assert s.loc[(0.2, "acc"), "high"] - 70.5 == pytest.approx(half, rel=1e-3)
    assert (out / "runs.csv").is_file() and (out / "seeds.md").is_file() and (out / "sweep.png").is_file()
    kept = data_root / "results" / "sweeps" / "demo"                      # a sweep kept for the book
    shutil.copytree(out, kept)
    page = "\n".join(results_page.sweeps_section(tmp_path / "book"))
    assert "| 51/255 | 2 | 70.5 |" in page and "4 of 4 runs finished" in page     # ε as eps_text writes it
    assert (tmp_path / "book" / "_static" / "results" / "sweep-demo.png").is_file()
    assert "judged over the seeds" not in page                       # the demo has no paper claims
    (kept / "verdicts.md").write_text("| claim | eps=0.1 (2 seeds) |\n|:--|:--|\n| a | reproduced |\n"
                                      "| b | not run (no c) |\n")
    page = "\n".join(results_page.sweeps_section(tmp_path / "book"))
    assert "judged over the seeds, grid point by grid point (2 claims)" in page
    assert "| b | not run (no c) |" in page

    # resume: the finished runs are skipped, the new ones run
    started = {r["label"]: r["started"] for r in recs}
    recs = sweep.sweep(demo, [("eps", ["0.1", "0.2", "0.3"]), ("seed", ["0", "1"])], out=out,
                       scheduler=address, progress=False)
    assert [r["status"] for r in recs] == ["ok"] * 6
    assert [started.get(r["label"]) == r["started"] for r in recs] == [True] * 4 + [False] * 2

    # a failing run is reported and the other finishes; the worker running that one dies on its
    # first try, and the run is retried
    bad = sweep.sweep(demo, [("fail", ["false", "true"]), ("die", [str(marker)])], out=tmp_path / "out3",
                      scheduler=address, progress=False)
    by = {r["params"]["fail"]: r for r in bad}
    assert by[True]["status"] == "failed" and "asked to fail" in by[True]["error"]
    assert by[False]["status"] == "ok" and marker.exists()                 # died once, then finished
    assert sweep.main([str(demo), "-p", "fail", "false", "true", "-p", "die", str(marker),
                       "--out", str(tmp_path / "out3"), "--scheduler", address]) == 1   # failed: exit 1
    sentinel = tmp_path / "out3" / by[False]["label"] / "sentinel"
    sentinel.touch()
    again = sweep.sweep(demo, [("fail", ["false"]), ("die", [str(marker)])], out=tmp_path / "out3", force=True,
                        scheduler=address, progress=False)
    assert again[0]["status"] == "ok" and not sentinel.exists()            # --force: run again, replaced


@pytest.mark.sweep
@pytest.mark.timeout(1800)
def test_chapter5_smoke_sweep_two_seeds_by_two_eps(tmp_path, isolated_data_root):
    """The real thing: chapter 5 at smoke over 2 ε × 2 seeds on a 2-worker local cluster; the
    gathered table equals each run's results JSON, and the claims are judged over the seeds."""
    out = tmp_path / "sweep"
    recs = sweep.sweep("05", [("eps", ["4/255", "8/255"]), ("seed", ["0", "1"])], profile="smoke", out=out,
                       workers=2, progress=False)
    assert [r["status"] for r in recs] == ["ok"] * 4, [r.get("error") for r in recs]
    tables = sweep.gather(out)
    keys = sweep.chosen_metrics(sweep.load_runs(out))
    own = {k.replace(f"eps={sweep.RUN_VALUE}", tag("eps", 8 / 255)) for k in keys}   # as the claims name them
    assert keys and own <= set(papers.claim_keys("05_toggle_activity"))
    for _, row in tables["runs"].iterrows():
        p = {"eps": row["eps"], "seed": int(row["seed"])}
        want = json.loads((out / sweep.run_label(p) / "results.json").read_text())["metrics"]
        for k in keys:                     # eps=<run>: the key at the run's own ε
            own = k.replace(f"eps={sweep.RUN_VALUE}", tag("eps", p["eps"]))
            assert row[k] == want[own] if want.get(own) is not None else math.isnan(row[k]), k
    assert any(f"eps={sweep.RUN_VALUE}" in k for k in keys)       # the claim at one ε, lined up
    assert set(tables["seeds"]["seeds"]) == {2}
    assert len(tables["verdicts"]) == len(papers.load("prattico2022")["claims"])


def test_the_committed_sweep_names_where_its_seeds_and_the_chapters_run_disagree():
    """Chapter 5's committed cpu sweep, against the chapter's own committed cpu run: the grid point
    matched is the run's ε, and exactly the claims listed differ between the two (recomputed here
    from the two scoreboards)."""
    from pathlib import Path

    from nrlib.results import estimates

    root = Path(__file__).resolve().parent.parent / "data" / "results"
    runs = sweep.load_runs(root / "sweeps" / "05-eps")
    versus = sweep._versus_chapter(runs, sweep._seed_boards(runs))
    assert versus["point"] == "eps=8/255" and versus["seeds"] >= 2
    own = json.loads((root / "05_toggle_activity" / "cpu.json").read_text())
    chapter = {r["key"]: r["verdict"] for r in papers.scoreboard("05_toggle_activity", estimates(own), "cpu")}
    group = [r for r in runs if abs(r["params"]["eps"] - 8 / 255) < 1e-9 and r["status"] == "ok"]
    per_seed = {r["params"]["seed"]: r["metrics"] for r in group}
    merged = {**per_seed[min(per_seed)], **papers.seed_evidence("05_toggle_activity", per_seed, "cpu")}
    seeds = {r["key"]: r["verdict"] for r in papers.scoreboard("05_toggle_activity", merged, "cpu")}
    assert {d["key"] for d in versus["differs"]} == {k for k in seeds if seeds[k] != chapter[k]}
