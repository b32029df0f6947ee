"""nrlib.widgets: one panel call, live sliders in JupyterLab, a precomputed
browser-side slider when the notebook is executed for the static book."""
from __future__ import annotations

import base64
import io
import itertools
import re

import matplotlib

matplotlib.use("Agg")
import ipywidgets as ipw  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from nrlib import widgets  # noqa: E402


def render(eps=0.1, k=3):
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [0, eps * k])
    ax.set_title(f"eps={eps:.3f} k={k}")
    plt.show()


def _png(**values) -> bytes:
    plt.close("all")
    show = plt.show
    plt.show = lambda *a, **k: None
    try:
        render(**values)
    finally:
        plt.show = show
    png, _ = widgets.frame_png(plt.gcf())
    plt.close("all")
    return png


def _controls():
    return dict(eps=widgets.eps_slider(0.1, high=0.5, step=0.05), k=widgets.topk_slider(3, high=10))


class _Shown:
    """IPython's display, recorded: each call's object, and each update of a display_id handle."""

    def __init__(self):
        self.calls, self.updates = [], []

    def __call__(self, obj, **kw):
        self.calls.append((obj, kw))
        if kw.get("display_id"):
            return type("Handle", (), {"update": lambda h, o, **k: self.updates.append((o, k))})()


def test_live_panel_shows_its_sliders_then_a_figure_each_move_replaces(monkeypatch):
    """Live: an ipywidgets box of the sliders, then the figure as a display_id display (no
    ipywidgets Output, which a headless papermill can hang on); a move redraws and updates it."""
    import IPython.display

    monkeypatch.delenv(widgets.STATIC_ENV, raising=False)
    shown = _Shown()
    monkeypatch.setattr(IPython.display, "display", shown)
    controls = _controls()
    p = widgets.panel(render, **controls)
    assert isinstance(p, widgets.LivePanel) and isinstance(p.box, ipw.HBox)
    assert not any(isinstance(w, ipw.Output) for w in p.box.children)
    p._ipython_display_()
    (box, _), (first, kw) = shown.calls
    assert box is p.box and kw["display_id"] and kw["raw"] and base64.b64decode(first["image/png"])[:4] == b"\x89PNG"
    controls["eps"].value = 0.3                                   # a slider move
    (new, _), = shown.updates
    assert new["image/png"] != first["image/png"] and len(p.seconds) == 2 and not plt.get_fignums()


def test_live_panel_keeps_what_render_prints_and_figures_left_unshown(monkeypatch):
    monkeypatch.delenv(widgets.STATIC_ENV, raising=False)

    def chatty(eps=0.1, k=3):
        print(f"eps is {eps} & k is {k}")
        plt.subplots(figsize=(2, 1.5))                             # no plt.show()

    p = widgets.panel(chatty, **_controls())
    html = p._bundle()["data"]["text/html"]
    assert "<pre>eps is 0.1 &amp; k is 3</pre>" in html and html.count("<img") == 1


def test_static_panel_precomputes_every_combination_in_order(monkeypatch):
    monkeypatch.setenv(widgets.STATIC_ENV, "1")         # what the runbook sets for the book
    p = widgets.panel(render, grid={"eps": [0.0, 0.1, 0.4]}, points=3, **_controls())
    assert isinstance(p, widgets.StaticPanel)
    assert p.values == {"eps": [0.0, 0.1, 0.4], "k": [1, 3, 6, 10]}    # 3 points of [1, 10] and the current 3
    assert len(p.frames) == 12 and len(set(p.frames)) == 12               # one distinct figure per combination
    # frame j is the figure of the j-th combination in row-major order, which the page's script indexes
    for j, (e, k) in enumerate(itertools.product(p.values["eps"], p.values["k"])):
        if j in (0, 5, 11):
            assert base64.b64decode(p.frames[j]) == _png(eps=e, k=k)
    assert p.start == [1, 1]                                              # opens at the sliders' values


def test_smoke_profile_draws_a_few_frames_current_values_kept(monkeypatch):
    assert widgets.static_env("cpu") == {widgets.STATIC_ENV: "1", widgets.FRAMES_ENV: ""}
    monkeypatch.setattr(widgets, "SMOKE_FRAMES", 6)
    monkeypatch.setenv(widgets.FRAMES_ENV, widgets.static_env("smoke")[widgets.FRAMES_ENV])
    p = widgets.panel(render, static=True, grid={"eps": [0.0, 0.1, 0.4]}, points=3, **_controls())
    # the current values (0.1, 3), then one more value per control in turn while the product fits 6
    assert p.values == {"eps": [0.0, 0.1, 0.4], "k": [1, 3]} and len(p.frames) == 6
    assert len(set(p.frames)) == 6 and p.start == [1, 1]
    monkeypatch.setenv(widgets.FRAMES_ENV, "1")
    p = widgets.panel(render, static=True, grid={"eps": [0.0, 0.1, 0.4]}, **_controls())
    assert p.values == {"eps": [0.1], "k": [3]} and len(p.frames) == 1
    # the cap thins a grid the book could draw; a grid over MAX_FRAMES is refused at every profile
    with pytest.raises(ValueError, match="MAX_FRAMES"):
        widgets.panel(render, static=True, grid={"eps": [i / 100 for i in range(40)]}, **_controls())
    for bad in ("0", "four", "-2"):
        monkeypatch.setenv(widgets.FRAMES_ENV, bad)
        with pytest.raises(ValueError, match=f"NRBOOK_PANEL_FRAMES={bad!r}"):
            widgets.panel(render, static=True, **_controls())


def test_static_panel_html_is_self_contained():
    p = widgets.panel(render, static=True, grid={"eps": [0.1, 0.2]}, **_controls())
    page = p._repr_html_()
    assert page.count('type="range"') == 2
    assert page.count("data:image/png;base64,") == 1 and "<script>" in page
    assert not re.search(r"(src|href)=[\"']https?://", page), "no network: everything is inline"
    sizes = re.search(r"S=(\[[^\]]*\])", page).group(1)
    assert sizes == f"[{len(p.values['eps'])}, {len(p.values['k'])}]"


@pytest.mark.parametrize("kw,match", [
    (dict(grid={"beta": [0.1]}), "beta"),
    (dict(grid={"eps": []}), r"grid\['eps'\]"),
    (dict(points=1), "points"),
    (dict(grid={"eps": [i / 100 for i in range(40)]}), "MAX_FRAMES"),
])
def test_static_panel_bad_grids_are_named(kw, match):
    with pytest.raises(ValueError, match=match):
        widgets.panel(render, static=True, **kw, **_controls())


def test_frames_are_retina_palette_pngs_at_their_css_width():
    from PIL import Image

    p = widgets.panel(render, static=True, grid={"eps": [0.1, 0.2], "k": [3]}, **_controls())
    im = Image.open(io.BytesIO(base64.b64decode(p.frames[0])))
    assert im.mode == "P"                                   # 256-colour palette
    assert p.width == im.width // 2 and 150 <= p.width <= 260   # figsize 2 in at 100 dpi, drawn at 2x
    assert f'width="{p.width}"' in p._repr_html_()


@pytest.mark.parametrize("static", [True, False])
def test_panels_time_each_redraw(monkeypatch, static):
    import time

    def slow(eps=0.1, k=3):
        time.sleep(0.05)
        render(eps, k)

    monkeypatch.delenv(widgets.STATIC_ENV, raising=False)
    p = widgets.panel(slow, static=static, grid={"eps": [0.1, 0.2], "k": [3]} if static else None, **_controls())
    assert len(p.seconds) == (2 if static else 1)           # live: the first draw when the panel is made
    assert all(0.05 <= s < 5 for s in p.seconds)


def test_selection_sliders_show_their_option_labels():
    sel = ipw.SelectionSlider(options=[("2/255", 2 / 255), ("8/255", 8 / 255)], value=8 / 255, description="ε")

    def draw(eps):
        render(eps=eps)

    p = widgets.panel(draw, static=True, eps=sel)
    page = p._repr_html_()
    assert p.values == {"eps": [2 / 255, 8 / 255]} and p.start == [1]
    assert '<output>8/255</output>' in page and '"2/255"' in page


def test_live_redraws_reuse_the_first_layout_and_show_a_retina_png(monkeypatch):
    """A live move: tight_layout runs for real on the panel's first draw only, later draws reuse its
    margins, and plt.show() displays one PNG at twice the figure's pixels, shown at its size."""
    import IPython.display

    shown, tight = [], []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    real_tight = plt.tight_layout
    monkeypatch.setattr(plt, "tight_layout", lambda *a, **k: (tight.append(1), real_tight(*a, **k)))

    def draw(eps=0.1, k=3):
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.set_title(f"eps={eps:.3f}")
        plt.tight_layout()
        plt.show()
        return fig

    layout = {}
    margins = []
    for e in (0.1, 0.3, 0.2):
        with widgets._fast_redraw(layout):
            fig = draw(e)
            margins.append((fig.subplotpars.left, fig.subplotpars.top))
    assert len(tight) == 1 and len(set(margins)) == 1       # measured once, then reused
    assert len(shown) == 3 and not plt.get_fignums()        # one image per draw, the figure closed
    from PIL import Image
    im = Image.open(io.BytesIO(shown[0].data))
    assert (im.width, im.height) == (600, 400) and (shown[0].width, shown[0].height) == (300, 200)
    assert plt.tight_layout is not widgets._fast_redraw     # pyplot restored after each draw


@pytest.mark.parametrize("static", [True, False])
def test_panels_refuse_figures_wider_than_the_book_shows(monkeypatch, static):
    """nrlib.plot.MAX_FIG_WIDTH is enforced, not a convention: a frame wider than 11 in is an error
    that names the width, live (the first draw when the panel is made) and static."""
    from nrlib import plot

    def wide(eps=0.1, k=3):
        fig, ax = plt.subplots(1, 4, figsize=(plot.MAX_FIG_WIDTH + 4, 3))
        plt.show()

    monkeypatch.delenv(widgets.STATIC_ENV, raising=False)
    import IPython.display

    monkeypatch.setattr(IPython.display, "display", lambda obj: None)
    if static:
        with pytest.raises(ValueError, match=r"width 15 in exceeds MAX_FIG_WIDTH=11"):
            widgets.panel(wide, static=True, grid={"eps": [0.1], "k": [3]}, **_controls())
    else:
        with widgets._fast_redraw({}), pytest.raises(ValueError, match="MAX_FIG_WIDTH"):
            wide()
    plt.close("all")
    p = widgets.panel(render, static=True, grid={"eps": [0.1], "k": [3]}, **_controls())
    assert len(p.frames) == 1                                  # a figure within the limit is drawn


def test_selection_slider_grid_keeps_the_options_order():
    """Layers by depth, not by name: a grid over conv1 … conv13 keeps the slider's order (a string
    sort puts conv13 before conv4), and a grid value that is not an option is named."""
    layers = [f"conv{i}" for i in range(1, 14)]
    sel = ipw.SelectionSlider(options=layers, value="conv13", description="layer")

    def draw(layer):
        render(k=layers.index(layer))

    p = widgets.panel(draw, static=True, layer=sel, grid={"layer": ["conv13", "conv4", "conv1", "conv10"]})
    assert p.values == {"layer": ["conv1", "conv4", "conv10", "conv13"]} and p.start == [3]
    p = widgets.panel(draw, static=True, layer=sel, points=4)
    assert p.values["layer"] == ["conv1", "conv5", "conv9", "conv13"]
    with pytest.raises(ValueError, match=r"grid\['layer'\].*'conv14'"):
        widgets.panel(draw, static=True, layer=sel, grid={"layer": ["conv14"]})
