"""nrlib.papers: every paper file loads and is well formed, every rule type gives the right
verdict (including "not run" and each failing case), and the scoreboard rows and markdown table.

The rule tests use made-up claims; the papers' own numbers are only read from the files."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from nrlib import papers, stats
from nrlib.profiles import PROFILES
from nrlib.stats import Estimate

NOTEBOOKS = {"karnine2024": "04_dominant_filters", "prattico2022": "05_toggle_activity",
             "pravin2021": "01_fragile_kernels", "suri2020": "02_one_neuron",
             "zhang2021": "03_neuron_sensitivity", "rankings": "06_neuron_rankings", "zoo": "zoo"}


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
    ({**_file([claim({"type": "reported"})]), "full_scale": ""}, "full_scale must say"),
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
    assert papers.judge(claim(rule), {"m": 1.0})["reason"] == "no o"          # names what is missing


def test_not_run_names_the_missing_number_ours_or_a_gates():
    c = claim({"type": "at_most", "value": 5.0}, gates=[{"metric": "g", "at_least": 1.0, "reason": "r"}])
    assert papers.judge(c, {})["reason"] == papers.missing_reason("m") == "no m"
    assert papers.judge(c, {"m": 1.0}) | {"reason": None} == papers.judge(c, {}) | {"reason": None}
    assert papers.judge(c, {"m": 1.0})["reason"] == "no g"
    assert papers.judge(c, {"m": 1.0, "g": 2.0})["reason"] == ""               # judged: no reason


def test_a_claim_judged_at_other_profiles_says_so_at_this_one():
    c = claim({"type": "at_least", "value": 1.0}, profiles=["full"])
    assert papers.verdict(c, {"m": 5.0}, "full") == "reproduced"
    assert papers.verdict(c, {"m": 5.0}, "cpu") == "judged at full only" == papers.FULL_ONLY
    assert papers.verdict(c, {}, "cpu") == "not run"                     # "not run" only without a number
    assert papers.verdict(c, {"m": 5.0}) == "reproduced"                 # profile not given: not checked
    two = claim({"type": "at_least", "value": 1.0}, profiles=["cpu", "full"])
    assert papers.verdict(two, {"m": 5.0}, "smoke") == "judged at cpu and full only"
    assert papers.verdict_class("judged at cpu and full only") == papers.FULL_ONLY


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
             "unit": "pts", "ours": 0.5, "compared": {"gain/n=5": 9.3}, "verdict": "reproduced", "rule": "< x",
             "interval": False},
            {"key": "t", "claim": "faster", "where": "§4", "paper": None, "unit": "s", "ours": None,
             "compared": {}, "verdict": "not run", "rule": "< y", "run": "cpu · here · 2026-01-02"}]
    text = papers.markdown_table(rows)
    lines = text.strip().splitlines()
    assert lines[0] == "| claim | where | paper | ours | verdict | rule |" and len(lines) == 5
    assert lines[2] == "| accuracy \\| high | Table 1 | 99.33% | 99.06% | reproduced | ≥ 99 |"
    assert lines[3] == "| gain falls | Fig. 7 | ≈ 0 | 0.50 pts (vs 9.30 pts) | reproduced (no interval) | < x |"
    assert lines[4] == "| faster | §4 | not reported | — | not run | < y |"
    extra = papers.markdown_table(rows[2:], ("key", "ours", "run")).strip().splitlines()
    assert extra[0] == "| metric | ours | run |" and extra[2] == "| `t` | — | cpu · here · 2026-01-02 |"


def test_short_keys_name_what_differs_from_the_rows_own():
    assert papers.short_key("clean_acc/vgg19/standard", "clean_acc/vgg19/sensitivity") == "standard"
    assert papers.short_key("a/m/x=1/e=2", "a/m/x=3/e=4") == "x=1/e=2"
    assert papers.short_key("levenshtein_random/vgg16", "lev/vgg16/pool5") == "levenshtein_random/vgg16"
    assert papers.short_key("k/v", "k/v") == "k/v"                       # nothing differs: the key


def test_the_readers_table():
    rows = [{"key": "acc/b", "claim": "accuracy | high", "where": "Table 1", "paper": 99.33, "unit": "%",
             "ours": 99.061, "compared": {"acc/a": 98.0}, "verdict": "reproduced", "interval": False,
             "rule": "> acc/a + 0.5", "section": "[04 §1](x.ipynb#a)"},
            {"key": "t", "claim": "faster", "where": "§4", "paper": None, "unit": "s", "ours": None,
             "compared": {}, "verdict": "not judged", "reason": "model at chance (10% < 20%)", "rule": "< y"}]
    lines = papers.reader_table(rows, lead=("section",)).strip().splitlines()
    assert lines[0] == ":::{container} nrbook-verdicts" and lines[-1] == ":::" and len(lines) == 6
    assert lines[1] == "| section | claim | paper | ours | verdict · rule |"
    assert lines[3] == ("| [04 §1](x.ipynb#a) | accuracy \\| high *(Table 1)* | 99.33% | 99.06% (vs 98.00%) | "
                        '<span class="nrbook-verdict nrbook-verdict-reproduced">reproduced</span> (no interval)'
                        '<br><small>&gt; <abbr title="acc/a">a</abbr> + 0.5</small> |')
    assert ('<span class="nrbook-verdict nrbook-verdict-not-judged">not judged</span> model at chance '
            "(10% &lt; 20%)<br><small>&lt; y</small>") in lines[4]
    assert papers.verdict_summary(rows) == "1 reproduced · 1 not judged"
    # a chapter's closing table: counted, and folded when long
    assert papers.verdict_markdown(rows, whole=True).startswith("**2 claims:** 1 reproduced · 1 not judged.")
    many = papers.verdict_markdown(rows * papers.FOLD_OVER, whole=True)
    assert "::::{dropdown}" in many and many.rstrip().endswith("::::")
    assert papers.verdict_markdown(rows) == papers.reader_table(rows)


def test_claim_keys_in_file_order():
    doc = papers.load("pravin2021")
    assert papers.claim_keys("pravin2021") == papers.claim_keys(doc["notebook"])
    assert papers.claim_keys("pravin2021")[0] == doc["claims"][0]["key"]
    with pytest.raises(ValueError, match="notebook_or_name="):
        papers.claim_keys("no_such_chapter")


# ----------------------------------------------------------------------------
# verdicts on intervals, gates, readings
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("rule, ours, expected", [
    ({"type": "at_least", "value": 10.0}, Estimate(16.0, 11.0, 21.0, n=200), "reproduced"),
    ({"type": "at_least", "value": 14.0}, Estimate(16.0, 11.0, 21.0, n=200), "inconclusive"),
    ({"type": "at_least", "value": 25.0}, Estimate(16.0, 11.0, 21.0, n=200), "not reproduced"),
    ({"type": "at_most", "value": 14.0}, Estimate(16.0, 11.0, 21.0, n=200), "inconclusive"),
    ({"type": "tolerance", "abs": 3.0}, Estimate(10.5, 9.0, 12.0, n=500), "reproduced"),       # paper 10
    ({"type": "tolerance", "abs": 3.0}, Estimate(12.0, 9.0, 15.0, n=100), "inconclusive"),
    ({"type": "tolerance", "abs": 3.0}, Estimate(16.0, 14.0, 18.0, n=100), "not reproduced"),
    ({"type": "range", "low": 0.0, "high": 20.0}, Estimate(16.0, 11.0, 21.0, n=200), "inconclusive"),
])
def test_a_verdict_is_decided_by_the_interval(rule, ours, expected):
    assert papers.verdict(claim(rule), {"m": ours}) == expected


@pytest.mark.parametrize("rho, p, expected", [
    (-0.4, 0.01, "reproduced"), (-0.4, 0.2, "inconclusive"), (0.4, 0.01, "not reproduced"),
    (0.1, 0.3, "inconclusive")])
def test_a_rule_with_p_at_most_is_decided_by_the_quantitys_own_test(rho, p, expected):
    """Fig. 2's "success falls with rank": Spearman's ρ < 0 judged by its permutation p-value."""
    rule = {"type": "at_most", "value": 0.0, "p_at_most": 0.05}
    wide = Estimate(rho, -0.9, 0.9, n=20, p=p)          # an interval that could never decide
    assert papers.verdict(claim(rule), {"m": wide}) == expected
    assert papers.verdict(claim(rule), {"m": -0.4}) == "reproduced"        # no test: the point decides
    assert "permutation p ≤ 0.05" in papers.rule_text(rule)
    with pytest.raises(ValueError, match="p_at_most"):
        papers._check_claim(claim({**rule, "p_at_most": 1.5}), "claim")


def test_an_inconclusive_verdict_says_what_n_would_settle_it():
    row = papers.judge(claim({"type": "at_least", "value": 14.0}), {"m": stats.proportion(32, 200)})
    assert row["verdict"] == "inconclusive" and row["settle"] == stats.n_to_settle(stats.proportion(32, 200), 14.0)
    assert "would settle it" in papers.verdict_cell(row)


def test_an_n_beyond_the_data_is_not_suggested(paper_dir):
    """A sample larger than the data hold (MNIST's 10,000 test images) is named as such."""
    cap = {"n": 10000, "what": "test images"}
    m = {"m": stats.proportion(365, 1000)}             # 36.5% on 1,000 images against ≤ 36
    (paper_dir / "capped.json").write_text(json.dumps(_file([claim({"type": "at_most", "value": 36.0})],
                                                             max_n=cap)))
    row = papers.judge(papers.load("capped")["claims"][0], m)
    assert row["verdict"] == "inconclusive" and row["settle"] > 10000 and row["beyond"] == cap
    assert "more than the 10,000 test images there are" in papers.verdict_cell(row)
    near = papers.judge(claim({"type": "at_most", "value": 35.0}, max_n={"n": 100000, "what": "x"}), m)
    assert near["beyond"] is None and "there are" not in papers.verdict_cell(near)


def test_an_n_of_seeds_is_named_and_not_capped_by_the_images():
    three = stats.seeds([97.2, 97.9, 98.6])               # straddles 97.5 over three seeds
    c = claim({"type": "at_least", "value": 97.5}, max_n={"n": 2, "what": "test images"})
    row = papers.judge(c, {"m": three})
    assert row["verdict"] == "inconclusive" and row["settle"] > 2 and row["settle_unit"] == "seeds"
    assert row["beyond"] is None and f"n ≈ {row['settle']:,} seeds would settle it" in papers.verdict_cell(row)
    assert stats.sample_unit(stats.seeds([1.0, 2.0], what="draws")) == "draws"
    assert stats.sample_unit(stats.proportion(3, 10)) == "" and stats.sample_unit(3.0) == ""
    back = stats.Estimate.from_evidence(float(three), three.evidence())     # stored with the results
    assert back.unit == "seeds" and stats.sample_unit(back) == "seeds"
    old = {k: v for k, v in three.evidence().items() if k != "unit"}        # results stored before the field
    assert stats.Estimate.from_evidence(float(three), old).unit == "seeds"
    assert stats.difference(three, stats.seeds([1.0, 2.0, 3.0])).unit == "seeds"
    assert stats.difference(three, stats.proportion(3, 10, scale=100)).unit == ""
    assert "unit" not in stats.proportion(3, 10).evidence()


def test_a_number_of_the_model_is_judged_over_seeds(paper_dir):
    """With several seeds, a claim is judged on its mean over the seeds whose gates hold, with the
    t-interval over seeds — a number of the model (a share of a layer's kernels, a count) as much as
    an accuracy on images; a comparison on the per-seed paired difference; a claim gated on every
    seed but one, and readings, are left to the run."""
    gate = [{"metric": "clean", "at_least": 50.0, "reason": "trained"}]
    claims = [claim({"type": "at_most", "value": 49.9}, key="share", gates=gate, unit="%"),
              claim({"type": "greater_than", "metric": "o"}, key="count"),
              claim({"type": "at_least", "value": 10.0}, key="acc"),
              claim({"type": "at_least", "value": 1.0}, key="read", reading="our reading decides")]
    (paper_dir / "seeds.json").write_text(json.dumps(_file(claims)))
    runs = {s: {"share": v, "clean": 90.0, "count": c, "o": 1.0, "acc": stats.proportion(30, 100),
                "read": 5.0} for s, (v, c) in enumerate([(37.5, 3.0), (43.75, 3.2), (31.25, 2.8)])}
    ev = papers.seed_evidence("seeds", runs)
    assert set(ev) == {papers.seeds_key(k) for k in ("share", "count", "acc", papers.diff_key("count", "o"))}
    share = ev[papers.seeds_key("share")]
    assert float(share) == pytest.approx(37.5) and share.n == 3 and share.unit == "seeds"
    assert float(ev[papers.seeds_key(papers.diff_key("count", "o"))]) == pytest.approx(2.0)   # paired
    assert ev[papers.seeds_key("acc")].low == ev[papers.seeds_key("acc")].high == 30.0     # seeds agree
    first = {**runs[0], **ev}
    one = papers.judge(papers.load("seeds")["claims"][0], runs[0])
    assert one["verdict"] == "reproduced" and not one["interval"]        # one run: its point
    row = papers.judge(papers.load("seeds")["claims"][0], first)
    assert row["verdict"] == "inconclusive" and row["interval"] and row["settle_unit"] == "seeds"
    assert float(row["quantity"]) == pytest.approx(37.5) and row["quantity"].low < 37.5 - 10
    assert papers.judge(papers.load("seeds")["claims"][1], first)["verdict"] == "reproduced"
    same = papers.judge(papers.load("seeds")["claims"][2], first)    # seeds agree exactly: [30, 30]
    assert same["settle_unit"] == "" and same["quantity"].low < 30.0 < same["quantity"].high   # the run's
    table = papers.markdown_table(papers.scoreboard("seeds", first), columns=("ours",))
    assert "37.50% (mean over seeds 37.50% [21.97, 53.03], n = 3 seeds)" in table and "difference over seeds +2.00 [" in table
    wide = papers.seed_evidence("seeds", {s: {**r, "share": v} for (s, r), v in zip(runs.items(), (2.0, 1.0, 40.0))})
    assert wide[papers.seeds_key("share")].low == 0.0          # no claim's domain is left ("%" here)
    runs[1]["clean"] = runs[2]["clean"] = 10.0                           # one seed left: no interval
    assert papers.seeds_key("share") not in papers.seed_evidence("seeds", runs)
    with pytest.raises(ValueError, match="per_seed"):
        papers.seed_evidence("seeds", [runs[0]])
    with pytest.raises(ValueError, match="notebook_or_name"):
        papers.seed_evidence("nope", runs)


def test_a_comparison_is_judged_on_the_paired_difference():
    rule = {"type": "less_than", "metric": "o"}
    rng = np.random.default_rng(0)
    a, b = rng.random(200) < 0.14, rng.random(200) < 0.16
    m = {"m": stats.proportion(a), "o": stats.proportion(b)}
    assert papers.verdict(claim(rule), m) == "inconclusive"            # independent intervals overlap
    clear = {"m": 10.0, "o": 30.0, papers.diff_key("m", "o"): Estimate(-20.0, -26.0, -14.0, n=200)}
    assert papers.verdict(claim(rule), clear) == "reproduced"
    wrong = {"m": 10.0, "o": 30.0, papers.diff_key("m", "o"): Estimate(2.0, 0.5, 3.5, n=200)}
    assert papers.verdict(claim(rule), wrong) == "not reproduced"      # the paired difference decides
    assert papers.verdict(claim(rule), {"m": 10.0, "o": 30.0}) == "reproduced"      # points only


def test_all_rules_combine_interval_verdicts():
    rule = {"type": "all", "rules": [{"type": "at_least", "value": 10.0}, {"type": "at_most", "value": 18.0}]}
    assert papers.verdict(claim(rule), {"m": Estimate(14.0, 12.0, 16.0, n=9)}) == "reproduced"
    assert papers.verdict(claim(rule), {"m": Estimate(16.0, 12.0, 20.0, n=9)}) == "inconclusive"
    assert papers.verdict(claim(rule), {"m": Estimate(25.0, 20.0, 30.0, n=9)}) == "not reproduced"


def test_an_all_rule_with_a_comparison_shows_the_difference():
    """A table row of an 'all' rule prints the comparative part's difference, not ours again."""
    rule = {"type": "all", "rules": [{"type": "at_least", "value": 0.5}, {"type": "greater_than", "metric": "o"}]}
    m = {"m": Estimate(1.0, 1.0, 1.0, n=500), "o": Estimate(0.92, 0.92, 0.92, n=500),
         papers.diff_key("m", "o"): Estimate(0.08, 0.04, 0.1, n=500)}
    row = papers.judge(claim(rule), m)
    assert row["verdict"] == "reproduced" and float(row["quantity"]) == pytest.approx(0.08)
    shown = {**row, "ours": m["m"], "compared": {"o": m["o"]}, "unit": ""}     # as scoreboard fills it
    assert "difference +0.08" in papers.markdown_table([shown], columns=("ours",))


def test_an_all_rule_shows_the_part_that_decides_it():
    """Where one part of an 'all' rule is inconclusive (or fails), the row prints that part's
    quantity, not another part that passed."""
    rule = {"type": "all", "rules": [{"type": "greater_than", "metric": "r"},
                                     {"type": "close_to", "metric": "u", "abs": 2.0}]}
    m = {"m": Estimate(50.0, 45.0, 55.0, n=300), "r": 45.0, "u": 48.0,
         papers.diff_key("m", "r"): Estimate(5.0, 3.0, 7.0, n=300),
         papers.diff_key("m", "u"): Estimate(2.0, -1.7, 5.7, n=300)}
    row = papers.judge(claim(rule), m)
    assert row["verdict"] == "inconclusive" and float(row["quantity"]) == pytest.approx(2.0)
    m[papers.diff_key("m", "u")] = Estimate(0.5, -1.0, 1.5, n=300)
    row = papers.judge(claim(rule), m)
    assert row["verdict"] == "reproduced" and float(row["quantity"]) == pytest.approx(5.0)


def test_a_failed_gate_gives_not_judged_with_the_reason():
    c = claim({"type": "at_most", "value": 5.0},
              gates=[{"metric": "clean", "at_least": 20.0, "reason": "model at chance"}])
    row = papers.judge(c, {"m": 1.0, "clean": 10.7})
    assert row["verdict"] == "not judged" and "model at chance" in row["reason"] and "10.7" in row["reason"]
    assert papers.verdict(c, {"m": 1.0, "clean": 80.0}) == "reproduced"
    assert papers.verdict(c, {"m": 1.0}) == "not run"                    # the gate cannot be checked
    attack = claim({"type": "at_most", "value": 5.0},
                   gates=[{"metric": "pgd_on_standard", "at_most": 50.0, "reason": "the attack does not work"}])
    assert papers.verdict(attack, {"m": 1.0, "pgd_on_standard": 90.0}) == "not judged"


def test_a_declared_reading_is_shown_as_fixed_by_our_reading():
    c = claim({"type": "at_least", "value": 1.0}, reading="the share cannot depend on ε under our reading")
    row = papers.judge(c, {"m": 5.0})
    assert row["verdict"] == "fixed by our reading" and papers.verdict_cell(row).endswith("depend on ε under our reading")


@pytest.mark.parametrize("extra, match", [
    ({"gates": [{"metric": "c", "reason": "x"}]}, "gate"),
    ({"gates": [{"metric": "c", "at_least": 1, "at_most": 2, "reason": "x"}]}, "gate"),
    ({"gates": [{"metric": "c", "at_least": 1}]}, "gate"),
    ({"reading": ""}, "reading"),
    ({"domain": [1, 0]}, "domain"),
    ({"max_n": 10000}, "max_n"),
    ({"max_n": {"n": 0, "what": "images"}}, "max_n"),
])
def test_malformed_gates_readings_domains(paper_dir, extra, match):
    (paper_dir / "bad.json").write_text(json.dumps(_file([claim({"type": "at_least", "value": 1}, **extra)])))
    with pytest.raises(ValueError, match=match):
        papers.load("bad")


def test_the_table_prints_the_interval_and_the_difference():
    rows = papers.scoreboard("prattico2022", {})
    r = {**rows[0], "ours": stats.proportion(32, 200), "verdict": "inconclusive", "settle": 900, "unit": "%"}
    assert "16.00% [11.57, 21.71], n = 200" in papers.markdown_table([r])
    assert "n ≈ 900 would settle it" in papers.markdown_table([r])


# ----------------------------------------------------------------------------
# the two tests over every paper file
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_every_rule_holds_on_the_papers_own_numbers(name):
    """A rule that the paper's own printed numbers fail is a wrong rule."""
    doc = papers.load(name)
    numbers = papers.paper_numbers(doc)
    failed = [(c["key"], c["where"], papers.rule_text(c["rule"])) for c in doc["claims"]
              if papers.evaluate_on_paper(c, numbers) == "not reproduced"]
    assert not failed, failed


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_every_rule_can_go_either_way(name):
    """For each judged rule, values in the metrics' domains exist that give each of reproduced and
    not reproduced: a rule that cannot fail (or cannot pass) is a defect."""
    doc = papers.load(name)
    stuck = [(c["key"], papers.rule_text(c["rule"]), papers.can_go_either_way(c, doc)) for c in doc["claims"]
             if c["rule"]["type"] != "reported" and not c.get("reading")
             and papers.can_go_either_way(c, doc) != (True, True)]
    assert not stuck, stuck


def test_the_two_file_tests_can_fail():
    doc = {"claims": [claim({"type": "range", "low": 0.0, "high": 100.0}, unit="%"),
                      claim({"type": "at_least", "value": 20.0}, paper=10.0, key="x")]}
    assert papers.can_go_either_way(doc["claims"][0], doc) == (True, False)        # a % is always in [0, 100]
    assert papers.evaluate_on_paper(doc["claims"][1], papers.paper_numbers(doc)) == "not reproduced"


def test_a_comparative_claims_paper_cell_is_read_from_the_printed_numbers():
    numbers = {"acc/a": 92.9, "acc/b": 93.0}
    claim = {"key": "acc/a", "paper": None, "where": "T1", "claim": "a ≈ b",
             "rule": {"type": "close_to", "metric": "acc/b", "abs": 2.0}}
    assert papers.derived_paper_text(claim, numbers) == "92.9 vs 93"
    assert papers.derived_paper_text(claim, {"acc/a": 92.9}) is None          # b not printed
    assert papers.derived_paper_text({**claim, "paper": 92.9}, numbers) is None    # has its own
    lone = {**claim, "rule": {"type": "at_least", "value": 90.0}}
    assert papers.derived_paper_text(lone, numbers) is None                   # nothing compared
    rows = papers.scoreboard("suri2020", {})
    row = next(r for r in rows if r["key"] == "clean_acc/vgg19/sensitivity" and r["paper"] is None)
    assert row["paper_text"] == "92.9 vs 93" and papers.paper_cell(row) == "92.9 vs 93"
