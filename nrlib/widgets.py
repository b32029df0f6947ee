"""Slider panels (ε, β, top-k): live in JupyterLab, precomputed in the static book.

A panel is a set of sliders and a ``render(**values)`` function that draws
into an output area. Sliders use ``continuous_update=False`` so a drag sends
one update when released; ``render`` should only read cached arrays or do a
few forward passes, so a move answers within about a second on a CPU.
ipywidgets need a kernel, so when a notebook is executed for the book
(``NRBOOK_STATIC`` set) the same ``panel`` call precomputes the figure on a
grid of slider values and returns a browser-side slider over those frames
(``StaticPanel``), which moves in the static HTML book with no kernel.
"""
from __future__ import annotations

import base64
import html
import io
import json
import os
import time
import uuid
from typing import Callable

import numpy as np

from .plot import check_width
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


STATIC_ENV = "NRBOOK_STATIC"   # set (to 1) by the book's runbook when it executes a notebook for the book
MAX_FRAMES = 60                # frames of one static panel: the product of its sliders' grids
FRAMES_ENV = "NRBOOK_PANEL_FRAMES"   # if set, a static panel draws at most this many of its frames
SMOKE_FRAMES = 4               # ... as the `smoke` profile does: every panel drawn, its grid thinned


def static_env(profile: str) -> dict[str, str]:
    """The environment under which a notebook run for the book (``nrbook.runbook``) or a batch
    (``nrbook.sweep``) draws its slider panels: static (``STATIC_ENV``), and at the ``smoke``
    profile, whose numbers mean nothing, with at most ``SMOKE_FRAMES`` frames a panel
    (``FRAMES_ENV``), so that each panel's code runs for a few slider positions, not for its
    whole grid; other profiles draw every frame."""
    return {STATIC_ENV: "1", FRAMES_ENV: str(SMOKE_FRAMES) if profile == "smoke" else ""}


def _thin(values: dict, current: dict, cap: int) -> dict:
    """At most ``cap`` combinations of ``values`` (control -> its grid values): each control keeps
    its current value, and the others join one at a time, control by control in turn, while the
    product fits; each grid keeps its order."""
    kept = {k: [current[k]] for k in values}
    grew = True
    while grew:
        grew = False
        for k, vals in values.items():
            rest = [v for v in vals if v not in kept[k]]
            n = int(np.prod([len(v) for v in kept.values()]))
            if rest and n // len(kept[k]) * (len(kept[k]) + 1) <= cap:
                kept[k].append(rest[0])
                grew = True
    return {k: [v for v in vals if v in kept[k]] for k, vals in values.items()}


def panel(render: Callable, *, static: bool | None = None, grid: dict | None = None, points: int = 5, **controls):
    """Sliders above an output area that ``render(**values)`` draws into.

    Live (JupyterLab): returns the ipywidgets ``VBox``; display it as the last
    expression of a cell. Static (``static=True``, or by default when the
    environment variable ``NRBOOK_STATIC`` is set, as it is when the book's
    runbook executes a notebook): ``render`` is called on a grid of slider
    values and the figures are returned as one self-contained HTML slider
    panel (``StaticPanel``) that moves in a browser with no kernel. The grid
    of a control is ``grid[name]`` when given, else the slider's options (a
    selection slider) or ``points`` evenly spaced values of its range, always
    with its current value; at most ``MAX_FRAMES`` combinations in all
    (where ``NRBOOK_PANEL_FRAMES`` is set, as ``static_env`` sets it at the
    ``smoke`` profile, only that many of them are drawn: ``_thin``).

    Either way the returned object's ``seconds`` lists how long each redraw
    took (``render`` plus drawing the figure): how fast a slider move answers.
    Live, the figure is a display that each move updates in place
    (``LivePanel``), not an ipywidgets ``Output``, so that a headless run
    (papermill, nbclient) cannot hang on it.
    """
    ipw = _ipw()
    check_callable("render", render, "a function render(**values) that draws the panel")
    if not controls:
        raise ValueError("controls: give at least one slider, e.g. panel(render, eps=eps_slider())")
    for k, c in controls.items():
        if not isinstance(c, ipw.ValueWidget):
            raise ValueError(f"{k}={c!r} must be a slider (an ipywidgets value widget, e.g. eps_slider())")
    if static is None:
        static = bool(os.environ.get(STATIC_ENV))
    if not static:
        return LivePanel(render, controls)
    check_int("points", points, low=2, high=MAX_FRAMES)
    grid = dict(grid or {})
    unknown = set(grid) - set(controls)
    if unknown:
        raise ValueError(f"grid names {sorted(unknown)}, which are not controls of this panel ({list(controls)})")
    values = {k: _grid_values(k, c, grid.get(k), points) for k, c in controls.items()}
    n = int(np.prod([len(v) for v in values.values()]))
    if n > MAX_FRAMES:
        raise ValueError(f"grid: {n} slider combinations ({ {k: len(v) for k, v in values.items()} }) exceed "
                         f"MAX_FRAMES={MAX_FRAMES}; pass fewer grid values or a smaller points")
    current = {k: c.value for k, c in controls.items()}
    cap = os.environ.get(FRAMES_ENV)
    if cap:       # the smoke profile: a few slider positions (static_env), checked against the full grid
        if not cap.isdigit() or int(cap) < 1:
            raise ValueError(f"${FRAMES_ENV}={cap!r}: give a whole number of frames >= 1, or leave it unset")
        values = _thin(values, current, int(cap))
    labels = {k: getattr(c, "description", k) or k for k, c in controls.items()}
    shown = {k: [_value_label(c, v) for v in values[k]] for k, c in controls.items()}
    return StaticPanel(render, values, labels, current, shown=shown)


class _fast_redraw:
    """A live redraw's figure, shown faster than the inline backend shows it
    (measured on a 2-core CPU, chapter 5's four-panel figure: 1.9 s → 1.0 s
    per move, the same pixels per inch):

    * ``plt.tight_layout()`` runs for real on a panel's first draw only; later
      draws of the same panel reuse the margins it found (``layout``), since
      a slider move changes values, not the axes — tight_layout measures every
      label, about 0.4 s of a move;
    * ``plt.show()`` displays the figure as a retina PNG (2× its dpi, shown at
      its size) saved without ``bbox_inches="tight"``, which would draw it twice,
      and with light PNG compression.

    Figures drawn without ``plt.show()`` are left to the inline backend."""

    def __init__(self, layout: dict, *, keep: bool = False, sink: list | None = None):
        self.layout, self.keep, self.sink = layout, keep, sink

    def __enter__(self):
        import matplotlib.pyplot as plt

        self._plt, self._show, self._tight = plt, plt.show, plt.tight_layout

        # plain functions, not bound methods: pyplot sets ``__signature__`` on its ``show``
        def show(*args, **kwargs):
            return self.show(*args, **kwargs)

        def tight_layout(*args, **kwargs):
            return self.tight_layout(*args, **kwargs)

        plt.show, plt.tight_layout = show, tight_layout
        return self

    def __exit__(self, *exc):
        self._plt.show, self._plt.tight_layout = self._show, self._tight
        return False

    def tight_layout(self, *args, **kwargs):
        fig = self._plt.gcf()
        key = (tuple(fig.get_size_inches().round(3)), len(fig.axes))
        if key in self.layout:
            fig.subplots_adjust(**self.layout[key])
            return
        self._tight(*args, **kwargs)
        sp = fig.subplotpars
        self.layout[key] = {k: getattr(sp, k) for k in ("left", "right", "bottom", "top", "wspace", "hspace")}

    def show(self, *args, **kwargs):
        from IPython.display import Image, display

        for num in self._plt.get_fignums():
            fig = self._plt.figure(num)
            if not self.keep:   # a static panel's frame is checked by frame_png
                check_width(fig)
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=2 * fig.dpi, pil_kwargs={"compress_level": 1})
            if self.keep:       # a static panel's frame: the same work as a live redraw, nothing shown
                continue
            w, h = fig.get_size_inches() * fig.dpi
            image = Image(buf.getvalue(), width=int(w), height=int(h))
            if self.sink is not None:
                self.sink.append(image)
            else:
                display(image)
        if not self.keep:
            self._plt.close("all")


def _value_label(control, value) -> str:
    """What a slider shows for ``value``: a selection slider's option label, else the number."""
    for o in getattr(control, "options", None) or ():
        if isinstance(o, tuple) and o[1] == value:
            return str(o[0])
    return _fmt(value)


def _grid_values(name, control, given, points):
    """The values a static panel precomputes for one control, current value included: a selection
    slider's in the order of its options (layers by depth, not by name: conv4 before conv13), a
    numeric slider's sorted."""
    opts = getattr(control, "options", None)
    order = [o[1] if isinstance(o, tuple) else o for o in opts] if opts is not None else None
    if given is not None:
        vals = list(given)
        if not vals:
            raise ValueError(f"grid[{name!r}] is empty; give at least one value")
        if order is not None:
            bad = [v for v in vals if v not in order]
            if bad:
                raise ValueError(f"grid[{name!r}] = {vals!r}: {bad!r} not among the slider's options {order!r}")
    elif order is not None:
        vals = order
        if len(vals) > points:
            vals = [vals[round(i)] for i in np.linspace(0, len(vals) - 1, points)]
    else:
        lo, hi = control.min, control.max
        vals = [float(v) for v in np.linspace(lo, hi, points)]
        if isinstance(control.value, int) and not isinstance(control.value, bool):
            vals = [int(round(v)) for v in vals]
    if control.value not in vals:
        vals.append(control.value)
    if order is not None:
        return sorted(set(vals), key=order.index)
    return sorted(set(vals))


class LivePanel:
    """A live slider panel (``panel`` in JupyterLab): the sliders in an ipywidgets ``HBox``, then
    the figure as a display (``display_id``) that each slider move replaces with ``render``'s new
    figure (``update_display_data``). Unlike ``ipywidgets.interactive_output``'s ``Output``
    widget, no state flows back from the front end to the kernel: a headless nbclient mirrors an
    ``Output`` widget by sending its outputs back on the shell channel while it awaits the cell's
    reply there, and that reply can then go unseen, leaving papermill waiting forever. Text that
    ``render`` prints shows above its figures. ``seconds``: how long each redraw took, the first
    one (when the panel is made) included."""

    def __init__(self, render: Callable, controls: dict):
        ipw = _ipw()
        self.render, self.controls = render, controls
        self.box = ipw.HBox(list(controls.values()))
        self.seconds: list[float] = []
        self.handle = None
        self._layout: dict = {}
        self.outputs = self._draw()
        for c in controls.values():
            c.observe(self._moved, "value")

    def _draw(self) -> list:
        import contextlib

        import matplotlib.pyplot as plt
        from IPython.display import Pretty

        shown: list = []
        text = io.StringIO()
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(text), _fast_redraw(self._layout, sink=shown) as redraw:
            self.render(**{k: c.value for k, c in self.controls.items()})
            if plt.get_fignums():              # figures render() left without plt.show()
                redraw.show()
        self.seconds.append(time.perf_counter() - t0)
        return ([Pretty(text.getvalue().rstrip())] if text.getvalue().strip() else []) + shown

    def _bundle(self) -> dict:
        """The panel's outputs as one MIME bundle (a display holds one): the figure's PNG alone,
        else HTML of its text and images in order."""
        from IPython.display import Image

        if len(self.outputs) == 1 and isinstance(self.outputs[0], Image):
            im = self.outputs[0]
            return {"data": {"image/png": base64.b64encode(im.data).decode()},
                    "metadata": {"image/png": {"width": im.width, "height": im.height}}}
        parts = [f'<img src="data:image/png;base64,{base64.b64encode(o.data).decode()}" width="{o.width}" '
                 f'height="{o.height}"/>' if isinstance(o, Image) else f"<pre>{html.escape(o.data)}</pre>"
                 for o in self.outputs]
        text = "\n".join(o.data for o in self.outputs if not isinstance(o, Image)) or "(figure)"
        return {"data": {"text/html": "<div>" + "".join(parts) + "</div>", "text/plain": text}, "metadata": {}}

    def _moved(self, change) -> None:
        self.outputs = self._draw()
        if self.handle is not None:
            b = self._bundle()
            self.handle.update(b["data"], metadata=b["metadata"], raw=True)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.box)
        b = self._bundle()
        self.handle = display(b["data"], metadata=b["metadata"], raw=True, display_id=True)


class StaticPanel:
    """A slider panel for the static book: one ``<input type="range">`` per
    control over figures precomputed for every combination of the grid values,
    as PNG data URIs with a few lines of JavaScript — no kernel, no network.
    ``seconds``: how long each frame took to render and show the way a live
    redraw in JupyterLab does (``_fast_redraw``: the panel's first tight
    layout reused, one retina PNG) — what a slider move costs with a kernel;
    ``encode_seconds``: the extra time of the static frame's cropped,
    palette-reduced PNG, a cost of building the book only."""

    def __init__(self, render: Callable, values: dict, labels: dict, current: dict, *,
                 shown: dict | None = None):
        import itertools

        import matplotlib.pyplot as plt

        self.values, self.labels = values, labels
        self.shown = shown or {k: [_fmt(v) for v in vals] for k, vals in values.items()}
        self.frames: list[str] = []
        self.seconds: list[float] = []
        self.encode_seconds: list[float] = []
        self.width = 0                           # CSS pixels of the widest frame
        names = list(values)
        layout: dict = {}
        for combo in itertools.product(*values.values()):
            plt.close("all")
            t0 = time.perf_counter()
            with _fast_redraw(layout, keep=True):   # render() ends with plt.show(): the figure stays
                render(**dict(zip(names, combo)))
            t1 = time.perf_counter()
            png, width = frame_png(plt.gcf())
            self.seconds.append(t1 - t0)
            self.encode_seconds.append(time.perf_counter() - t1)
            plt.close("all")
            self.frames.append(base64.b64encode(png).decode())
            self.width = max(self.width, width)
        self.start = [values[k].index(current[k]) for k in names]

    def _repr_html_(self) -> str:
        uid = "nrp" + uuid.uuid4().hex[:10]
        names = list(self.values)
        sizes = [len(self.values[k]) for k in names]
        rows = "".join(
            f'<label style="display:block;margin:2px 0">{html.escape(str(self.labels[k]))} '
            f'<input type="range" min="0" max="{len(self.values[k]) - 1}" step="1" value="{self.start[i]}" '
            f'data-i="{i}" style="vertical-align:middle;width:220px"> '
            f'<output>{html.escape(self.shown[k][self.start[i]])}</output></label>'
            for i, k in enumerate(names))
        labels = json.dumps([self.shown[k] for k in names])
        frames = json.dumps(self.frames)
        return (f'<div id="{uid}" class="nrlib-static-panel">{rows}'
                f'<img alt="precomputed figure" width="{self.width}" style="max-width:100%;height:auto"></div>'
                f"<script>(function(){{var r=document.getElementById('{uid}'),F={frames},L={labels},S={sizes};"
                "var ins=r.querySelectorAll('input'),img=r.querySelector('img');"
                "function show(){var k=0;ins.forEach(function(e,i){k=k*S[i]+(+e.value);"
                "e.nextElementSibling.textContent=L[i][+e.value];});img.src='data:image/png;base64,'+F[k];}"
                "ins.forEach(function(e){e.addEventListener('input',show);});show();})();</script>")


def frame_png(fig, *, scale: int = 2) -> tuple[bytes, int]:
    """One frame of a static panel: ``fig`` as a PNG at ``scale`` × its dpi
    (sharp on a high-density screen, like the inline backend's ``retina``),
    reduced to a 256-colour palette (plots use few colours; a third of the
    bytes), and its width in CSS pixels (the PNG's width / ``scale``). A figure wider than
    ``nrlib.plot.MAX_FIG_WIDTH`` is refused (``check_width``)."""
    from PIL import Image

    check_width(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=scale * fig.dpi, bbox_inches="tight")
    im = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    out = io.BytesIO()
    # fast octree: 0.1 s for an 11-inch figure at 2x, where median cut takes 0.2 s (2-core CPU)
    im.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(
        out, format="png", optimize=True)
    return out.getvalue(), im.width // scale


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
