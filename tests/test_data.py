"""nrlib.data: MNIST and CIFAR-10 from torchvision's on-disk layout."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

import nrlib.data as nrdata
from nrlib.data import load, per_class


@pytest.fixture
def fresh_cache():
    """Empty the in-memory dataset cache before and after a test that points
    NRLIB_DATA elsewhere, so no test sees another's arrays."""
    nrdata._load_uint8.cache_clear()
    yield
    nrdata._load_uint8.cache_clear()


def test_mnist_test_split_shapes_dtypes_range():
    x, y = load("mnist", "test")
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (10000,) and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert 0.12 < float(x.mean()) < 0.145  # MNIST's test mean pixel is 0.1325: bytes were divided by 255
    assert sorted(y.unique().tolist()) == list(range(10))
    assert torch.bincount(y).min() >= 800  # every digit is well represented


def test_mnist_train_split_size():
    x, y = load("mnist", "train")
    assert x.shape == (60000, 1, 28, 28) and y.shape == (60000,)


def test_cifar10_stratified_subset():
    x, y = load("cifar10", "test", n=100)
    assert x.shape == (100, 3, 32, 32) and x.dtype == torch.float32
    assert torch.bincount(y, minlength=10).tolist() == [10] * 10
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    # seeded: same seed, same subset; another seed, another subset
    x2, y2 = load("cifar10", "test", n=100)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x3, _ = load("cifar10", "test", n=100, seed=1)
    assert not torch.equal(x, x3)


def test_subset_is_a_subset_of_the_split():
    xs, ys = load("mnist", "test", n=50, seed=3)
    x, y = load("mnist", "test")
    idx = torch.from_numpy(nrdata.stratified_subset(y.numpy(), 50, 3))
    assert torch.equal(xs, x[idx]) and torch.equal(ys, y[idx])


def test_stratified_subset_balanced_for_any_n():
    y = np.repeat(np.arange(10), 30)
    for n in (1, 7, 10, 95, 300):
        idx = nrdata.stratified_subset(y, n, seed=0)
        assert len(idx) == n == len(set(idx.tolist()))
        counts = np.bincount(y[idx], minlength=10)
        assert counts.max() - counts.min() <= 1


def test_uint8_keeps_bytes():
    xb, yb = load("mnist", "test", n=20, dtype=torch.uint8)
    xf, yf = load("mnist", "test", n=20)
    assert xb.dtype == torch.uint8 and int(xb.max()) == 255
    assert torch.equal(yb, yf)
    assert torch.allclose(xb.float() / 255.0, xf, atol=0, rtol=0)


def test_returned_tensors_do_not_alias_the_cache():
    x, _ = load("mnist", "test", dtype=torch.uint8)
    x0 = x[0].clone()
    x[0] = 7  # a caller writing into its tensor must not change the next load
    again, _ = load("mnist", "test", dtype=torch.uint8)
    assert torch.equal(again[0], x0)


def test_class_names():
    assert nrdata.class_names("mnist") == [str(i) for i in range(10)]
    names = nrdata.class_names("cifar10")
    assert len(names) == 10 and names[0] == "airplane" and names[-1] == "truck"
    with pytest.raises(ValueError, match="name"):
        nrdata.class_names("svhn")


def test_per_class_returns_k_per_class():
    _, y = load("mnist", "test")
    idx = per_class(y, 5, seed=0)
    assert idx.shape == (50,) and len(set(idx.tolist())) == 50
    assert torch.bincount(y[idx], minlength=10).tolist() == [5] * 10
    assert torch.equal(idx, per_class(y, 5, seed=0))
    assert not torch.equal(idx, per_class(y, 5, seed=1))
    with pytest.raises(ValueError, match=r"\bk="):
        per_class(y, 5000)


@pytest.mark.parametrize("kw,param", [
    (dict(name="svhn", split="test"), "name"),
    (dict(name="mnist", split="val"), "split"),
    (dict(name="mnist", split="test", n=0), "n"),
    (dict(name="mnist", split="test", n=10001), "n"),
])
def test_bad_arguments_name_the_parameter(kw, param):
    with pytest.raises(ValueError, match=rf"^{param}="):
        load(**kw)


def test_corrupt_file_is_named(tmp_path, monkeypatch, fresh_cache):
    src = nrdata.data_root() / "MNIST" / "raw"
    dst = tmp_path / "MNIST" / "raw"
    dst.mkdir(parents=True)
    for f in nrdata.MNIST_FILES:
        shutil.copyfile(src / f, dst / f)  # copyfile: the copies are writable
    bad = dst / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(bad.read_bytes())
    raw[-1] ^= 0xFF
    bad.write_bytes(bytes(raw))
    monkeypatch.setenv("NRLIB_DATA", str(tmp_path))
    assert nrdata.data_root() == tmp_path
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz") as e:
        load("mnist", "test")
    assert str(bad.resolve()) in str(e.value) and "md5" in str(e.value)


def test_intact_copy_loads(tmp_path, monkeypatch, fresh_cache):
    # the same copy without the altered byte loads: the test above fails for the right reason
    src = nrdata.data_root() / "MNIST" / "raw"
    dst = tmp_path / "MNIST" / "raw"
    dst.mkdir(parents=True)
    for f in nrdata.MNIST_FILES:
        shutil.copyfile(src / f, dst / f)
    monkeypatch.setenv("NRLIB_DATA", str(tmp_path))
    x, y = load("mnist", "test", n=10)
    assert x.shape == (10, 1, 28, 28)


@pytest.mark.parametrize("name,folder,files", [
    ("mnist", nrdata.MNIST_DIR, nrdata.MNIST_FILES),
    ("cifar10", nrdata.CIFAR_DIR, nrdata.CIFAR_FILES),
])
def test_missing_dataset_names_folder_and_files(tmp_path, monkeypatch, fresh_cache, name, folder, files):
    calls = []

    def no_network(n, root):
        calls.append((n, root))
        return "URLError: no network in the tests"

    monkeypatch.setattr(nrdata, "_try_download", no_network)
    monkeypatch.setenv("NRLIB_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError) as e:
        load(name, "test")
    msg = str(e.value)
    assert str(tmp_path.resolve() / folder) in msg
    for f in files:
        assert f in msg
    assert "no network in the tests" in msg  # the download attempt's error is reported
    assert calls == [(name, tmp_path.resolve())]


def test_missing_files_names_what_is_not_on_disk(tmp_path):
    assert sorted(nrdata.missing_files("mnist", tmp_path)) == sorted(nrdata.MNIST_FILES)
    assert sorted(nrdata.missing_files("cifar10", tmp_path)) == sorted(nrdata.CIFAR_FILES)
    (tmp_path / nrdata.MNIST_DIR).mkdir(parents=True)
    (tmp_path / nrdata.MNIST_DIR / "t10k-images-idx3-ubyte.gz").write_bytes(b"")
    assert "t10k-images-idx3-ubyte.gz" not in nrdata.missing_files("mnist", tmp_path)
    with pytest.raises(ValueError, match=r"name='svhn'"):
        nrdata.missing_files("svhn", tmp_path)
