"""The figures and tables that several chapters draw, in one place.

Each function draws into a Matplotlib ``ax`` (made when not given) and
returns it, so a chapter cell stays one idea long: compute in one cell, plot
with one call in the next. A figure specific to one chapter stays in its
notebook; anything two chapters draw lives here.

* ``accuracy_vs_eps`` — accuracy under attack against ε (Karnine et al. 2024,
  Fig. 3; Pravin et al. 2021, Fig. 2), with the paper's points beside ours.
* ``layer_bars`` — one value per layer for two or more conditions side by
  side, with optional error bars (Prattico 2022, Figs. 6–10; per-layer
  sensitivity in Zhang et al. 2021).
* ``heatmap`` — a matrix with annotated cells (targeted success per source ×
  target class; filter frequencies per class).
* ``image_strip`` — a row of images with titles (clean vs adversarial).
* ``training_curves`` — train / validation accuracy per epoch of several runs.
* ``scoreboard`` — the paper-vs-ours table with each claim's verdict, read
  from ``nrlib.papers`` and the run's metrics.
* ``seed_sweep`` — a metric against a swept parameter: each seed's value and
  the mean with its 95% interval over seeds (``python -m nrbook.sweep``).

``use_style()``, called once in each chapter's setup cell, gives every chapter
the same look: a seaborn theme, font sizes that stay readable when the book
shrinks a figure to its text column, and sharp (retina) inline PNGs.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from . import stats


# The book's text column is about CONTENT_PX CSS pixels wide, and the inline backend shows a
# figure figure.dpi CSS pixels per inch: at STYLE_DPI a figure up to CONTENT_PX / STYLE_DPI
# inches wide is shown at its own size, a wider one is shrunk to the column, its text with it.
CONTENT_PX = 700
STYLE_DPI = 100
MAX_FIG_WIDTH = 11.0      # inches: the widest figure a chapter should draw
MIN_TEXT_PX = 9.0         # the smallest text (tick labels) of a MAX_FIG_WIDTH figure, shrunk

# On top of seaborn's "notebook" context (12 pt text, 11 pt ticks and legends).
STYLE_RC = {
    "figure.dpi": STYLE_DPI,
    "savefig.dpi": "figure",
    "figure.figsize": (6.8, 4.2),     # fits the text column unshrunk
    "axes.titlesize": 13,
    "figure.titlesize": 14,
}


def shown_text_px(points: float, fig_width: float) -> float:
    """CSS pixels that text of ``points`` pt measures in the book, in a figure ``fig_width``
    inches wide at ``STYLE_DPI``: shown at its own size up to the text column's width
    (``CONTENT_PX``), shrunk to the column beyond it."""
    width_px = fig_width * STYLE_DPI
    return points / 72 * STYLE_DPI * min(1.0, CONTENT_PX / width_px)


def use_style(*, font_scale: float = 1.0, retina: bool = True) -> None:
    """One figure style for every chapter; call it once in a chapter's setup cell.

    * a seaborn theme: white background with a light grid (``whitegrid``) and the
      colour-blind-safe ``colorblind`` palette;
    * font sizes for the book's text column (about ``CONTENT_PX`` = 700 CSS pixels):
      seaborn's ``notebook`` context (12 pt text, 11 pt ticks and legends, 13 pt
      titles) at ``figure.dpi`` = 100. A figure up to 7 in wide is shown at its own
      size; a wider one is shrunk to the column, so keep figures at most
      ``MAX_FIG_WIDTH`` = 11 in wide, where 11 pt tick labels still measure about
      10 pixels (``shown_text_px``). ``font_scale`` scales all of them;
    * in IPython/Jupyter (a chapter's kernel), inline figures as ``retina`` PNGs:
      twice the pixels, shown at the same size, so they are sharp on high-density
      screens while a page stays light (PNG, not SVG, whose size grows with every
      point drawn). Outside IPython this part does nothing.

    Text sizes set explicitly in a call (``fontsize=7``) keep their value. Resetting:
    ``matplotlib.rcdefaults()``.
    """
    import seaborn as sns

    if not font_scale > 0:
        raise ValueError(f"font_scale={font_scale!r} must be > 0")
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind", font_scale=font_scale,
                  rc={k: (v * font_scale if k in ("axes.titlesize", "figure.titlesize") else v)
                      for k, v in STYLE_RC.items()})
    if retina:
        _inline_retina()


def check_width(fig) -> None:
    """Refuse a figure wider than ``MAX_FIG_WIDTH`` inches: the book shrinks a wider figure to its
    text column until its tick labels measure under ``MIN_TEXT_PX`` pixels (``shown_text_px``).
    Raises ``ValueError`` naming the width and what to do (fewer panels per row, a grid of
    panels). Slider panels (``nrlib.widgets.panel``) check every figure they draw; the tests check
    every figure of the executed chapters."""
    w = float(fig.get_size_inches()[0])
    if w > MAX_FIG_WIDTH + 1e-9:
        raise ValueError(f"figure width {w:g} in exceeds MAX_FIG_WIDTH={MAX_FIG_WIDTH:g} in: the book would "
                         f"shrink its 11 pt tick labels to {shown_text_px(11, w):.1f} px; draw fewer "
                         f"panels per row (plt.subplots(2, 2, ...)) or a narrower figure")


def _inline_retina() -> None:
    """Inline figures as retina PNGs, when running under IPython (else nothing)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with the book's kernel
        return
    if get_ipython() is None:
        return
    from matplotlib_inline.backend_inline import set_matplotlib_formats

    set_matplotlib_formats("retina")


def _ax(ax, figsize=(6, 3.6)):
    if ax is None:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=figsize)
        check_width(fig)
    return ax


def accuracy_vs_eps(eps: Sequence[float], curves: Mapping[str, Sequence[float]], *,
                    paper: Mapping[str, Sequence[float]] | None = None, ax=None,
                    title: str = "accuracy under attack", xlabel: str = "ε (pixels)",
                    ylabel: str = "accuracy (%)", logx: bool = False):
    """Accuracy (or any percentage) against ε: one line per entry of ``curves``
    (ours, circles) and, for the same labels in ``paper``, the paper's values
    (crosses, same colour, faded)."""
    ax = _ax(ax)
    for label, ys in curves.items():
        (line,) = ax.plot(eps, ys, "o-", label=label)
        if paper and label in paper and paper[label] is not None:
            ax.plot(eps, paper[label], "x--", color=line.get_color(), alpha=0.45)
    ax.set(title=title + (" (x: paper)" if paper else ""), xlabel=xlabel, ylabel=ylabel)
    if logx:
        ax.set_xscale("log")
    ax.legend(fontsize="x-small", ncol=2)
    return ax


def seed_sweep(x: Sequence[float], per_seed: Sequence[Sequence[float]], *, ax=None, label: str = "",
               xlabel: str = "", ylabel: str = "", title: str = ""):
    """One metric against a swept parameter: at each ``x`` the values of the seeds (``per_seed[i]``,
    dots) and their mean with its Student-t 95% interval over seeds (``stats.seeds``; a single seed
    has none)."""
    ax = _ax(ax)
    if len(x) != len(per_seed):
        raise ValueError(f"x has {len(x)} points but per_seed has {len(per_seed)}: one list of seeds' values per x")
    est = [stats.seeds(v) for v in per_seed]
    for xi, vals in zip(x, per_seed):
        ax.plot([xi] * len(vals), vals, "o", color="0.6", ms=4, zorder=1)
    mean = [float(e) for e in est]
    err = np.array([[float(e) - e.low, e.high - float(e)] if e.has_interval else [0.0, 0.0] for e in est]).T
    ax.errorbar(x, mean, yerr=err, fmt="o-", capsize=4, label=label or "mean, 95% interval over seeds", zorder=2)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(fontsize="x-small")
    return ax


def layer_bars(values: Mapping[str, Mapping[str, float] | Sequence[float]], *, layers: Sequence[str] | None = None,
               errors: Mapping[str, Sequence[float]] | None = None, ax=None, title: str = "",
               ylabel: str = "%", xlabel: str = "layer", tick_labels: Sequence | None = None):
    """Grouped bars: for each condition in ``values`` (label → {layer: value}
    or a sequence in layer order) one bar per layer, side by side; ``errors``
    (label → one value per layer) draws error bars. ``tick_labels`` replaces
    the layer names under the bars (e.g. the report's layer numbers)."""
    ax = _ax(ax, (10, 3))
    labels = list(values)
    if layers is None:
        first = values[labels[0]]
        layers = [k for k in first if k != "total"] if isinstance(first, Mapping) else list(range(len(first)))
    i = np.arange(len(layers))
    w = 0.8 / len(labels)
    for j, lab in enumerate(labels):
        v = values[lab]
        ys = [v[n] for n in layers] if isinstance(v, Mapping) else list(v)
        err = errors.get(lab) if errors else None
        ax.bar(i + (j - (len(labels) - 1) / 2) * w, ys, w, yerr=err, capsize=2 if err is not None else 0, label=lab)
    ax.set_xticks(i)
    ax.set_xticklabels([str(t) for t in (tick_labels if tick_labels is not None else layers)],
                       rotation=90 if tick_labels is None and len(layers) > 8 else 0, fontsize="x-small")
    ax.set(title=title, ylabel=ylabel, xlabel=xlabel)
    ax.legend(fontsize="small")
    return ax


def heatmap(matrix, *, ax=None, title: str = "", xlabel: str = "", ylabel: str = "", annot: bool = True,
            fmt: str = ".0f", vmin=None, vmax=None, cmap: str = "rocket_r", cbar: bool = True,
            cbar_label: str | None = None):
    """An annotated heat map (seaborn) of a 2-D array; NaN cells stay blank."""
    import seaborn as sns

    ax = _ax(ax, (5.5, 4.2))
    m = np.asarray(matrix, dtype=float)
    sns.heatmap(m, annot=annot, fmt=fmt, cmap=cmap, vmin=vmin, vmax=vmax, ax=ax, cbar=cbar,
                annot_kws={"size": "x-small"}, cbar_kws={"label": cbar_label} if cbar and cbar_label else None)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return ax


def image_strip(images, titles: Sequence[str] | None = None, *, axes=None, cmap: str | None = None):
    """Images (N×C×H×W tensor or array in [0, 1]) in one row, with titles."""
    import matplotlib.pyplot as plt

    imgs = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    n = imgs.shape[0]
    if axes is None:
        _, axes = plt.subplots(1, n, figsize=(1.6 * n, 1.9))
    axes = np.atleast_1d(axes)
    for k, a in enumerate(axes):
        img = imgs[k]
        img = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
        a.imshow(img, cmap=cmap or ("gray" if img.ndim == 2 else None), vmin=0, vmax=1)
        a.set_axis_off()
        if titles is not None:
            a.set_title(titles[k], fontsize="small")
    return axes


def training_curves(histories: Mapping[str, dict], *, axes=None, title: str = "Training curves"):
    """Train and validation accuracy per epoch, one panel per run (the
    ``history`` dicts of ``nrlib.train.fit``)."""
    import matplotlib.pyplot as plt

    if axes is None:
        fig, axes = plt.subplots(1, len(histories), figsize=(3.7 * len(histories), 2.8), sharey=True, squeeze=False)
        axes = axes[0]
        fig.suptitle(title)
    for a, (name, h) in zip(axes, histories.items()):
        a.plot(h["epoch"], h["train_acc"], "o-", label="train")
        if any(np.isfinite(v) for v in h["val_acc"]):
            a.plot(h["epoch"], h["val_acc"], "s-", label="validation")
        a.set(title=name, xlabel="epoch")
    axes[0].set_ylabel("accuracy (%)")
    axes[0].legend(fontsize="small")
    return axes


def scoreboard(notebook: str, metrics: Mapping[str, float], *, keys: Sequence[str] | None = None,
               profile: str | None = None):
    """The paper-vs-ours table of a chapter as Markdown, one row per claim of
    its paper file (``nrlib.papers``): the claim, where the paper prints it,
    the paper's value, ours (with its 95% interval and n where ``metrics``
    holds a ``stats.Estimate``) and the verdict by the claim's rule, with a
    failed gate's or a reading's reason (``papers.verdict_markdown``). ``keys``
    limits it to some claims (a section's table); ``profile``, the run's, makes
    the claims judged only at other profiles read "judged at full only"."""
    from IPython.display import Markdown

    from . import papers

    rows = papers.scoreboard(notebook, dict(metrics), profile)
    if keys is not None:
        wanted = set(keys)
        rows = [r for r in rows if r["key"] in wanted]
    # the metadata lets the book's runbook re-render the table from the results and paper files
    return Markdown(papers.verdict_markdown(rows, whole=keys is None),
                    metadata={papers.SCOREBOARD_META: {"notebook": notebook,
                                                       "keys": None if keys is None else list(keys)}})


def settings_table(settings: Mapping, *, profile: str | None = None):
    """A chapter's per-profile sizes (its ``SIZES`` dict) as a small two-column table, one setting
    per row, instead of a printed dict one line wide: lists joined by commas, a nested dict as
    ``key: value; …``, floats to 4 significant digits. Returns a ``pandas.DataFrame`` (its HTML fits the page)."""
    import pandas as pd

    def text(v):
        if isinstance(v, Mapping):
            return "; ".join(f"{k}: {text(x)}" for k, x in v.items())
        if isinstance(v, (list, tuple)):
            return ", ".join(text(x) for x in v)
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    if not isinstance(settings, Mapping):
        raise ValueError(f"settings must be a dict of the profile's sizes, got {type(settings).__name__}")
    head = f"{profile} profile" if profile else "value"
    return pd.DataFrame({head: {k: text(v) for k, v in settings.items()}}).rename_axis("setting")


def ablation_curves(shares: Sequence[float], curves: Mapping[str, Sequence[float]], *,
                    random: Mapping[str, Sequence[float]] | None = None, dashed: Sequence[str] = (),
                    bold: Sequence[str] = (), ax=None, title: str = "", legend: bool = True,
                    band_label: str = "random sets",
                    xlabel: str = "share of the layer's channels removed",
                    ylabel: str = "accuracy (%)"):
    """Accuracy against the share of a layer's channels removed, one line per ranking in
    ``curves`` (most important first; each its own colour of ``tab20``; names in ``dashed`` drawn
    dashed, in ``bold`` black and thick) over the band of random sets of the same size
    (``random``: ``{"mean", "low", "high"}`` per share; ``band_label`` says what the band is), the
    control every ranking is read against (chapter 6). ``legend=False`` leaves the legend to the
    caller (one legend for a grid of panels)."""
    import matplotlib.pyplot as plt

    ax = _ax(ax)
    if random is not None:
        ax.fill_between(shares, random["low"], random["high"], color="0.85", label=band_label)
        ax.plot(shares, random["mean"], color="0.5", lw=1.5, label="random sets (mean)")
    cmap = plt.get_cmap("tab20")
    for i, (label, ys) in enumerate(curves.items()):
        style = dict(color="k", lw=2.2) if label in bold else dict(color=cmap(i % 20))
        ax.plot(shares, ys, "--" if label in dashed else "-", marker="o", ms=3, label=label, **style)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if legend:
        ax.legend(fontsize="xx-small", ncol=2)
    return ax


def agreement_table(rows: Mapping, *, digits: int = 3):
    """How rankings agree, one row per comparison: ``rows`` maps a label (a string, or a tuple such
    as ``(layer, "vs weight L1")``, which becomes a row index of several levels) to the dict of
    ``nrlib.neurons.agreement``. Columns: Spearman's ρ, Kendall's τ-b, how many of the top k the two
    share, the chance level k²/n and its hypergeometric p. Returns a ``pandas.DataFrame``."""
    import pandas as pd

    if not isinstance(rows, Mapping) or not rows:
        raise ValueError("rows must be a non-empty dict: label -> the dict of neurons.agreement(a, b)")
    cols = {"Spearman ρ": "spearman", "Kendall τ-b": "kendall_b", "top k": "k",
            "top k shared": "top_overlap", "chance": "top_expected", "p": "top_p"}
    out = pd.DataFrame({lab: {c: a[k] for c, k in cols.items()} for lab, a in rows.items()}).T
    out[["top k", "top k shared"]] = out[["top k", "top k shared"]].astype(int)
    out = out.astype({c: float for c in ("Spearman ρ", "Kendall τ-b", "chance", "p")}).round(digits)
    ci = [a.get("spearman_ci") for a in rows.values()]
    out.insert(1, "ρ 95% interval", [f"[{e.low:.2f}, {e.high:.2f}]" if e is not None else "—" for e in ci])
    return out


def magnitude_text(rows: Mapping, what: str) -> str:
    """One generated sentence: how ranking ``what`` relates to the kernels' L1 norms, from ``rows``
    (a label — a layer, a model — to ``nrlib.neurons.agreement(ranking, weight_l1)``), read off each
    Spearman ρ's Fisher-z interval over the channels: above 0, part of the order is the kernels'
    size; below 0, it favours small kernels; across 0, these channels cannot tell it from an order
    unrelated to size. The chapters' "does it say more than kernel size?" answered from the run."""
    from .papers import interval_text

    if not isinstance(rows, Mapping) or not rows:
        raise ValueError("rows must be a non-empty dict: label -> the dict of neurons.agreement(a, b)")
    ci = {lab: a.get("spearman_ci") for lab, a in rows.items()}
    side = {lab: stats.side(e) for lab, e in ci.items()}
    pick = lambda s: ", ".join(str(lab) for lab, v in side.items() if v == s)
    out = [f"`{what}` against the kernels' L1 norms: " + "; ".join(
        f"{lab} ρ = {'—' if e is None else interval_text(e)}" for lab, e in ci.items()) + "."]
    if pick("above"):
        out.append(f"Above 0 at {pick('above')}: there part of the order is the kernels' size, though "
                   "a ρ short of 1 leaves the rest to what the ranking measures.")
    if pick("below"):
        out.append(f"Below 0 at {pick('below')}: there it favours the smaller kernels.")
    if pick("across"):
        out.append(f"Across 0 at {pick('across')}: these channels cannot tell it from an order "
                   "unrelated to the kernels' size.")
    return " ".join(out)
