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

from .utils import check_callable, check_int, check_number


def _ipw():
    try:
        import ipywidgets as ipw
    except ImportError as e:  # pragma: no cover - ipywidgets is a dependency
        raise ImportError("nrlib.widgets needs ipywidgets (pip install ipywidgets)") from e
    return ipw


def _check_range(value, low, high, step, *, integer: bool = False, bounds: tuple = (None, None)):
    """A slider's ``low`` < ``high`` (inside ``bounds``), ``value`` in [low, high]
    and ``step`` > 0 and not wider than the range; integers where ``integer``."""
    num = check_int if integer else check_number
    low = num("low", low, low=bounds[0], high=bounds[1])
    high = num("high", high, low=bounds[0], high=bounds[1])
    if not low < high:
        raise ValueError(f"low={low!r} and high={high!r}: a slider needs low < high")
    value = num("value", value, low=low, high=high)
    step = check_int("step", step, low=1) if integer else check_number("step", step, low=0.0, low_open=True)
    if step > high - low:
        raise ValueError(f"step={step!r} is wider than the slider's range [{low}, {high}]; it must be <= {high - low}")
    return value, low, high, step


def eps_slider(value: float = 0.3, *, low: float = 0.0, high: float = 0.5, step: float = 0.05,
               description: str = "ε"):
    """A slider for ε in pixel units ([0, 1])."""
    value, low, high, step = _check_range(value, low, high, step, bounds=(0.0, 1.0))
    return _ipw().FloatSlider(value=value, min=low, max=high, step=step, description=description,
                              continuous_update=False, readout_format=".2f")


def beta_slider(value: float = 0.0, *, low: float = 0.0, high: float = 1.0, step: float = 0.05,
                description: str = "β"):
    """A slider for the scaling factor β of a set of neurons."""
    value, low, high, step = _check_range(value, low, high, step)
    return _ipw().FloatSlider(value=value, min=low, max=high, step=step, description=description,
                              continuous_update=False, readout_format=".2f")


def topk_slider(value: int = 10, *, low: int = 1, high: int = 100, step: int = 1,
                description: str = "top-k %"):
    """A slider for a top-k share (percent) or count (≥ 0)."""
    value, low, high, step = _check_range(value, low, high, step, integer=True, bounds=(0, None))
    return _ipw().IntSlider(value=value, min=low, max=high, step=step, description=description,
                            continuous_update=False)


def panel(render: Callable, **controls):
    """Sliders above an output area that ``render(**values)`` draws into.
    Returns the ``VBox``; display it as the last expression of a cell."""
    ipw = _ipw()
    check_callable("render", render, "a function render(**values) that draws the panel")
    if not controls:
        raise ValueError("controls: give at least one slider, e.g. panel(render, eps=eps_slider())")
    for k, c in controls.items():
        if not isinstance(c, ipw.ValueWidget):
            raise ValueError(f"{k}={c!r} must be a slider (an ipywidgets value widget, e.g. eps_slider())")
    out = ipw.interactive_output(render, controls)
    return ipw.VBox([ipw.HBox(list(controls.values())), out])
