"""A notebook's headline numbers, with the environment that produced them.

``write(notebook, profile, metrics, ...)`` stores
``data/results/<notebook>/<profile>.json`` atomically with the device, torch
version, git commit, date and seconds per stage; ``read`` loads it back.
``Timer`` collects the seconds per stage as a notebook runs; ``tag`` writes
a setting into a metric key (``eps=0.0314``, ``snapshot=0.1``).

A metric may be a ``stats.Estimate`` (a number with its 95% interval, sample
size and method): ``write`` stores the number under ``metrics`` and the rest
under ``evidence`` with the same key; ``estimates(record)`` puts them back
together (a record written before intervals existed loads as plain numbers).
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import numbers
import platform
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from . import precision
from .stats import Estimate
from .data import data_root
from .utils import atomic_write_bytes, check_choice, check_name, check_number, get_device

from .profiles import PROFILES


class CorruptResultsError(ValueError):
    """A results file that is not valid JSON (or not a results record)."""


def results_dir() -> Path:
    return data_root() / "results"


def tag(name: str, value) -> str:
    """A setting as it appears in a metric key: ``name=value`` with a float written to at most
    four decimals and no trailing zeros (``tag("eps", 8/255)`` → ``eps=0.0314``, ``tag("eps", 0.3)``
    → ``eps=0.3``) but keeping one decimal (``tag("snapshot", 1.0)`` → ``snapshot=1.0``)."""
    check_name("name", name)
    if isinstance(value, (float, np.floating)):
        text = f"{float(value):.4f}".rstrip("0")
        value = text + "0" if text.endswith(".") else text
    return f"{name}={value}"


def device_name(device: str | torch.device | None = None) -> str:
    dev = get_device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


# What a run writes (executed copies, the results page, results JSON): a change
# there does not make the code that produced a number differ from the commit.
OUTPUT_PATHS = (":(exclude)book/*.ipynb", ":(exclude)book/results.md", ":(exclude)data/results")


def git_commit() -> str:
    """The short commit of the code, ``-dirty`` when tracked files other than
    the run outputs (``OUTPUT_PATHS``) differ from it; ``unknown`` outside git."""
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *OUTPUT_PATHS],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Timer:
    """Seconds per named stage: ``with timer("train"): ...``; ``timer.seconds``."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str):
        if not isinstance(stage, str) or not stage:
            raise ValueError(f"stage={stage!r} must be a non-empty string naming the stage")
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0


def _clean(v):
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (torch.Tensor, np.ndarray)):
        return _clean(v.tolist())
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


RECORD_FIELDS = ("notebook", "profile", "date", "device", "torch", "python", "git_commit", "precision",
                 "params", "seconds", "metrics", "evidence", "wall_seconds")


def _path(notebook: str, profile: str) -> Path:
    check_name("notebook", notebook)
    check_choice("profile", profile, PROFILES)
    return results_dir() / notebook / f"{profile}.json"


def _check_numbers(name: str, values, *, low: float | None = None) -> None:
    """``values`` maps non-empty string keys to finite numbers, or to None ("not measured")."""
    if not isinstance(values, dict):
        raise ValueError(f"{name} must be a dict of name → number, got {type(values).__name__}")
    for k, v in values.items():
        if not isinstance(k, str) or not k:
            raise ValueError(f"{name} keys must be non-empty strings; got {k!r}")
        if v is None:
            continue
        # numbers.Real: NumPy scalars (pandas cells, np.mean) are numbers too; bools are not metrics
        if not isinstance(v, numbers.Real) or isinstance(v, bool):
            raise ValueError(f"{name} must map names to numbers (or None for 'not measured'); "
                             f"{name}[{k!r}]={v!r} is not a number")
        check_number(f"{name}[{k!r}]", v, low=low)


def write(notebook: str, profile: str, metrics: dict, *, seconds: dict | None = None,
          params: dict | None = None, device=None, extra: dict | None = None) -> Path:
    """Write ``data/results/<notebook>/<profile>.json`` atomically; return its path.

    ``metrics`` maps names to finite numbers; ``None`` records "not measured"
    (JSON null). NaN and inf are refused: they are usually a bug upstream."""
    path = _path(notebook, profile)
    _check_numbers("metrics", metrics)
    _check_numbers("seconds", seconds or {}, low=0.0)
    for nm, d in (("params", params), ("extra", extra)):
        if d is not None and not isinstance(d, dict):
            raise ValueError(f"{nm} must be a dict or None, got {type(d).__name__}")
    clash = sorted(set(extra or {}) & set(RECORD_FIELDS))
    if clash:
        raise ValueError(f"extra={sorted(extra)} would overwrite the record's own fields {clash}; rename them")
    evidence = {k: v.evidence() for k, v in metrics.items() if isinstance(v, Estimate)}
    record = {
        "notebook": notebook, "profile": profile,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device_name(device), "torch": torch.__version__, "python": platform.python_version(),
        "git_commit": git_commit(), "precision": precision.describe(device),
        "params": _clean(params or {}),
        "seconds": _clean(seconds or {}), "metrics": _clean({k: float(v) if isinstance(v, Estimate) else v
                                                             for k, v in metrics.items()}),
        "evidence": _clean(evidence),
    }
    record.update(_clean(extra or {}))
    try:
        text = json.dumps(record, indent=1, sort_keys=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"params/extra hold a value that JSON cannot store ({e}); "
                         "use numbers, strings, lists and dicts") from None
    atomic_write_bytes(path, (text + "\n").encode())
    return path


def set_wall_seconds(notebook: str, profile: str, seconds: float) -> Path:
    """Record in a results file the wall time of the whole notebook run that
    wrote it (``wall_seconds``: imports, plotting and the slider frames
    included, which the per-stage ``seconds`` leave out), atomically. The
    book's runbook calls it after executing a notebook; the chapter's banner
    and the results page both show this number."""
    seconds = check_number("seconds", seconds, low=0.0)
    rec = read(notebook, profile)
    rec["wall_seconds"] = round(float(seconds), 1)
    atomic_write_bytes(_path(notebook, profile), (json.dumps(rec, indent=1, allow_nan=False) + "\n").encode())
    return _path(notebook, profile)


def read(notebook: str, profile: str) -> dict:
    """The record ``write`` stored; ``FileNotFoundError`` if there is none,
    ``CorruptResultsError`` (a ValueError naming the file) if it is not valid."""
    path = _path(notebook, profile)
    if not path.is_file():
        raise FileNotFoundError(f"no results for notebook={notebook!r} at profile={profile!r}: {path} is missing")
    try:
        rec = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptResultsError(f"results file {path} is not valid JSON ({e}); delete it and re-run "
                                  f"the notebook {notebook!r} at profile={profile!r}") from e
    if not isinstance(rec, dict) or not isinstance(rec.get("metrics"), dict):
        raise CorruptResultsError(f"results file {path} is not a results record (no 'metrics' dict); "
                                  "delete it and re-run the notebook")
    return rec


def estimates(record: dict) -> dict:
    """A record's metrics with their evidence: each metric that was written as a
    ``stats.Estimate`` comes back as one (interval, n, method), the others as
    plain numbers (None stays None)."""
    ev = record.get("evidence") or {}
    return {k: (None if v is None else Estimate.from_evidence(v, ev.get(k)))
            for k, v in (record.get("metrics") or {}).items()}


def best(notebook: str) -> dict | None:
    """The largest profile that has results (full > cpu > smoke), or None."""
    check_name("notebook", notebook)
    for p in ("full", "cpu", "smoke"):
        try:
            return read(notebook, p)
        except FileNotFoundError:
            continue
    return None
