"""nrlib.results: a notebook's headline numbers with their environment, as JSON."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from nrlib import results


@pytest.fixture(autouse=True)
def results_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("NRLIB_DATA", str(tmp_path))
    return tmp_path


METRICS = {"clean_acc/base": 99.25, "pgd_acc/base/eps=0.3": 0.5, "n_images": 1000}


def test_write_then_read_round_trips(results_in_tmp):
    seconds = {"train": 12.5, "attack": 3.25}
    params = {"eps": 0.3, "archs": ("shallow", "base")}
    path = results.write("04_test", "smoke", METRICS, seconds=seconds, params=params, device="cpu",
                         extra={"note": "unit test"})
    assert path == results_in_tmp / "results" / "04_test" / "smoke.json" and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["smoke.json"], "no temp files are left"
    rec = results.read("04_test", "smoke")
    assert rec["metrics"] == METRICS
    assert rec["notebook"] == "04_test" and rec["profile"] == "smoke"
    assert rec["seconds"] == seconds
    assert rec["params"] == {"eps": 0.3, "archs": ["shallow", "base"]}
    assert rec["torch"] == torch.__version__
    assert rec["device"].startswith("cpu")
    assert isinstance(rec["git_commit"], str) and rec["git_commit"]
    assert rec["note"] == "unit test" and rec["date"][:2] == "20"
    assert json.loads(path.read_text()) == rec


def test_output_is_strict_json(results_in_tmp):
    def no_constants(c):
        raise AssertionError(f"non-standard JSON constant {c}")

    # None is "not measured" (JSON null); NaN in params is stored as null too
    path = results.write("nb", "cpu", {"acc": None, "x": 1.0}, params={"p": float("nan")})
    rec = json.loads(path.read_text(), parse_constant=no_constants)
    assert rec["metrics"] == {"acc": None, "x": 1.0} and rec["params"] == {"p": None}


def test_numpy_scalars_are_numbers(results_in_tmp):
    results.write("nb", "smoke", {"a": np.float32(97.5), "b": np.int64(3), "c": np.float64(0.25)})
    m = results.read("nb", "smoke")["metrics"]
    assert m == {"a": 97.5, "b": 3, "c": 0.25}


@pytest.mark.parametrize("bad", ["97%", [1.0], True, torch.tensor([1.0, 2.0]), float("nan"), float("inf")])
def test_non_numeric_metric_raises(results_in_tmp, bad):
    with pytest.raises(ValueError, match="metrics.*'acc'"):
        results.write("nb", "smoke", {"ok": 1.0, "acc": bad})
    assert not (results_in_tmp / "results" / "nb" / "smoke.json").exists()


def test_unknown_profile_raises(results_in_tmp):
    with pytest.raises(ValueError, match=r"^profile="):
        results.write("nb", "gpu", {"acc": 1.0})
    assert not (results_in_tmp / "results").exists()


def test_read_missing_and_best(results_in_tmp):
    with pytest.raises(FileNotFoundError, match="nb2"):
        results.read("nb2", "cpu")
    assert results.best("nb2") is None
    results.write("nb2", "smoke", {"acc": 1.0})
    assert results.best("nb2")["profile"] == "smoke"
    results.write("nb2", "full", {"acc": 3.0})
    results.write("nb2", "cpu", {"acc": 2.0})
    assert results.best("nb2")["metrics"] == {"acc": 3.0}


def test_rewrite_replaces_the_file(results_in_tmp):
    results.write("nb", "cpu", {"acc": 1.0})
    results.write("nb", "cpu", {"acc": 2.0})
    assert results.read("nb", "cpu")["metrics"] == {"acc": 2.0}


def test_timer_accumulates_per_stage():
    timer = results.Timer()
    with timer("a"):
        time.sleep(0.02)
    with timer("a"):
        time.sleep(0.02)
    with pytest.raises(KeyError):
        with timer("b"):
            raise KeyError("stage fails")
    assert set(timer.seconds) == {"a", "b"}
    assert 0.035 < timer.seconds["a"] < 1.0 and timer.seconds["b"] >= 0.0


def test_tag_writes_a_setting_into_a_metric_key():
    assert results.tag("eps", 8 / 255) == "eps=0.0314"
    assert results.tag("eps", 0.3) == "eps=0.3"
    assert results.tag("snapshot", 1.0) == "snapshot=1.0" and results.tag("snapshot", 0.1) == "snapshot=0.1"
    assert results.tag("n", 5) == "n=5"
