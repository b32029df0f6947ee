"""MNIST and CIFAR-10 from torchvision's on-disk layout, without a network.

``load(name, split)`` reads the files under the data root (``$NRLIB_DATA``,
default ``data/`` in the project), checks their md5 sums and returns tensors
of pixels in [0, 1] (N×C×H×W, float32) and labels (int64), on the device you
ask for, so a whole dataset can stay resident on a GPU.

MNIST is the four original ``.gz`` files of ``MNIST/raw/`` (torchvision's
md5 list). CIFAR-10 is ``cifar-10-batches-py/`` read as torchvision's reader
does (``pickle.load(f, encoding="latin1")``); both the original md5 sums and
those of a lossless rebuild from per-image PNGs are accepted (the project's
``data/README.md`` gives the sources, the sums and how to provide the files
offline). Where the files are missing, torchvision's download is tried; where
that fails too, a ``FileNotFoundError`` says what to download (``DOWNLOADS``),
which files are expected in which folder, and points at ``data/README.md``.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from .utils import check_choice, check_int, get_device

DATASETS = ("mnist", "cifar10")
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8)
SPLITS = ("train", "test")

CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer",
                "dog", "frog", "horse", "ship", "truck"],
}

# md5 sums: torchvision's lists, plus the lossless CIFAR-10 rebuild (data/README.md)
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": {"f68b3c2dcbeaaa9fbdd348bbdeb94873"},
    "train-labels-idx1-ubyte.gz": {"d53e105ee54ea40749a09fcbcd1e9432"},
    "t10k-images-idx3-ubyte.gz": {"9fb629c4189551a2d022fa330f9573f3"},
    "t10k-labels-idx1-ubyte.gz": {"ec29112dd5afa0611ce80d1b7f02629c"},
}
CIFAR_FILES = {
    "data_batch_1": {"c99cafc152244af753f735de768cd75f", "4fc5885c41fa0a85f7871ff7b4802a89"},
    "data_batch_2": {"d4bba439e000b95fd0a9bffe97cbabec", "3660b805b5e8ac463a15d7afcc54639a"},
    "data_batch_3": {"54ebc095f3ab1f0389bbae665268c751", "a23b339d3f6fb5a81d8f655714c7d78d"},
    "data_batch_4": {"634d18415352ddfa80567beed471001a", "3eab58a33e940ca9927af201a5a53be1"},
    "data_batch_5": {"482c414d41f54cd18b22e5b47cb7c3cb", "233a4ddb08459aa4b91ae04d8c3392e7"},
    "test_batch": {"40351d587109b95175f43aff81a1287e", "7eceb4710b0e782b0763c453e6217882"},
}
MNIST_DIR = Path("MNIST") / "raw"
CIFAR_DIR = Path("cifar-10-batches-py")
# where the files come from (named in the error for missing files; data/README.md has the details)
DOWNLOADS = {
    "mnist": "the four .gz files from http://yann.lecun.com/exdb/mnist/ (or torchvision's mirror "
             "https://ossci-datasets.s3.amazonaws.com/mnist/)",
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (the CIFAR-10 python version; "
               "unpacking it gives cifar-10-batches-py/)",
}


def data_root() -> Path:
    """The data root: ``$NRLIB_DATA`` if set, else ``data/`` of the project."""
    env = os.environ.get("NRLIB_DATA")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parent.parent / "data"


def class_names(name: str) -> list[str]:
    check_choice("name", name, DATASETS)
    return list(CLASS_NAMES[name])


def file_digest(path: str | os.PathLike, algo: str = "md5", chunk: int = 1 << 22) -> str:
    """Hex digest of a file (``algo``: any ``hashlib`` name), read in chunks —
    the one file-hash helper of the project (the dataset checks here, the GPU
    staging script)."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def md5(path: str | os.PathLike) -> str:
    """md5 of a file, as torchvision's dataset lists give them."""
    return file_digest(path, "md5")


@functools.lru_cache(maxsize=None)
def _verified(path: str, mtime_ns: int, size: int, allowed: frozenset) -> None:
    digest = md5(path)
    if digest not in allowed:
        raise ValueError(
            f"{path}: md5 {digest} matches none of the known sums {sorted(allowed)}; "
            "the file is corrupt or not the expected dataset file. Delete it and provide "
            "the original file (data/README.md lists the sources and the md5 sums)."
        )


def _check_files(folder: Path, files: dict[str, set[str]]) -> None:
    for fname, sums in files.items():
        p = folder / fname
        st = p.stat()
        _verified(str(p), st.st_mtime_ns, st.st_size, frozenset(sums))


def _missing(folder: Path, files) -> list[str]:
    return [f for f in files if not (folder / f).is_file()]


def missing_files(name: str, root: str | os.PathLike | None = None) -> list[str]:
    """The files of dataset ``name`` (``"mnist"`` or ``"cifar10"``) that are not in its folder under
    ``root`` (default: the data root); empty when all are there (their md5 sums are checked on load)."""
    check_choice("name", name, list(DOWNLOADS))
    return _missing(*_folder_files(name, Path(root) if root is not None else data_root()))


def _folder_files(name: str, root: Path) -> tuple[Path, dict]:
    """Dataset ``name``'s folder under ``root`` and its files with their md5 sums."""
    return (root / MNIST_DIR, MNIST_FILES) if name == "mnist" else (root / CIFAR_DIR, CIFAR_FILES)


def _try_download(name: str, root: Path) -> str | None:
    """torchvision's download path, for machines with a network. Returns an error or None."""
    try:
        import torchvision.datasets as tvd

        if name == "mnist":
            tvd.MNIST(str(root), train=True, download=True)
            tvd.MNIST(str(root), train=False, download=True)
        else:
            tvd.CIFAR10(str(root), train=True, download=True)
        return None
    except Exception as e:  # no network, no torchvision, ...
        return f"{type(e).__name__}: {e}"


def _ensure(name: str, root: Path) -> Path:
    folder, files = _folder_files(name, root)
    missing = _missing(folder, files)
    if missing:
        err = _try_download(name, root)
        missing = _missing(folder, files)
        if missing:
            raise FileNotFoundError(
                f"{name}: {len(missing)} file(s) missing in {folder}: {missing}. Download "
                f"{DOWNLOADS[name]} and put all of {sorted(files)} in {folder}, that is in "
                f"{folder.relative_to(root)}/ under the data root ($NRLIB_DATA if set, else data/ of the "
                f"project; point $NRLIB_DATA at another folder holding {folder.relative_to(root)}/ to read "
                f"them from there). data/README.md gives the sources, the md5 sums and how to provide the "
                f"files offline. torchvision's download was tried and failed: {err}"
            )
    _check_files(folder, files)
    return folder


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[0:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


@functools.lru_cache(maxsize=4)
def _load_uint8(name: str, split: str, root: str) -> tuple[np.ndarray, np.ndarray]:
    folder = _ensure(name, Path(root))
    if name == "mnist":
        prefix = "train" if split == "train" else "t10k"
        x = _read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")[:, None]
        y = _read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")
    else:
        names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        xs, ys = [], []
        for fname in names:
            with open(folder / fname, "rb") as f:
                d = pickle.load(f, encoding="latin1")
            xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d["labels"], dtype=np.int64))
        x, y = np.concatenate(xs), np.concatenate(ys)
    x.setflags(write=False)
    return x, y.astype(np.int64)


def load(name: str, split: str = "train", n: int | None = None, seed: int = 0, *,
         device: str | torch.device | None = "cpu", dtype: torch.dtype = torch.float32,
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Load ``name`` ∈ {"mnist", "cifar10"}, ``split`` ∈ {"train", "test"}.

    Returns ``(x, y)``: ``x`` pixels in [0, 1], N×C×H×W; ``y`` int64 labels.
    ``n`` draws a class-stratified random subset of that size (seeded by
    ``seed``); ``None`` returns the whole split in file order. Use
    ``dtype=torch.uint8`` to keep raw bytes (4× smaller on the device).
    """
    check_choice("name", name, DATASETS)
    check_choice("split", split, SPLITS)
    check_int("seed", seed, low=0)
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not allowed; choose one of {list(DTYPES)} "
                         "(floats hold pixels in [0, 1], uint8 the raw bytes)")
    dev = get_device(device)
    x, y = _load_uint8(name, split, str(data_root().resolve()))
    if n is not None:
        check_int("n", n, low=1, high=len(y))
        idx = stratified_subset(y, n, seed)
        x, y = x[idx], y[idx]
    # the cached arrays are read-only; hand torch its own copy
    xt = torch.from_numpy(np.array(x))
    yt = torch.from_numpy(np.array(y))
    xt, yt = xt.to(dev), yt.to(dev)
    if dtype != torch.uint8:
        xt = xt.to(dtype).div_(255.0)
    return xt, yt


def _class_labels(y, name: str = "y") -> np.ndarray:
    """``y`` as a non-empty 1-D NumPy array of integer class labels (a tensor or an array)."""
    yn = y.detach().cpu().numpy() if torch.is_tensor(y) else np.asarray(y)
    if yn.ndim != 1 or yn.size == 0 or not np.issubdtype(yn.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-D integer array of class labels, not empty; got shape "
                         f"{tuple(yn.shape)} and dtype {yn.dtype}")
    return yn


def stratified_subset(y: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of a random subset of size ``n`` with classes as balanced as possible."""
    y = _class_labels(y)
    check_int("n", n, low=1, high=len(y))
    check_int("seed", seed, low=0)
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    per = [rng.permutation(np.flatnonzero(y == c)) for c in classes]
    # round-robin over classes keeps the subset balanced for any n
    order = np.concatenate([np.stack([p[i] for p in per if i < len(p)])
                            for i in range(max(len(p) for p in per))])
    return np.sort(order[:n])


def per_class(y: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """Indices of the first ``k`` examples of each class after a seeded shuffle
    (Karnine et al. 2024, §3.4: 100 test images per class)."""
    yn = _class_labels(y)
    check_int("k", k, low=1)
    check_int("seed", seed, low=0)
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(yn):
        idx = rng.permutation(np.flatnonzero(yn == c))
        if len(idx) < k:
            raise ValueError(f"k={k} is larger than the {len(idx)} examples of class {c}")
        out.append(np.sort(idx[:k]))
    return torch.from_numpy(np.concatenate(out)).to(y.device if torch.is_tensor(y) else "cpu")


def train_val_split(n_total: int, n_val: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of ``range(n_total)`` into train and validation indices."""
    check_int("n_total", n_total, low=2)
    check_int("n_val", n_val, low=1, high=n_total - 1)
    check_int("seed", seed, low=0)
    perm = np.random.default_rng(seed).permutation(n_total)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])
