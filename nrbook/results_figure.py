"""The figure of a chapter on the results page: ours against the paper's value for every claim the
paper gives a number for, one panel per unit, coloured by verdict
(``book/_static/results/<notebook>.svg``, the same bytes at every regeneration)."""
from __future__ import annotations

import io
from pathlib import Path


from nrlib import papers
from nrlib.results import estimates
from nrlib.utils import atomic_write_bytes

from .chapters import FIGURES, SHOWN_PROFILES, runs, title

VERDICT_COLOURS = {papers.NOT_RUN: "#999999", papers.FULL_ONLY: "#bbbbbb",        # drawn in this order:
                   papers.REPORTED: "#4575b4", papers.BY_READING: "#8073ac",       # misses on top
                   papers.NOT_JUDGED: "#e0a000", papers.INCONCLUSIVE: "#fdae61",
                   papers.REPRODUCED: "#1a9850", papers.NOT_REPRODUCED: "#d73027"}
PROFILE_MARKERS = {"cpu": "hollow", "full": "filled"}
UNIT_TITLES = {"%": "percent", "pts": "percentage points", "s": "seconds", "count": "count",
               "": "numbers without a unit"}
# a fixed hash salt: the SVG's element ids, and so its bytes, are the same at every regeneration
FIGURE_RC = {"svg.hashsalt": "nrbook-results", "svg.fonttype": "none", "font.size": 7, "axes.titlesize": 7,
             "axes.linewidth": 0.6, "xtick.major.width": 0.6, "ytick.major.width": 0.6}


def figure_points(name: str, shown: dict[str, dict] | None = None) -> list[dict]:
    """The points of a chapter's figure: per shown run and claim the paper gives a number for and the
    run has ours: ``key``, ``unit``, ``paper``, ``ours``, ``profile`` and ``verdict`` (claims that
    repeat a key with the same paper value count once)."""
    shown = runs(name) if shown is None else shown
    points, seen = [], set()
    for profile, record in shown.items():
        for r in papers.scoreboard(name, estimates(record), profile):
            ident = (profile, r["key"], r["paper"])
            if r["paper"] is None or r["ours"] is None or ident in seen:
                continue
            seen.add(ident)
            points.append({"key": r["key"], "unit": r["unit"], "paper": float(r["paper"]), "ours": float(r["ours"]),
                           "profile": profile, "verdict": papers.verdict_class(r["verdict"])})
    return points


def _scatter(ax, pts: list[dict]) -> None:
    for verdict, colour in VERDICT_COLOURS.items():
        for profile in SHOWN_PROFILES:
            xy = [(p["paper"], p["ours"]) for p in pts if p["verdict"] == verdict and p["profile"] == profile]
            if xy:
                ax.scatter(*zip(*xy), s=14, marker="o", linewidths=0.8, edgecolors=colour,
                           facecolors=colour if profile == "full" else "none", zorder=2)


ZOOM = (90.0, 100.0)   # the inset of the percent panel: where accuracies near the paper's crowd


def _zoomed(pts: list[dict]) -> list[dict]:
    """The points of a percent panel that its ``ZOOM`` inset shows: those inside it when at least
    eight crowd there and none lies where the inset goes (the upper left); else none."""
    lo, hi = ZOOM
    inside = [p for p in pts if lo <= p["paper"] <= hi and lo <= p["ours"] <= hi]
    if len(inside) < 8 or any(p["paper"] < 50 and p["ours"] > 50 for p in pts):
        return []
    return inside


def _zoom_inset(ax, pts: list[dict]) -> None:
    """An inset of ``ZOOM`` × ``ZOOM`` in the upper left of a percent panel (``_zoomed``)."""
    lo, hi = ZOOM
    inside = _zoomed(pts)
    if not inside:
        return
    inset = ax.inset_axes([0.08, 0.56, 0.38, 0.38])
    inset.plot([lo, hi], [lo, hi], ls="--", lw=0.5, color="#666666", zorder=1)
    _scatter(inset, inside)
    inset.set_xlim(lo, hi + 0.5)
    inset.set_ylim(lo, hi + 0.5)
    inset.set_xticks([lo, hi])
    inset.set_yticks([lo, hi])
    inset.tick_params(labelsize=6, length=2, pad=1)
    ax.indicate_inset_zoom(inset, edgecolor="#999999", linewidth=0.5)


def figure(points: list[dict]):
    """A matplotlib ``Figure`` of ``points`` (``figure_points``): ours (y) against the paper's value
    (x) with the line y = x, one panel per unit (percent first, on 0–100), colour by verdict,
    hollow markers for the cpu run and filled ones for the full run. Build it inside
    ``matplotlib.rc_context(FIGURE_RC)``."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import EngFormatter

    units = sorted({p["unit"] for p in points}, key=lambda u: (u != "%", u))
    ratios = [3.0 if u == "%" else 1.9 for u in units]          # inches per panel
    fig = Figure(figsize=(0.5 + sum(ratios), 3.3 if "%" in units else 2.6), layout="constrained")
    axes = fig.subplots(1, len(units), width_ratios=ratios, squeeze=False)[0]
    for ax, unit in zip(axes, units):
        pts = [p for p in points if p["unit"] == unit]
        values = [v for p in pts for v in (p["paper"], p["ours"])]
        if unit == "%":
            lo, hi = 0.0, 100.0
        else:
            lo, hi = min(0.0, *values), max(values)
            hi = hi + 0.08 * ((hi - lo) or 1.0)
        pad = 0.03 * (hi - lo)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], ls="--", lw=0.6, color="#666666", zorder=1)
        _scatter(ax, pts)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_aspect("equal", adjustable="box")
        if unit == "%":
            _zoom_inset(ax, pts)
        if unit == "count":
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))
            ax.yaxis.set_major_formatter(EngFormatter(sep=""))
        keys = len({p["key"] for p in pts})
        ax.set_title(f"{UNIT_TITLES.get(unit, unit)}: {keys} key{'s' if keys != 1 else ''}")
        ax.set_xlabel("paper")
        ax.grid(True, lw=0.3, color="#dddddd")
    axes[0].set_ylabel("ours")
    verdicts = [v for v in papers.VERDICTS if any(p["verdict"] == v for p in points)]
    profiles = [q for q in SHOWN_PROFILES if any(p["profile"] == q for p in points)]
    handles = [Line2D([], [], ls="", marker="o", ms=4, color=VERDICT_COLOURS[v],
                      label="shown, no verdict" if v == papers.REPORTED else v) for v in verdicts]
    handles += [Line2D([], [], ls="", marker="o", ms=4, mec="#333333", mew=0.8,
                       mfc="#333333" if q == "full" else "none", label=f"{q} run") for q in profiles]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False,
               handletextpad=0.2, columnspacing=1.0)
    return fig


def figure_svg(points: list[dict]) -> bytes:
    """``figure(points)`` as SVG bytes; the same points give the same bytes (no date in the
    metadata, element ids from a fixed ``svg.hashsalt``, text kept as text)."""
    import matplotlib

    with matplotlib.rc_context(FIGURE_RC):
        buf = io.BytesIO()
        figure(points).savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    return buf.getvalue()


def write_figure(name: str, out_dir: Path, shown: dict[str, dict] | None = None) -> Path | None:
    """Write ``out_dir/_static/results/<name>.svg`` (``figure_svg`` of ``figure_points``) when it
    changes; with nothing to plot, remove a stale one and return None."""
    path = Path(out_dir) / FIGURES / f"{name}.svg"
    points = figure_points(name, shown)
    if not points:
        path.unlink(missing_ok=True)
        return None
    data = figure_svg(points)
    if not path.is_file() or path.read_bytes() != data:
        atomic_write_bytes(path, data)
    return path


def figure_md(name: str, path: Path, shown: dict[str, dict]) -> list[str]:
    points = figure_points(name, shown)
    claims = papers.for_notebook(name)["claims"]
    numeric = {c["key"] for c in claims if c["paper"] is not None}
    without = len({c["key"] for c in claims} - numeric)
    plotted = len({p["key"] for p in points})
    units = ", ".join(f"{UNIT_TITLES.get(u, u)}" for u in sorted({p["unit"] for p in points},
                                                                  key=lambda u: (u != "%", u)))
    runs_text = " and ".join(f"the {q} run ({PROFILE_MARKERS[q]} markers)" for q in shown)
    caption = (f"Ours (y) against the paper's value (x) for the {plotted} metric keys with a number in the paper "
               f"and in {runs_text}; the dashed line is y = x and the colour is the verdict. One panel per unit "
               f"({units}), each on its own scale.")
    if _zoomed([p for p in points if p["unit"] == "%"]):
        caption += f" The inset enlarges {ZOOM[0]:.0f}–{ZOOM[1]:.0f}% on both axes."
    if without:
        caption += (f" {without} key{'s' if without != 1 else ''} with no number in the paper (a direction or a "
                    f"comparison) {'are' if without != 1 else 'is'} in the scoreboard only.")
    if len(numeric) > plotted:
        missing = len(numeric) - plotted
        caption += (f" {missing} key{'s' if missing != 1 else ''} with a number in the paper "
                    f"{'have' if missing != 1 else 'has'} none from the run.")
    return [f":::{{figure}} {FIGURES.as_posix()}/{path.name}", f":alt: ours against the paper, {title(name)}",
            "", caption, ":::", ""]
