"""scripts/stage.py: CIFAR-10 in parts small enough for a device call, rebuilt byte for byte.

All on small synthetic files in tmp_path (random bytes under CIFAR-10's file
names); the real data folder is never read or written. The script is plumbing,
not part of a package, so it is imported from its path.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "stage.py"
_spec = importlib.util.spec_from_file_location("stage", SCRIPT)
stage = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(stage)

PART = 1_000_000


@pytest.fixture(autouse=True)
def data_in_tmp(tmp_path, monkeypatch):
    """Point the data root at tmp_path so no default path can reach the real data/."""
    monkeypatch.setenv("NRLIB_DATA", str(tmp_path / "data_root"))


@pytest.fixture
def src(tmp_path):
    """A fake cifar-10-batches-py/: 400 kB of random bytes per batch, ~2.4 MB in all."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "src"
    folder.mkdir()
    for i, name in enumerate(stage.FILES):
        n = 158 if name == "batches.meta" else 400_000 + i
        (folder / name).write_bytes(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
    return folder


@pytest.fixture
def packed(src, tmp_path):
    out = tmp_path / "gpu"
    return out, stage.pack(src, out, part_bytes=PART)


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_round_trip_is_byte_exact(src, packed, tmp_path):
    out, manifest = packed
    n = len(manifest["parts"])
    assert n == 3, "2.4 MB of random bytes do not compress: three parts of 1 MB"
    assert [p["name"] for p in manifest["parts"]] == [f"cifar10.part{k}of{n}.bin" for k in range(1, n + 1)]
    assert _files(out) == sorted([stage.MANIFEST] + [p["name"] for p in manifest["parts"]]), "no temp files left"
    assert all((out / p["name"]).stat().st_size == p["bytes"] <= PART for p in manifest["parts"])
    assert json.loads((out / stage.MANIFEST).read_text()) == manifest
    assert [f["name"] for f in manifest["files"]] == sorted(stage.FILES)
    assert stage.check(out) == []

    dest = tmp_path / "dest"
    assert stage.unpack(out, dest) == dest
    assert _files(dest) == sorted(stage.FILES)
    for name in stage.FILES:
        assert (dest / name).read_bytes() == (src / name).read_bytes(), name


def test_pack_again_is_a_no_op_and_unpack_keeps_good_files(src, packed, tmp_path, capsys):
    out, manifest = packed
    mtimes = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    capsys.readouterr()
    assert stage.pack(src, out, part_bytes=PART) == manifest
    assert "nothing to do" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes

    dest = stage.unpack(out, tmp_path / "dest")
    (dest / "data_batch_3").write_bytes(b"not the right bytes")
    kept = (dest / "test_batch").stat().st_mtime_ns
    stage.unpack(out, dest)
    assert (dest / "data_batch_3").read_bytes() == (src / "data_batch_3").read_bytes(), "a bad file is rebuilt"
    assert (dest / "test_batch").stat().st_mtime_ns == kept, "a good file is left as it is"


def test_changed_source_is_repacked(src, packed):
    out, manifest = packed
    for name in ("data_batch_1", "data_batch_2"):  # zeros compress to almost nothing: fewer parts
        (src / name).write_bytes(b"\0" * 1000)
    again = stage.pack(src, out, part_bytes=PART)
    assert again != manifest and len(again["parts"]) < len(manifest["parts"])
    assert _files(out) == sorted([stage.MANIFEST] + [p["name"] for p in again["parts"]]), "old parts removed"
    assert stage.check(out) == []


def test_missing_part_is_named(packed, tmp_path):
    out, manifest = packed
    gone = manifest["parts"][1]["name"]
    (out / gone).unlink()
    assert stage.check(out) == [gone]
    with pytest.raises(FileNotFoundError, match=gone) as e:
        stage.unpack(out, tmp_path / "dest")
    assert "given back" in str(e.value) and manifest["parts"][0]["name"] not in str(e.value)
    assert stage.main(["check", "--folder", str(out)]) == 1
    assert stage.main(["unpack", "--folder", str(out), "--dest", str(tmp_path / "dest")]) == 1
    assert not (tmp_path / "dest").exists()


def test_corrupted_part_is_detected(packed, tmp_path):
    out, manifest = packed
    bad = out / manifest["parts"][0]["name"]
    data = bytearray(bad.read_bytes())
    data[1000] ^= 0xFF  # same size, different bytes: only sha256 tells
    bad.write_bytes(bytes(data))
    assert stage.check(out) == [bad.name]
    with pytest.raises(ValueError, match=rf"{bad.name}.*sha256"):
        stage.unpack(out, tmp_path / "dest")
    (out / manifest["parts"][2]["name"]).write_bytes(b"short")
    assert stage.check(out) == [bad.name, manifest["parts"][2]["name"]]


def test_missing_manifest_and_sources_are_clear_errors(src, tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar10.manifest.json"):
        stage.check(tmp_path / "empty")
    (src / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match="test_batch"):
        stage.pack(src, tmp_path / "gpu", part_bytes=PART)


@pytest.mark.parametrize("bad", [0, 99_999, 1.5e6, "60000000", True, 2**27])
def test_bad_part_bytes_names_the_parameter(src, tmp_path, bad):
    with pytest.raises(ValueError, match="part_bytes"):
        stage.pack(src, tmp_path / "gpu", part_bytes=bad)
    assert not (tmp_path / "gpu").exists()


def test_cli_pack_prints_parts_and_carry_paths(src, tmp_path, capsys):
    out = tmp_path / "gpu"
    assert stage.main(["pack", "--src", str(src), "--out", str(out), "--part-bytes", str(PART)]) == 0
    text = capsys.readouterr().out
    manifest = stage.read_manifest(out)
    for k, p in enumerate(manifest["parts"], 1):
        assert p["sha256"][:12] in text and f"call {k}: carry" in text
    assert "bash scripts/gpu_full.sh" in text


def test_runs_as_a_script_from_a_checkout(src, tmp_path):
    # as scripts/gpu_full.sh and `make stage` call it: `python scripts/stage.py ...`, no install needed
    out = tmp_path / "gpu"
    env = {"PATH": "/usr/bin:/bin", "NRLIB_DATA": str(tmp_path / "data_root")}
    run = subprocess.run([sys.executable, str(SCRIPT), "pack", "--src", str(src), "--out", str(out),
                          "--part-bytes", str(PART)], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert "python3 scripts/stage.py check" in run.stdout
    run = subprocess.run([sys.executable, str(SCRIPT), "check", "--folder", str(out)], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=120)
    assert run.returncode == 0 and "3 of 3 parts intact" in run.stdout, run.stdout + run.stderr


# --- malformed input: a clear error naming what is wrong, never a traceback from json or a KeyError ---
def _edit_manifest(out, change):
    path = out / stage.MANIFEST
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("text,match", [
    ('{"format": "nrlib.stage/1", "parts": [', r"is not valid JSON"),   # cut short
    ("", r"is not valid JSON"),
    (b"\xff\xfe\x00garbage", r"is not valid JSON"),
    ("[1, 2]", r"not a valid manifest: it holds a JSON list"),
])
def test_corrupt_manifest_is_a_clear_error(packed, tmp_path, text, match):
    out, _ = packed
    path = out / stage.MANIFEST
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    for call in (lambda: stage.check(out), lambda: stage.unpack(out, tmp_path / "dest"), lambda: stage.read_manifest(out)):
        with pytest.raises(ValueError, match=match):
            call()
    assert stage.main(["check", "--folder", str(out)]) == 1
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize("change,match", [
    (lambda m: m.pop("parts"), r"the fields \['parts'\] are missing"),
    (lambda m: m.pop("files"), r"the fields \['files'\] are missing"),
    (lambda m: m.update(parts=[]), r"parts=\[\] must be a non-empty list"),
    (lambda m: m["parts"][1].pop("sha256"), r"parts\[1\]=.* must be an object with 'name', 'bytes' and 'sha256'"),
    (lambda m: m["files"][0].pop("md5"), r"files\[0\]=.*'md5'"),
    (lambda m: m["parts"][0].update(name="../../escape.bin"), r"parts\[0\]\.name='\.\./\.\./escape\.bin' is not a plain"),
    (lambda m: m["files"][2].update(name="/etc/passwd"), r"files\[2\]\.name='/etc/passwd'"),
    (lambda m: m["parts"][0].update(bytes="1000000"), r"parts\[0\]\.bytes='1000000' must be an integer"),
    (lambda m: m["parts"][0].update(bytes=0), r"parts\[0\]\.bytes=0 is out of range"),
    (lambda m: m["parts"][2].update(sha256="abc"), r"parts\[2\]\.sha256='abc' is not 64"),
    (lambda m: m.update(total_bytes=1), r"total_bytes=1 is not the sum of the files' bytes"),
    (lambda m: m.update(part_bytes=-5), r"part_bytes=-5 is out of range"),
    (lambda m: m["parts"].append(dict(m["parts"][0])), r"parts names a file twice"),
])
def test_manifest_with_bad_fields_names_the_field(packed, tmp_path, change, match):
    out, _ = packed
    _edit_manifest(out, change)
    with pytest.raises(ValueError, match=match):
        stage.check(out)
    with pytest.raises(ValueError, match=match):
        stage.unpack(out, tmp_path / "dest")
    assert stage.main(["unpack", "--folder", str(out), "--dest", str(tmp_path / "dest")]) == 1
    assert not (tmp_path / "dest").exists() and not (tmp_path / "escape.bin").exists()


def test_pack_replaces_a_damaged_manifest(src, packed):
    out, manifest = packed
    (out / stage.MANIFEST).write_text('{"format": "nrlib.stage/1", "files": [')
    assert stage.pack(src, out, part_bytes=PART) == manifest
    assert stage.check(out) == []


def test_missing_or_empty_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar10\.manifest\.json.*no such folder"):
        stage.check(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"cifar10\.manifest\.json in folder=") as e:
        stage.unpack(tmp_path / "empty", tmp_path / "dest")
    assert "no such folder" not in str(e.value)


def test_paths_that_are_not_folders_are_refused(src, packed, tmp_path):
    out, _ = packed
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match=r"^dest='.*a_file' exists and is not a folder"):
        stage.unpack(out, a_file)
    with pytest.raises(ValueError, match=r"^out='.*a_file' exists and is not a folder"):
        stage.pack(src, a_file, part_bytes=PART)
    for bad in (5, b"gpu", ""):
        with pytest.raises(ValueError, match=r"^folder="):
            stage.check(bad)
        with pytest.raises(ValueError, match=r"^src="):
            stage.pack(bad, tmp_path / "gpu2", part_bytes=PART)
    assert a_file.read_text() == "x" and not (tmp_path / "gpu2").exists()


@pytest.mark.parametrize("k,n,match", [(0, 4, r"^k=0"), (5, 4, r"^k=5.*<= 4"), (1, 0, r"^n=0"), (1.0, 4, r"^k=1.0")])
def test_part_name_checks_its_numbers(k, n, match):
    with pytest.raises(ValueError, match=match):
        stage.part_name(k, n)
    assert stage.part_name(2, 4) == "cifar10.part2of4.bin"


def test_pack_for_an_mnist_chapter_stages_no_cifar(src, tmp_path, capsys):
    """`make stage NB=04`: chapter 4 reads MNIST alone, so no CIFAR-10 part is made (and none left
    from an earlier pack rides along), and the one call that runs it carries MNIST."""
    out = tmp_path / "gpu"
    (out / "MNIST" / "raw").mkdir(parents=True)
    (out / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"x" * 100)
    (out / "cifar10.part1of4.bin").write_bytes(b"old")
    assert stage.main(["pack", "--src", str(src), "--out", str(out), "--notebooks", "04"]) == 0
    text = capsys.readouterr().out
    assert "no CIFAR-10 parts" in text and not list(out.glob("cifar10.*"))
    calls = [l for l in text.splitlines() if l.strip().startswith("call ")]
    assert len(calls) == 1 and "MNIST" in calls[0]
    assert "bash scripts/gpu_full.sh --notebooks 04" in calls[0]
    assert stage.main(["pack", "--src", str(src), "--out", str(out), "--notebooks", "05"]) == 0
    assert len(list(out.glob("cifar10.part*"))) >= 1          # a CIFAR-10 chapter gets its parts
    assert "--notebooks 05" in capsys.readouterr().out
