"""Small shared helpers: device choice, seeding, argument checks, atomic writes.

Every public function of nrlib validates its arguments with the ``check_*``
helpers below, so that bad input fails early with a message that names the
parameter, the value and what is allowed, instead of a traceback from deep
inside torch.
"""
from __future__ import annotations

import ctypes
import math
import numbers
import os
import platform
import random
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch


DEVICE_TYPES = ("cpu", "cuda", "mps")


MALLOC_KEEP = 32 << 20      # bytes: glibc's largest mmap threshold (DEFAULT_MMAP_THRESHOLD_MAX)


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed blocks of up to 32 MiB for reuse, instead of unmapping them.

    PyTorch on the CPU frees a batch's activations and gradients each step and allocates them again
    the next. Under glibc's default the larger of these blocks are ``mmap``ed and unmapped every time,
    so each step faults in freshly zeroed pages: on a 2-core CPU a third of a
    ResNet-20 training process's time was kernel time, at about 180,000 page faults a second. Fixing
    ``M_MMAP_THRESHOLD`` (which also ends glibc's dynamic threshold) and raising ``M_TRIM_THRESHOLD``
    keeps those blocks in the heap: there, a step went from 0.41 s to 0.34 s (1.19×), its page faults
    from about 25,000 to about 100. The numbers computed are unchanged; only memory is reused.
    ``nrlib`` calls this once on import; ``NRLIB_MALLOC=default`` in the environment leaves glibc's
    default. Returns whether it applied: False off Linux/glibc, where there is nothing to set."""
    if os.environ.get("NRLIB_MALLOC", "keep") not in ("keep", "default"):
        raise ValueError(f"NRLIB_MALLOC={os.environ['NRLIB_MALLOC']!r} is not allowed; use 'keep' (the "
                         "default: reuse freed blocks) or 'default' (glibc's own setting)")
    if os.environ.get("NRLIB_MALLOC") == "default" or platform.system() != "Linux" \
            or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3                   # <malloc.h>
    return bool(mallopt(m_mmap_threshold, MALLOC_KEEP)) and bool(mallopt(m_trim_threshold, 8 * MALLOC_KEEP))


def get_device(device: str | torch.device | None = None) -> torch.device:
    """``cuda`` when a GPU is present, else ``cpu`` (or the device asked for:
    ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or a ``torch.device``)."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        return device
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in DEVICE_TYPES:
        raise ValueError(f"device={device!r} is not a device; use one of {list(DEVICE_TYPES)} "
                         "(optionally with an index, e.g. 'cuda:0'), a torch.device, or None for the default")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} asks for a CUDA GPU, but torch sees none here; use 'cpu' or None")
    return dev


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); return a CPU generator."""
    check_int("seed", seed, low=0)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------
def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    allowed = list(allowed)
    try:
        ok = value in allowed
    except (TypeError, RuntimeError):     # e.g. a tensor compared with strings
        ok = False
    if isinstance(value, bool):           # True == 1 == 1.0: a bool is a choice only where listed as one
        ok = any(a is value for a in allowed)
    if not ok:
        raise ValueError(f"{name}={value!r} is not allowed; choose one of {allowed}")
    return value


def _interval(low, high, low_open, high_open) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high}")
    return " and ".join(parts)


def check_number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> float:
    """A finite real number (not a bool, not a string) in the given range."""
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 0:   # a 0-d tensor/array is a number
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}={value!r} must be a number"
                         + (f" {_interval(low, high, low_open, high_open)}" if low is not None or high is not None
                            else ""))
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name}={value!r} must be finite")
    if (low is not None and (v < low or (low_open and v == low))) or \
            (high is not None and (v > high or (high_open and v == high))):
        raise ValueError(f"{name}={value!r} is out of range; it must be {_interval(low, high, low_open, high_open)}")
    return v


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """An integer (Python or NumPy; not a bool, not a float) in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        rng = _interval(low, high, False, False)
        raise ValueError(f"{name}={value!r} must be an integer" + (f" {rng}" if rng else ""))
    check_number(name, int(value), low=low, high=high)
    return int(value)


def check_fraction(name: str, value: Any, *, low_open: bool = False, high_open: bool = False) -> float:
    """A probability or share in [0, 1] (``low_open``/``high_open`` exclude an end)."""
    return check_number(name, value, low=0.0, high=1.0, low_open=low_open, high_open=high_open)


def check_bool(name: str, value: Any, *, allow_none: bool = False) -> bool | None:
    """``True`` or ``False`` (or ``None`` where ``allow_none``); 0/1 and strings are refused."""
    if value is None and allow_none:
        return None
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name}={value!r} must be True or False" + (" or None" if allow_none else ""))
    return bool(value)


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.=+-]*")


def check_name(name: str, value: Any) -> str:
    """A plain name that is safe as one file or folder name: letters, digits and
    ``_ - . = +``, not empty, not starting with '.', no path separators."""
    if not isinstance(value, str) or len(value) > 200 or not _PLAIN_NAME.fullmatch(value):
        raise ValueError(f"{name}={value!r} is not a plain name; use a non-empty string of letters, digits, "
                         "'_', '-', '.', '=' and '+' that does not start with '.' (no '/', '\\' or '..' paths)")
    return value


def check_callable(name: str, value: Any, what: str = "a callable") -> Any:
    if not callable(value):
        raise ValueError(f"{name}={value!r} must be {what}")
    return value


def check_model(model: Any, name: str = "model") -> torch.nn.Module:
    """A ``torch.nn.Module`` (the models of ``nrlib.models`` or any classifier)."""
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"{name} must be a torch.nn.Module (e.g. nrlib.models.build('base')), "
                         f"got {type(model).__name__}")
    return model


def check_eps(eps: Any, name: str = "eps") -> float:
    """ε is in [0, 1] pixel units throughout the book: 8/255 for the papers' 'ε=8'."""
    return check_number(name, eps, low=0.0, high=1.0)


def check_pixels(x: torch.Tensor, name: str = "x", *, allow_empty: bool = False,
                 allow_uint8: bool = False) -> torch.Tensor:
    """Inputs are images in [0, 1], shaped N×C×H×W, finite and (unless
    ``allow_empty``) at least one image; ``allow_uint8`` also takes raw bytes."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of pixels in [0, 1], got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must be a batch shaped N×C×H×W, got shape {tuple(x.shape)}")
    if x.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name} is an empty batch (shape {tuple(x.shape)}); it must hold at least one image")
    if allow_uint8 and x.dtype == torch.uint8:
        return x
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor of pixels in [0, 1], got dtype {x.dtype}")
    if x.numel():
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} holds NaN or inf values; pixels must be finite numbers in [0, 1]")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"{name} must hold pixels in [0, 1]; its values span [{lo:.4g}, {hi:.4g}]")
    return x


def check_labels(y: torch.Tensor, n: int, num_classes: int | None = None, name: str = "y") -> torch.Tensor:
    """Class indices: a 1-D integer tensor of ``n`` labels in [0, num_classes)."""
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        what = f"a {type(y).__name__}" if not isinstance(y, torch.Tensor) else f"a {y.dim()}-D {y.dtype} tensor"
        raise ValueError(f"{name} must be a 1-D integer tensor of class indices, got {what}")
    if y.numel() != n:
        raise ValueError(f"{name} has {y.numel()} labels but the batch has {n} images")
    if num_classes is not None and y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"{name} holds classes in [{int(y.min())}, {int(y.max())}]; "
                         f"the model has {num_classes} classes, so they must be in [0, {num_classes - 1}]")
    return y.long()


def check_indices(name: str, idx: Any, size: int | None) -> list[int]:
    """A list (or 1-D tensor/array) of integer indices in [0, size), repeats
    allowed; ``size=None`` checks only that they are integers ≥ 0."""
    rng = f"in [0, {size - 1}]" if size is not None else ">= 0"
    vals = check_list(name, idx, min_len=0, what=f"integer indices {rng}")
    for v in vals:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name} must hold integer indices {rng}; got {v!r}")
    bad = [int(v) for v in vals if int(v) < 0 or (size is not None and int(v) >= size)]
    if bad:
        raise ValueError(f"{name}={bad} are outside [0, {size - 1}] ({size} to choose from)" if size is not None
                         else f"{name}={bad} are negative; indices must be >= 0")
    return [int(v) for v in vals]


def check_list(name: str, value: Any, *, min_len: int = 1, what: str = "values") -> list:
    """A list, tuple, set or 1-D tensor/array of at least ``min_len`` items, as a
    Python list (tensor and array items become Python numbers); a single number,
    a string or a dict is refused. The items are the caller's to check."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        ok = value.ndim == 1
    else:
        ok = isinstance(value, Iterable) and not isinstance(value, (str, bytes, dict))
    if not ok:
        raise ValueError(f"{name}={value!r:.80} must be a list of {what}, not a single number, string or dict")
    items = value.tolist() if isinstance(value, (torch.Tensor, np.ndarray)) else list(value)
    if len(items) < min_len:
        raise ValueError(f"{name}={items!r:.80} holds {len(items)} item(s); it must hold at least {min_len} {what}")
    return items


def check_input(model: Any, x: Any, name: str = "x", **pixel_kw) -> torch.Tensor:
    """``check_model`` and ``check_pixels``, then that the images fit the model:
    the channels (and, where fixed, the size) of ``model.input_shape``, and the
    device of its parameters."""
    check_model(model)
    check_pixels(x, name, **pixel_kw)
    want = getattr(model, "input_shape", None)
    got = tuple(x.shape[1:])
    if want is not None and any(w is not None and w != g for w, g in zip(want, got)):
        shown = "×".join("any" if w is None else str(w) for w in want)
        raise ValueError(f"{name} holds images shaped {'×'.join(map(str, got))} (C×H×W), but the "
                         f"{getattr(model, 'arch', '') or type(model).__name__} model for "
                         f"{getattr(model, 'dataset', '?')!r} takes {shown}")
    p = next(iter(model.parameters()), None)
    if p is not None and p.device != x.device:
        raise ValueError(f"{name} is on {x.device} but the model is on {p.device}; move one to the other's "
                         "device (.to(device))")
    return x


def num_classes(model: torch.nn.Module) -> int | None:
    """The number of classes of a classifier: ``model.num_classes`` if set, else
    the ``out_features`` of its last ``nn.Linear`` (None if it has none)."""
    n = getattr(model, "num_classes", None)
    if isinstance(n, int):
        return n
    last = None
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            last = m
    return last.out_features if last is not None else None


def batches(*tensors: torch.Tensor, batch_size: int):
    """Consecutive slices of ``batch_size`` rows of each tensor (one tuple per
    batch; a bare tensor when one is given) — the one batching helper of nrlib."""
    batch_size = check_int("batch_size", batch_size, low=1)
    n = tensors[0].shape[0]
    for i in range(0, n, batch_size):
        parts = tuple(t[i:i + batch_size] for t in tensors)
        yield parts if len(parts) > 1 else parts[0]


# --------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------
def make_readable(path: str | os.PathLike) -> None:
    """Temp files are created 0600; give a published file the usual umask-based mode."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        make_readable(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through a temp file and an atomic rename."""
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())
