"""Each chapter's network work at a profile, stage by stage, for ``python -m nrbook.budget``: what
its cells train, attack and evaluate, in the pieces of ``nrbook.cost``, from the sizes its notebook
sets (``cost.notebook_sizes``). One module per chapter (``ch01`` … ``ch06``), each with
``NOTEBOOK`` and ``plan(profile)``. A stage is named as the chapter's ``timer`` names it, so that the
estimate of a ``cpu`` run can be set beside the seconds that run measured (``budget.check``); passes
outside every timer go to a stage ``untimed``.

A plan counts the passes through a network, the work a GPU does; what runs beside them (kernel
density estimates, bootstraps, SVDs, the optimiser's update) is left out, and ``budget`` says how
much of a measured ``cpu`` stage the passes explain. Every model a chapter needs is counted as
trained from scratch: a fresh machine has no checkpoints.
"""
from __future__ import annotations

from typing import Callable

from ..cost import Work
from . import ch01, ch02, ch03, ch04, ch05, ch06

PLANS: dict[str, Callable[[str], list[Work]]] = {
    m.NOTEBOOK: m.plan for m in (ch01, ch02, ch03, ch04, ch05, ch06)}


def plan(notebook: str, profile: str) -> list[Work]:
    """The work of ``notebook``'s run at ``profile``."""
    if notebook not in PLANS:
        raise ValueError(f"notebook={notebook!r} has no plan; plans: {sorted(PLANS)}")
    return PLANS[notebook](profile)
