"""What each chapter's run costs on a device, estimated before any GPU is at hand.

    python -m nrbook.budget [--profile full] [--device h100|h200] [--notebooks 05 06] [--check]

For each chapter, the network work of its plan (``nrbook.plans``: every training run, attack and
forward pass at that profile's sizes, the FLOPs of each pass counted by
``torch.utils.flop_counter`` on the book's own models, ``nrbook.cost``) is turned into seconds:

    seconds of a piece of work = max(FLOPs / (peak × efficiency), batches × layers × launch)

— the compute at a share of the device's dense peak (bf16 for training and the attacks inside it,
which run under bf16 autocast; TF32 for the chapters' attacks and evaluation, counted as fp32,
``nrlib.precision``), or, for the
small nets and small batches where the GPU waits on the Python loop, a floor of one kernel launch
per layer and pass direction per batch. Then the time to stage the data on a fresh machine is added
and the total set against one loan of the machine (``LOAN``).

The efficiency and the launch time are assumptions, stated here and printed with every table, until
a ``full`` run measures them: the book's convnets are small (CIFAR-10 images, 16-64 channels),
far from the matrix sizes at which a GPU reaches its peak; 10% of the dense peak is the figure used.
``--check`` sets the same plans, at the ``cpu`` profile, against the seconds the ``cpu`` runs
measured (their results files), with the CPU's rate fitted from the zoo's training records: a plan
that counts too much, or misses where the time goes, shows there.
"""
from __future__ import annotations

import argparse
import functools
import math
import statistics
import sys
from dataclasses import dataclass

from . import ROOT, chapter_notebooks, find_chapters
from .cost import Work, layers, notebook_sizes

COMPUTE_LIMIT_S = 8 * 60        # a chapter's compute on one device call (the call is cut at 10 min)


@dataclass(frozen=True)
class Device:
    """A device as the estimate sees it: dense peak FLOP/s for bf16 (training) and for TF32 (fp32
    attacks and evaluation on tensor cores), the share of the peak the book's nets reach, and the
    seconds one layer's kernels take to launch in one direction (the floor of a small batch)."""
    name: str
    peak_bf16: float
    peak_fp32: float
    efficiency: float
    launch_s: float

    def seconds(self, w: Work) -> float:
        # training and the attacks inside it run under bf16 autocast; the chapters' own attacks and
        # evaluations are counted at fp32's rate (metrics' robust accuracy runs in fp32)
        peak = self.peak_bf16 if w.kind == "train" or w.zoo else self.peak_fp32
        directions = {"train": 3, "attack": 2, "forward": 1}[w.kind]   # + the optimiser's update
        floor = w.steps * layers(w.net) * directions * self.launch_s
        return max(w.flops / (peak * self.efficiency), floor)


# NVIDIA's data sheets: H100 SXM 989 TFLOP/s dense bf16, 494 TFLOP/s dense TF32; the H200 has the same
# compute (more and faster memory). Efficiency and launch time: assumptions (module docstring).
DEVICES = {
    "h100": Device("NVIDIA H100 80GB HBM3", 989e12, 494e12, 0.10, 10e-6),
    "h200": Device("NVIDIA H200", 989e12, 494e12, 0.10, 10e-6),
}


@dataclass(frozen=True)
class Loan:
    """One loan of the GPU machine: its length, the start of a cold machine and the seconds one
    staging call takes (its transfer and its start) — assumptions but for the loan's length. What
    one call carries: ``CALL_BYTES``."""
    length_s: float = 15 * 60
    start_s: float = 120.0
    call_s: float = 45.0


LOAN = Loan()
# What one device call carries up: the working tree (tracked files and untracked ones git does not
# ignore, the executed chapters among them) and the paths it names. CIFAR-10 travels as
# scripts/stage.py packs it, ~168 MB of gzip in parts sized to what the tree leaves of a call (at
# most PART_BYTES), one part per call, the last with the run; MNIST (11 MB) and the wheels of what
# the machine lacks (~15 MB, scripts/device_wheels.sh) ride with calls that have room.
CALL_BYTES = 64 * 2**20
CALL_SLACK = 2_000_000          # the manifest, and the tree growing between the pack and the calls
PART_BYTES = 45_000_000
CIFAR_PACKED_BYTES, MNIST_BYTES, WHEELS_BYTES = 168_300_000, 11_000_000, 15_000_000
# The work beside the network passes (KDEs, bootstraps, SVDs): a cpu run's seconds that the counted
# passes do not explain, grown with the stage's work and run this much faster on the GPU machine
# (16 cores against the 2 that measured it; torch ops on the device are faster still): an assumption.
OTHER_SPEEDUP = 4.0
# Only a stage whose counted passes explain less than this share of its measured cpu seconds is
# taken to do work beside them: above it, the gap is the CPU's rate varying with the batch and the
# pass (its fitted rate is a median), not other work.
OTHER_BELOW = 0.5


def tree_bytes() -> int | None:
    """Bytes of the tracked files and the untracked ones git does not ignore: they travel with every
    device call. None outside a git checkout."""
    import subprocess

    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                             capture_output=True, check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return sum((ROOT / n).stat().st_size for n in out.decode().split("\0") if n and (ROOT / n).is_file())


def call_room(tree: int | None = None) -> int:
    """What one call can carry beside a tree of ``tree`` bytes (default: this checkout's,
    ``tree_bytes``)."""
    tree = tree_bytes() if tree is None else tree
    room = CALL_BYTES - (tree or 0) - CALL_SLACK
    if room < 1_000_000:
        raise ValueError(f"the working tree ({(tree or 0) / 1e6:.1f} MB) leaves {room / 1e6:.1f} MB of a "
                         f"{CALL_BYTES / 1e6:.1f} MB call: too little to stage data; slim the tree")
    return room


def part_bytes(tree: int | None = None) -> int:
    """The size of CIFAR-10's parts beside a tree of ``tree`` bytes: what a call has room for, at
    most ``PART_BYTES`` (so that the calls keep room for MNIST and the wheels)."""
    return min(PART_BYTES, call_room(tree))


def staging_calls(datasets, tree: int | None = None) -> int:
    """Calls before the run call that bring a chapter's data up: CIFAR-10's parts but the last, plus
    a call for MNIST and the wheels where the parts' calls leave no room for them. ``tree``: the
    working tree's bytes (default: this checkout's)."""
    datasets = set(datasets)
    unknown = datasets - {"cifar10", "mnist"}
    if unknown:
        raise ValueError(f"datasets {sorted(unknown)} have no staging rule; known: cifar10, mnist")
    room, riders = call_room(tree), WHEELS_BYTES + (MNIST_BYTES if "mnist" in datasets else 0)
    if "cifar10" not in datasets:
        return math.ceil(riders / room) - 1
    parts = math.ceil(CIFAR_PACKED_BYTES / part_bytes(tree))
    free = parts * room - CIFAR_PACKED_BYTES             # what the parts leave in their calls
    return parts - 1 + math.ceil(max(0, riders - free) / room)


def chapters() -> list[str]:
    return [p.stem for p in chapter_notebooks()]


def _pick(notebooks) -> list[str]:
    names = chapters()
    if not notebooks:
        return names
    return [find_chapters(n, one=True)[0].stem for n in notebooks]


def datasets(notebook: str) -> list[str]:
    """The datasets a chapter's run reads (its plan's nets): what a loan must stage for it."""
    from .plans import plan

    return sorted({w.net.dataset for w in plan(notebook, "smoke")})


def stage_rows(work: list[Work], device: Device) -> dict[str, dict]:
    """``{stage: {"tflop", "seconds", "images", "trainings"}}`` in the plan's order (``images``: the
    stage's images through any pass but a zoo model's training, the measure its other work is grown
    by; ``trainings``: the zoo models it trains)."""
    rows: dict[str, dict] = {}
    for w in work:
        r = rows.setdefault(w.stage, {"tflop": 0.0, "seconds": 0.0, "images": 0.0, "trainings": 0})
        r["tflop"] += w.flops / 1e12
        r["seconds"] += device.seconds(w)
        r["images"] += 0.0 if w.zoo else w.images
        r["trainings"] += w.zoo and w.kind == "train"
    return rows


def other_seconds(notebook: str, rows: dict[str, dict]) -> dict[str, float]:
    """Per stage, the seconds of its work beside the network passes at the rows' sizes: where the
    chapter's ``cpu`` run measured more than twice its counted passes (``OTHER_BELOW``), the rest,
    grown by the ratio of the stage's images (or kept when the stage counts none) and divided by
    ``OTHER_SPEEDUP``; 0 elsewhere and where there is no cpu run to read it from."""
    rec = _results(notebook)
    if rec is None:
        return {s: 0.0 for s in rows}
    cpu = check(notebook)
    out = {}
    for s, r in rows.items():
        c = cpu.get(s)
        if c is None or c["cached"] or c["ratio"] is None or c["ratio"] >= OTHER_BELOW:
            out[s] = 0.0
            continue
        grow = r["images"] / c["images"] if c["images"] else 1.0
        out[s] = max(0.0, c["measured_s"] - c["model_s"]) * grow / OTHER_SPEEDUP
    return out


def estimate(notebook: str, profile: str = "full", device: str | Device = "h100") -> dict:
    """A chapter's estimate: per stage its network work and seconds and its other seconds
    (``other_seconds``), the compute seconds, the staging calls, the whole loan's seconds, and
    whether it fits (compute ≤ ``COMPUTE_LIMIT_S`` and the loan holds it)."""
    from .plans import plan

    dev = DEVICES[device] if isinstance(device, str) else device
    work = plan(notebook, profile)
    rows = stage_rows(work, dev)
    for s, o in other_seconds(notebook, rows).items():
        rows[s]["other_s"] = o
    compute = sum(r["seconds"] + r["other_s"] for r in rows.values())
    calls = staging_calls({w.net.dataset for w in work})
    loan = LOAN.start_s + calls * LOAN.call_s + compute
    return {"notebook": notebook, "profile": profile, "device": dev.name, "stages": rows,
            "trainings": sum(r["trainings"] for r in rows.values()), "compute_s": compute,
            "staging_calls": calls, "loan_s": loan,
            "fits": compute <= COMPUTE_LIMIT_S and loan <= LOAN.length_s}


def _num(v) -> str:
    if isinstance(v, float) and not v.is_integer():
        return f"{v:.4g}"
    if isinstance(v, (int, float)):
        return f"{int(v):,}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_num(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_num(x)}" for k, x in v.items()) + "}"
    return str(v)


def sizes_text(notebook: str, profile: str = "full", against: str = "cpu") -> str:
    """What ``profile`` runs that ``against`` does not, in words: each size of the chapter's tables
    that differs (``n_test 300 → 2,000``), then the models it trains (epochs × images, attack; runs
    that differ only in their seed or an override of the recipe counted together, ``3 × …``)."""
    from .plans import plan

    a, b = notebook_sizes(notebook, against), notebook_sizes(notebook, profile)
    diffs = [f"{k} {_num(a[t].get(k))} → {_num(v)}" for t in b if t != "params"
             for k, v in b[t].items() if a[t].get(k) != v]
    runs: dict[str, int] = {}
    for w in plan(notebook, profile):
        if w.zoo and w.kind == "train":        # one entry per training run of a zoo model
            name = f"{w.net.label} {w.what[6:].split(' ', 1)[1]}"
            runs[name] = runs.get(name, 0) + 1
    models = [f"{k} × {name}" if k > 1 else name for name, k in runs.items()]
    return "; ".join(diffs) + (". Trains " + "; ".join(models) if models else "")


# ----------------------------------------------------------------------------
# the check against the cpu runs
# ----------------------------------------------------------------------------
def _results(name: str, profile: str = "cpu") -> dict | None:
    """A chapter's (or the zoo's) results record at ``profile``, or None (``chapters.read_result``;
    imported here, so that importing this module stays light for ``scripts/stage.py``)."""
    from .chapters import read_result

    return read_result(name, profile)


@functools.lru_cache(maxsize=None)
def cpu_rates() -> dict:
    """The CPU's FLOP/s on each of the book's nets that the zoo trained at ``cpu``: the FLOPs of its
    training run (``cost.training``) over the seconds the zoo's record measured; several runs of one
    net (variants) give their median. Key ``None``: the median over all nets, for a net the zoo did
    not train at ``cpu``."""
    from nrlib import recipes

    from .cost import Net, training

    rec = _results("zoo")
    if rec is None:
        raise FileNotFoundError("no data/results/zoo/cpu.json: train the zoo at cpu first "
                                "(python -m nrlib.train --profile cpu)")
    each: dict = {}
    for name, p in rec["params"].items():
        secs = rec["metrics"].get(f"train_s/{name}")
        if secs is None or p.get("recipe") not in recipes.RECIPES:
            continue
        ds, arch = p["key"].split("/")[:2]
        work = training(arch, p["recipe"], "cpu", dataset=ds, variant=p.get("variant"),
                        overrides={"epochs": p["epochs"]})
        each.setdefault(Net.of(arch, p["recipe"], "cpu", ds), []).append(sum(w.flops for w in work) / secs)
    rates = {net: statistics.median(r) for net, r in each.items()}
    rates[None] = statistics.median(rates.values())
    return rates


@dataclass(frozen=True)
class CpuDevice(Device):
    """The 2-core CPU that ran the ``cpu`` profile, at each net's own fitted rate (``cpu_rates``)."""

    def seconds(self, w: Work) -> float:
        rates = cpu_rates()
        return w.flops / rates.get(w.net, rates[None])


def cpu_device() -> Device:
    rate = cpu_rates()[None]
    return CpuDevice("cpu (fitted to the zoo's cpu training)", rate, rate, 1.0, 0.0)


def check(notebook: str) -> dict:
    """The plan at ``cpu`` against the chapter's ``cpu`` run: per stage, the seconds measured, the
    seconds the counted passes take at the CPU's fitted rate, and their ratio (model / measured).
    Stages the run did not time (training, cached) are left out."""
    from .plans import plan

    rec = _results(notebook)
    if rec is None:
        raise FileNotFoundError(f"no data/results/{notebook}/cpu.json: run the chapter at cpu first")
    work = plan(notebook, "cpu")
    rows, run = stage_rows(work, cpu_device()), stage_rows([w for w in work if not w.zoo], cpu_device())
    measured = rec.get("seconds", {})
    out = {}
    for s, r in rows.items():
        if s not in measured:
            continue
        # a stage that trains zoo models, measured at a small share of that training: it loaded their
        # checkpoints, and is set against its other work alone
        cached = r["trainings"] > 0 and measured[s] < 0.5 * r["seconds"]
        r = run.get(s) if cached else r
        model = r["seconds"] if r else 0.0
        out[s] = {"measured_s": measured[s], "model_s": model, "images": r["images"] if r else 0.0,
                  "cached": cached and r is None, "checkpoints": cached,
                  "ratio": model / measured[s] if measured[s] > 0 and r else None}
    return out


# ----------------------------------------------------------------------------
# which chapters have a full run, and which the next loan runs
# ----------------------------------------------------------------------------
def full_runs() -> dict[str, dict | None]:
    """Per chapter, its ``full`` run as its committed results file records it (date, device, wall
    seconds, seconds per stage, commit), or None: the index of what the loans have run so far."""
    out = {}
    for nb in chapters():
        rec = _results(nb, "full")
        out[nb] = None if rec is None else {k: rec.get(k) for k in (
            "date", "device", "wall_seconds", "seconds", "git_commit", "torch")}
    return out


def next_chapter() -> str:
    """The chapter the next loan should run: the first without a ``full`` run, else the one whose
    ``full`` run is the oldest."""
    runs = full_runs()
    missing = [nb for nb, r in runs.items() if r is None]
    if missing:
        return missing[0]
    return min(runs, key=lambda nb: str(runs[nb]["date"]))


def markdown() -> list[str]:
    """The introduction's section on the ``full`` profile: per chapter, what ``full`` runs beyond
    ``cpu`` (``sizes_text``), its estimate on one H100 and whether one loan holds it, and its ``full``
    run if there is one; then the assumptions the estimate rests on."""
    from .chapters import date_text, title
    from .plans import PLANS

    runs, dev = full_runs(), DEVICES["h100"]
    out = []
    for nb in chapters():
        if nb not in PLANS:
            continue
        est = estimate(nb, "full", dev)
        r = runs.get(nb)
        done = ("not run yet" if r is None else
                f"run on {r['device']}, {date_text(r['date'])}, {r['wall_seconds']:.0f} s")
        verdict = ("fits one loan" if est["fits"] else
                   f"**does not fit one loan yet** (compute limit {COMPUTE_LIMIT_S} s)")
        out.append(f"- **{nb[:2]} {title(nb)}** — estimated {est['compute_s']:,.0f} s of compute on one "
                   f"H100, {est['trainings']} model trainings; with the machine's start and "
                   f"{est['staging_calls']} staging calls {est['loan_s']:,.0f} s of a "
                   f"{LOAN.length_s:.0f} s loan: {verdict}. `full` against `cpu`: "
                   f"{sizes_text(nb)}. The `full` run: {done}.")
    out += ["", f"How the estimate is made (`python -m nrbook.budget`): each chapter's network passes "
            f"at `full` (every training step, attack step and forward pass its cells make), their "
            f"FLOPs counted with `torch.utils.flop_counter` on the book's own models, at "
            f"{dev.efficiency:.0%} of the H100's dense peak (bf16 for training, TF32 for the "
            f"chapters' attacks and evaluation) or one kernel launch of {dev.launch_s * 1e6:.0f} µs per layer "
            f"and batch where that is slower; the work beside the passes (kernel density estimates, "
            f"bootstraps) from what the `cpu` run measured beyond its counted passes, at "
            f"{OTHER_SPEEDUP:g}× the 2-core CPU's speed. The efficiency, the launch time and that "
            f"speed-up are assumptions until a `full` run measures them; `python -m nrbook.budget "
            f"--check` sets the same counting, at `cpu`, against the `cpu` runs' measured seconds."]
    return out


# ----------------------------------------------------------------------------
# the command line
# ----------------------------------------------------------------------------
def _table(est: dict) -> str:
    lines = [f"{est['notebook']} at {est['profile']} on {est['device']}",
             f"  {'stage':<16}{'TFLOP':>12}{'passes s':>10}{'other s':>10}"]
    for s, r in est["stages"].items():
        lines.append(f"  {s:<16}{r['tflop']:>12,.1f}{r['seconds']:>10,.0f}{r['other_s']:>10,.0f}")
    lines.append(f"  {est['trainings']} model trainings; compute {est['compute_s']:,.0f} s "
                 f"(limit {COMPUTE_LIMIT_S} s); {est['staging_calls']} staging calls; the loan "
                 f"{est['loan_s']:,.0f} s of {LOAN.length_s:.0f} s: "
                 + ("fits" if est["fits"] else "DOES NOT FIT"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nrbook.budget", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="full", choices=("smoke", "cpu", "full"))
    ap.add_argument("--device", default="h100", choices=sorted(DEVICES))
    ap.add_argument("--notebooks", nargs="*", default=None, help="chapter numbers or names (default: all)")
    ap.add_argument("--check", action="store_true",
                    help="set the cpu plans against the seconds the cpu runs measured")
    ap.add_argument("--datasets", action="store_true",
                    help="print the datasets the chapters read (what `make stage NB=…` stages)")
    ap.add_argument("--next", action="store_true",
                    help="list the chapters' full runs and print the chapter the next loan should run")
    args = ap.parse_args(argv)
    try:
        names = _pick(args.notebooks)
    except ValueError as e:
        ap.error(str(e))
    if args.datasets:
        print(" ".join(sorted({d for nb in names for d in datasets(nb)})))
        return 0
    if args.next:
        for nb, r in full_runs().items():
            print(f"{nb:<24}" + ("no full run" if r is None else
                                 f"full {str(r['date'])[:10]} on {r['device']}, {r['wall_seconds']} s"))
        print(f"next: {next_chapter()}")
        return 0
    from .plans import PLANS

    dev = DEVICES[args.device]
    print(f"assumed: {dev.efficiency:.0%} of the dense peak, {dev.launch_s * 1e6:.0f} µs per layer "
          f"launch, other work {OTHER_SPEEDUP:g}× the 2-core CPU's; cold start {LOAN.start_s:.0f} s, "
          f"{LOAN.call_s:.0f} s per staging call")
    bad = 0
    for nb in names:
        if nb not in PLANS:
            print(f"{nb}: no plan yet")
            bad += 1
            continue
        if args.check:
            rows = check(nb)
            print(f"{nb}: cpu plan against the cpu run")
            for s, r in rows.items():
                ratio = ("— (loaded checkpoints)" if r["cached"] else "—" if r["ratio"] is None
                         else f"{r['ratio']:.2f}" + (" (its models loaded)" if r["checkpoints"] else ""))
                print(f"  {s:<16}{r['measured_s']:>10,.0f} s measured{r['model_s']:>10,.0f} s counted"
                      f"   ratio {ratio}")
            continue
        est = estimate(nb, args.profile, dev)
        print(_table(est))
        bad += not est["fits"]
    return 1 if bad and not args.check else 0


if __name__ == "__main__":
    sys.exit(main())
