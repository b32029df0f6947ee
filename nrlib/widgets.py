"""Slider panels for JupyterLab (ε, β, top-k).

A panel is a set of sliders and a ``render(**values)`` function that draws
into an output area. Sliders use ``continuous_update=False`` so a drag sends
one update when released; ``render`` should only read cached arrays or do a
few forward passes, so a move answers within about a second on a CPU. In the
static HTML book sliders do nothing, so each chapter also draws the same
sweep as a precomputed figure.
"""
from __future__ import annotations

from typing import Callable

from .utils import check_number


def _ipw():
    try:
        import ipywidgets as ipw
    except ImportError as e:  # pragma: no cover - ipywidgets is a dependency
        raise ImportError("nrlib.widgets needs ipywidgets (pip install ipywidgets)") from e
    return ipw


def eps_slider(value: float = 0.3, *, low: float = 0.0, high: float = 0.5, step: float = 0.05,
               description: str = "ε"):
    """A slider for ε in pixel units ([0, 1])."""
    for n, v in (("value", value), ("low", low), ("high", high)):
        check_number(n, v, low=0.0, high=1.0)
    return _ipw().FloatSlider(value=value, min=low, max=high, step=step, description=description,
                              continuous_update=False, readout_format=".2f")


def beta_slider(value: float = 0.0, *, low: float = 0.0, high: float = 1.0, step: float = 0.05,
                description: str = "β"):
    """A slider for the scaling factor β of a set of neurons."""
    return _ipw().FloatSlider(value=value, min=low, max=high, step=step, description=description,
                              continuous_update=False, readout_format=".2f")


def topk_slider(value: int = 10, *, low: int = 1, high: int = 100, step: int = 1,
                description: str = "top-k %"):
    """A slider for a top-k share (percent) or count."""
    return _ipw().IntSlider(value=value, min=low, max=high, step=step, description=description,
                            continuous_update=False)


def panel(render: Callable, **controls):
    """Sliders above an output area that ``render(**values)`` draws into.
    Returns the ``VBox``; display it as the last expression of a cell."""
    ipw = _ipw()
    out = ipw.interactive_output(render, controls)
    return ipw.VBox([ipw.HBox(list(controls.values())), out])
