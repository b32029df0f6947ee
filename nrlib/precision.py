"""Numerical precision: where nrlib uses bf16, and where it must not.

* ``autocast(device, enabled=None)`` — bf16 autocast on CUDA (about 2× the
  throughput of fp32 on tensor cores); a no-op on the CPU, where bf16
  convolutions are slower than fp32. ``enabled=None`` means "the fast default
  of this device".
* Training (``nrlib.train.fit``) and attack *generation* called directly
  (``nrlib.attacks``) use that default: bf16 on a GPU.
* Evaluation — ``metrics.predict``, ``metrics.accuracy`` and
  ``metrics.robust_accuracy`` (attack and scoring both) — runs in fp32 unless
  asked otherwise (``EVAL_AMP``). A robust accuracy must not depend on the
  precision of the forward pass: a bf16 gradient can weaken an attack on an
  adversarially trained model, which flatters it. No gap has been measured on
  a GPU yet, so fp32 stays the evaluation default; ``describe()`` is recorded
  with every result (``nrlib.results.write``).
"""
from __future__ import annotations

import contextlib

import torch

EVAL_AMP = False     # metrics.predict / accuracy / robust_accuracy: fp32 by default


def amp_enabled(device: torch.device | str, enabled: bool | None = None) -> bool:
    """Whether bf16 autocast is on for ``device`` (``None``: on for CUDA only)."""
    if enabled is None:
        return torch.device(device).type == "cuda"
    return bool(enabled)


def autocast(device: torch.device | str, enabled: bool | None = None):
    """bf16 autocast on CUDA when ``enabled`` (default: on for CUDA, off on the CPU)."""
    device = torch.device(device)
    if not amp_enabled(device, enabled):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def describe(device: torch.device | str | None = None) -> dict:
    """The precision of each kind of computation on ``device`` (recorded with results)."""
    from .utils import get_device

    dev = get_device(device)
    fast, ev = ("bf16 autocast" if amp_enabled(dev, on) else "fp32" for on in (None, EVAL_AMP))
    return {"training": fast, "attacks": fast, "evaluation": ev, "robust_accuracy": ev}
