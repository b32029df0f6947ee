"""python -m nrbook.bench at the smoke profile: every section runs, the JSON holds
the numbers the table is made of, and the two kernel-dropout sweeps agree.

Runs in the session's temporary data root (``conftest.tmp_data_root``), never in
the repository's data/: the zoo's smoke ResNet-18 (width 8) is trained there
(~10 s) unless a notebook smoke run of this session already did."""
from __future__ import annotations

import json

import pytest
import torch

from nrbook import bench
from nrlib import papers, profiles


@pytest.fixture(scope="module")
def record(tmp_data_root, tmp_path_factory):
    pytest.importorskip("torchattacks")
    out = tmp_path_factory.mktemp("bench") / "b.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NRLIB_DATA", str(tmp_data_root))
        assert bench.main(["--profile", "smoke", "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_sizes_cover_the_profiles_of_nrlib():
    assert set(bench.SIZES) == set(profiles.PROFILES)


def test_training_goal_is_the_zoo_paper_file():
    (claim,) = [c for c in papers.load("zoo")["claims"] if c["key"] == "test_acc/resnet18"]
    assert bench.zoo_goal("resnet18") == claim["rule"]["value"]
    with pytest.raises(ValueError, match="arch"):
        bench.zoo_goal("lenet")


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
    assert tr["goal_test_acc"] is None and tr["met"] is None      # the goal is the full profile's
    (t,) = tr["throughput"].values()  # smoke: the profile's width only
    assert t["width"] == 8 and t["images_per_s"] > 0
    assert t["images_per_s"] == pytest.approx(t["steps"] * t["batch"] / t["seconds"])


def test_pgd_section(record):
    pg = record["pgd"]
    assert pg["n"] == 32 and pg["steps"] == 10
    assert pg["eps"] == pytest.approx(8 / 255) and pg["alpha"] == pytest.approx(2 / 255)
    assert pg["nrlib"]["attack"].startswith("PGD-10")
    for who in ("nrlib", "torchattacks"):
        assert pg[who]["images_per_s"] > 0, who
        assert 0 <= pg[who]["robust_acc"] <= pg["clean_acc"] + 1e-9, who
        assert pg[who]["memory"]["peak_mib"] > 0, who
    assert pg["ratio_images_per_s"] == pytest.approx(pg["nrlib"]["images_per_s"] / pg["torchattacks"]["images_per_s"])
    if record["device_type"] == "cuda":
        assert pg["nrlib"]["amp_bf16"] and pg["nrlib_fp32"]["images_per_s"] > 0
        assert pg["amp_gap_points"] == pytest.approx(abs(pg["nrlib"]["robust_acc"] - pg["nrlib_fp32"]["robust_acc"]))
    else:   # bf16 is not used on a CPU: one fp32 run, no gap measured (not a gap of 0)
        assert not pg["nrlib"]["amp_bf16"]
        assert pg["nrlib_fp32"] is None and pg["amp_gap_points"] is None and pg["amp_gap_met"] is None
        assert pg["amp_gap_note"] == bench.NOT_MEASURED_ON_CPU


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
    (gap,) = [r for r in rows if r["section"] == "PGD-10 robust acc %: fast vs fp32"]
    if record["device_type"] == "cpu":
        assert gap["reference"] == "not measured on a CPU: both runs are fp32"
        assert gap["ratio"] == "—" and gap["met"] == "—" and "0.00" not in gap["ratio"]


def test_default_path_is_per_device():
    dev = torch.device("cpu")
    assert bench.default_out("cpu", dev).name == f"{bench.device_slug(dev)}.json"
    assert bench.default_out("smoke", dev).name == f"{bench.device_slug(dev)}-smoke.json"
    assert bench.default_out("cpu", dev).parent.name == "bench"


def test_unknown_profile_is_refused():
    with pytest.raises(ValueError, match="profile"):
        bench.run("huge", device="cpu")
