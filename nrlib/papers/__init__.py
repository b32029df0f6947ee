"""The papers' published numbers as data, and the rules that call them reproduced.

One JSON file per paper in this folder (``karnine2024.json``, ``prattico2022.json``) and one for
the model zoo's accuracy goals (``zoo.json``). Each file holds the paper's ``citation``, its
``bibtex`` key (``book/references.bib``), the ``notebook`` whose results it is compared with (the
name under ``data/results/``), a ``source`` sentence saying where the numbers come from, and a
list of ``claims``. A claim is::

    {"key": "pgd_acc/base/eps=0.3",        # the metric key the notebook writes into its results JSON
     "paper": 0.58,                         # the published number, or null where the paper gives none
     "where": "Table 5, Fig. 3",            # where the paper prints or states it
     "claim": "Untargeted PGD at ε = 0.3 leaves the base CNN 0.58% accurate.",
     "rule": {"type": "at_most", "value": 5.0},   # when we call it reproduced
     "unit": "%",                           # optional: "%", "pts", "s", "count" or "" (how numbers print)
     "paper_text": "≈ 5",                   # optional: how the paper states it, when not as a number
     "profiles": ["cpu", "full"]}           # optional: the profiles at which the claim is judged

Several claims may share a key (two tables of the paper printing the same setting, or two
statements about one number). The rules (``RULES``) are small and machine-checkable; ``ours`` is
the claim's metric in the run's ``metrics``:

* ``{"type": "tolerance", "abs": a}`` — |ours − paper| ≤ a (the claim must have a ``paper`` value);
* ``{"type": "at_most", "value": v}`` — ours ≤ v; ``{"type": "at_least", "value": v}`` — ours ≥ v;
* ``{"type": "range", "low": l, "high": h}`` — l ≤ ours ≤ h;
* ``{"type": "less_than", "metric": m, "margin": d}`` — ours < metrics[m] − d (another metric of
  the same run; ``margin`` defaults to 0); ``{"type": "greater_than", "metric": m, "margin": d}``
  — ours > metrics[m] + d;
* ``{"type": "close_to", "metric": m, "abs": a}`` — |ours − metrics[m]| ≤ a;
* ``{"type": "all", "rules": [...]}`` — every rule holds;
* ``{"type": "reported"}`` — no verdict: the number is only shown beside the paper's.

A file may also say, under ``"full_scale"``, what its chapter's ``full`` profile runs where that
is not the paper's own scale (e.g. "20,000 images × 10 epochs, not the paper's 100 epochs"); the
chapter's banner says so instead of "the paper's scale".

Optional fields of a claim besides ``unit``, ``paper_text`` and ``profiles``:

* ``"gates": [{"metric": "clean_acc/base", "at_least": 20, "reason": "model at chance"}]`` —
  validity gates on other metrics of the run (the model trained, the attack working, the control
  twin above chance); a failed gate gives *not judged* with the reason and the value;
* ``"reading": "…"`` — the book's reading of a vague passage fixes the answer: the verdict is
  *fixed by our reading*, with this reason, and the chapter tests the claim under a reading where
  it can go either way if there is one;
* ``"domain": [low, high]`` — the values the metric can take (default by unit: ``%`` → [0, 100]),
  for the test that every rule can fail;
* ``"max_n": {"n": 10000, "what": "MNIST test images"}`` — the largest sample the data hold (a
  file-level ``max_n`` is every claim's default): an inconclusive verdict that would need more
  says so instead of suggesting a sample nobody can draw.

A run's metric may be a ``stats.Estimate`` (a number with its 95% interval and sample size), and a
comparative rule is judged on the difference ``key − metric``: the paired difference the run
stored under ``diff_key(key, metric)``, else both intervals combined as independent
(``stats.difference``). ``judge``/``verdict`` give, in this order of checks: ``"not run"`` (a
metric is missing), ``"judged at full only"`` (measured, but the claim is judged at other
``profiles``), ``"—"`` (reported only), ``"fixed by our reading"``, ``"not judged"`` (a gate
failed), then by the rule on the interval ``"reproduced"`` (it lies inside what the rule
accepts), ``"not reproduced"`` (wholly outside) or ``"inconclusive"`` (it straddles a bound; the
row says about what n would settle it). Where a chapter trains several seeds it stores each
claim's means over them (``seed_evidence``, under ``seeds_key(key)``) and the claim is judged on
those and their t-intervals — the table says "over seeds"; a number of the model rather than a
sample of images (a share of a layer's kernels, a count) has no interval on one run at all. Without
seeds a number without an interval is judged on its point and the table says "(no interval)". RobustBench keeps a model's *reported* robust accuracy beside the
one it measures in the same way. Two tests run over every file (tests/test_papers.py): each rule
holds on the paper's own printed numbers (``evaluate_on_paper``) and each rule can go either way
(``can_go_either_way``).

API: ``names()``, ``load(name)``, ``for_notebook(notebook)``, ``claim_keys(notebook_or_name)``, ``judge`` and
``verdict(claim, metrics)``, ``diff_key``, ``seed_evidence`` and ``seeds_key``, ``evaluate_on_paper``, ``can_go_either_way``,
``rule_text(rule)``, ``claim_metrics(claim)``, ``derived_paper_text``, ``scoreboard(notebook_or_name, metrics)`` and
``markdown_table(rows)``.
No paper number is typed anywhere else in the book: notebooks, the results page and the tests
read them from here.
"""
from __future__ import annotations

import collections
import copy
import functools
import html
import itertools
import json
import math
import numbers
import re
from pathlib import Path

import numpy as np

from .. import stats
from ..profiles import PROFILES
from ..stats import Estimate

HERE = Path(__file__).resolve().parent

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
NOT_JUDGED = "not judged"
BY_READING = "fixed by our reading"
FULL_ONLY = "judged at full only"
NOT_RUN = "not run"
REPORTED = "—"
# the verdicts in the order the tables count them; "judged at … only" names the profiles
# (``judged_only_at``): at a cpu run that is FULL_ONLY
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_JUDGED, BY_READING, FULL_ONLY, NOT_RUN, REPORTED)
VERDICT_MEANINGS = {
    REPRODUCED: "ours, with its 95% interval where the run measured one, clears the paper's claim by the rule",
    NOT_REPRODUCED: "the interval (or, without one, ours) lies entirely on the other side of the rule",
    INCONCLUSIVE: "the interval straddles the rule's threshold; the row says about what sample would settle it",
    NOT_JUDGED: "a validity gate failed (the model at chance, the attack not working): the reason is given",
    BY_READING: "the book's reading of a vague passage decides the answer, so no verdict is claimed",
    FULL_ONLY: "ours is measured, but the claim is judged only at the full profile (its chapter's banner says what it runs)",
    NOT_RUN: "the run did not produce the number",
    REPORTED: "the number is shown beside the paper's, without a rule",
}

# rule type -> (required fields, optional fields) besides "type"
RULES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "tolerance": (("abs",), ()),
    "at_most": (("value",), ("p_at_most",)),
    "at_least": (("value",), ("p_at_most",)),
    "range": (("low", "high"), ()),
    "less_than": (("metric",), ("margin",)),
    "greater_than": (("metric",), ("margin",)),
    "close_to": (("metric", "abs"), ()),
    "all": (("rules",), ()),
    "reported": ((), ()),
}
FILE_FIELDS = ("citation", "bibtex", "notebook", "source", "claims")
CLAIM_FIELDS = ("key", "paper", "where", "claim", "rule")
OPTIONAL_CLAIM_FIELDS = ("unit", "paper_text", "profiles", "gates", "reading", "domain", "max_n")
UNITS = ("%", "pts", "s", "count", "")


def names() -> list[str]:
    """The paper files in this folder, by stem (``["karnine2024", "prattico2022", "zoo"]``)."""
    return sorted(p.stem for p in HERE.glob("*.json"))


# ----------------------------------------------------------------------------
# loading and checking
# ----------------------------------------------------------------------------
def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _check_rule(rule, where: str, *, paper, nested: bool = False) -> None:
    if not isinstance(rule, dict) or rule.get("type") not in RULES:
        got = rule.get("type") if isinstance(rule, dict) else rule
        raise ValueError(f"{where}: rule type {got!r} is not one of {sorted(RULES)}")
    kind = rule["type"]
    required, optional = RULES[kind]
    missing = [f for f in required if f not in rule]
    unknown = sorted(set(rule) - {"type", *required, *optional})
    if missing or unknown:
        raise ValueError(f"{where}: rule {kind!r} needs {list(required)}"
                         f"{f' (optional {list(optional)})' if optional else ''}; missing {missing}, unknown {unknown}")
    if "p_at_most" in rule and not (_is_number(rule["p_at_most"]) and 0 < rule["p_at_most"] < 1):
        raise ValueError(f"{where}: rule {kind!r} field 'p_at_most'={rule['p_at_most']!r} must be a p-value "
                         "threshold in (0, 1)")
    for f in ("abs", "value", "low", "high", "margin"):
        if f in rule and not _is_number(rule[f]):
            raise ValueError(f"{where}: rule {kind!r} field {f!r}={rule[f]!r} must be a finite number")
    if kind in ("tolerance", "close_to") and rule["abs"] < 0:
        raise ValueError(f"{where}: rule {kind!r} needs abs >= 0, got {rule['abs']}")
    if kind == "range" and rule["low"] > rule["high"]:
        raise ValueError(f"{where}: rule 'range' has low={rule['low']} > high={rule['high']}")
    if kind == "tolerance" and not _is_number(paper):
        raise ValueError(f"{where}: rule 'tolerance' compares with the paper's value, but paper={paper!r}")
    if "metric" in rule and not (isinstance(rule["metric"], str) and rule["metric"]):
        raise ValueError(f"{where}: rule {kind!r} needs metric to be a metric key, got {rule['metric']!r}")
    if kind == "reported" and nested:
        raise ValueError(f"{where}: 'reported' cannot be part of an 'all' rule")
    if kind == "all":
        if not isinstance(rule["rules"], list) or not rule["rules"]:
            raise ValueError(f"{where}: rule 'all' needs a non-empty list of rules")
        for sub in rule["rules"]:
            _check_rule(sub, where, paper=paper, nested=True)


def _check_max_n(m, where: str) -> None:
    if not (isinstance(m, dict) and set(m) == {"n", "what"} and isinstance(m["n"], int)
            and not isinstance(m["n"], bool) and m["n"] > 0 and isinstance(m["what"], str) and m["what"].strip()):
        raise ValueError(f"{where}: max_n={m!r} must be {{'n': a positive integer, 'what': what the n counts}}")


def _check_claim(claim, where: str) -> None:
    if not isinstance(claim, dict):
        raise ValueError(f"{where}: a claim must be an object, got {type(claim).__name__}")
    missing = [f for f in CLAIM_FIELDS if f not in claim]
    unknown = sorted(set(claim) - set(CLAIM_FIELDS) - set(OPTIONAL_CLAIM_FIELDS))
    if missing or unknown:
        raise ValueError(f"{where}: a claim needs {list(CLAIM_FIELDS)} (optional {list(OPTIONAL_CLAIM_FIELDS)}); "
                         f"missing {missing}, unknown {unknown}")
    where = f"{where} ({claim['key']!r})"
    for f in ("key", "where", "claim"):
        if not isinstance(claim[f], str) or not claim[f].strip():
            raise ValueError(f"{where}: {f} must be a non-empty string")
    if claim["paper"] is not None and not _is_number(claim["paper"]):
        raise ValueError(f"{where}: paper must be a number or null, got {claim['paper']!r}")
    if claim.get("unit", "") not in UNITS:
        raise ValueError(f"{where}: unit={claim['unit']!r} is not one of {list(UNITS)}")
    if "paper_text" in claim and not isinstance(claim["paper_text"], str):
        raise ValueError(f"{where}: paper_text must be a string")
    if "profiles" in claim:
        prof = claim["profiles"]
        if not isinstance(prof, list) or not prof or any(p not in PROFILES for p in prof):
            raise ValueError(f"{where}: profiles={prof!r} must be a non-empty list of {list(PROFILES)}")
    if "reading" in claim and not (isinstance(claim["reading"], str) and claim["reading"].strip()):
        raise ValueError(f"{where}: reading must be a non-empty string saying why the book's reading decides it")
    if "domain" in claim:
        d = claim["domain"]
        if not (isinstance(d, list) and len(d) == 2 and all(_is_number(x) for x in d) and d[0] < d[1]):
            raise ValueError(f"{where}: domain={d!r} must be [low, high] with low < high")
    if "max_n" in claim:
        _check_max_n(claim["max_n"], where)
    gates = claim.get("gates", [])
    if not isinstance(gates, list):
        raise ValueError(f"{where}: gates must be a list of {{metric, at_least|at_most, reason}}")
    for g in gates:
        bounds = [b for b in ("at_least", "at_most") if isinstance(g, dict) and b in g]
        if not isinstance(g, dict) or set(g) - {"metric", "reason", "at_least", "at_most"} or len(bounds) != 1 \
                or not (isinstance(g.get("metric"), str) and g["metric"]) \
                or not (isinstance(g.get("reason"), str) and g["reason"].strip()) or not _is_number(g[bounds[0]]):
            raise ValueError(f"{where}: gate {g!r} must be {{'metric': key, 'at_least' or 'at_most': number, "
                             "'reason': text}")
    _check_rule(claim["rule"], where, paper=claim["paper"])


@functools.lru_cache(maxsize=None)
def _load(path: str, mtime_ns: int) -> dict:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    where = Path(path).name
    if not isinstance(doc, dict):
        raise ValueError(f"{where}: expected a JSON object with {list(FILE_FIELDS)}")
    missing = [f for f in FILE_FIELDS if f not in doc]
    if missing:
        raise ValueError(f"{where}: missing {missing}; a paper file has {list(FILE_FIELDS)}")
    for f in ("citation", "notebook", "source"):
        if not isinstance(doc[f], str) or not doc[f].strip():
            raise ValueError(f"{where}: {f} must be a non-empty string")
    if doc["bibtex"] is not None and not isinstance(doc["bibtex"], str):
        raise ValueError(f"{where}: bibtex must be a citation key or null")
    if not isinstance(doc["claims"], list) or not doc["claims"]:
        raise ValueError(f"{where}: claims must be a non-empty list")
    if "full_scale" in doc and not (isinstance(doc["full_scale"], str) and doc["full_scale"].strip()):
        raise ValueError(f"{where}: full_scale must say in words what the chapter's full profile runs")
    if "max_n" in doc:
        _check_max_n(doc["max_n"], where)
        for claim in doc["claims"]:
            if isinstance(claim, dict):
                claim.setdefault("max_n", doc["max_n"])
    for i, claim in enumerate(doc["claims"]):
        _check_claim(claim, f"{where}, claim {i}")
    return {**doc, "name": Path(path).stem}


def load(name: str) -> dict:
    """The paper file ``name`` (its stem, e.g. ``"karnine2024"``), checked: every claim has the
    required fields and a known rule type. ValueError for an unknown name (naming the allowed ones)
    or a corrupt file (naming it). The dict is a copy, with ``"name"`` added."""
    allowed = names()
    if name not in allowed:
        raise ValueError(f"name={name!r} is not a paper file; choose one of {allowed}")
    path = HERE / f"{name}.json"
    return copy.deepcopy(_load(str(path), path.stat().st_mtime_ns))


def claim_keys(notebook_or_name: str) -> list[str]:
    """The metric keys of a paper file's claims, in the file's order (by file stem or by the notebook
    it belongs to), e.g. to pick a section's rows of the scoreboard."""
    doc = load(notebook_or_name) if notebook_or_name in names() else for_notebook(notebook_or_name)
    if doc is None:
        raise ValueError(f"notebook_or_name={notebook_or_name!r} is neither a paper file ({names()}) nor a "
                         "notebook one of them belongs to")
    return list(dict.fromkeys(c["key"] for c in doc["claims"]))


def for_notebook(notebook: str) -> dict | None:
    """The paper file whose ``notebook`` field is ``notebook`` (e.g. ``"04_dominant_filters"``,
    or ``"zoo"``), or None when no paper file belongs to it."""
    for name in names():
        doc = load(name)
        if doc["notebook"] == notebook:
            return doc
    return None


# ----------------------------------------------------------------------------
# verdicts
# ----------------------------------------------------------------------------
def _value(metrics: dict, key: str):
    v = (metrics or {}).get(key)
    if isinstance(v, Estimate):
        return v
    return float(v) if _is_number(v) else None


def diff_key(key: str, other: str) -> str:
    """The metric key under which a run stores the *paired* difference ``key − other`` with its
    interval (``stats.paired_difference`` / ``paired_bootstrap``): a comparative rule between the
    two is judged on it. Without it, the difference of the two estimates' intervals (independent
    samples, ``stats.difference``) is used, and without any interval the point values decide."""
    return f"{key} - {other}"


# the set a rule accepts for its quantity: (low, high, low_closed, high_closed)
_INF = math.inf


def _accepts(rule: dict, paper) -> tuple[float, float, bool, bool]:
    kind = rule["type"]
    if kind == "tolerance":
        return paper - rule["abs"], paper + rule["abs"], True, True
    if kind == "at_most":
        return -_INF, rule["value"], False, True
    if kind == "at_least":
        return rule["value"], _INF, True, False
    if kind == "range":
        return rule["low"], rule["high"], True, True
    if kind == "less_than":
        return -_INF, -rule.get("margin", 0.0), False, False
    if kind == "greater_than":
        return rule.get("margin", 0.0), _INF, False, False
    if kind == "close_to":
        return -rule["abs"], rule["abs"], True, True
    raise ValueError(f"rule type {kind!r} has no accepted set")


def _inside(v: float, acc) -> bool:
    lo, hi, lc, hc = acc
    return (v > lo or (lc and v == lo)) and (v < hi or (hc and v == hi))


def _quantity(rule: dict, key: str, ours, metrics: dict):
    """What a rule judges: ours, or ours − the compared metric (with the paired interval the run
    stored under ``diff_key``, else the independent one); None when a compared metric is missing."""
    if "metric" not in rule:
        return ours
    other = _value(metrics, rule["metric"])
    if other is None:
        return None
    paired = (metrics or {}).get(diff_key(key, rule["metric"]))
    if isinstance(paired, Estimate) and paired.has_interval:
        return paired
    return stats.difference(ours, other)


def _judge_rule(rule: dict, key: str, ours, paper, metrics: dict) -> dict | None:
    """``{"verdict", "interval" (bool), "settle" (n or None), "quantity"}`` of one rule; None when a
    metric it needs is missing. With an interval: reproduced when it lies inside the set the rule
    accepts, not reproduced when it lies wholly outside, inconclusive when it straddles a bound."""
    if rule["type"] == "all":
        parts = [_judge_rule(r, key, ours, paper, metrics) for r in rule["rules"]]
        if any(p is None for p in parts):
            return None
        vs = [p["verdict"] for p in parts]
        v = NOT_REPRODUCED if NOT_REPRODUCED in vs else REPRODUCED if all(x == REPRODUCED for x in vs) \
            else INCONCLUSIVE
        settles = [p["settle"] for p in parts if p["verdict"] == INCONCLUSIVE and p["settle"]]
        # the quantity a table prints: that of the first part that decides the verdict (the first
        # part not reproduced, or the first inconclusive one), else a comparative part's difference
        deciding = next((p["quantity"] for p in parts if p["verdict"] == v and v != REPRODUCED), None)
        shown = deciding if deciding is not None else next(
            (p["quantity"] for r, p in zip(rule["rules"], parts) if r["type"] != "all" and "metric" in r),
            parts[0]["quantity"])
        return {"verdict": v, "interval": all(p["interval"] for p in parts),
                "settle": max(settles) if settles else None, "quantity": shown}
    q = _quantity(rule, key, ours, metrics)
    if q is None:
        return None
    if "p_at_most" in rule:
        return _judge_by_p(q, _accepts(rule, paper), rule["p_at_most"])
    return _judge_quantity(q, _accepts(rule, paper))


def _judge_by_p(q, acc, alpha: float) -> dict | None:
    """A rule judged by the test that comes with its quantity (``q.p``: e.g. ``stats.spearman``'s
    permutation p-value) rather than by an interval: reproduced when the point lies in the set the
    rule accepts and p ≤ ``alpha``, not reproduced when it lies outside with p ≤ ``alpha`` (a
    significant effect the other way), inconclusive when p > ``alpha``; without a p-value, the
    interval decides (``_judge_quantity``)."""
    p = getattr(q, "p", None)
    if p is None or not math.isfinite(p):
        return _judge_quantity(q, acc)
    inside = _inside(float(q), acc)
    v = (REPRODUCED if inside else NOT_REPRODUCED) if p <= alpha else INCONCLUSIVE
    return {"verdict": v, "interval": True, "settle": None, "quantity": q}


def _judge_quantity(q, acc) -> dict:
    """The verdict of a rule's quantity ``q`` (a number, or an Estimate with its interval) against
    the set ``acc`` the rule accepts (``_accepts``)."""
    point = _inside(float(q), acc)
    if not (isinstance(q, Estimate) and q.has_interval):
        return {"verdict": REPRODUCED if point else NOT_REPRODUCED, "interval": False, "settle": None,
                "quantity": q}
    lo, hi, _, _ = acc
    if _inside(q.low, acc) and _inside(q.high, acc):
        v = REPRODUCED
    elif q.high < lo or q.low > hi or (q.high == lo and not acc[2]) or (q.low == hi and not acc[3]):
        v = NOT_REPRODUCED
    elif q.low == q.high:          # a zero-width interval on a bound: the point decides
        v = REPRODUCED if point else NOT_REPRODUCED
    else:
        v = INCONCLUSIVE
    settle = None
    if v == INCONCLUSIVE:
        bound = min((b for b in (lo, hi) if math.isfinite(b)), key=lambda b: abs(b - float(q)))
        settle = stats.n_to_settle(q, bound)
    return {"verdict": v, "interval": True, "settle": settle, "quantity": q}


def seeds_key(key: str) -> str:
    """The metric key under which a run stores a claim's quantity over training seeds
    (``seed_evidence``): ``"<key> over seeds"``."""
    return f"{key} over seeds"


def seed_evidence(notebook_or_name: str, per_seed: dict, profile: str | None = None) -> dict:
    """The verdicts over training seeds. ``per_seed`` maps each training seed to its run's metrics.
    For every claim (not ``reported``, not fixed by a reading) judged on at least two seeds — its
    gates holding there — the mean over those seeds, with its Student-t interval
    (``stats.seeds``), of ours (cut to the claim's ``domain``: a share's interval stops at 0% and
    100%) and of each comparison's quantity (ours − the compared metric, paired within each seed),
    under ``seeds_key`` of the claim's key and of its ``diff_key``s. Merged into the first seed's
    metrics, :func:`judge` decides the claim on them: a claim is about models trained this way, and
    the seeds, not the images of one training run, are its sample — which matters most where one
    run's images all agree (a share decided per model, a number of the model such as a count of
    kernels). The table then says "over seeds"."""
    doc = load(notebook_or_name) if notebook_or_name in names() else for_notebook(notebook_or_name)
    if doc is None:
        raise ValueError(f"notebook_or_name={notebook_or_name!r} is neither a paper file ({names()}) nor a "
                         "notebook one of them belongs to")
    if not isinstance(per_seed, dict) or not all(isinstance(m, dict) for m in per_seed.values()):
        raise ValueError("per_seed must map each seed to its run's metrics (a dict of dicts)")
    out = {}
    for c in doc["claims"]:
        if c["rule"]["type"] == "reported" or c.get("reading"):
            continue
        ok = [m for m in per_seed.values()
              if judge(c, m, profile)["verdict"] in (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)]
        if len(ok) < 2:
            continue
        est = stats.seeds([float(_value(m, c["key"])) for m in ok])
        lo, hi = domain(c)
        if est.has_interval and (est.low < lo or est.high > hi):
            est = Estimate(float(est), max(est.low, lo), min(est.high, hi), n=est.n, level=est.level,
                           method=est.method + f", within [{_num(lo)}, {_num(hi)}]", unit=est.unit)
        out[seeds_key(c["key"])] = est
        for r in _leaves(c["rule"]):
            if "metric" in r:
                q = [float(_quantity(r, c["key"], _value(m, c["key"]), m)) for m in ok]
                out[seeds_key(diff_key(c["key"], r["metric"]))] = stats.seeds(q)
    return out


def _gate_failure(gate: dict, metrics: dict) -> str | None:
    """The reason a validity gate fails on this run, '' when its metric is missing, None when it holds."""
    v = _value(metrics, gate["metric"])
    if v is None:
        return ""
    if ("at_least" in gate and float(v) < gate["at_least"]) or ("at_most" in gate and float(v) > gate["at_most"]):
        bound = f"≥ {_num(gate['at_least'])}" if "at_least" in gate else f"≤ {_num(gate['at_most'])}"
        return f"{gate['reason']} ({gate['metric']} = {float(v):.4g}, needs {bound})"
    return None


def missing_reason(metric: str) -> str:
    """Why a claim is ``not run``: the number its run lacks (its own, one its rule compares it
    with, or a gate's), as ``judge`` gives it in ``reason``: ``"no fgsm_acc/base/eps=0.0314"``."""
    return f"no {metric}"


def judged_only_at(profiles) -> str:
    """The verdict of a measured claim judged only at other profiles: ``"judged at full only"``."""
    return f"judged at {' and '.join(profiles)} only"


def judge(claim: dict, metrics: dict, profile: str | None = None) -> dict:
    """The verdict of one claim on one run, with its evidence: ``{"verdict", "reason", "interval"
    (whether an interval decided it), "settle" (for an inconclusive one: about the n that would
    settle it, or None), "settle_unit" (what that n counts where it is not the data's samples:
    ``"seeds"``), "beyond" (the claim's ``max_n`` where that n exceeds it, else None),
    "quantity" (the number judged: ours, or ours − the compared metric, an ``Estimate`` where the
    run gave its interval)}``. The order of the checks:

    1. ``not run`` — ours, a metric the rule compares with, or a gate's metric is missing (the
       ``reason`` names it: ``missing_reason``);
    2. ``judged at full only`` — measured, but the claim is judged at other ``profiles``;
    3. ``—`` — a ``reported`` claim, shown without a verdict;
    4. ``fixed by our reading`` — the claim's ``reading`` says the book's reading decides it;
    5. ``not judged`` — a validity ``gate`` failed (the model at chance, the attack not working);
    6. ``reproduced`` / ``not reproduced`` / ``inconclusive`` by the rule: on the means over
       training seeds where the run stored them (``seed_evidence``, under ``seeds_key``), else on
       the run's interval, or, for a number the run gave without one, on the point (``interval``
       False)."""
    _check_claim(claim, "claim")
    out = {"verdict": NOT_RUN, "reason": "", "interval": False, "settle": None, "beyond": None, "settle_unit": "",
           "quantity": None}
    ours = _value(metrics, claim["key"])
    if ours is None:
        return {**out, "reason": missing_reason(claim["key"])}
    if profile is not None and profile not in claim.get("profiles", PROFILES):
        return {**out, "verdict": judged_only_at(claim["profiles"]), "quantity": ours}
    if claim["rule"]["type"] == "reported":
        return {**out, "verdict": REPORTED, "quantity": ours}
    if claim.get("reading"):
        return {**out, "verdict": BY_READING, "reason": claim["reading"], "quantity": ours}
    res = _judge_rule(claim["rule"], claim["key"], ours, claim["paper"], metrics)
    if res is None:
        lost = next(m for m in _compared(claim["rule"]) if _value(metrics, m) is None)
        return {**out, "reason": missing_reason(lost)}
    over = (metrics or {}).get(seeds_key(claim["key"]))
    if isinstance(over, Estimate) and over.has_interval:          # seed_evidence's: the seeds decide
        pairs = {diff_key(claim["key"], m): metrics.get(seeds_key(diff_key(claim["key"], m)))
                 for m in _compared(claim["rule"])}
        # ... unless they agree exactly: a zero-width t-interval (the same value on every seed, a
        # share at 0% or 100% on each) says nothing about the spread; the run's own interval decides
        if all(isinstance(v, Estimate) and v.has_interval and v.high > v.low for v in (over, *pairs.values())):
            res = _judge_rule(claim["rule"], claim["key"], over, claim["paper"], {**metrics, **pairs})
    for gate in claim.get("gates", []):
        why = _gate_failure(gate, metrics)
        if why == "":
            return {**out, "reason": missing_reason(gate["metric"])}
        if why:
            return {**out, "verdict": NOT_JUDGED, "reason": why, "quantity": ours}
    unit = stats.sample_unit(res["quantity"])       # seeds are not the data's samples
    cap = claim.get("max_n")
    capped = cap and (not unit or unit in cap["what"])     # a cap in the quantity's own unit
    beyond = cap if capped and res["settle"] and res["settle"] > cap["n"] else None
    return {**out, **res, "beyond": beyond, "settle_unit": unit}


def verdict(claim: dict, metrics: dict, profile: str | None = None) -> str:
    """The verdict of one claim on one run's ``metrics`` (values may be ``stats.Estimate``s with
    their intervals): see :func:`judge` for the order of the checks and the seven outcomes."""
    return judge(claim, metrics, profile)["verdict"]


def evaluate_on_paper(claim: dict, numbers: dict) -> str | None:
    """The rule of ``claim`` evaluated on the paper's own printed numbers (``numbers``: metric key
    → the paper's value), ignoring profiles, gates and readings: ``reproduced`` or ``not
    reproduced``, or None when the paper does not print every number the rule needs or the claim
    is only reported. A rule the paper's own numbers fail is a wrong rule."""
    _check_claim(claim, "claim")
    if claim["rule"]["type"] == "reported" or not _is_number(numbers.get(claim["key"])):
        return None
    res = _judge_rule(claim["rule"], claim["key"], float(numbers[claim["key"]]), claim["paper"], numbers)
    return None if res is None else res["verdict"]


def paper_numbers(doc: dict) -> dict:
    """The metric key → value map of a paper file's printed numbers (the first claim that prints a
    key gives its value)."""
    out: dict = {}
    for c in doc["claims"]:
        if _is_number(c["paper"]):
            out.setdefault(c["key"], float(c["paper"]))
    return out


def domain(claim: dict) -> tuple[float, float]:
    """The values a claim's metric can take: its ``domain`` field, else by unit (``%`` → [0, 100],
    ``count``/``s`` → [0, 1e9]), else the real line (±1e9)."""
    if "domain" in claim:
        return tuple(claim["domain"])
    unit = claim.get("unit", "")
    return (0.0, 100.0) if unit == "%" else (0.0, 1e9) if unit in ("count", "s") else (-1e9, 1e9)


def can_go_either_way(claim: dict, doc: dict) -> tuple[bool, bool]:
    """Whether values exist in the metrics' domains that make ``claim``'s rule say reproduced, and
    values that make it say not reproduced (a grid over each domain, its bounds, the rule's
    thresholds and their neighbours). A rule that cannot fail is a defect."""
    others = {c["key"]: c for c in doc["claims"]}
    keys = claim_metrics(claim)

    def candidates(c: dict) -> list[float]:
        lo, hi = domain(c)
        pts = set(np.linspace(lo, hi, 41).tolist()) | {lo, hi}
        for r in _leaves(claim["rule"]):
            for f in ("abs", "value", "low", "high", "margin"):
                if f in r:
                    for s in (r[f], -r[f]):
                        pts |= {s - 1e-3, s, s + 1e-3}
            if r["type"] == "tolerance":
                pts |= {claim["paper"] + d for d in (-r["abs"] - 1e-3, 0.0, r["abs"] + 1e-3)}
        return sorted(p for p in pts if lo <= p <= hi)

    seen = set()
    grids = [candidates(others.get(k, claim)) for k in keys]
    # the claim's own grid against every compared metric's grid, two at a time
    for combo in itertools.product(*grids):
        res = _judge_rule(claim["rule"], claim["key"], combo[0], claim["paper"], dict(zip(keys, combo)))
        if res is not None:
            seen.add(res["verdict"])
        if {REPRODUCED, NOT_REPRODUCED} <= seen:
            break
    return REPRODUCED in seen, NOT_REPRODUCED in seen


def _leaves(rule: dict) -> list[dict]:
    return [x for r in rule["rules"] for x in _leaves(r)] if rule["type"] == "all" else [rule]


def _num(v) -> str:
    return f"{v:g}"


def rule_text(rule: dict) -> str:
    """A short human-readable form of a rule: ``"|ours − paper| ≤ 0.5"``, ``"< toggle_gain/binary/n=5"``."""
    kind = rule["type"]
    if kind == "tolerance":
        return f"|ours − paper| ≤ {_num(rule['abs'])}"
    p = f" (permutation p ≤ {_num(rule['p_at_most'])})" if "p_at_most" in rule else ""
    if kind == "at_most":
        return f"≤ {_num(rule['value'])}{p}"
    if kind == "at_least":
        return f"≥ {_num(rule['value'])}{p}"
    if kind == "range":
        return f"in [{_num(rule['low'])}, {_num(rule['high'])}]"
    if kind in ("less_than", "greater_than"):
        m = rule.get("margin", 0.0)
        op, sign = ("<", "−") if kind == "less_than" else (">", "+")
        if m < 0:
            m, sign = -m, "+" if sign == "−" else "−"
        return f"{op} {rule['metric']}" + (f" {sign} {_num(m)}" if m else "")
    if kind == "close_to":
        return f"within {_num(rule['abs'])} of {rule['metric']}"
    if kind == "all":
        return " and ".join(rule_text(r) for r in rule["rules"])
    if kind == "reported":
        return "shown, no verdict"
    raise ValueError(f"rule type {kind!r} is not one of {sorted(RULES)}")


def _compared(rule: dict) -> list[str]:
    """The other metrics a rule compares ours with."""
    return [r["metric"] for r in _leaves(rule) if "metric" in r]


def claim_metrics(claim: dict) -> list[str]:
    """Every metric key a claim reads from a run: its own and those its rule compares it with."""
    return list(dict.fromkeys([claim["key"], *_compared(claim["rule"])]))


def derived_paper_text(claim: dict, numbers: dict) -> str | None:
    """What the paper prints for a comparative claim that has no number of its own, read from the
    file's printed numbers (``paper_numbers``) rather than typed twice: ``"92.9 vs 93"`` for a claim
    on ``clean_acc/…/sensitivity`` compared with ``clean_acc/…/standard`` when the paper prints
    both; None when it does not print them all."""
    if claim["paper"] is not None or claim["rule"]["type"] == "reported":
        return None
    keys = claim_metrics(claim)
    if len(keys) < 2 or not all(k in numbers for k in keys):
        return None
    return f"{numbers[keys[0]]:g} vs " + ", ".join(f"{numbers[k]:g}" for k in keys[1:])


def scoreboard(notebook_or_name: str, metrics: dict | None, profile: str | None = None) -> list[dict]:
    """One row per claim of a paper file (by file stem, or by the notebook it belongs to) on one
    run's ``metrics`` (None: no run; values may be ``stats.Estimate``s) made at ``profile`` (None:
    not checked): ``key``, ``claim``, ``where``, ``paper`` (number or None), ``paper_text``,
    ``unit``, ``profiles`` (where the claim is judged), ``ours`` (number, Estimate or None),
    ``compared`` ({other metric: its value} for the rules that compare two metrics of the run),
    ``verdict``, ``reason`` (a failed gate's or a reading's), ``interval`` (whether an interval
    decided the verdict), ``settle`` (for an inconclusive one, about the n that would settle it),
    ``beyond`` (the claim's ``max_n`` when that n exceeds what the data hold),
    ``quantity`` (what was judged: ours, or the difference with its interval) and ``rule``
    (``rule_text``)."""
    doc = load(notebook_or_name) if notebook_or_name in names() else for_notebook(notebook_or_name)
    if doc is None:
        covered = [load(n)["notebook"] for n in names()]
        raise ValueError(f"notebook_or_name={notebook_or_name!r} is neither a paper file ({names()}) nor a "
                         f"notebook one of them belongs to ({covered})")
    metrics = metrics or {}
    numbers = paper_numbers(doc)
    rows = []
    for c in doc["claims"]:
        j = judge(c, metrics, profile)
        rows.append({"key": c["key"], "claim": c["claim"], "where": c["where"], "paper": c["paper"],
                     "paper_text": c.get("paper_text") or derived_paper_text(c, numbers),
                     "unit": c.get("unit", ""),
                     "profiles": list(c.get("profiles", PROFILES)), "ours": _value(metrics, c["key"]),
                     "compared": {m: _value(metrics, m) for m in _compared(c["rule"])},
                     "verdict": j["verdict"], "reason": j["reason"], "interval": j["interval"],
                     "settle": j["settle"], "settle_unit": j["settle_unit"], "beyond": j["beyond"],
                     "quantity": j["quantity"],
                     "rule": rule_text(c["rule"])})
    return rows


def verdict_class(v: str) -> str:
    """The verdict a count or a colour groups ``v`` under: every ``judged at … only`` is
    ``FULL_ONLY``'s class."""
    return FULL_ONLY if v.startswith("judged at ") else v


# ----------------------------------------------------------------------------
# a markdown table
# ----------------------------------------------------------------------------
def fmt(v, unit: str = "") -> str:
    """A number as the tables print it: two decimals, then the unit (``"99.06%"``, ``"12.18 pts"``);
    a count (``unit="count"``) as an integer with thousands separators (``"120,042"``)."""
    if v is None:
        return "—"
    if unit == "count":
        return f"{v:,.0f}"
    text = f"{v:.1f}" if unit == "s" else f"{v:.2f}"
    return text + ("%" if unit == "%" else f" {unit}" if unit else "")


def paper_cell(row: dict) -> str:
    """The paper's value of a scoreboard row as printed: its ``paper_text``, else the number."""
    if row.get("paper_text"):
        return row["paper_text"]
    return fmt(row["paper"], row.get("unit", "")) if row.get("paper") is not None else "not reported"


def interval_text(v, unit: str = "") -> str:
    """``v`` with its interval as the tables print it: ``"16.00% [11.40, 21.80], n = 200"``, and what
    n counts where it is not images (``"n = 3 seeds"``, ``"n = 200 draws"``); a plain number (or an
    Estimate without an interval) as ``fmt`` prints it."""
    text = fmt(v, unit)
    if isinstance(v, Estimate) and v.has_interval:
        lo, hi = fmt(v.low, "count" if unit == "count" else ""), fmt(v.high, "count" if unit == "count" else "")
        text += f" [{lo}, {hi}]"
    if isinstance(v, Estimate) and v.n:
        text += f", n = {v.n:,}" + (f" {v.unit}" if v.unit else "")
    return text


def _signed(v, unit: str) -> str:
    t = interval_text(v, "count" if unit == "count" else ("pts" if unit == "%" else unit))
    return ("+" if float(v) >= 0 else "") + t


def _ours_cell(row: dict) -> str:
    if row.get("ours") is None:
        return "—"
    unit = row.get("unit", "")
    text = interval_text(row["ours"], unit)
    others = [fmt(v, unit) for v in (row.get("compared") or {}).values() if v is not None]
    q = row.get("quantity")
    judged = isinstance(q, Estimate) and q.has_interval and row.get("interval")
    unit_q = stats.sample_unit(q) if judged else ""        # seed_evidence's mean over seeds, shown
    seeds = unit_q if unit_q != stats.sample_unit(row["ours"]) else ""   # unless ours is one already
    if others and judged:
        over = f" over {seeds}" if seeds else ""
        return text + f" (vs {', '.join(others)}; difference{over} {_signed(q, unit)})"
    if seeds:
        return text + f" (mean over {seeds} {interval_text(q, unit)})"
    return text + (f" (vs {', '.join(others)})" if others else "")


def verdict_cell(row: dict) -> str:
    """The verdict as the tables print it, with its reason: ``"not judged: model at chance (…)"``,
    ``"inconclusive (n ≈ 800 would settle it)"`` (or that n is more than the data hold); a verdict decided on a point value without an
    interval says so (``"reproduced (no interval)"``)."""
    v = row["verdict"]
    if v in (NOT_JUDGED, BY_READING) and row.get("reason"):
        return f"{v}: {row['reason']}"
    if v == INCONCLUSIVE and row.get("beyond"):
        cap = row["beyond"]
        return (f"{v} (n ≈ {row['settle']:,} would settle it: more than the {cap['n']:,} {cap['what']} "
                "there are)")
    if v == INCONCLUSIVE and row.get("settle"):
        unit = f" {row['settle_unit']}" if row.get("settle_unit") else ""
        return v + f" (n ≈ {row['settle']:,}{unit} would settle it)"
    if v == INCONCLUSIVE:
        return v
    if v in (REPRODUCED, NOT_REPRODUCED) and not row.get("interval", True):
        return f"{v} (no interval)"
    return v


COLUMNS = {
    "key": ("metric", lambda r: f"`{r['key']}`"),
    "claim": ("claim", lambda r: r["claim"]),
    "where": ("where", lambda r: r["where"]),
    "paper": ("paper", paper_cell),
    "ours": ("ours", _ours_cell),
    "verdict": ("verdict", verdict_cell),
    "rule": ("rule", lambda r: r["rule"]),
}
DEFAULT_COLUMNS = ("claim", "where", "paper", "ours", "verdict", "rule")


# ----------------------------------------------------------------------------
# the verdict tables as a reader meets them (the chapters' and the results page's)
# ----------------------------------------------------------------------------
READER_CLASS = "nrbook-verdicts"          # the container's class: book/_static/custom.css styles it
_KEY = re.compile(r"[A-Za-z_][\w.=+-]*(?:/[\w.=+-]+)+")     # a metric key inside a rule's text


def short_key(key: str, own: str) -> str:
    """A metric key as a row that compares with it names it: the path segments where it differs from
    the row's own key (``clean_acc/vgg19/standard`` in the row of ``clean_acc/vgg19/sensitivity`` is
    ``standard``); the whole key when nothing is shared."""
    a, b = key.split("/"), own.split("/")
    if len(a) != len(b):
        return key
    diff = [x for x, y in zip(a, b) if x != y]
    return "/".join(diff) if diff and len(diff) < len(a) else key


def rule_words(row: dict) -> str:
    """A row's rule as the reader's table prints it: each compared metric by its short name
    (``short_key``), the full key in a tooltip (``<abbr title=…>``)."""
    def name(m):
        key = m.group(0)
        return f'<abbr title="{html.escape(key)}">{html.escape(short_key(key, row["key"]))}</abbr>'
    return _KEY.sub(name, html.escape(row["rule"], quote=False))


def verdict_badge(row: dict) -> str:
    """The verdict as a coloured badge (``span.nrbook-verdict-<class>``), then its reason as text."""
    v, text = row["verdict"], verdict_cell(row)
    slug = re.sub(r"[^a-z]+", "-", verdict_class(v).lower()).strip("-") or "reported"
    rest = text[len(v):].lstrip(": ").strip() if text.startswith(v) else text
    badge = f'<span class="nrbook-verdict nrbook-verdict-{slug}">{html.escape(v)}</span>'
    return badge + (f" {html.escape(rest, quote=False)}" if rest else "")


def reader_table(rows: list[dict], *, lead: tuple[str, ...] = ()) -> str:
    """``rows`` (from ``scoreboard``) as the book shows them to a reader: a Markdown table in a
    ``nrbook-verdicts`` container with the claim (and where the paper prints it) taking the width,
    the paper's value, ours, and the verdict as a badge above its rule in words (``rule_words``).
    ``lead`` names row fields printed as they are in columns before the claim (the results page's
    ``section``). The book's stylesheet stacks the rows on a phone."""
    heads = [*lead, "claim", "paper", "ours", "verdict · rule"]
    body = [[*[r.get(c, "") for c in lead], f"{r['claim']} *({r['where']})*", paper_cell(r), _ours_cell(r),
             f"{verdict_badge(r)}<br><small>{rule_words(r)}</small>"] for r in rows]
    return f":::{{container}} {READER_CLASS}\n{pipe_table(heads, body)}:::\n"


SCOREBOARD_META = "nrbook_scoreboard"   # an output's metadata: {"notebook", "keys"} of its table
FOLD_OVER = 12                          # a chapter's whole table folds below its summary past this


def verdict_markdown(rows: list[dict], *, whole: bool = False) -> str:
    """A chapter's verdict table (``reader_table``); ``whole``, the chapter's closing table of every
    claim, opens with the verdict counts (``verdict_summary``) and, past ``FOLD_OVER`` rows, folds
    the table below them."""
    table = reader_table(rows)
    if not whole:
        return table
    head = f"**{len(rows)} claims:** {verdict_summary(rows)}.\n\n"
    if len(rows) <= FOLD_OVER:
        return head + table
    return head + f"::::{{dropdown}} The {len(rows)} claims, section by section\n{table}::::\n"


def verdict_summary(rows: list[dict]) -> str:
    """How many of ``rows`` got each verdict, in ``VERDICTS`` order: ``"12 reproduced · 3 inconclusive"``."""
    counts = collections.Counter(verdict_class(r["verdict"]) for r in rows)
    return " · ".join(f"{counts[v]} {'shown without a verdict' if v == REPORTED else v}"
                      for v in VERDICTS if counts.get(v))


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: list[dict], columns=DEFAULT_COLUMNS) -> str:
    """``rows`` (from ``scoreboard``) as a markdown table. ``columns`` names the columns, in
    order: the row fields of ``COLUMNS`` (formatted as the book prints them), or any other field
    of the rows, printed as it is (e.g. a ``run`` column the results page adds)."""
    heads = [COLUMNS[c][0] if c in COLUMNS else c for c in columns]
    return pipe_table(heads, [[COLUMNS[c][1](r) if c in COLUMNS else r.get(c, "") for c in columns] for r in rows])


def pipe_table(header: list, rows: list[list]) -> str:
    """A Markdown pipe table of ``header`` and ``rows`` (cells as ``str``, with '|'
    escaped and newlines folded) — the one table writer of the book's pages."""
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "|".join([" --- "] * len(header)) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
