"""Execute the book's notebooks with papermill, label the copies, and write the results page.

    python -m nrlib.runbook [--profile auto|smoke|cpu|full] [--only-stale] [--force]
                            [--notebooks 04 ...] [--out book] [--check] [--results-only]

Every ``notebooks/*.ipynb`` is executed with papermill (parameter ``profile``, kernel
``python3``, working directory ``notebooks/``) into ``<out>/<same name>.ipynb`` (``book/`` by
default), the copy the Jupyter Book renders (it builds with ``execute_notebooks: off``).
``auto`` is ``full`` when ``torch.cuda.is_available()``, else ``cpu``. Each executed copy gets

* ``metadata.nrbook = {source_sha256, profile, device, date, seconds}``, and
* a first markdown cell tagged ``nrbook-banner`` saying which profile ran where and when.

The copy is written atomically: papermill writes a hidden temp file in ``<out>/``, which replaces
the old copy only once the run succeeded and the labels are in; a failed run leaves the old copy
untouched, keeps the failed notebook under ``_build/failed/`` and exits non-zero.

**Staleness.** ``source_sha256`` hashes the *source* notebook's cells (cell type and source
only, so output stripping, re-execution or a fresh clone do not change it). A book copy is
``fresh`` when its recorded hash equals that of the current source, ``stale`` when it differs
(or the copy has no ``nrbook`` metadata), ``missing`` when absent. ``--only-stale`` skips fresh
copies.

**Profiles rank full > cpu > smoke**, and a copy made with a higher profile than the one asked
for is never overwritten without ``--force``: under ``--only-stale`` (``make book``) a stale
higher copy is kept with a warning (a committed GPU run is never replaced by a laptop run);
on an explicit run (``make run PROFILE=cpu``) the overwrite is refused and the exit status is 1.

Afterwards ``<out>/results.md`` is regenerated (``write_results_page``): for each notebook,
the paper's numbers (``PAPER`` below) beside ours from ``data/results/<notebook>/{full,cpu}.json``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from .utils import atomic_write_bytes, make_readable

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
RANK = {"smoke": 0, "cpu": 1, "full": 2}
BANNER_TAG = "nrbook-banner"
NOT_MEASURED = None     # a metric we report that the paper does not

# The paper's numbers for each notebook, keyed like the `metrics` of its results JSON.
# Later chapters add their own entry; PAPER_SOURCE says where the numbers come from.
PAPER: dict[str, dict[str, float | None]] = {
    "04_dominant_filters": {
        "clean_acc/shallow": 98.94, "clean_acc/base": 99.33, "clean_acc/dense": 99.36,
        **{f"fgsm_acc/{m}/eps={e}": v for m, row in {
            "shallow": (62.10, 21.10, 10.61, 6.71), "base": (70.36, 34.01, 21.26, 16.75),
            "dense": (74.15, 25.88, 11.64, 6.98)}.items() for e, v in zip((0.1, 0.2, 0.3, 0.5), row)},
        **{f"pgd_acc/{m}/eps={e}": v for m, row in {
            "shallow": (60.00, 1.44, 0.89, 0.89), "base": (64.34, 0.82, 0.58, 0.58),
            "dense": (67.95, 5.51, 1.20, 1.14)}.items() for e, v in zip((0.1, 0.2, 0.3, 0.5), row)},
        "split_ft/base/benign+pgd/clean": 99.01, "split_ft/base/benign+pgd/adv": 98.56,
        "split_ft/base/benign+fgsm/clean": 98.91, "split_ft/base/benign+fgsm/adv": 98.61,
        "full_at/base/benign+pgd/clean": 99.13, "full_at/base/benign+pgd/adv": 98.86,
        "full_at/base/benign+fgsm/clean": 98.83, "full_at/base/benign+fgsm/adv": 98.98,
        "time_s/split_ft/base/pgd": NOT_MEASURED, "time_s/full_at/base/pgd": NOT_MEASURED,
        "time_s/split_ft/base/fgsm": NOT_MEASURED, "time_s/full_at/base/fgsm": NOT_MEASURED,
    },
    # not a notebook: `python -m nrlib.train` writes data/results/zoo/<profile>.json
    "zoo": {"test_acc/resnet18": 93.0, "test_acc/resnet50": 93.0, "test_acc/resnet101": 93.0,
            "test_acc/vgg16": 91.0, "test_acc/vgg19": 92.5},
    "05_toggle_activity": {
        # the report gives no table of toggle numbers, only figures and two statements
        "clean_acc/resnet18": NOT_MEASURED,
        **{f"toggle_gain/{k}/n={n}": NOT_MEASURED for k in ("binary", "ternary") for n in (5, 10, 50, 100, 500, 1000)},
        "toggle_gain/binary/max_over_eps": 5.0, "toggle_gain/ternary/max_over_eps": 1.0,
    },
}
PAPER_SOURCE = {
    "04_dominant_filters": "Karnine et al. (2024): clean accuracy from Tables 6–7, FGSM and PGD accuracy "
                           "from Tables 4–5, adversarial training of the whole model from Tables 6–7 and "
                           "split-model fine-tuning (top 10% filters) from Tables 8–9; ε in pixel units.",
    "zoo": "the accuracy targets of the book's full profile, those of the models the papers studied "
           "(ResNets ≥ 93%, VGG-16 ≥ 91%, VGG-19 ≥ 92.5%; CIFAR-10 test set); the cpu profile's models are "
           "width-reduced and trained on a subset, so they are far below.",
    "05_toggle_activity": "Prattico (2022), §4.2.3 and Fig. 11: the largest toggle-activity gain over ε is "
                          "'around 5%' (binary) and 'less than 1%' (ternary) — shown here as 5 and 1 "
                          "(an upper bound); Fig. 7 (gain vs dataset size) has no numbers, only that it "
                          "falls towards 0. The report does not state its model's accuracy.",
}


# ---------------------------------------------------------------------------
# status of a book copy
# ---------------------------------------------------------------------------
def source_sha256(path: str | os.PathLike) -> str:
    """sha256 of a notebook's cells (type and source): unchanged by outputs or execution counts."""
    nb = nbformat.read(path, as_version=4)
    cells = [[c.cell_type, c.source] for c in nb.cells]
    return hashlib.sha256(json.dumps(cells, ensure_ascii=False).encode()).hexdigest()


def status(src: Path, out_dir: Path) -> tuple[str, dict]:
    """('missing' | 'stale' | 'fresh', the copy's nrbook metadata or {})."""
    dst = out_dir / src.name
    if not dst.exists():
        return "missing", {}
    try:
        meta = dict(nbformat.read(dst, as_version=4).metadata.get("nrbook", {}))
    except Exception:                         # unreadable copy: treat as stale, overwritable
        return "stale", {}
    fresh = meta.get("source_sha256") == source_sha256(src)
    return ("fresh" if fresh else "stale"), meta


def decide(state: str, recorded: str | None, profile: str, *, only_stale: bool, force: bool) -> tuple[str, str]:
    """What to do with one notebook: ('run' | 'skip' | 'keep' | 'refuse', why)."""
    if only_stale and state == "fresh":
        return "skip", f"up to date ({recorded} profile)"
    if state != "missing" and not force and RANK.get(recorded, -1) > RANK[profile]:
        if only_stale:
            return "keep", (f"the source changed since its {recorded} run, but a {profile} run would replace "
                            f"a {recorded} run; keeping the {recorded} copy (re-run it with "
                            f"`make run PROFILE={recorded}`, or pass --force)")
        return "refuse", (f"holds a {recorded} run; not overwriting it with a {profile} run "
                          f"(pass --force, or FORCE=1 to make, to do so)")
    return "run", {"missing": "no executed copy yet", "stale": "source changed since the last run",
                   "fresh": "re-run requested"}[state]


# ---------------------------------------------------------------------------
# executing one notebook
# ---------------------------------------------------------------------------
def banner_text(meta: dict) -> str:
    text = (f"This page was executed with the **{meta['profile']}** profile on {meta['device']} on "
            f"{meta['date'][:10]} ({meta['seconds']:.0f} s); see the [results page](results.md) "
            f"for how it compares with the paper.")
    if meta["profile"] != "full":
        text += (" The `full` profile (a GPU, the paper's scale) gives the numbers the book compares with "
                 "the paper; smaller profiles show the method's behaviour on smaller models and subsets.")
    return text


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
        meta = {"source_sha256": sha, "profile": profile, "device": device,
                "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "seconds": round(seconds, 1)}
        nb.metadata["nrbook"] = meta
        nb.cells = [c for c in nb.cells if BANNER_TAG not in c.get("metadata", {}).get("tags", [])]
        banner = nbformat.v4.new_markdown_cell(banner_text(meta), metadata={"tags": [BANNER_TAG]})
        if (nb.nbformat, nb.nbformat_minor) < (4, 5):
            banner.pop("id", None)            # cell ids exist from nbformat 4.5 on
        nb.cells.insert(0, banner)
        nbformat.write(nb, tmp)
        make_readable(tmp)
        os.replace(tmp, out_dir / src.name)
        return meta
    except BaseException:
        if os.path.exists(tmp):
            failed = ROOT / "_build" / "failed" / src.name
            failed.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(tmp, failed)
            print(f"runbook: the partly executed notebook is in {_rel(failed)}", file=sys.stderr)
        raise


# ---------------------------------------------------------------------------
# the results page
# ---------------------------------------------------------------------------
TITLES = {"zoo": "The CIFAR-10 model zoo (`python -m nrlib.train`)"}


def _title(name: str) -> str:
    if name in TITLES:
        return TITLES[name]
    src = NOTEBOOKS / f"{name}.ipynb"
    if src.exists():
        for cell in nbformat.read(src, as_version=4).cells:
            for line in cell.source.splitlines():
                if cell.cell_type == "markdown" and line.startswith("# "):
                    return line[2:].strip()
    return name


def _fmt(key: str, v) -> str:
    if v is None:
        return "—"
    return f"{v:.1f} s" if key.startswith("time_s") else f"{v:.2f}"


def _date(s: str) -> str:
    try:
        return _dt.datetime.fromisoformat(s).astimezone(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except (TypeError, ValueError):
        return str(s)


def _cell(s) -> str:
    return str(s).replace("|", "\\|")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "|".join([" --- "] * len(header)) + "|"]
            + ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows] + [""])


def write_results_page(out_dir: Path = ROOT / "book") -> Path:
    """(Re)write ``out_dir/results.md``: per notebook, the paper's numbers beside ours (full, cpu)."""
    names = sorted({p.stem for p in NOTEBOOKS.glob("*.ipynb")} | set(PAPER))
    md = ["# Results: the papers' numbers beside ours", "",
          "Each chapter ends by writing its headline numbers to `data/results/<notebook>/<profile>.json`, "
          "with the device, date, profile and git commit of the run. This page is generated from those "
          "files by `python -m nrlib.runbook` (run by `make book`); do not edit it by hand. The `full` "
          "profile runs the paper's setting on a GPU; the `cpu` profile runs smaller models and subsets, "
          "so its numbers show the trend, not the paper's values. Accuracies are in percent and ε is in "
          "pixel units (see [the notation](notation.md)).", ""]
    from . import results as _results       # imports torch: only when needed

    found = False
    for name in names:
        runs = {}
        for p in ("full", "cpu"):
            try:
                runs[p] = _results.read(name, p)
            except (FileNotFoundError, json.JSONDecodeError):
                pass
        md += [f"## {_title(name)}", ""]
        if (out_dir / f"{name}.ipynb").exists():
            md += [f"[Read the chapter]({name}.ipynb).", ""]
        if not runs:
            how = ("`python -m nrlib.train --profile cpu`" if name == "zoo"
                   else f"`make run PROFILE=cpu NB={name[:2]}` (or `make full` on a GPU)")
            md += [f"No results yet: `data/results/{name}/` has neither `full.json` nor `cpu.json`. Run {how}.", ""]
            continue
        found = True
        md += _table(["profile", "device", "date", "git commit", "torch", "timed stages"],
                     [[p, r.get("device", "?"), _date(r.get("date")), f"`{r.get('git_commit', '?')}`",
                       r.get("torch", "?"), f"{sum((r.get('seconds') or {}).values()):.0f} s"]
                      for p, r in runs.items()])
        paper = PAPER.get(name, {})
        best = next(iter(runs))                 # full if present, else cpu
        if PAPER_SOURCE.get(name):
            md += [f"Paper values: {PAPER_SOURCE[name]} Δ is ours ({best}) minus the paper's.", ""]
        rows = []
        for key, pv in paper.items():
            ours = [runs[p]["metrics"].get(key) for p in runs]
            mine = runs[best]["metrics"].get(key)
            delta = f"{mine - pv:+.2f}" if pv is not None and mine is not None else ""
            rows.append([f"`{key}`", "not measured" if pv is None else f"{pv:.2f}",
                         *[_fmt(key, v) for v in ours], delta])
        if rows:
            md += _table(["metric", "paper", *runs, "Δ"], rows)
        others = sorted({k for r in runs.values() for k in r.get("metrics", {})} - set(paper))
        if others:
            md += [":::{dropdown} " + f"Our other numbers for this chapter ({len(others)}, no counterpart in the paper)",
                   ""]
            md += _table(["metric", *runs], [[f"`{k}`", *[_fmt(k, runs[p]["metrics"].get(k)) for p in runs]]
                                               for k in others])
            md += [":::", ""]
    if not found:
        md[4:4] = ["No results have been recorded yet; the sections below fill in as the chapters are run.", ""]
    path = out_dir / "results.md"
    atomic_write_bytes(path, ("\n".join(md).rstrip() + "\n").encode())
    return path


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
    all_nbs = sorted(NOTEBOOKS.glob("*.ipynb"))
    if not filters:
        return all_nbs
    chosen = []
    for f in filters:
        f = Path(f).name.removesuffix(".ipynb")
        hits = [p for p in all_nbs if p.stem.startswith(f)]
        if not hits:
            raise SystemExit(f"runbook: no notebook in notebooks/ matches {f!r}; "
                             f"there are {[p.stem for p in all_nbs]}")
        chosen += [p for p in hits if p not in chosen]
    return chosen


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nrlib.runbook", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="auto", choices=["auto", *RANK],
                    help="auto = full with a CUDA GPU, else cpu (default: auto)")
    ap.add_argument("--only-stale", action="store_true",
                    help="skip notebooks whose executed copy is up to date with its source")
    ap.add_argument("--force", action="store_true", help="overwrite copies made with a higher profile")
    ap.add_argument("--notebooks", nargs="+", metavar="NB", help="only these (name prefixes, e.g. 04)")
    ap.add_argument("--out", default="book", help="folder of the executed copies (default: book)")
    ap.add_argument("--check", action="store_true", help="only list each notebook's status")
    ap.add_argument("--results-only", action="store_true", help="only regenerate <out>/results.md")
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
        print(f"runbook: wrote {_rel(write_results_page(out_dir))}")
        return 0

    profile = args.profile
    if profile == "auto":
        import torch
        profile = "full" if torch.cuda.is_available() else "cpu"
    from . import results as _results
    device = _results.device_name()
    # the kernel imports this checkout's nrlib even without `pip install -e .`
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    print(f"runbook: profile={profile} on {device}; {len(notebooks)} notebook(s) -> {out_dir}")

    refused = []
    for src in notebooks:
        state, meta = status(src, out_dir)
        action, why = decide(state, meta.get("profile"), profile, only_stale=args.only_stale, force=args.force)
        if action == "skip":
            print(f"runbook: {src.stem}: {why}; skipped")
            continue
        if action in ("keep", "refuse"):
            print(f"runbook: WARNING: {args.out}/{src.name}: {why}", file=sys.stderr)
            if action == "refuse":
                refused.append(src.stem)
            continue
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
    if refused:
        print(f"runbook: ERROR: refused to overwrite higher-profile runs of {refused}; "
              f"pass --force (make ... FORCE=1) to replace them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
