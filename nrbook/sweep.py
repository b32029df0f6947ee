"""Papermill sweeps on Dask: one chapter over a grid of parameters and seeds, each point a
papermill run, scheduled on a Dask cluster, gathered into one table with intervals over seeds.

    python -m nrbook.sweep 05 -p eps 4/255 8/255 -p seed 0 1 2 --profile cpu --out sweeps/eps
    python -m nrbook.sweep 05 ... --scheduler tcp://head:8786      # an existing Dask cluster

**The grid.** Each ``-p NAME V …`` names a parameter of the notebook's ``parameters`` cell and
its values (numbers, ``8/255``-style fractions, strings, ``true``/``false``), typed as the cell's
default; the runs are the product of the lists, ``seed`` varying fastest (so that the first runs
of a sweep train different models, and the later ones find them in the shared checkpoint cache).
``profile`` is set with ``--profile``, never swept.

**The runs.** Each point is one ``papermill`` execution of the notebook into its own folder of
``--out`` (``eps-0.0157_seed-1/``): the executed notebook, the results JSON the notebook wrote
(``results.json``: each run has a data root of its own, ``$NRLIB_DATA``, whose links share the
datasets and the checkpoint cache of the data root the sweep was started with, and whose
``results/`` is the run's), the cells' output (``log.txt``) and
``run.json`` (parameters, status, seconds, worker, the error of a failed run). A run writes into
a temporary folder that is renamed into place when it ends, so an interrupted sweep loses only the
runs in flight.

**The cluster.** Dask distributed, no scheduler of our own: by default a local cluster of
``--workers`` worker processes of one thread each (one per GPU, pinned with
``CUDA_VISIBLE_DEVICES``, on a machine with several; on a CPU the cores are split between them
through ``OMP_NUM_THREADS``), or an existing cluster at ``--scheduler ADDRESS`` (``dask scheduler``
on one node, ``dask worker ADDRESS --nthreads 1`` on each GPU node, this repository installed on
each). A run whose notebook fails is reported and the others go on; a run whose worker dies is
retried once on another worker (the scheduler's ``allowed-failures``: the local cluster sets it
to ``--retries``; a cluster of your own uses its scheduler's setting). Running the same sweep
again skips the runs that finished (resume); ``--force`` redoes them.

**The gather** (``gather``, also ``--gather-only``): ``runs.csv`` (every run, every metric),
``runs.md`` (the chosen metrics: ``--metric`` patterns, else the chapter's claim keys), per grid
point the mean, sd and 95% Student-t interval over seeds of each chosen metric (``stats.seeds``:
``seeds.csv``, ``seeds.md``), the paper's claims judged on the seed means and intervals
(``papers.seed_evidence``: ``verdicts.md``), and a figure of the first chosen metric against the
first swept parameter with each seed's value and the interval (``sweep.png``), and what ran
(``sweep.json``, which the results page reads for a sweep kept under ``data/results/sweeps/``). A
metric whose key names the run's own value of a swept parameter (``…/eps=0.0314/…``) is also
gathered as ``…/eps=<run>/…``, so that an ε sweep lines up in one column.
"""
from __future__ import annotations

import argparse
import ast
import datetime as _dt
import fnmatch
import io
import itertools
import json
import math
import operator
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

from nrlib.utils import atomic_write_bytes

from . import ROOT, find_chapters

SEED = "seed"
RUN_FILES = ("run.json", "results.json", "log.txt")
STATUS_OK, STATUS_FAILED = "ok", "failed"
CONNECT_TIMEOUT = "10s"       # how long --scheduler is given to answer


# ----------------------------------------------------------------------------
# the notebook and its parameters
# ----------------------------------------------------------------------------
def resolve_notebook(name: str | os.PathLike) -> Path:
    """A chapter by number or name (``05``, ``05_toggle_activity``) or the path of a notebook."""
    p = Path(name)
    if p.suffix == ".ipynb" and p.is_file():
        return p.resolve()
    try:
        return find_chapters(name, one=True)[0]
    except ValueError as e:
        raise ValueError(f"notebook={e}, or the path of an .ipynb file") from None


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.USub: operator.neg, ast.UAdd: operator.pos}


def _literal(text: str):
    """A Python literal or simple arithmetic of numbers (``8 / 255``), else ValueError."""
    def ev(n):
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, ast.Constant) and isinstance(n.value, (int, float, str, bool, type(None))):
            return n.value
        if isinstance(n, ast.BinOp) and type(n.op) in _OPS:
            return _OPS[type(n.op)](ev(n.left), ev(n.right))
        if isinstance(n, ast.UnaryOp) and type(n.op) in _OPS:
            return _OPS[type(n.op)](ev(n.operand))
        if isinstance(n, (ast.List, ast.Tuple)):
            return [ev(e) for e in n.elts]
        raise ValueError(f"not a literal: {text!r}")
    return ev(ast.parse(text.strip(), mode="eval"))


def notebook_parameters(path: Path) -> dict:
    """The notebook's ``parameters`` cell: {name: default value} (``papermill.inspect_notebook``)."""
    import papermill as pm

    out = {}
    for name, info in pm.inspect_notebook(str(path)).items():
        try:
            out[name] = _literal(info["default"])
        except (ValueError, SyntaxError, TypeError, ZeroDivisionError):
            out[name] = info["default"]               # an expression we do not evaluate: a string
    if not out:
        raise ValueError(f"notebook {path.name} has no cell tagged 'parameters': nothing to sweep")
    return out


def parse_value(name: str, text: str, default):
    """``text`` as a value of parameter ``name``, typed as its ``default``: a clear error naming
    the parameter, the value and what is allowed when it does not fit."""
    kind = type(default)
    if kind is bool:
        low = text.strip().lower()
        if low in ("true", "false", "1", "0"):
            return low in ("true", "1")
        raise ValueError(f"-p {name} {text!r}: {name} is a bool (default {default!r}); give true or false")
    if kind is str or default is None:
        try:
            v = _literal(text)
            return v if kind is not str or isinstance(v, str) else text
        except (ValueError, SyntaxError, TypeError, ZeroDivisionError):
            return text
    try:
        v = _literal(text)
    except (ValueError, SyntaxError, TypeError, ZeroDivisionError):
        v = None
    if kind is int and isinstance(v, int) and not isinstance(v, bool):
        return v
    if kind is float and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    if kind is list and isinstance(v, list):
        return v
    allowed = {int: "an integer", float: "a number (8/255 allowed)", list: "a list, e.g. [1, 2]"}
    raise ValueError(f"-p {name} {text!r}: {name} is {allowed.get(kind, kind.__name__)} "
                     f"(default {default!r}); {text!r} is not")


def make_grid(params: dict, swept: list[tuple[str, list[str]]]) -> list[dict]:
    """The runs: the product of the swept values, typed (``parse_value``), seed varying fastest.
    Errors before anything runs: an unknown parameter, ``profile``, a parameter given twice, a
    parameter without values."""
    if not swept:
        raise ValueError("the grid is empty: give at least one -p NAME VALUE [VALUE ...]")
    names = [n for n, _ in swept]
    for name, values in swept:
        if name == "profile":
            raise ValueError("-p profile: the profile is set with --profile, not swept")
        if name not in params:
            raise ValueError(f"-p {name}: the notebook's parameters cell has no {name!r}; "
                             f"it has {sorted(p for p in params if p != 'profile')}")
        if names.count(name) > 1:
            raise ValueError(f"-p {name} is given twice; list all its values after one -p {name}")
        if not values:
            raise ValueError(f"-p {name} has no values: the grid would be empty")
    order = sorted(range(len(swept)), key=lambda i: swept[i][0] == SEED)    # seed last: fastest
    typed = [(swept[i][0], [parse_value(swept[i][0], v, params[swept[i][0]]) for v in swept[i][1]])
             for i in order]
    points = [dict(zip([n for n, _ in typed], combo)) for combo in itertools.product(*[v for _, v in typed])]
    labels = [run_label(p) for p in points]
    dup = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dup:
        raise ValueError(f"the grid repeats a run ({dup[0]}): a value is listed twice")
    return points


def _text(v) -> str:
    if isinstance(v, float):
        from nrlib.results import tag
        return tag("x", v)[2:]
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", str(v)).strip("-") or "_"


def value_text(name: str, value, notebook: str | None = None) -> str:
    """A swept value as the book writes it: an ε (a parameter named ``eps…``) as
    ``nrlib.attacks.eps_text`` writes it for its data (8/255 on CIFAR-10, 0.2 on MNIST), the data
    read from the name (``eps_mnist``) or else from the chapter, where it reads one dataset; other
    values as given."""
    from nrlib.attacks import eps_text
    from nrlib.data import DATASETS

    from .budget import chapters, datasets

    if not str(name).startswith("eps") or isinstance(value, bool):
        return str(value)
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    named = [d for d in DATASETS if d.removesuffix("10") in name]
    reads = datasets(notebook) if notebook in chapters() else []
    data = named[0] if len(named) == 1 else reads[0] if len(reads) == 1 else None
    return eps_text(v, dataset=data) if math.isfinite(v) else str(value)


def run_label(point: dict) -> str:
    """A run's folder name: ``eps-0.0314_seed-1`` (floats as ``nrlib.results.tag`` writes them)."""
    return "_".join(f"{k}-{_text(v)}" for k, v in point.items())


# ----------------------------------------------------------------------------
# one run (on a worker)
# ----------------------------------------------------------------------------
def _tail(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def finished(folder: Path) -> dict | None:
    """A run's record when it finished (``run.json`` with status ok and its results), else None."""
    try:
        rec = json.loads((folder / "run.json").read_text())
    except (OSError, ValueError):
        return None
    return rec if rec.get("status") == STATUS_OK and (folder / "results.json").is_file() else None


def _run_root(shared: Path, root: Path) -> Path:
    """A run's own data root: links to everything of the shared one (datasets, the checkpoint
    cache, which the runs share: a model trained by one is loaded by the next) but ``results/``,
    which is the run's own."""
    (shared / "checkpoints").mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True)
    for entry in shared.iterdir():
        if entry.name != "results":
            (root / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    return root


def run_one(notebook: str, point: dict, profile: str, out: str, data_root: str, force: bool = False) -> dict:
    """Execute ``notebook`` at ``point`` and ``profile`` into ``out/<run_label>``, atomically; skip a
    run that finished unless ``force``. A failing notebook is a record with status ``failed`` (its
    error and the last lines of its log), not an exception: the scheduler retries only runs whose
    worker died."""
    import papermill as pm
    from nrlib.widgets import static_env

    nb = Path(notebook)
    folder = Path(out) / run_label(point)
    done = finished(folder)
    if done and not force:
        return {**done, "skipped": True}
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=f".{folder.name}."))
    log = tmp / "log.txt"
    rec = {"label": folder.name, "params": point, "profile": profile, "notebook": nb.stem,
           "worker": f"{socket.gethostname()}:{os.getpid()}", "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"),
           "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    env = {"NRLIB_DATA": str(_run_root(Path(data_root), tmp / "data")),
           # slider panels as the book's runbook makes them (precomputed frames): a live ipywidgets
           # panel in a kernel without a browser can leave papermill waiting on its widget messages
           **static_env(profile),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)                   # the kernel papermill starts inherits them
    t0 = time.perf_counter()
    try:
        with open(log, "w") as fh:
            pm.execute_notebook(str(nb), str(tmp / nb.name), parameters={**point, "profile": profile},
                                kernel_name="python3", cwd=str(nb.parent), progress_bar=False,
                                stdout_file=fh, stderr_file=fh)
        results = tmp / "data" / "results" / nb.stem / f"{profile}.json"
        if not results.is_file():
            raise RuntimeError(f"the notebook wrote no results file ({results.relative_to(tmp)})")
        shutil.copyfile(results, tmp / "results.json")
        rec["status"] = STATUS_OK
    except Exception as e:                   # the notebook's own failure: reported, not retried
        name, text = getattr(e, "ename", None) or type(e).__name__, getattr(e, "evalue", None) or str(e)
        rec.update(status=STATUS_FAILED, error=f"{name}: {text.strip()}"[:2000], log_tail=_tail(log))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    rec["seconds"] = round(time.perf_counter() - t0, 1)
    shutil.rmtree(tmp / "data", ignore_errors=True)        # its links, not what they point to
    (tmp / "run.json").write_text(json.dumps(rec, indent=1) + "\n")
    if folder.exists():                      # --force, or a failed run tried again
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return rec


# ----------------------------------------------------------------------------
# the cluster
# ----------------------------------------------------------------------------
def gpu_count() -> int:
    try:
        import torch
        return torch.cuda.device_count()
    except Exception:
        return 0


def local_cluster(workers: int, retries: int = 1):
    """A local Dask cluster of ``workers`` worker processes (nannies) of one thread each: pinned one
    per GPU where there are GPUs, else sharing the cores (``OMP_NUM_THREADS``)."""
    import dask
    from distributed import Nanny, Scheduler, SpecCluster

    gpus, cores = gpu_count(), os.cpu_count() or 1
    dask.config.set({"distributed.scheduler.allowed-failures": retries,
                     "distributed.worker.daemon": False})       # a worker starts kernels
    spec = {}
    for i in range(workers):
        env = {"CUDA_VISIBLE_DEVICES": str(i % gpus)} if gpus else {}
        threads = str(max(1, cores // workers))
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        spec[f"w{i}"] = {"cls": Nanny, "options": {"nthreads": 1, "env": env, "dashboard_address": None}}
    return SpecCluster(workers=spec, scheduler={"cls": Scheduler, "options": {"dashboard_address": None}},
                       silence_logs="error")


def connect(scheduler: str | None, workers: int, retries: int):
    """A Dask client: to the cluster at ``scheduler``, else to a new local cluster. An unreachable
    scheduler is a clear error, raised before any run."""
    from distributed import Client

    if scheduler:
        try:
            return Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as e:
            raise ValueError(f"--scheduler {scheduler!r}: no Dask scheduler answers there ({e}); start one "
                             f"with `dask scheduler` and workers with `dask worker {scheduler}`") from None
    return Client(local_cluster(workers, retries))


# ----------------------------------------------------------------------------
# the sweep
# ----------------------------------------------------------------------------
def sweep(notebook, swept: list[tuple[str, list[str]]], *, profile: str = "cpu", out, scheduler=None,
          workers: int | None = None, force: bool = False, retries: int = 1, progress: bool = True) -> list[dict]:
    """Run the grid on Dask and return each run's record (``run.json``), in grid order."""
    from distributed import as_completed
    from nrlib.data import data_root
    from nrlib.profiles import PROFILES

    if profile not in PROFILES:
        raise ValueError(f"--profile {profile!r} is not allowed; choose one of {list(PROFILES)}")
    if not (isinstance(retries, int) and retries >= 0):
        raise ValueError(f"--retries {retries!r} must be an integer ≥ 0")
    nb = resolve_notebook(notebook)
    points = make_grid(notebook_parameters(nb), swept)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if workers is not None and not (isinstance(workers, int) and workers >= 1):
        raise ValueError(f"--workers {workers!r} must be an integer ≥ 1")
    todo = [p for p in points if force or not finished(out / run_label(p))]
    print(f"sweep: {nb.stem} at {profile}, {len(points)} run(s) into {out}; " + (
        f"{len(points) - len(todo)} finished before, skipped" if not force else "--force: every run again"))
    if todo:
        n = workers or max(1, gpu_count() or min(len(todo), (os.cpu_count() or 2) // 2))
        client = connect(scheduler, n, retries)
        try:
            _run(client, as_completed, nb, todo, profile, out, str(data_root().resolve()), force, progress)
        finally:
            cluster = client.cluster
            client.close()
            if cluster is not None:
                cluster.close()
    records = [finished(out / run_label(p)) or _record(out / run_label(p)) for p in points]
    _summary(records)
    return records


def _record(folder: Path) -> dict:
    try:
        return json.loads((folder / "run.json").read_text())
    except (OSError, ValueError):
        return {"label": folder.name, "status": "not run"}


def _run(client, as_completed, nb, todo, profile, out, root, force, progress):
    from distributed import KilledWorker
    from tqdm.auto import tqdm

    futures = {client.submit(run_one, str(nb), p, profile, str(out), root, force, pure=False,
                             key=f"{nb.stem}-{run_label(p)}-{time.time_ns()}"): p for p in todo}
    bar = tqdm(total=len(futures), desc=f"sweep {nb.stem}", disable=not progress, unit="run")
    failed = 0
    for fut in as_completed(futures):
        p = futures[fut]
        try:
            rec = fut.result()
        except KilledWorker as e:            # died on every worker it was given: recorded as failed
            rec = {"label": run_label(p), "params": p, "status": STATUS_FAILED,
                   "error": f"its worker died on every try ({e})"}
            _write(out / run_label(p) / "run.json", json.dumps(rec, indent=1) + "\n")
        failed += rec["status"] != STATUS_OK
        bar.update(1)
        bar.set_postfix(failed=failed)
        print(f"  {rec['label']}: {rec['status']}" + (f" in {rec['seconds']:.0f} s on {rec.get('worker')}"
                                                      if "seconds" in rec else ""), flush=True)
    bar.close()


def _summary(records: list[dict]) -> None:
    ok = [r for r in records if r.get("status") == STATUS_OK]
    bad = [r for r in records if r.get("status") != STATUS_OK]
    print(f"sweep: {len(ok)} of {len(records)} run(s) finished" + (f", {len(bad)} did not:" if bad else ""))
    for r in bad:
        print(f"  {r['label']}: {r.get('status')}: {r.get('error', '')}")
        if r.get("log_tail"):
            print("    " + r["log_tail"].replace("\n", "\n    "))


# ----------------------------------------------------------------------------
# the gather
# ----------------------------------------------------------------------------
def load_runs(out) -> list[dict]:
    """Every run folder of a sweep: ``{"label", "params", "status", "seconds", "metrics"}``, the
    metrics with their intervals (``nrlib.results.estimates``) for a finished run, else {}."""
    from nrlib.results import estimates

    out = Path(out)
    if not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is not a sweep's folder (it does not exist)")
    runs = []
    for folder in sorted(f for f in out.iterdir() if f.is_dir() and not f.name.startswith(".")):
        rec = _record(folder)
        if "params" not in rec:
            continue
        record = json.loads((folder / "results.json").read_text()) if finished(folder) else {}
        metrics = estimates(record) if record else {}
        aliases = _aliases(metrics, rec["params"])
        runs.append({**rec, "metrics": {**metrics, **{a: metrics[k] for a, k in aliases.items()}},
                     "aliases": aliases, "device": record.get("device"), "git_commit": record.get("git_commit")})
    if not runs:
        raise ValueError(f"--out {str(out)!r} holds no runs of a sweep")
    return runs


RUN_VALUE = "<run>"


def _aliases(metrics: dict, params: dict) -> dict:
    """{alias: key}: a metric whose key names the run's own value of a swept parameter
    (``…/eps=0.0314/…``, as ``nrlib.results.tag`` writes it) is also gathered under
    ``…/eps=<run>/…``, so that the runs of an ε sweep line up in one column."""
    from nrlib.results import tag

    out = {}
    for name, value in params.items():
        if name == SEED or isinstance(value, (list, dict)):
            continue
        seg = tag(name, value)
        for k in metrics:
            parts = k.split("/")
            if seg in parts:
                out["/".join(f"{name}={RUN_VALUE}" if p == seg else p for p in parts)] = k
    return out


def chosen_metrics(runs: list[dict], patterns: list[str] | None = None) -> list[str]:
    """The metrics the tables show: those matching ``patterns`` (fnmatch), else the keys of the
    chapter's paper claims that the runs measured, else every metric."""
    keys = list(dict.fromkeys(k for r in runs for k, v in r["metrics"].items() if _number(v)))
    if patterns:
        hits = [k for k in keys if any(fnmatch.fnmatchcase(k, p) for p in patterns)]
        if not hits:
            raise ValueError(f"--metric {patterns}: no metric of the runs matches; e.g. {keys[:5]}")
        return hits
    from nrlib import papers

    doc = papers.for_notebook(runs[0]["notebook"]) if runs[0].get("notebook") else None
    claimed = [c["key"] for c in (doc or {}).get("claims", []) if c["key"] in keys]
    # a claim key at one value of a swept parameter: its column over every run instead
    aliased = {k: a for r in runs for a, k in r.get("aliases", {}).items()}
    return list(dict.fromkeys(aliased.get(k, k) for k in claimed)) or keys


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def _groups(runs: list[dict]) -> dict[tuple, list[dict]]:
    """The finished runs by grid point: the swept parameters other than the seed."""
    out: dict[tuple, list[dict]] = {}
    for r in runs:
        if r.get("status") == STATUS_OK:
            out.setdefault(tuple((k, v) for k, v in r["params"].items() if k != SEED), []).append(r)
    return out


def gather(out, metrics: list[str] | None = None, *, figure: bool = True) -> dict:
    """The sweep's tables (module docstring), written into ``out``; returns them as pandas frames:
    ``runs`` (one row per run), ``seeds`` (one row per grid point and metric) and ``verdicts``."""
    import pandas as pd

    from nrlib import stats

    out = Path(out)
    runs = load_runs(out)
    keys = chosen_metrics([r for r in runs if r["metrics"]] or runs, metrics) if any(r["metrics"] for r in runs) else []
    names = list(dict.fromkeys(k for r in runs for k in r["params"]))
    rows = [{**r["params"], "status": r.get("status"), "seconds": r.get("seconds"),
             **{k: (float(v) if _number(v) else None) for k, v in r["metrics"].items()}} for r in runs]
    table = pd.DataFrame(rows)
    _write(out / "runs.csv", table.to_csv(index=False))
    shown = table[[*names, "status", "seconds", *[k for k in keys if k in table]]]
    _write(out / "runs.md", shown.to_markdown(index=False) + "\n")
    srows = []
    for point, group in _groups(runs).items():
        for k in keys:
            vals = [float(r["metrics"][k]) for r in group if _number(r["metrics"].get(k))]
            if not vals:
                continue
            e = stats.seeds(vals)
            srows.append({**dict(point), "metric": k, "seeds": len(vals), "mean": float(e),
                          "sd": float(pd.Series(vals).std(ddof=1)) if len(vals) > 1 else None,
                          "low": e.low if e.has_interval else None, "high": e.high if e.has_interval else None})
    seeds = pd.DataFrame(srows)
    _write(out / "seeds.csv", seeds.to_csv(index=False))
    _write(out / "seeds.md", (seeds.to_markdown(index=False, floatfmt=".4g") if len(seeds) else "no finished run") + "\n")
    boards = _seed_boards(runs)
    verdicts = _verdicts(runs, boards)
    _write(out / "verdicts.md", (verdicts.to_markdown(index=False) if len(verdicts) else
                                 "no paper claims for this notebook, or no finished runs") + "\n")
    swept = [n for n in names if n != SEED and len({str(r["params"].get(n)) for r in runs}) > 1]
    points = len(_groups(runs))
    full = [k for k in keys if len(seeds) and (seeds["metric"] == k).sum() == points] if keys else []
    shown = full[0] if full else (keys[0] if keys else None)      # a metric measured at every point
    if figure and shown and swept and len(seeds):
        _figure(out, seeds, runs, swept[0], shown)
    started = sorted(r["started"] for r in runs if r.get("started"))
    _write(out / "sweep.json", json.dumps({
        "notebook": runs[0].get("notebook"), "profile": runs[0].get("profile"),
        "grid": {n: sorted({json.dumps(r["params"][n]) for r in runs if n in r["params"]}) for n in names},
        "runs": len(runs), "finished": sum(r.get("status") == STATUS_OK for r in runs),
        "metrics": keys, "shown": shown, "x": swept[0] if swept else None,
        "figure": "sweep.png" if (out / "sweep.png").is_file() else None,
        "first_run": started[0] if started else None, "last_run": started[-1] if started else None,
        "devices": sorted({r["device"] for r in runs if r.get("device")}),
        "commits": list(dict.fromkeys(r["git_commit"] for r in sorted(runs, key=lambda r: r.get("started") or "")
                                      if r.get("git_commit"))),          # in the order the runs started
        "versus_chapter": _versus_chapter(runs, boards),
        "seconds": round(sum(r.get("seconds") or 0 for r in runs), 1)}, indent=1) + "\n")
    return {"runs": table, "seeds": seeds, "verdicts": verdicts}


def _seed_boards(runs: list[dict]) -> dict[tuple, tuple[list[dict], list[dict]]]:
    """Per grid point, its finished runs and the chapter's claims judged on their seeds
    (``papers.seed_evidence`` merged into the first seed's metrics, as a chapter does: the
    scoreboard's rows); {} for a notebook without paper claims."""
    from nrlib import papers

    nb, profile = runs[0].get("notebook"), runs[0].get("profile")
    if not nb or papers.for_notebook(nb) is None:
        return {}
    boards = {}
    for point, group in _groups(runs).items():
        per_seed = {r["params"].get(SEED, i): r["metrics"] for i, r in enumerate(group)}
        merged = {**next(iter(per_seed.values())), **papers.seed_evidence(nb, per_seed, profile)}
        boards[point] = (group, papers.scoreboard(nb, merged, profile))
    return boards


def _point_text(point: tuple, notebook: str | None) -> str:
    """A grid point as the book writes it: ``eps=8/255``."""
    return ", ".join(f"{k}={value_text(k, v, notebook)}" for k, v in point)


def _verdicts(runs: list[dict], boards: dict):
    """The chapter's claims judged on each grid point's seeds (``_seed_boards``): one column per
    grid point."""
    import pandas as pd

    if not boards:
        return pd.DataFrame()
    nb = runs[0].get("notebook")
    frame = pd.DataFrame({f"{_point_text(point, nb) or 'all runs'} ({len(group)} seeds)":
                          {row["key"]: _verdict_text(row) for row in rows}
                          for point, (group, rows) in boards.items()})
    frame.index.name = "claim"
    return frame.reset_index()


def _versus_chapter(runs: list[dict], boards: dict) -> dict | None:
    """The claims whose verdict over the seeds (``_seed_boards``) differs from the one the
    chapter's own run at the same profile gives (``data/results/<notebook>/<profile>.json``: one
    training run, its intervals over draws of images), at the grid point of that run's parameters:
    ``{"point", "seeds", "chapter_commit", "differs": [{"key", "chapter", "seeds"}]}``; None
    without such a run or grid point."""
    from nrlib import papers
    from nrlib.results import estimates, read

    nb, profile = runs[0].get("notebook"), runs[0].get("profile")
    if not boards:
        return None
    try:
        own = read(nb, profile)
    except (FileNotFoundError, ValueError):
        return None
    given = own.get("params", {})

    def same(a, b):
        return (math.isclose(float(a), float(b), rel_tol=1e-6) if _number(a) and _number(b)
                else json.dumps(a) == json.dumps(b))

    for point, (group, rows) in boards.items():
        if not all(k in given and same(given[k], v) for k, v in point):
            continue
        chapter = {r["key"]: r for r in papers.scoreboard(nb, estimates(own), profile)}
        return {"point": _point_text(point, nb), "seeds": len(group), "chapter_commit": own.get("git_commit"),
                "differs": [{"key": r["key"], "chapter": papers.verdict_cell(chapter[r["key"]]),
                             "seeds": _verdict_text(r)}
                            for r in rows if r["verdict"] != chapter[r["key"]]["verdict"]]}
    return None


def _verdict_text(row: dict) -> str:
    """A verdict as the sweep's table prints it: a claim measured at this grid point but ``not
    run`` for want of another number (a gate's or a compared metric measured only at another value
    of a swept parameter, such as the accuracy under FGSM at the paper's ε) names that number."""
    from nrlib import papers

    if row["verdict"] == papers.NOT_RUN and row.get("reason") not in ("", None, papers.missing_reason(row["key"])):
        return f"{row['verdict']} ({row['reason']})"
    return row["verdict"]


def _figure(out: Path, seeds, runs: list[dict], x: str, metric: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nrlib import plot

    groups = _groups(runs)
    points = sorted(groups, key=lambda p: [str(v) if not _number(v) else v for k, v in p if k == x])
    xs = [dict(p)[x] for p in points]
    vals = [[float(r["metrics"][metric]) for r in groups[p] if _number(r["metrics"].get(metric))] for p in points]
    keep = [i for i, v in enumerate(vals) if v]
    if not keep or not all(_number(xs[i]) for i in keep):
        return
    fig, ax = plt.subplots(figsize=(6, 3.6))
    plot.seed_sweep([xs[i] for i in keep], [vals[i] for i in keep], ax=ax, xlabel=x, ylabel=metric,
                    title=f"{runs[0].get('notebook')}: {metric}")
    ax.set_xticks([xs[i] for i in keep], [value_text(x, xs[i], runs[0].get("notebook")) for i in keep])
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(out / "sweep.png", buf.getvalue())


def _write(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


# ----------------------------------------------------------------------------
# the command line
# ----------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nrbook.sweep", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebook", help="a chapter's number or name (05, 05_toggle_activity) or an .ipynb path")
    ap.add_argument("-p", "--param", nargs="+", action="append", default=[], metavar=("NAME", "VALUE"),
                    help="a parameter of the notebook and its values (repeat for a grid)")
    ap.add_argument("--profile", default="cpu", help="smoke | cpu | full (default cpu)")
    ap.add_argument("--out", required=True, help="the sweep's folder: one subfolder per run, and the tables")
    ap.add_argument("--scheduler", help="address of a running Dask scheduler (default: a local cluster)")
    ap.add_argument("--workers", type=int, help="local workers (default: one per GPU, else half the cores)")
    ap.add_argument("--force", action="store_true", help="re-run the runs that finished before")
    ap.add_argument("--retries", type=int, default=1, help="tries more for a run whose worker dies (default 1)")
    ap.add_argument("--metric", action="append", help="metrics the tables show (fnmatch patterns; repeat)")
    ap.add_argument("--gather-only", action="store_true", help="only gather the runs already in --out")
    args = ap.parse_args(argv)
    try:
        if not args.gather_only:
            swept = []
            for item in args.param:
                if len(item) < 2:
                    raise ValueError(f"-p {item[0]}: give the parameter's values after its name")
                swept.append((item[0], item[1:]))
            sweep(args.notebook, swept, profile=args.profile, out=args.out, scheduler=args.scheduler,
                  workers=args.workers, force=args.force, retries=args.retries)
        tables = gather(args.out, args.metric)
    except ValueError as e:
        print(f"sweep: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    print(f"sweep: wrote {', '.join(p.name for p in sorted(out.glob('*.*')) if p.suffix in ('.csv', '.md', '.png'))} "
          f"in {out}")
    if len(tables["seeds"]):
        print(tables["seeds"].to_string(index=False, max_rows=30))
    failed = (tables["runs"]["status"] != STATUS_OK).sum()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
