"""Checkpoints: ``save_checkpoint`` writes weights and plain-value metadata atomically with a
SHA-256 over the tensors; ``load_checkpoint`` reads them with ``torch.load(..., weights_only=True)``
and names a truncated, altered or mismatched file."""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn as nn

from .utils import atomic_torch_save, check_model, get_device


class CorruptCheckpointError(ValueError):
    """A checkpoint file that cannot be read or whose tensors fail their checksum."""


class CheckpointMismatchError(ValueError):
    """A checkpoint whose weights do not fit the model it is loaded into."""


def _digest(state: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


_PLAIN = (str, int, float, bool, type(None))


def _check_meta(value, where: str = "meta") -> None:
    """Only what ``torch.load(..., weights_only=True)`` reads back: plain Python
    values (exact types: a NumPy float or torch's version string is refused on
    load), lists, tuples, dicts with string keys, and tensors."""
    if type(value) in _PLAIN or isinstance(value, torch.Tensor):
        return
    if type(value) in (list, tuple):
        for i, v in enumerate(value):
            _check_meta(v, f"{where}[{i}]")
        return
    if type(value) in (dict, OrderedDict):
        for k, v in value.items():
            if type(k) is not str:
                raise ValueError(f"{where} has the key {k!r}; checkpoint meta keys must be strings")
            _check_meta(v, f"{where}[{k!r}]")
        return
    raise ValueError(f"{where}={value!r} is a {type(value).__name__}, which a weights_only checkpoint cannot "
                     "hold; use str, int, float, bool, None, lists, dicts or tensors (e.g. float(x), str(v))")


def save_checkpoint(path: str | Path, model_or_state, meta: dict | None = None) -> Path:
    """Write weights + ``meta`` (plain Python values) atomically, with a checksum."""
    if not isinstance(path, (str, Path)) or not str(path):
        raise ValueError(f"path={path!r} must be a file path (str or pathlib.Path)")
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ValueError(f"model_or_state must be an nn.Module or a state dict of name → tensor, "
                         f"got {type(model_or_state).__name__}")
    if meta is not None and not isinstance(meta, dict):
        raise ValueError(f"meta={meta!r} must be a dict of plain values (or None)")
    _check_meta(dict(meta or {}))
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    return atomic_torch_save({"state_dict": state, "meta": dict(meta or {}), "sha256": _digest(state)}, path)


def load_checkpoint(path: str | Path, model: nn.Module | None = None, *, map_location="cpu") -> tuple[dict, dict]:
    """Load with ``weights_only=True``; verify the checksum; optionally load into
    ``model``. Returns ``(state_dict, meta)``. Raises ``CorruptCheckpointError``."""
    if not isinstance(path, (str, Path)) or not str(path):
        raise ValueError(f"path={path!r} must be a file path (str or pathlib.Path)")
    path = Path(path)
    if model is not None:
        check_model(model)
    if isinstance(map_location, str):   # 'gpu' and friends get get_device's message
        map_location = get_device(map_location)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
        state, meta, digest = obj["state_dict"], obj["meta"], obj["sha256"]
    except Exception as e:
        raise CorruptCheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}: {e}); "
                                     "delete it to retrain") from e
    if _digest(state) != digest:
        raise CorruptCheckpointError(f"checkpoint {path} fails its SHA-256 check; delete it to retrain")
    if model is not None:
        _check_fits(path, state, meta, model)
        model.load_state_dict(state)
    return state, meta


def _check_fits(path: Path, state: dict, meta: dict, model: nn.Module) -> None:
    """Name the file and the architecture it holds when its weights do not fit ``model``."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if not (missing or extra or shapes):
        return
    held = meta.get("arch", "an unknown architecture") if isinstance(meta, dict) else "an unknown architecture"
    held_ds = f" for {meta['dataset']!r}" if isinstance(meta, dict) and meta.get("dataset") else ""
    held_kw = f" {meta['model_kwargs']}" if isinstance(meta, dict) and meta.get("model_kwargs") else ""
    target = getattr(model, "arch", "") or type(model).__name__
    target_ds = f" for {model.dataset!r}" if getattr(model, "dataset", "") else ""
    what = "; ".join(p for p in (f"missing {missing[:3]}" + ("…" if len(missing) > 3 else "") if missing else "",
                                 f"unexpected {extra[:3]}" + ("…" if len(extra) > 3 else "") if extra else "",
                                 f"shapes differ: {shapes[:3]}" + ("…" if len(shapes) > 3 else "") if shapes else "")
                     if p)
    raise CheckpointMismatchError(f"checkpoint {path} holds {held!r}{held_ds}{held_kw}, which does not fit the "
                                  f"{target!r} model{target_ds} it is loaded into ({what}); "
                                  f"build models.build({held!r}, ...) with the same settings to load it")
