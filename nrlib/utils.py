"""Small shared helpers: device choice, seeding, argument checks, atomic writes.

Every public function of nrlib validates its arguments with the ``check_*``
helpers below, so that bad input fails early with a message that names the
parameter, the value and what is allowed, instead of a traceback from deep
inside torch.
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch


def get_device(device: str | torch.device | None = None) -> torch.device:
    """``cuda`` when a GPU is present, else ``cpu`` (or the device asked for)."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed; choose one of {allowed}")
    return value


def check_number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} must be a number") from None
    if not np.isfinite(v):
        raise ValueError(f"{name}={value!r} must be finite")
    if low is not None and (v < low or (low_open and v == low)):
        op = ">" if low_open else ">="
        rng = f"{op} {low}" + (f" and <= {high}" if high is not None else "")
        raise ValueError(f"{name}={value!r} is out of range; it must be {rng}")
    if high is not None and v > high:
        rng = (f">= {low} and " if low is not None else "") + f"<= {high}"
        raise ValueError(f"{name}={value!r} is out of range; it must be {rng}")
    return v


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name}={value!r} must be an integer")
    check_number(name, value, low=low, high=high)
    return int(value)


def check_eps(eps: Any, name: str = "eps") -> float:
    """ε is in [0, 1] pixel units (DESIGN.md): 8/255 for the papers' 'ε=8'."""
    return check_number(name, eps, low=0.0, high=1.0)


def check_pixels(x: torch.Tensor, name: str = "x") -> torch.Tensor:
    """Inputs are images in [0, 1], shaped N×C×H×W."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of pixels in [0, 1], got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must be a batch shaped N×C×H×W, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor of pixels in [0, 1], got dtype {x.dtype}")
    if x.numel():
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"{name} must hold pixels in [0, 1]; its values span [{lo:.4g}, {hi:.4g}]")
    return x


def check_labels(y: torch.Tensor, n: int, num_classes: int | None = None, name: str = "y") -> torch.Tensor:
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"{name} must be a 1-D integer tensor of class indices")
    if y.numel() != n:
        raise ValueError(f"{name} has {y.numel()} labels but the batch has {n} images")
    if num_classes is not None and y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"{name} holds classes outside [0, {num_classes - 1}]")
    return y.long()


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
