"""The book's three run profiles, defined once.

* ``smoke`` — the tests on a 2-core CPU: every code path, meaningless numbers.
* ``cpu`` — ``make book`` without a GPU: the method's qualitative result on
  small models and subsets (each chapter's measured time: the introduction, generated from
  its results file).
* ``full`` — a GPU: the papers' setting at paper scale; the numbers the book
  compares with the papers.

``resolve("auto")`` is ``full`` when CUDA is present and ``cpu`` otherwise.
``RANK`` orders them, so a run of a higher profile is never replaced by a
lower one.
"""
from __future__ import annotations

import torch

PROFILES = ("smoke", "cpu", "full")
RANK = {p: i for i, p in enumerate(PROFILES)}


def auto() -> str:
    """``full`` on a machine with a CUDA GPU, else ``cpu``."""
    return "full" if torch.cuda.is_available() else "cpu"


def resolve(profile: str) -> str:
    """``profile`` checked against ``PROFILES``; ``"auto"`` becomes ``auto()``."""
    if profile == "auto":
        return auto()
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r} is not allowed; choose one of {['auto', *PROFILES]}")
    return profile
