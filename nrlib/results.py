"""A notebook's headline numbers, with the environment that produced them.

``write(notebook, profile, metrics, ...)`` stores
``data/results/<notebook>/<profile>.json`` atomically with the device, torch
version, git commit, date and seconds per stage; ``read`` loads it back.
``Timer`` collects the seconds per stage as a notebook runs.
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

import torch

from .data import data_root
from .utils import atomic_write_bytes, check_choice

PROFILES = ("smoke", "cpu", "full")


def results_dir() -> Path:
    return data_root() / "results"


def device_name(device: str | torch.device | None = None) -> str:
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def git_commit() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Timer:
    """Seconds per named stage: ``with timer("train"): ...``; ``timer.seconds``."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str):
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
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def write(notebook: str, profile: str, metrics: dict, *, seconds: dict | None = None,
          params: dict | None = None, device=None, extra: dict | None = None) -> Path:
    """Write ``data/results/<notebook>/<profile>.json`` atomically; return its path."""
    check_choice("profile", profile, PROFILES)
    # numbers.Real: NumPy scalars (pandas cells, np.mean) are numbers too; bools are not metrics
    bad = [k for k, v in metrics.items() if not isinstance(v, numbers.Real) or isinstance(v, bool)]
    if bad:
        raise ValueError(f"metrics must map names to numbers; not numbers: {bad}")
    record = {
        "notebook": notebook, "profile": profile,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device_name(device), "torch": torch.__version__, "python": platform.python_version(),
        "git_commit": git_commit(), "params": _clean(params or {}),
        "seconds": _clean(seconds or {}), "metrics": _clean(metrics), **_clean(extra or {}),
    }
    path = results_dir() / notebook / f"{profile}.json"
    atomic_write_bytes(path, (json.dumps(record, indent=1, sort_keys=False) + "\n").encode())
    return path


def read(notebook: str, profile: str) -> dict:
    path = results_dir() / notebook / f"{profile}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no results for notebook={notebook!r} at profile={profile!r}: {path} is missing")
    return json.loads(path.read_text())


def best(notebook: str) -> dict | None:
    """The largest profile that has results (full > cpu > smoke), or None."""
    for p in ("full", "cpu", "smoke"):
        try:
            return read(notebook, p)
        except FileNotFoundError:
            continue
    return None
