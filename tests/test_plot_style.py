"""nrlib.plot.use_style: one figure style for every chapter — a seaborn theme, text that stays
readable when the book shrinks a wide figure to its text column, and retina inline PNGs."""
from __future__ import annotations

import base64
import io

import matplotlib
import pytest
from matplotlib.font_manager import FontProperties

from nrlib import plot

TEXT_KEYS = ("font.size", "axes.labelsize", "axes.titlesize", "xtick.labelsize", "ytick.labelsize",
             "legend.fontsize", "figure.titlesize")


@pytest.fixture
def rc_restored():
    """Whatever a test does to Matplotlib's rcParams is undone afterwards."""
    saved = matplotlib.rcParams.copy()
    yield
    matplotlib.rcParams.update(saved)


def points(key: str) -> float:
    """An rcParams text size in points ('medium', 'large' resolved against font.size)."""
    return FontProperties(size=matplotlib.rcParams[key]).get_size_in_points()


def test_use_style_sets_the_theme_and_readable_sizes(rc_restored):
    plot.use_style()
    rc = matplotlib.rcParams
    assert rc["figure.dpi"] == plot.STYLE_DPI
    assert rc["axes.grid"] and rc["axes.facecolor"] == "white"          # seaborn's whitegrid
    import seaborn as sns

    cycle = [matplotlib.colors.to_rgb(c) for c in rc["axes.prop_cycle"].by_key()["color"]]
    assert cycle[:3] == [tuple(c) for c in sns.color_palette("colorblind")[:3]]
    for key in TEXT_KEYS:
        shown = plot.shown_text_px(points(key), plot.MAX_FIG_WIDTH)
        assert shown >= plot.MIN_TEXT_PX, (
            f"{key} = {points(key):.1f} pt measures {shown:.1f} px in a {plot.MAX_FIG_WIDTH} in figure "
            f"shrunk to the {plot.CONTENT_PX} px text column")
    assert points("axes.titlesize") >= points("axes.labelsize") >= points("xtick.labelsize")
    # the default figure fits the text column without being shrunk
    assert rc["figure.figsize"][0] * rc["figure.dpi"] <= plot.CONTENT_PX


def test_font_scale_scales_every_text_size(rc_restored):
    plot.use_style()
    base = {k: points(k) for k in TEXT_KEYS}
    plot.use_style(font_scale=1.25)
    for key in TEXT_KEYS:
        assert points(key) == pytest.approx(1.25 * base[key]), key
    with pytest.raises(ValueError, match="font_scale"):
        plot.use_style(font_scale=0)


def test_shown_text_px():
    # up to the column's width a figure is shown at its own size: pt / 72 * dpi pixels
    assert plot.shown_text_px(9, plot.CONTENT_PX / plot.STYLE_DPI) == pytest.approx(9 / 72 * plot.STYLE_DPI)
    # twice as wide: shrunk to half
    assert plot.shown_text_px(9, 2 * plot.CONTENT_PX / plot.STYLE_DPI) == pytest.approx(9 / 72 * plot.STYLE_DPI / 2)


def test_outside_ipython_use_style_only_sets_rcparams(rc_restored):
    from IPython import get_ipython

    assert get_ipython() is None
    plot.use_style()                       # no shell: nothing to configure, and none is created
    assert get_ipython() is None


def test_inline_figures_become_retina_pngs(rc_restored, tmp_path, monkeypatch):
    """Under IPython (a chapter's kernel) the inline PNG has twice the pixels of the figure's
    size in CSS pixels, and says so in its metadata so the page shows it at that size."""
    import matplotlib.pyplot as plt
    from IPython.core.interactiveshell import InteractiveShell
    from PIL import Image

    from traitlets.config import Config

    monkeypatch.setenv("IPYTHONDIR", str(tmp_path))
    config = Config()
    config.HistoryManager.enabled = False              # no history database
    shell = InteractiveShell.instance(config=config)
    try:
        plot.use_style()
        fig, ax = plt.subplots(figsize=(4, 2))
        ax.plot([0, 1], [0, 1])
        data, meta = shell.display_formatter.format(fig)
        plt.close(fig)
        assert "image/png" in data, f"no PNG from the inline formatter: {sorted(data)}"
        png = data["image/png"]
        png = base64.b64decode(png) if isinstance(png, str) else png     # IPython >= 8: base64 text
        width = Image.open(io.BytesIO(png)).width
        shown = meta["image/png"]["width"]
        assert width == pytest.approx(2 * shown, abs=2), f"PNG {width} px shown at {shown} px: not retina"
    finally:
        shell.history_manager.end_session()
        InteractiveShell.clear_instance()


def test_settings_table_is_one_row_per_setting():
    from nrlib import plot as nrplot

    t = nrplot.settings_table({"n_eval": 1000, "eps_grid": [2 / 255, 1.0], "models": ["base"]}, profile="cpu")
    assert list(t.index) == ["n_eval", "eps_grid", "models"] and list(t.columns) == ["cpu profile"]
    assert t.loc["eps_grid", "cpu profile"] == "0.007843, 1" and t.loc["models", "cpu profile"] == "base"
    t = nrplot.settings_table({"eps": {"mnist": [0.1, 0.2], "cifar10": ["2/255"]}})
    assert t.loc["eps", "value"] == "mnist: 0.1, 0.2; cifar10: 2/255"      # a nested dict, one line
    with pytest.raises(ValueError, match="settings must be a dict"):
        nrplot.settings_table([1, 2])


def test_check_width_refuses_figures_the_book_would_shrink_below_readable():
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(plot.MAX_FIG_WIDTH, 3))
    plot.check_width(fig)                                        # at the limit: fine
    fig.set_size_inches(plot.MAX_FIG_WIDTH + 0.5, 3)
    with pytest.raises(ValueError, match=r"figure width 11.5 in exceeds MAX_FIG_WIDTH=11 in"):
        plot.check_width(fig)
    plt.close("all")
