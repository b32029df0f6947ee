"""nrlib.papers: every paper file loads and is well formed, every rule type gives the right
verdict (including "not run" and each failing case), and the scoreboard rows and markdown table.

The rule tests use made-up claims; the papers' own numbers are only read from the files."""
from __future__ import annotations

import json
import math

import pytest

from nrlib import papers
from nrlib.profiles import PROFILES

NOTEBOOKS = {"karnine2024": "04_dominant_filters", "prattico2022": "05_toggle_activity",
             "pravin2021": "01_fragile_kernels", "suri2020": "02_one_neuron",
             "zhang2021": "03_neuron_sensitivity", "zoo": "zoo"}


def claim(rule, paper=10.0, key="m", **extra):
    return {"key": key, "paper": paper, "where": "Table 1", "claim": "a claim", "rule": rule, **extra}


# ----------------------------------------------------------------------------
# the files
# ----------------------------------------------------------------------------
def test_the_paper_files():
    assert papers.names() == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_every_file_loads_with_complete_claims(name):
    doc = papers.load(name)
    assert doc["name"] == name and doc["notebook"] == NOTEBOOKS[name]
    for field in ("citation", "source"):
        assert isinstance(doc[field], str) and len(doc[field]) > 20, field
    assert doc["bibtex"] is None or isinstance(doc["bibtex"], str)
    assert doc["claims"]
    for c in doc["claims"]:
        assert set(papers.CLAIM_FIELDS) <= set(c) <= set(papers.CLAIM_FIELDS) | set(papers.OPTIONAL_CLAIM_FIELDS)
        assert c["rule"]["type"] in papers.RULES, c
        assert c["paper"] is None or (isinstance(c["paper"], (int, float)) and math.isfinite(c["paper"]))
        assert c["paper"] is not None or c.get("paper_text") or c["rule"]["type"] != "tolerance"
        assert set(c.get("profiles", PROFILES)) <= set(PROFILES)
        if c.get("unit") == "%" and c["paper"] is not None:
            assert 0.0 <= c["paper"] <= 100.0, c
        assert isinstance(papers.rule_text(c["rule"]), str)


def test_bibtex_keys_are_in_the_books_references():
    from pathlib import Path
    bib = (Path(__file__).resolve().parent.parent / "book" / "references.bib").read_text()
    for name in papers.names():
        key = papers.load(name)["bibtex"]
        assert key is None or f"{{{key}," in bib, key


def test_no_claim_is_listed_twice():
    for name in papers.names():
        seen = [(c["key"], c["where"]) for c in papers.load(name)["claims"]]
        assert len(seen) == len(set(seen)), name


def test_for_notebook_finds_both_chapters_and_the_zoo():
    for name, notebook in NOTEBOOKS.items():
        assert papers.for_notebook(notebook)["name"] == name
    assert papers.for_notebook("99_nothing") is None


def test_load_returns_a_copy():
    doc = papers.load("zoo")
    doc["claims"].clear()
    assert papers.load("zoo")["claims"]


def test_unknown_name_names_the_allowed_ones():
    with pytest.raises(ValueError, match=r"name='nope'.*karnine2024.*prattico2022.*zoo"):
        papers.load("nope")


@pytest.fixture
def paper_dir(tmp_path, monkeypatch):
    """papers reads its files from a temporary folder."""
    monkeypatch.setattr(papers, "HERE", tmp_path)
    return tmp_path


def _file(claims, **fields):
    return {"citation": "A. Author, A title (2020)", "bibtex": "author2020", "notebook": "01_x",
            "source": "Table 1 of the paper.", "claims": claims, **fields}


def test_corrupt_json_names_the_file(paper_dir):
    (paper_dir / "broken.json").write_text('{"citation": "x", ')
    with pytest.raises(ValueError, match=r"broken\.json.*not valid JSON"):
        papers.load("broken")


@pytest.mark.parametrize("doc, match", [
    ([], "JSON object"),
    ({"citation": "x"}, r"missing \['bibtex', 'notebook', 'source', 'claims'\]"),
    (_file([]), "non-empty list"),
    (_file([claim({"type": "at_least", "value": 1}, where=None)]), "where must be a non-empty string"),
    (_file([{"key": "m", "paper": 1.0, "where": "T", "rule": {"type": "reported"}}]), r"missing \['claim'\]"),
    (_file([claim({"type": "reported"}, colour="red")]), r"unknown \['colour'\]"),
    (_file([claim({"type": "roughly", "abs": 1}, key="acc")]), r"'acc'.*rule type 'roughly' is not one of"),
    (_file([claim({"type": "tolerance"})]), r"missing \['abs'\]"),
    (_file([claim({"type": "tolerance", "abs": 1}, paper=None)]), "compares with the paper's value"),
    (_file([claim({"type": "tolerance", "abs": -1})]), "abs >= 0"),
    (_file([claim({"type": "range", "low": 2, "high": 1})]), "low=2 > high=1"),
    (_file([claim({"type": "at_most", "value": "5"})]), "must be a finite number"),
    (_file([claim({"type": "less_than", "metric": ""})]), "metric key"),
    (_file([claim({"type": "all", "rules": []})]), "non-empty list of rules"),
    (_file([claim({"type": "all", "rules": [{"type": "reported"}]})]), "cannot be part of an 'all'"),
    (_file([claim({"type": "reported"}, paper="99%")]), "paper must be a number or null"),
    (_file([claim({"type": "reported"}, unit="percent")]), "unit='percent'"),
    (_file([claim({"type": "reported"}, profiles=["gpu"])]), "profiles="),
])
def test_malformed_files_name_the_file_and_the_problem(paper_dir, doc, match):
    (paper_dir / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"bad\.json") as e:
        papers.load("bad")
    assert e.match(match)


# ----------------------------------------------------------------------------
# verdicts: every rule type, passing and failing, and "not run"
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("rule, ours, others, expected", [
    ({"type": "tolerance", "abs": 1.0}, 10.9, {}, "reproduced"),
    ({"type": "tolerance", "abs": 1.0}, 9.0, {}, "reproduced"),             # |ours - paper| = abs holds
    ({"type": "tolerance", "abs": 1.0}, 11.5, {}, "not reproduced"),
    ({"type": "tolerance", "abs": 1.0}, 8.5, {}, "not reproduced"),
    ({"type": "at_most", "value": 5.0}, 5.0, {}, "reproduced"),
    ({"type": "at_most", "value": 5.0}, 5.01, {}, "not reproduced"),
    ({"type": "at_least", "value": 99.0}, 99.0, {}, "reproduced"),
    ({"type": "at_least", "value": 99.0}, 98.99, {}, "not reproduced"),
    ({"type": "range", "low": 2.5, "high": 10.0}, 2.5, {}, "reproduced"),
    ({"type": "range", "low": 2.5, "high": 10.0}, 10.0, {}, "reproduced"),
    ({"type": "range", "low": 2.5, "high": 10.0}, 2.4, {}, "not reproduced"),
    ({"type": "range", "low": 2.5, "high": 10.0}, 10.1, {}, "not reproduced"),
    ({"type": "less_than", "metric": "o"}, 1.0, {"o": 2.0}, "reproduced"),
    ({"type": "less_than", "metric": "o"}, 2.0, {"o": 2.0}, "not reproduced"),      # strict
    ({"type": "less_than", "metric": "o", "margin": 1.0}, 1.5, {"o": 2.0}, "not reproduced"),
    ({"type": "less_than", "metric": "o", "margin": 1.0}, 0.5, {"o": 2.0}, "reproduced"),
    ({"type": "greater_than", "metric": "o", "margin": 1.0}, 3.5, {"o": 2.0}, "reproduced"),
    ({"type": "greater_than", "metric": "o", "margin": 1.0}, 3.0, {"o": 2.0}, "not reproduced"),
    ({"type": "greater_than", "metric": "o", "margin": -5.0}, 0.0, {"o": 4.0}, "reproduced"),
    ({"type": "greater_than", "metric": "o", "margin": -5.0}, 0.0, {"o": 6.0}, "not reproduced"),
    ({"type": "close_to", "metric": "o", "abs": 2.0}, 96.0, {"o": 98.0}, "reproduced"),
    ({"type": "close_to", "metric": "o", "abs": 2.0}, 95.9, {"o": 98.0}, "not reproduced"),
    ({"type": "all", "rules": [{"type": "less_than", "metric": "o"}, {"type": "range", "low": -1, "high": 1}]},
     0.5, {"o": 9.0}, "reproduced"),
    ({"type": "all", "rules": [{"type": "less_than", "metric": "o"}, {"type": "range", "low": -1, "high": 1}]},
     1.5, {"o": 9.0}, "not reproduced"),
    ({"type": "all", "rules": [{"type": "less_than", "metric": "o"}, {"type": "range", "low": -1, "high": 1}]},
     0.5, {"o": 0.1}, "not reproduced"),
    ({"type": "reported"}, 3.0, {}, "—"),
])
def test_verdict(rule, ours, others, expected):
    assert papers.verdict(claim(rule), {"m": ours, **others}) == expected


@pytest.mark.parametrize("rule", [
    {"type": "tolerance", "abs": 1.0}, {"type": "at_most", "value": 1.0}, {"type": "at_least", "value": 1.0},
    {"type": "range", "low": 0, "high": 1}, {"type": "less_than", "metric": "o"},
    {"type": "greater_than", "metric": "o"}, {"type": "close_to", "metric": "o", "abs": 1},
    {"type": "all", "rules": [{"type": "at_most", "value": 1.0}]}, {"type": "reported"},
])
@pytest.mark.parametrize("metrics", [{}, None, {"m": None}, {"m": float("nan")}, {"m": "12"}, {"m": True}])
def test_a_missing_metric_is_not_run(rule, metrics):
    assert papers.verdict(claim(rule), metrics) == "not run"


@pytest.mark.parametrize("rule", [
    {"type": "less_than", "metric": "o"}, {"type": "greater_than", "metric": "o", "margin": 1},
    {"type": "close_to", "metric": "o", "abs": 1},
    {"type": "all", "rules": [{"type": "at_least", "value": 0}, {"type": "less_than", "metric": "o"}]},
])
def test_a_missing_compared_metric_is_not_run(rule):
    assert papers.verdict(claim(rule), {"m": 1.0}) == "not run"
    assert papers.verdict(claim(rule), {"m": 1.0, "o": None}) == "not run"


def test_a_claim_judged_at_other_profiles_is_not_run_at_this_one():
    c = claim({"type": "at_least", "value": 1.0}, profiles=["full"])
    assert papers.verdict(c, {"m": 5.0}, "full") == "reproduced"
    assert papers.verdict(c, {"m": 5.0}, "cpu") == "not run"
    assert papers.verdict(c, {"m": 5.0}) == "reproduced"                 # profile not given: not checked


def test_verdict_checks_the_claim():
    with pytest.raises(ValueError, match="rule type 'fuzzy'"):
        papers.verdict(claim({"type": "fuzzy"}), {"m": 1.0})


@pytest.mark.parametrize("rule, text", [
    ({"type": "tolerance", "abs": 0.5}, "|ours − paper| ≤ 0.5"),
    ({"type": "at_most", "value": 5.0}, "≤ 5"),
    ({"type": "at_least", "value": 92.5}, "≥ 92.5"),
    ({"type": "range", "low": 2.5, "high": 10.0}, "in [2.5, 10]"),
    ({"type": "less_than", "metric": "a/b"}, "< a/b"),
    ({"type": "less_than", "metric": "a/b", "margin": 2.0}, "< a/b − 2"),
    ({"type": "greater_than", "metric": "a/b", "margin": 1.0}, "> a/b + 1"),
    ({"type": "greater_than", "metric": "a/b", "margin": -5.0}, "> a/b − 5"),
    ({"type": "close_to", "metric": "a/b", "abs": 2.0}, "within 2 of a/b"),
    ({"type": "all", "rules": [{"type": "at_most", "value": 1.0}, {"type": "at_least", "value": 0.0}]},
     "≤ 1 and ≥ 0"),
    ({"type": "reported"}, "shown, no verdict"),
])
def test_rule_text(rule, text):
    assert papers.rule_text(rule) == text


def test_every_rule_type_is_tested():
    assert set(papers.RULES) == {"tolerance", "at_most", "at_least", "range", "less_than", "greater_than",
                                 "close_to", "all", "reported"}


# ----------------------------------------------------------------------------
# scoreboard and markdown
# ----------------------------------------------------------------------------
def test_scoreboard_rows_follow_the_claims():
    doc = papers.load("prattico2022")
    first = doc["claims"][0]
    metrics = {k: 1.0 for k in papers.claim_metrics(first)}
    for which in ("prattico2022", "05_toggle_activity"):
        rows = papers.scoreboard(which, metrics)
        assert [r["key"] for r in rows] == [c["key"] for c in doc["claims"]]
        assert {"key", "claim", "where", "paper", "ours", "verdict", "rule", "compared", "unit"} <= set(rows[0])
        assert rows[0]["verdict"] == papers.verdict(first, metrics)
        assert rows[0]["compared"] == {k: 1.0 for k in papers.claim_metrics(first)[1:]}
        assert rows[0]["rule"] == papers.rule_text(first["rule"])
        assert all(r["verdict"] == "not run" for r in rows[1:] if r["key"] not in metrics)
    assert all(r["verdict"] == "not run" for r in papers.scoreboard("zoo", None))


def test_scoreboard_of_an_unknown_chapter_is_an_error():
    with pytest.raises(ValueError, match="notebook_or_name='01_fragile'"):
        papers.scoreboard("01_fragile", {})


def test_claim_metrics():
    c = claim({"type": "all", "rules": [{"type": "less_than", "metric": "a"}, {"type": "close_to", "metric": "b",
                                                                                "abs": 1}]}, key="k")
    assert papers.claim_metrics(c) == ["k", "a", "b"]


def test_markdown_table():
    rows = [{"key": "acc", "claim": "accuracy | high", "where": "Table 1", "paper": 99.33, "unit": "%",
             "ours": 99.061, "compared": {}, "verdict": "reproduced", "rule": "≥ 99"},
            {"key": "gain", "claim": "gain falls", "where": "Fig. 7", "paper": None, "paper_text": "≈ 0",
             "unit": "pts", "ours": 0.5, "compared": {"gain/n=5": 9.3}, "verdict": "reproduced", "rule": "< x"},
            {"key": "t", "claim": "faster", "where": "§4", "paper": None, "unit": "s", "ours": None,
             "compared": {}, "verdict": "not run", "rule": "< y", "run": "cpu · here · 2026-01-02"}]
    text = papers.markdown_table(rows)
    lines = text.strip().splitlines()
    assert lines[0] == "| claim | where | paper | ours | verdict | rule |" and len(lines) == 5
    assert lines[2] == "| accuracy \\| high | Table 1 | 99.33% | 99.06% | reproduced | ≥ 99 |"
    assert lines[3] == "| gain falls | Fig. 7 | ≈ 0 | 0.50 pts (vs 9.30 pts) | reproduced | < x |"
    assert lines[4] == "| faster | §4 | not reported | — | not run | < y |"
    extra = papers.markdown_table(rows[2:], ("key", "ours", "run")).strip().splitlines()
    assert extra[0] == "| metric | ours | run |" and extra[2] == "| `t` | — | cpu · here · 2026-01-02 |"


def test_claim_keys_in_file_order():
    doc = papers.load("pravin2021")
    assert papers.claim_keys("pravin2021") == papers.claim_keys(doc["notebook"])
    assert papers.claim_keys("pravin2021")[0] == doc["claims"][0]["key"]
    with pytest.raises(ValueError, match="notebook_or_name="):
        papers.claim_keys("no_such_chapter")
