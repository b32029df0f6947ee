"""python -m nrlib.bench at the smoke profile: every section runs, the JSON holds
the numbers the table is made of, and the two kernel-dropout sweeps agree.

Uses the zoo's smoke ResNet-18 (width 8) from data/checkpoints, as the
notebook smoke runs do; if it is not cached yet it trains in ~10 s."""
from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("torchattacks")

from nrlib import bench  # noqa: E402


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "b.json"
    assert bench.main(["--profile", "smoke", "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_record_names_its_environment(record):
    for key in ("device", "device_slug", "torch", "torchattacks", "date", "git_commit", "profile", "memory"):
        assert record[key], key
    assert record["profile"] == "smoke"
    assert record["device_slug"] == bench.device_slug()
    assert " " not in record["device_slug"] and record["device_slug"] == record["device_slug"].lower()
    assert "MiB" in record["memory"]["unit"] and record["memory"]["kind"]


def test_training_section(record):
    tr = record["training"]
    assert tr["zoo_profile"] == "smoke" and isinstance(tr["cached"], bool) and tr["trained_on"]
    assert 0 <= tr["test_acc"] <= 100 and tr["train_seconds"] > 0
    (t,) = tr["throughput"].values()  # smoke: the profile's width only
    assert t["width"] == 8 and t["images_per_s"] > 0
    assert t["images_per_s"] == pytest.approx(t["steps"] * t["batch"] / t["seconds"])


def test_pgd_section(record):
    pg = record["pgd"]
    assert pg["n"] == 32 and pg["steps"] == 10
    assert pg["eps"] == pytest.approx(8 / 255) and pg["alpha"] == pytest.approx(2 / 255)
    for who in ("nrlib", "nrlib_fp32", "torchattacks"):
        assert pg[who]["images_per_s"] > 0, who
        assert 0 <= pg[who]["robust_acc"] <= pg["clean_acc"] + 1e-9, who
        assert pg[who]["memory"]["peak_mib"] > 0, who
    assert pg["ratio_images_per_s"] == pytest.approx(pg["nrlib"]["images_per_s"] / pg["torchattacks"]["images_per_s"])
    assert pg["amp_gap_points"] == pytest.approx(abs(pg["nrlib"]["robust_acc"] - pg["nrlib_fp32"]["robust_acc"]))


def test_kernel_dropout_section(record):
    kd = record["kernel_dropout"]
    assert kd["n"] == 64 and kd["n_kernels"] == 8 == len(kd["acc_vectorised"]) == len(kd["acc_naive"])
    assert kd["vectorised"]["seconds"] > 0 and kd["naive"]["seconds"] > 0
    assert kd["ratio"] == pytest.approx(kd["vectorised"]["kernel_images_per_s"] / kd["naive"]["kernel_images_per_s"])
    assert kd["ratio"] == pytest.approx(kd["naive"]["seconds"] / kd["vectorised"]["seconds"])
    diff = max(abs(a - b) for a, b in zip(kd["acc_vectorised"], kd["acc_naive"]))
    assert kd["max_abs_diff"] == pytest.approx(diff)
    if record["device_type"] == "cpu":
        assert diff == 0 and kd["acc_vectorised"] == kd["acc_naive"]


def test_table_rows(record):
    rows = record["table"]
    assert {"section", "nrlib", "reference", "ratio", "goal", "met"} <= set(rows[0])
    text = bench.format_table(rows)
    assert "PGD-10" in text and "kernel dropout" in text and "train" in text


def test_default_path_is_per_device():
    dev = torch.device("cpu")
    assert bench.default_out("cpu", dev).name == f"{bench.device_slug(dev)}.json"
    assert bench.default_out("smoke", dev).name == f"{bench.device_slug(dev)}-smoke.json"
    assert bench.default_out("cpu", dev).parent.name == "bench"
