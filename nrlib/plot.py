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
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def _ax(ax, figsize=(6, 3.6)):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=figsize)
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
    ax.legend(fontsize=7, ncol=2)
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
                       rotation=90 if tick_labels is None and len(layers) > 8 else 0, fontsize=7)
    ax.set(title=title, ylabel=ylabel, xlabel=xlabel)
    ax.legend(fontsize=8)
    return ax


def heatmap(matrix, *, ax=None, title: str = "", xlabel: str = "", ylabel: str = "", annot: bool = True,
            fmt: str = ".0f", vmin=None, vmax=None, cmap: str = "rocket_r", cbar: bool = True,
            cbar_label: str | None = None):
    """An annotated heat map (seaborn) of a 2-D array; NaN cells stay blank."""
    import seaborn as sns

    ax = _ax(ax, (5.5, 4.2))
    m = np.asarray(matrix, dtype=float)
    sns.heatmap(m, annot=annot, fmt=fmt, cmap=cmap, vmin=vmin, vmax=vmax, ax=ax, cbar=cbar,
                annot_kws={"size": 7}, cbar_kws={"label": cbar_label} if cbar and cbar_label else None)
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
            a.set_title(titles[k], fontsize=8)
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
    axes[0].legend(fontsize=8)
    return axes


def scoreboard(notebook: str, metrics: Mapping[str, float], *, keys: Sequence[str] | None = None):
    """The paper-vs-ours table of a chapter as Markdown, one row per claim of
    its paper file (``nrlib.papers``): the claim, where the paper prints it,
    the paper's value, ours and the verdict by the claim's rule. ``keys``
    limits it to some claims (a section's table)."""
    from IPython.display import Markdown

    from . import papers

    rows = papers.scoreboard(notebook, dict(metrics))
    if keys is not None:
        rows = [r for r in rows if r["key"] in set(keys)]
    return Markdown(papers.markdown_table(rows))
