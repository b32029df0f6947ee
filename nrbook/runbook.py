"""Execute the book's notebooks with papermill, label the copies, and write the results page.

    python -m nrbook.runbook [--profile auto|smoke|cpu|full] [--only-stale] [--force]
                             [--notebooks 04 ...] [--out book] [--check] [--results-only]

Every ``notebooks/*.ipynb`` is executed with papermill (parameter ``profile``, kernel
``python3``, working directory ``notebooks/``) into ``<out>/<same name>.ipynb`` (``book/`` by
default), the copy the Jupyter Book renders (it builds with ``execute_notebooks: off``).
``auto`` is ``full`` when a CUDA GPU is present, else ``cpu`` (``nrlib.profiles.resolve``). Each
executed copy gets

* ``metadata.nrbook = {source_sha256, code_sha256, profile, device, date, seconds}``;
* its first cell (the source's ``# Title`` and introduction, tagged ``nrbook-banner``) rewritten as
  the title, a banner saying which profile ran where and when (and plainly when no ``full`` run
  exists), and a box with the paper, the claim and how to run the chapter, with the measured time
  of each profile (``opening_cell``);
* papermill's ``injected-parameters`` cell folded into the ``parameters`` cell
  (``merge_parameters``), collapsed (``hide-cell``), and no progress bars or ipywidgets state left
  (``strip_progress``, ``strip_widgets``);
* slider panels as browser-side sliders over precomputed frames: the runbook sets
  ``NRBOOK_STATIC=1`` for the kernel (``nrlib.widgets.panel``), and at the smoke profile draws a
  few of each panel's frames (``nrlib.widgets.static_env``).

The whole run's wall time also goes into the notebook's results file (``wall_seconds``), so the
banner and the results page show the same number.

The copy is written atomically: papermill writes a hidden temp file in ``<out>/``, which replaces
the old copy only once the run succeeded and the labels are in; a failed run leaves the old copy
untouched, keeps the failed notebook (under ``_build/failed/`` for ``book/``, under
``<out>/_failed/`` for another ``--out``, e.g. a test's temporary folder) and exits non-zero.

**Staleness.** ``source_sha256`` hashes the *source* notebook's cells (cell type and source
only, so output stripping, re-execution or a fresh clone do not change it). A book copy is
``fresh`` when its recorded hash equals that of the current source, ``prose`` when only the
Markdown differs, or the code only in what another profile would run (``code_sha256``, the hash of
the code cells as they run at the copy's profile, is the run's: outputs cannot have changed),
``stale`` when the code differs (or the copy has no ``nrbook`` metadata), ``missing`` when absent.
``--only-stale`` skips fresh copies and copies a prose-only edit into the executed copy
(``sync_prose``) instead of running it. The code "as it runs at a profile" (``profile_view``)
drops comments and reads each size table ``{"smoke": …, "cpu": …, "full": …}[profile]`` at that
profile alone, so a comment or a resized ``full`` leaves a ``cpu`` copy's numbers standing, and
the sync shows the new text in its code cells.

**Profiles rank full > cpu > smoke** (``nrlib.profiles.RANK``), and a copy made with a higher
profile than the one asked for is never overwritten without ``--force``: under ``--only-stale``
(``make book``) a stale higher copy is kept with a warning (a committed GPU run is never replaced
by a laptop run); on an explicit run (``make run PROFILE=cpu``) the overwrite is refused and the
exit status is 1.

Afterwards ``<out>/results.md`` is regenerated (``nrbook.results_page``): the scoreboard of every
paper claim (``nrlib.papers``) against ``data/results/<notebook>/{full,cpu}.json``, then each
chapter's numbers. The results JSON go to the data root (``$NRLIB_DATA``, default ``data/``), so a
test that points ``$NRLIB_DATA`` and ``--out`` at temporary folders touches neither ``data/`` nor
``book/``.
"""
from __future__ import annotations

import argparse
import ast
import datetime as _dt
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
import time
import tokenize
from pathlib import Path

import nbformat

from nrlib import data as _data
from nrlib import results as _results
from nrlib.results import estimates
from nrlib.profiles import PROFILES, RANK, resolve
from nrlib.utils import make_readable
from nrlib.widgets import static_env

from . import ROOT, chapter_notebooks, find_chapters
from .chapters import read_result, run_info, run_time_text
from .readme_page import write_readme_section
from .results_page import write_results_page

BANNER_TAG = "nrbook-banner"


# ---------------------------------------------------------------------------
# status of a book copy
# ---------------------------------------------------------------------------
def source_sha256(path: str | os.PathLike) -> str:
    """sha256 of a notebook's cells (type and source): unchanged by outputs or execution counts."""
    nb = nbformat.read(path, as_version=4)
    cells = [[c.cell_type, c.source] for c in nb.cells]
    return hashlib.sha256(json.dumps(cells, ensure_ascii=False).encode()).hexdigest()


def profile_view(source: str, profile: str | None) -> str:
    """A code cell as it runs at ``profile``: without its comments, and in each size table, a dict
    literal indexed by the ``profile`` parameter whose keys include every profile (``SIZES =
    {"smoke": …, "cpu": …, "full": …}[profile]``), the other profiles' entries read ``...``. A cell
    that does not parse (IPython magics) or ``profile=None`` is returned as it is."""
    if profile is None:
        return source
    try:
        code = _uncommented(source)
        tree = ast.parse(code)
    except (SyntaxError, tokenize.TokenError):       # IPython magics: the cell as it is
        return source
    source = code
    data = source.encode()                    # ast's column offsets count UTF-8 bytes
    starts = [0]
    for line in data.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    cuts = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Dict)
                and isinstance(node.slice, ast.Name) and node.slice.id == "profile"):
            continue
        keys = [k.value if isinstance(k, ast.Constant) else None for k in node.value.keys]
        if not set(PROFILES) <= set(keys):
            continue
        cuts += [(starts[v.lineno - 1] + v.col_offset, starts[v.end_lineno - 1] + v.end_col_offset)
                 for k, v in zip(keys, node.value.values) if k != profile]
    for a, b in sorted(cuts, reverse=True):
        data = data[:a] + b"..." + data[b:]
    return data.decode()


def _uncommented(source: str) -> str:
    """``source`` without its comments (and the blanks before them), by Python's own tokenizer."""
    lines = source.splitlines(keepends=True)
    for tok in reversed(list(tokenize.generate_tokens(io.StringIO(source).readline))):
        if tok.type == tokenize.COMMENT:
            (row, col), line = tok.start, lines[tok.start[0] - 1]
            end = "\n" if line.endswith("\n") else ""
            lines[row - 1] = line[:col].rstrip() + end
    return "".join(lines)


def code_sha256(path: str | os.PathLike, profile: str | None = None) -> str:
    """sha256 of a notebook's code cells alone, as they run at ``profile`` (``profile_view``; all
    of it for None): what its outputs depend on (its prose and the other profiles' sizes do not)."""
    nb = nbformat.read(path, as_version=4)
    return hashlib.sha256(json.dumps([profile_view(c.source, profile) for c in nb.cells
                                      if c.cell_type == "code"], ensure_ascii=False).encode()).hexdigest()


def status(src: Path, out_dir: Path) -> tuple[str, dict]:
    """('missing' | 'stale' | 'prose' | 'fresh', the copy's nrbook metadata or {}). 'prose': only the
    source's Markdown changed since the run (its code is the run's: ``code_sha256``), so the copy's
    text can be brought up to date without running it (``sync_prose``)."""
    dst = out_dir / src.name
    if not dst.exists():
        return "missing", {}
    try:
        meta = dict(nbformat.read(dst, as_version=4).metadata.get("nrbook", {}))
    except Exception:                         # unreadable copy: treat as stale, overwritable
        return "stale", {}
    if meta.get("source_sha256") == source_sha256(src):
        return "fresh", meta
    return ("prose" if meta.get("code_sha256") == code_sha256(src, meta.get("profile")) else "stale"), meta


def sync_prose(src: Path, dst: Path) -> bool:
    """Bring an executed copy's text up to date with its source when its outputs still stand
    (``status`` 'prose'): each Markdown cell takes the source's text, the first one rebuilt as at
    execution (``opening_cell``: title, banner, how to run), and each code cell that differs only
    in another profile's sizes (``profile_view``) takes the source's code; outputs are left as they
    are, and so is a code cell that differs in what ran (the parameters cell, which holds the run's
    own values). False, nothing written, when the two notebooks' cells do not pair up one to one."""
    source, nb = nbformat.read(src, as_version=4), nbformat.read(dst, as_version=4)
    meta = nb.metadata.get("nrbook", {})
    if len(source.cells) != len(nb.cells) or any(a.cell_type != b.cell_type for a, b in zip(source.cells, nb.cells)):
        return False
    for i, (a, b) in enumerate(zip(source.cells, nb.cells)):
        if a.cell_type == "markdown":
            b.source = (opening_cell(a.source, meta, src.stem, parameter_names(nb), run_info(src.stem))
                        if i == 0 else a.source)
        elif profile_view(a.source, meta.get("profile")) == profile_view(b.source, meta.get("profile")):
            b.source = a.source
    meta["source_sha256"] = source_sha256(src)
    write_copy(nb, dst)
    return True


def write_copy(nb, dst: Path) -> None:
    """Write an executed copy atomically (a temporary file beside it, then a rename), in the
    readable layout of ``make_readable``."""
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.stem}.", suffix=".tmp.ipynb")
    os.close(fd)
    nbformat.write(nb, tmp)
    make_readable(tmp)
    os.replace(tmp, dst)


def decide(state: str, recorded: str | None, profile: str, *, only_stale: bool, force: bool) -> tuple[str, str]:
    """What to do with one notebook: ('run' | 'skip' | 'sync' | 'keep' | 'refuse', why)."""
    if only_stale and state == "fresh":
        return "skip", f"up to date ({recorded} profile)"
    if only_stale and state == "prose":
        return "sync", "only its text changed since the run; the copy's text is brought up to date"
    if state != "missing" and not force and RANK.get(recorded, -1) > RANK[profile]:
        if only_stale:
            return "keep", (f"the source changed since its {recorded} run, but a {profile} run would replace "
                            f"a {recorded} run; keeping the {recorded} copy (re-run it with "
                            f"`make run PROFILE={recorded}`, or pass --force)")
        return "refuse", (f"holds a {recorded} run; not overwriting it with a {profile} run "
                          f"(pass --force, or FORCE=1 to make, to do so)")
    return "run", {"missing": "no executed copy yet", "stale": "source changed since the last run",
                   "prose": "re-run requested (only the text changed)", "fresh": "re-run requested"}[state]


# ---------------------------------------------------------------------------
# executing one notebook
# ---------------------------------------------------------------------------
def full_scale(stem: str | None) -> str:
    """What a chapter's ``full`` profile runs, in words: its paper file's ``full_scale`` where it
    says (the full run is not the paper's own scale), else "the paper's scale"."""
    from nrlib import papers
    doc = papers.for_notebook(stem) if stem else None
    return (doc or {}).get("full_scale") or "the paper's scale"


def banner_text(meta: dict, stem: str | None = None) -> str:
    """The line on top of a chapter that says which run it shows, and whether a ``full`` run exists
    (and what it would run: ``full_scale``)."""
    text = (f"This page was executed with the **{meta['profile']}** profile on {meta['device']} on "
            f"{meta['date'][:10]} ({meta['seconds']:.0f} s); see the [results page](results.md) "
            f"for how it compares with the paper.")
    if meta["profile"] != "full":
        text += (" **No `full` run of this chapter exists yet**: the verdicts below are this smaller profile's, "
                 "on smaller models and subsets, with intervals sized to them; claims judged only at the full "
                 "profile say \"judged at full only\", and settings this profile does not run \"not run\". "
                 f"A `full` run (a GPU, {full_scale(stem)}) replaces "
                 "these numbers when it exists.")
    return text


def parameter_names(nb) -> list[str]:
    """The names assigned in the notebook's ``parameters`` cell."""
    cell = next((c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    return re.findall(r"^([A-Za-z_]\w*)\s*=", cell.source, flags=re.M) if cell else []


def opening_cell(source: str, meta: dict, stem: str, params: list[str], runs: dict) -> str:
    """The first cell of an executed chapter: its title, the banner (which run this page shows) as an
    admonition, and a box with the paper, the claim, what is reproduced and how to run the chapter
    (the commands and the measured time of each profile). ``source`` is the source notebook's first
    cell: ``# Title`` and the paragraphs that introduce the paper, which go in the box; ``runs``:
    ``chapters.run_info(stem)``."""
    lines = source.strip().splitlines()
    title, body = (lines[0], "\n".join(lines[1:])) if lines and lines[0].startswith("# ") else ("", source)
    boxed = [p.strip() for p in re.split(r"\n\s*\n", body) if p.strip()]
    kind = "note" if meta["profile"] == "full" else "warning"
    head = "This page shows a `full` run" if meta["profile"] == "full" else "No `full` run yet"
    shown = ", ".join(f"`{n}`" for n in params[:4]) + (", …" if len(params) > 4 else "")
    num = stem.split("_")[0]
    run = (f"**How to run it.** In JupyterLab, open `notebooks/{stem}.ipynb` and run all cells; its parameters "
           f"({shown}) are in the first code cell, shown collapsed below. From a shell, `make run PROFILE=cpu "
           f"NB={num}` re-executes this chapter for the book and rebuilds it (`PROFILE=full` on a GPU), and "
           f"`papermill notebooks/{stem}.ipynb out.ipynb --cwd notebooks -p profile cpu` runs it on its own; "
           f"`-p name value` changes any parameter. Measured run times of the whole notebook:")
    rows = ["| profile | run time | device | date |", "| --- | --- | --- | --- |"]
    for prof in ("cpu", "full"):
        r = runs.get(prof)
        if prof == meta["profile"]:
            r = dict(r or {}, seconds=meta["seconds"], device=meta["device"], date=meta["date"])
        rows.append(f"| `{prof}` | {run_time_text(r)} | {r.get('device', '—')} | {str(r.get('date'))[:10]} |"
                    if r else f"| `{prof}` | not run yet | {'a CUDA GPU' if prof == 'full' else 'a CPU'} | — |")
    out = [title, "", f":::{{admonition}} {head}", f":class: {kind}", banner_text(meta, stem), ":::", "",
           "::::{admonition} The paper, the claim, and how to run this chapter", ":class: tip",
           *[x for p in boxed for x in (p, "")], run, "", *rows, "::::"]
    return "\n".join(out) + "\n"


HIDE_TAG = "hide-cell"                                  # myst-nb: the cell is collapsed, a click shows it
PARAMETER_TAGS = ("parameters", "injected-parameters")  # the source's defaults and papermill's values


def merge_parameters(nb) -> int:
    """Fold papermill's ``injected-parameters`` cell into the ``parameters`` cell of an executed copy,
    so the book shows one parameters cell: each injected ``name = value`` replaces the value of the
    default's line (its comment kept), or is appended when the cell has no such line; a first comment
    line names the values this run set that differ from the notebook's defaults. The injected cell is
    removed. Returns how many values were injected (0: nothing to merge)."""
    import ast

    def tagged(tag):
        return [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]

    params, injected = next(iter(tagged("parameters")), None), tagged("injected-parameters")
    if params is None or not injected:
        return 0
    lines = params.source.splitlines()
    defaults = {n.targets[0].id: n for n in ast.parse(params.source).body
                if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name)
                and n.lineno == n.end_lineno}
    changed, n = [], 0
    for cell in injected:
        for node in ast.parse(cell.source).body:
            if not (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)):
                continue
            name, value, n = node.targets[0].id, ast.get_source_segment(cell.source, node.value), n + 1
            old = defaults.get(name)
            if old is None:
                lines.append(f"{name} = {value}")
                changed.append(f"{name} = {value}")
                continue
            line = lines[old.lineno - 1].encode()         # ast's offsets count UTF-8 bytes
            start, end = old.value.col_offset, old.value.end_col_offset
            default = line[start:end].decode()
            if default != value:
                changed.append(f"{name} = {value} (the notebook's default: {default})")
                lines[old.lineno - 1] = (line[:start] + value.encode() + line[end:]).decode()
    if changed:
        lines.insert(0, "# set for this run (papermill -p): " + "; ".join(changed))
    params.source = "\n".join(lines)
    nb.cells = [c for c in nb.cells if not any(c is i for i in injected)]
    return n


def hide_parameters(nb) -> int:
    """Collapse papermill's cells (the ``parameters`` cell and the injected one) in the book; returns how many."""
    n = 0
    for c in nb.cells:
        tags = c.get("metadata", {}).get("tags", [])
        if any(t in tags for t in PARAMETER_TAGS):
            if HIDE_TAG not in tags:
                c.metadata["tags"] = [*tags, HIDE_TAG]
            n += 1
    return n


LEGACY_TABLE = "| claim | where | paper | ours | verdict | rule |"   # scoreboard tables before reader_table


def _legacy_keys(md: str, doc: dict) -> list[str] | None:
    """The claim keys of a verdict table written before the tables carried their keys: each row
    (claim, where, paper, rule) matched to the paper file's claim that reads the same, exactly or
    else the closest above 90% alike; None when a row matches none."""
    import difflib

    from nrlib import papers

    def sig(cells):
        return " | ".join(str(c).strip() for c in cells)

    claims = {sig([c["claim"], c["where"], papers.paper_cell({**c, "paper_text": c.get("paper_text")}),
                   papers.rule_text(c["rule"])]): c["key"] for c in doc["claims"]}
    keys = []
    for line in md.splitlines()[2:]:
        if not line.startswith("| "):
            continue
        cells = [c.replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        row = sig([cells[0], cells[1], cells[2], cells[5]])
        best = row if row in claims else next(iter(difflib.get_close_matches(row, claims, n=1, cutoff=0.9)), None)
        if best is None:
            return None
        keys.append(claims[best])
    return list(dict.fromkeys(keys))          # (two claims may judge one metric: both are rows)


def refresh_scoreboards(nb, stem: str) -> int:
    """Re-render the verdict tables of an executed chapter (``nrlib.plot.scoreboard``'s outputs) from
    its run's results file and the paper file as they are now, so the chapter's tables agree with the
    results page (a rule or a claim's text edited since the run shows in both). Tables written before
    the outputs carried their keys are recognised by their header and matched claim by claim.
    Returns how many tables were re-rendered; 0 without a paper file or a results file."""
    from nrlib import papers

    doc, profile = papers.for_notebook(stem), nb.metadata.get("nrbook", {}).get("profile")
    record = read_result(stem, profile) if doc is not None and profile else None
    if record is None:
        return 0
    rows = papers.scoreboard(stem, estimates(record), profile)
    n = 0
    for c in nb.cells:
        for o in c.get("outputs", []) if c.cell_type == "code" else []:
            md = o.get("data", {}).get("text/markdown")
            # IPython files a displayed object's metadata under its MIME type; copies refreshed before
            # this was read right hold it at the top level
            held = o.get("metadata", {})
            meta = held.get("text/markdown", {}).get(papers.SCOREBOARD_META) or held.get(papers.SCOREBOARD_META)
            if md is None or (meta is None and not str(md).startswith(LEGACY_TABLE)):
                continue
            keys = meta["keys"] if meta else _legacy_keys(str(md), doc)
            if meta is None and keys is None:
                continue
            wanted = None if keys is None else set(keys)
            mine = rows if wanted is None else [r for r in rows if r["key"] in wanted]
            if meta is None and len(mine) != sum(ln.startswith("| ") for ln in str(md).splitlines()[2:]):
                continue                      # the old table's rows are not the claims found: kept
            whole = keys is None or len(mine) == len(rows)
            o["data"]["text/markdown"] = papers.verdict_markdown(mine, whole=whole)
            held = o.setdefault("metadata", {})
            held.pop(papers.SCOREBOARD_META, None)
            held.setdefault("text/markdown", {})[papers.SCOREBOARD_META] = {"notebook": stem,
                                                                             "keys": None if whole else keys}
            n += 1
    return n


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def strip_widgets(nb) -> int:
    """Remove ipywidgets from an executed copy: the saved widget state (which makes the book load the
    widget scripts from a CDN) and any output that is a widget view (it needs a kernel; the slider
    panels of a book run are static HTML, ``nrlib.widgets.StaticPanel``). Returns the outputs removed."""
    nb.metadata.pop("widgets", None)
    removed = 0
    for c in nb.cells:
        if c.cell_type == "code":
            keep = [o for o in c.get("outputs", []) if WIDGET_VIEW not in o.get("data", {})]
            removed += len(c.outputs) - len(keep)
            c["outputs"] = keep
    return removed


def failed_dir(out_dir: Path) -> Path:
    """Where a failed run's partly executed notebook goes: ``_build/failed/`` for the book
    (``scripts/gpu_full.sh`` sends it back from there), ``<out>/_failed/`` for any other ``--out``."""
    book = (ROOT / "book").resolve()
    return ROOT / "_build" / "failed" if Path(out_dir).resolve() == book else Path(out_dir) / "_failed"


PROGRESS = re.compile(r"^[^\n]*\d+%\|[^\n]*\|\s*\d+/\d+")   # tqdm's text: "desc:  40%|████  | 2/5 [...]"


def strip_progress(nb) -> int:
    """Remove the progress bars (``tqdm.auto`` widgets and their text) that an
    executed notebook keeps as outputs — a rendered page shows results, not
    the bars of the run that made them; slider panels stay. Returns how many."""
    removed = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        keep = []
        for o in cell.get("outputs", []):
            text = o.get("data", {}).get("text/plain", "") if o.get("output_type") == "display_data" else (
                o.get("text", "") if o.get("output_type") == "stream" and o.get("name") == "stderr" else "")
            if text and all(PROGRESS.match(line) or not line.strip() for line in str(text).replace("\r", "\n").splitlines()):
                removed += 1
                continue
            keep.append(o)
        cell["outputs"] = keep
    return removed


def execute(src: Path, out_dir: Path, profile: str, device: str) -> dict:
    """Run ``src`` with papermill into ``out_dir/src.name`` atomically; return the nrbook metadata."""
    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    sha = source_sha256(src)
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{src.stem}.", suffix=".tmp.ipynb")
    os.close(fd)
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(str(src), tmp, parameters={"profile": profile}, kernel_name="python3",
                            cwd=str(src.parent), progress_bar=True)
        seconds = time.perf_counter() - t0
        nb = nbformat.read(tmp, as_version=4)
        meta = {"source_sha256": sha, "code_sha256": code_sha256(src, profile), "profile": profile, "device": device,
                "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "seconds": round(seconds, 1)}
        nb.metadata["nrbook"] = meta
        strip_progress(nb)
        strip_widgets(nb)
        merge_parameters(nb)
        hide_parameters(nb)
        refresh_scoreboards(nb, src.stem)
        try:                                  # the run's wall time, beside its per-stage seconds
            _results.set_wall_seconds(src.stem, profile, seconds)
        except FileNotFoundError:             # a notebook that writes no results file
            pass
        first = nb.cells[0]
        if first.cell_type != "markdown" or not first.source.lstrip().startswith("# "):
            raise ValueError(f"{src.name}: the first cell must be the markdown cell with the chapter's "
                             f"'# Title' (and its Paper/Claim paragraphs)")
        first.source = opening_cell(first.source, meta, src.stem, parameter_names(nb), run_info(src.stem))
        first.metadata["tags"] = [*first.metadata.get("tags", []), BANNER_TAG]
        nbformat.write(nb, tmp)
        make_readable(tmp)
        os.replace(tmp, out_dir / src.name)
        return meta
    except BaseException:
        if os.path.exists(tmp):
            failed = failed_dir(out_dir) / src.name
            failed.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(tmp, failed)
            print(f"runbook: the partly executed notebook is in {_rel(failed)}", file=sys.stderr)
        raise


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------
def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def select(filters: list[str] | None) -> list[Path]:
    """The source notebooks, optionally only those whose name starts with one of ``filters``."""
    if not filters:
        return chapter_notebooks()
    chosen = []
    for f in filters:
        try:
            hits = find_chapters(f)
        except ValueError as e:
            raise SystemExit(f"runbook: {e}") from None
        chosen += [p for p in hits if p not in chosen]
    return chosen


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nrbook.runbook", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="auto", choices=["auto", *PROFILES],
                    help="auto = full with a CUDA GPU, else cpu (default: auto)")
    ap.add_argument("--only-stale", action="store_true",
                    help="skip notebooks whose executed copy is up to date with its source")
    ap.add_argument("--force", action="store_true", help="overwrite copies made with a higher profile")
    ap.add_argument("--notebooks", nargs="+", metavar="NB", help="only these (name prefixes, e.g. 04)")
    ap.add_argument("--out", default="book", help="folder of the executed copies (default: book)")
    ap.add_argument("--check", action="store_true", help="only list each notebook's status")
    ap.add_argument("--results-only", action="store_true",
                    help="only regenerate <out>/results.md and the executed chapters' verdict tables")
    args = ap.parse_args(argv)

    out_dir = Path(args.out) if Path(args.out).is_absolute() else ROOT / args.out
    notebooks = select(args.notebooks)
    if args.check:
        for src in notebooks:
            state, meta = status(src, out_dir)
            extra = (f"  profile={meta.get('profile', '?')}  device={meta.get('device', '?')}  "
                     f"date={str(meta.get('date', '?'))[:10]}  seconds={meta.get('seconds', '?')}") if meta else ""
            print(f"{src.stem:32s} {state:8s}{extra}")
        return 0
    if args.results_only:
        for src in notebooks:
            book = out_dir / src.name
            if book.is_file():
                nb = nbformat.read(book, as_version=4)
                before = json.dumps(nb, sort_keys=True)
                meta = nb.metadata.get("nrbook", {})
                if meta.get("source_sha256") == source_sha256(src):   # fresh: its code hash as it ran
                    meta["code_sha256"] = code_sha256(src, meta.get("profile"))
                    # the opening cell: its banner reads the paper file (full_scale) and the runs' times
                    first = nbformat.read(src, as_version=4).cells[0]
                    if meta.get("profile") and BANNER_TAG in nb.cells[0].metadata.get("tags", []):
                        nb.cells[0].source = opening_cell(first.source, meta, src.stem, parameter_names(nb),
                                                          run_info(src.stem))
                refresh_scoreboards(nb, src.stem)
                if json.dumps(nb, sort_keys=True) != before:
                    write_copy(nb, book)
                    print(f"runbook: brought {_rel(book)} up to date (verdict tables, banner, code hash)")
        print(f"runbook: wrote {_rel(write_results_page(out_dir))}")
        if out_dir.resolve() == (ROOT / "book").resolve() and write_readme_section():
            print("runbook: wrote the results section of README.md")
        return 0

    profile = resolve(args.profile)
    device = _results.device_name()
    # the kernel imports this checkout's nrlib even without `pip install -e .`
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    # slider panels become browser-side sliders over precomputed frames (nrlib.widgets.panel);
    # at smoke, a few of each panel's frames
    os.environ.update(static_env(profile))
    print(f"runbook: profile={profile} on {device}; {len(notebooks)} notebook(s) -> {out_dir}")
    commit = _results.git_commit()
    if commit.endswith("-dirty") and out_dir.resolve() == (ROOT / "book").resolve():
        print(f"runbook: WARNING: the code has uncommitted changes, so the results will record the commit "
              f"{commit}; commit first for a book whose every number names the code that made it",
              file=sys.stderr)

    refused, hinted = [], False          # hinted: missing datasets named before the first run
    for src in notebooks:
        state, meta = status(src, out_dir)
        action, why = decide(state, meta.get("profile"), profile, only_stale=args.only_stale, force=args.force)
        if action == "skip":
            print(f"runbook: {src.stem}: {why}; skipped")
            continue
        if action == "sync":
            if sync_prose(src, out_dir / src.name):
                print(f"runbook: {src.stem}: {why}")
                continue
            print(f"runbook: {src.stem}: only the text changed, but its cells no longer pair up with the "
                  f"copy's; treated as changed")
            action, why = decide("stale", meta.get("profile"), profile, only_stale=args.only_stale, force=args.force)
        if action in ("keep", "refuse"):
            print(f"runbook: WARNING: {args.out}/{src.name}: {why}", file=sys.stderr)
            if action == "refuse":
                refused.append(src.stem)
            continue
        if not hinted:
            hinted = True
            for name in _data.DATASETS:
                if _data.missing_files(name):
                    print(f"runbook: the {name} files are not under {_data.data_root()}: a chapter that reads "
                          f"them tries torchvision's download (`make data` links an offline copy; "
                          f"data/README.md)", file=sys.stderr)
        print(f"runbook: {src.stem}: {why}; executing with profile={profile} ...", flush=True)
        try:
            meta = execute(src, out_dir, profile, device)
        except KeyboardInterrupt:   # Ctrl-C, or the time budget of scripts/gpu_full.sh
            print(f"runbook: interrupted while executing {src.name}; {args.out}/{src.name} was left as it was",
                  file=sys.stderr)
            return 130
        except Exception as e:
            write_results_page(out_dir)
            raise SystemExit(f"runbook: ERROR: {src.name} failed with profile={profile}: "
                             f"{type(e).__name__}: {str(e).strip()[:2000]}\n"
                             f"runbook: {args.out}/{src.name} was left as it was.") from None
        print(f"runbook: {src.stem}: done in {meta['seconds']:.0f} s -> {args.out}/{src.name}")
    print(f"runbook: wrote {_rel(write_results_page(out_dir))}")
    if out_dir.resolve() == (ROOT / "book").resolve() and write_readme_section():
        print("runbook: wrote the results section of README.md")
    if refused:
        print(f"runbook: ERROR: refused to overwrite higher-profile runs of {refused}; "
              f"pass --force (make ... FORCE=1) to replace them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
