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

``verdict`` gives ``"reproduced"``, ``"not reproduced"``, ``"not run"`` (the metric, or one a
rule compares it with, is missing from the run, or the run's profile is not among the claim's
``profiles``: a smoke run does not reach n = 1000, and the zoo's goals are for the full profile)
or ``"—"`` (reported only). RobustBench keeps a
model's *reported* robust accuracy beside the one it measures in the same way.

API: ``names()``, ``load(name)``, ``for_notebook(notebook)``, ``claim_keys(notebook_or_name)``, ``verdict(claim, metrics)``,
``rule_text(rule)``, ``claim_metrics(claim)``, ``scoreboard(notebook_or_name, metrics)`` and
``markdown_table(rows)``.
No paper number is typed anywhere else in the book: notebooks, the results page and the tests
read them from here.
"""
from __future__ import annotations

import copy
import functools
import json
import math
import numbers
from pathlib import Path

from ..profiles import PROFILES

HERE = Path(__file__).resolve().parent

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
NOT_RUN = "not run"
REPORTED = "—"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, NOT_RUN, REPORTED)

# rule type -> (required fields, optional fields) besides "type"
RULES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "tolerance": (("abs",), ()),
    "at_most": (("value",), ()),
    "at_least": (("value",), ()),
    "range": (("low", "high"), ()),
    "less_than": (("metric",), ("margin",)),
    "greater_than": (("metric",), ("margin",)),
    "close_to": (("metric", "abs"), ()),
    "all": (("rules",), ()),
    "reported": ((), ()),
}
FILE_FIELDS = ("citation", "bibtex", "notebook", "source", "claims")
CLAIM_FIELDS = ("key", "paper", "where", "claim", "rule")
OPTIONAL_CLAIM_FIELDS = ("unit", "paper_text", "profiles")
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
    return float(v) if _is_number(v) else None


def _holds(rule: dict, ours: float, paper, metrics: dict) -> bool | None:
    """Whether ``rule`` holds for ``ours``; None when a metric it compares with is missing."""
    kind = rule["type"]
    if kind == "all":
        results = [_holds(r, ours, paper, metrics) for r in rule["rules"]]
        return None if None in results else all(results)
    if kind == "tolerance":
        return abs(ours - paper) <= rule["abs"]
    if kind == "at_most":
        return ours <= rule["value"]
    if kind == "at_least":
        return ours >= rule["value"]
    if kind == "range":
        return rule["low"] <= ours <= rule["high"]
    other = _value(metrics, rule["metric"])
    if other is None:
        return None
    if kind == "less_than":
        return ours < other - rule.get("margin", 0.0)
    if kind == "greater_than":
        return ours > other + rule.get("margin", 0.0)
    if kind == "close_to":
        return abs(ours - other) <= rule["abs"]
    raise ValueError(f"rule type {kind!r} is not one of {sorted(RULES)}")


def verdict(claim: dict, metrics: dict, profile: str | None = None) -> str:
    """The verdict of one claim on one run's ``metrics``: ``"reproduced"``, ``"not reproduced"``,
    ``"not run"`` (its metric, or one its rule compares with, is missing or not a number; or the
    run's ``profile``, when given, is not among the claim's ``profiles``) or ``"—"`` (a
    ``reported`` claim, shown without a verdict)."""
    _check_claim(claim, "claim")
    ours = _value(metrics, claim["key"])
    if ours is None or (profile is not None and profile not in claim.get("profiles", PROFILES)):
        return NOT_RUN
    if claim["rule"]["type"] == "reported":
        return REPORTED
    ok = _holds(claim["rule"], ours, claim["paper"], metrics)
    return NOT_RUN if ok is None else (REPRODUCED if ok else NOT_REPRODUCED)


def _num(v) -> str:
    return f"{v:g}"


def rule_text(rule: dict) -> str:
    """A short human-readable form of a rule: ``"|ours − paper| ≤ 0.5"``, ``"< toggle_gain/binary/n=5"``."""
    kind = rule["type"]
    if kind == "tolerance":
        return f"|ours − paper| ≤ {_num(rule['abs'])}"
    if kind == "at_most":
        return f"≤ {_num(rule['value'])}"
    if kind == "at_least":
        return f"≥ {_num(rule['value'])}"
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
    if rule["type"] == "all":
        return [m for r in rule["rules"] for m in _compared(r)]
    return [rule["metric"]] if "metric" in rule else []


def claim_metrics(claim: dict) -> list[str]:
    """Every metric key a claim reads from a run: its own and those its rule compares it with."""
    return list(dict.fromkeys([claim["key"], *_compared(claim["rule"])]))


def scoreboard(notebook_or_name: str, metrics: dict | None, profile: str | None = None) -> list[dict]:
    """One row per claim of a paper file (by file stem, or by the notebook it belongs to) on one
    run's ``metrics`` (None: no run) made at ``profile`` (None: not checked): ``key``, ``claim``,
    ``where``, ``paper`` (number or None), ``paper_text``, ``unit``, ``profiles`` (where the claim
    is judged), ``ours`` (number or None), ``compared`` ({other metric: its value} for the rules
    that compare two metrics of the run), ``verdict`` and ``rule`` (``rule_text``)."""
    doc = load(notebook_or_name) if notebook_or_name in names() else for_notebook(notebook_or_name)
    if doc is None:
        covered = [load(n)["notebook"] for n in names()]
        raise ValueError(f"notebook_or_name={notebook_or_name!r} is neither a paper file ({names()}) nor a "
                         f"notebook one of them belongs to ({covered})")
    metrics = metrics or {}
    rows = []
    for c in doc["claims"]:
        rows.append({"key": c["key"], "claim": c["claim"], "where": c["where"], "paper": c["paper"],
                     "paper_text": c.get("paper_text"), "unit": c.get("unit", ""),
                     "profiles": list(c.get("profiles", PROFILES)), "ours": _value(metrics, c["key"]),
                     "compared": {m: _value(metrics, m) for m in _compared(c["rule"])},
                     "verdict": verdict(c, metrics, profile), "rule": rule_text(c["rule"])})
    return rows


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


def _ours_cell(row: dict) -> str:
    if row.get("ours") is None:
        return "—"
    text = fmt(row["ours"], row.get("unit", ""))
    others = [fmt(v, row.get("unit", "")) for v in (row.get("compared") or {}).values() if v is not None]
    return text + (f" (vs {', '.join(others)})" if others else "")


COLUMNS = {
    "key": ("metric", lambda r: f"`{r['key']}`"),
    "claim": ("claim", lambda r: r["claim"]),
    "where": ("where", lambda r: r["where"]),
    "paper": ("paper", paper_cell),
    "ours": ("ours", _ours_cell),
    "verdict": ("verdict", lambda r: r["verdict"]),
    "rule": ("rule", lambda r: r["rule"]),
}
DEFAULT_COLUMNS = ("claim", "where", "paper", "ours", "verdict", "rule")


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
