"""Benchmarks of nrlib's fast paths against plain references, on one device.

``python -m nrbook.bench [--profile auto|smoke|cpu|full] [--out PATH]``

Every comparison is a ratio of two numbers measured in the same run on the
same device (so a ratio from a laptop and one from an H100 can be read side by
side even though their absolute numbers cannot):

a. training — the zoo's ResNet-18 (``nrlib.train.zoo_get(..., "cifar", profile)``):
   its training seconds and test accuracy (goal at the full profile: the zoo's
   ``test_acc/resnet18`` in ``nrlib/papers/zoo.json``),
   and training images/s of a few timed SGD steps measured here (crop + flip
   on the device, bf16 autocast and channels_last on a GPU, as ``fit`` does),
   at the profile's width and, where cheap enough, at full width;
b. PGD-10 L∞ (ε = 8/255, α = 2/255, random start, Madry et al. 2018) on the
   trained model: ``nrlib.attacks.PGD(eps, steps=10, alpha=...)`` called as
   ``atk(model, x, y)`` (its fast path: bf16 autocast on a GPU, large
   batches, ``nrlib.precision``) against ``torchattacks.PGD`` (fp32, its
   defaults) — images/s and robust accuracy of each — and, on a GPU, the same
   attack in fp32 (``amp=False``) to show that bf16 does not weaken it (goal
   |fast − fp32| ≤ 0.5 points). On the CPU autocast is off, so the fast path
   *is* fp32: that gap is not measured there (``None``), not reported as 0;
c. kernel dropout of ``conv1`` (Pravin et al. 2021, §3.3): the vectorised
   ``fragile.kernel_dropout_accuracy`` against the loop
   ``fragile.kernel_dropout_accuracy_naive`` (goal ≥ 5× on a GPU) and the
   largest difference between their accuracies;
d. peak memory of each measured operation: on CUDA
   ``torch.cuda.max_memory_allocated`` (reset before the operation); on the
   CPU the process's RSS high-water mark (``ru_maxrss``) before and after it,
   which only rises when an operation needs more than anything before it.

The profiles are ``nrlib.profiles``' (``auto`` is ``full`` on a CUDA GPU and
``cpu`` otherwise); ``SIZES`` gives each its sizes, and ``smoke`` only
exercises the code (the tests run it). The table is printed and the
numbers written atomically as JSON to ``data/results/bench/<device>.json``
(``<device>-<profile>.json`` when the profile is not the device's default),
with the device, torch version, date and git commit.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import re
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from nrlib import attacks, fragile, metrics, papers, precision, profiles
from nrlib import data as nrdata
from nrlib import models as nrmodels
from nrlib import results as nrresults
from nrlib import train as nrtrain
from nrlib.utils import batches, atomic_write_bytes, get_device, seed_everything

EPS, ALPHA, STEPS = 8 / 255, 2 / 255, 10
GOALS = {"pgd_amp_gap": 0.5, "dropout_speedup": 5.0}    # the benchmarks' own goals
NOT_MEASURED_ON_CPU = "not measured on a CPU: both runs are fp32"


def zoo_goal(arch: str = "resnet18") -> float:
    """The zoo's test-accuracy goal for ``arch`` at the full profile (``nrlib/papers/zoo.json``)."""
    for c in papers.load("zoo")["claims"]:
        if c["key"] == f"test_acc/{arch}":
            return c["rule"]["value"]
    raise ValueError(f"arch={arch!r} has no test_acc goal in nrlib/papers/zoo.json")


# Sizes per profile of nrlib.profiles. ``warm``: images in the warm-up run of
# each operation (on a GPU the timed batch shape itself, so cuDNN's choices
# are made before the clock starts).
SIZES = {
    "smoke": {"zoo": "smoke", "train_batch": 128, "train_steps": 2, "full_width_steps": 0,
              "pgd_n": 32, "pgd_batch": 32, "ref_batch": 32, "pgd_warm": 8,
              "kd_n": 64, "kd_warm": 8, "naive_batch": 1024, "repeats": 1},
    "cpu": {"zoo": "cpu", "train_batch": 128, "train_steps": 5, "full_width_steps": 2,
            "pgd_n": 500, "pgd_batch": 500, "ref_batch": 500, "pgd_warm": 32,
            "kd_n": 1000, "kd_warm": 16, "naive_batch": 1024, "repeats": 3},
    "full": {"zoo": "full", "train_batch": 512, "train_steps": 20, "full_width_steps": 20,
             "pgd_n": 10000, "pgd_batch": 2048, "ref_batch": 1024, "pgd_warm": 1024,
             "kd_n": 10000, "kd_warm": 256, "naive_batch": 1024, "repeats": 3},
}


# ----------------------------------------------------------------------------
# timing and memory
# ----------------------------------------------------------------------------
def device_slug(device=None) -> str:
    """File-name form of ``results.device_name``: 'cpu-x86_64-2-threads', 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9_]+", "-", nrresults.device_name(device).lower()).strip("-")


def default_profile(device) -> str:
    """What ``auto`` means for ``device``: ``nrlib.profiles.auto()`` for this machine's default
    device, ``cpu`` when the benchmarks are asked to run on the CPU of a GPU machine."""
    return profiles.auto() if torch.device(device).type == "cuda" else "cpu"


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _rss_hwm_mib() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024  # bytes on macOS, KiB on Linux


def memory_kind(dev) -> str:
    if dev.type == "cuda":
        return ("CUDA torch.cuda.max_memory_allocated during the operation (MiB; reset before it); "
                "before_mib = memory allocated when it started (model, data)")
    return ("process RSS high-water mark, resource.getrusage(RUSAGE_SELF).ru_maxrss (MiB), before and after "
            "the operation; it rises only when the operation needs more than anything run before it")


def measure(fn, dev):
    """Run ``fn()`` once, timed (synchronised on CUDA); return (result, seconds, memory dict)."""
    _sync(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev) / 2**20
    else:
        before = _rss_hwm_mib()
    t0 = time.perf_counter()
    out = fn()
    _sync(dev)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else _rss_hwm_mib()
    return out, seconds, {"before_mib": before, "peak_mib": peak, "increase_mib": max(0.0, peak - before)}


def measure_best(fn, dev, repeats: int = 1):
    """``measure`` ``repeats`` times; the fastest time (the least disturbed by
    whatever else the machine was doing), the largest memory, the first result."""
    runs = [measure(fn, dev) for _ in range(max(1, repeats))]
    mem = {k: max(r[2][k] for r in runs) for k in runs[0][2]}
    return runs[0][0], min(r[1] for r in runs), {**mem, "repeats": len(runs)}


def _ratio(a, b):
    return a / b if a is not None and b else None


# ----------------------------------------------------------------------------
# a. training
# ----------------------------------------------------------------------------
def train_images_per_s(width: int, steps: int, batch: int, xtr, ytr, dev, *, settings: dict, seed: int = 0):
    """Training images/s of ResNet-18 at ``width``: one warm-up SGD step, then
    ``steps`` timed ones (the fast CIFAR recipe's step, ``settings`` being its
    ``nrlib.train.recipe_settings``: crop + flip on the device, bf16 autocast +
    channels_last on CUDA, its optimiser, learning rate and weight decay)."""
    seed_everything(seed)
    model = nrmodels.build("resnet18", "cifar10", width=width).to(dev).to(memory_format=torch.channels_last)
    model.train()
    opt = nrtrain.make_optimizer(model.parameters(), settings["optimizer"], settings["lr"],
                                 settings.get("weight_decay", 0.0))

    def step(i):
        j = (i * batch) % max(1, len(ytr) - batch + 1)
        xb = nrtrain.crop_flip(xtr[j:j + batch]).float().div_(255.0)
        with precision.autocast(dev):
            logits = model(xb)
        loss = F.cross_entropy(logits.float(), ytr[j:j + batch],
                               label_smoothing=settings.get("label_smoothing", 0.0))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step(0)

    def timed():
        for i in range(1, steps + 1):
            step(i)

    _, seconds, mem = measure(timed, dev)
    return {"width": width, "batch": batch, "steps": steps, "seconds": seconds,
            "images_per_s": steps * batch / seconds, "params": nrmodels.count_params(model), "memory": mem}


def bench_training(p: dict, dev, *, seed: int = 0, progress: bool = True):
    model, meta = nrtrain.zoo_get("resnet18", "cifar10", "cifar", p["zoo"], seed, device=dev, progress=progress)
    full = p["zoo"] == "full"
    goal = zoo_goal("resnet18")
    out = {"zoo_profile": p["zoo"], "cached": bool(meta["cached"]), "trained_on": meta.get("device_name", meta.get("device")),
           "trained_with_torch": meta.get("torch"), "train_seconds": meta["train_seconds"],
           "test_acc": meta["test_acc"], "epochs": meta.get("epoch"), "n_train": meta.get("n_train"),
           "n_test": meta.get("n_test"), "model_kwargs": meta.get("model_kwargs", {}),
           "checkpoint": meta.get("path"),
           "goal_test_acc": goal if full else None,
           "met": bool(meta["test_acc"] >= goal) if full else None}
    width = nrtrain.model_kwargs("resnet18", "cifar", p["zoo"]).get("width", 64)
    settings = nrtrain.recipe_settings("resnet18", "cifar", p["zoo"])
    steps = max(p["train_steps"], p["full_width_steps"])
    n = min(50000, p["train_batch"] * (steps + 1))
    xtr, ytr = nrdata.load("cifar10", "train", n=n, seed=seed, device=dev, dtype=torch.uint8)
    out["throughput"] = {f"width{width}": train_images_per_s(width, p["train_steps"], p["train_batch"],
                                                             xtr, ytr, dev, settings=settings, seed=seed)}
    if p["full_width_steps"] and width != 64:
        out["throughput"]["width64"] = train_images_per_s(64, p["full_width_steps"], p["train_batch"],
                                                          xtr, ytr, dev, settings=settings, seed=seed)
    return model, out


# ----------------------------------------------------------------------------
# b. PGD-10: nrlib vs torchattacks
# ----------------------------------------------------------------------------
def _torchattacks_pgd(model, x, y, batch, dev, seed, progress):
    import torchattacks

    atk = torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True)
    if hasattr(atk, "set_device"):
        atk.set_device(dev)
    torch.manual_seed(seed)  # its random start draws from the global generator
    chunks = list(batches(x, y, batch_size=batch))
    return torch.cat([atk(xb, yb) for xb, yb in tqdm(chunks, desc="torchattacks PGD", disable=not progress,
                                                      leave=False)])


def bench_pgd(model, p: dict, dev, *, seed: int = 0, progress: bool = True):
    x, y = nrdata.load("cifar10", "test", n=p["pgd_n"], seed=seed, device=dev)
    n = x.shape[0]
    out = {"n": n, "eps": EPS, "alpha": ALPHA, "steps": STEPS, "random_start": True, "seed": seed,
           "clean_acc": metrics.accuracy(model, x, y, amp=False),
           "robust_acc_eval": "fp32 forward pass on each attack's adversarial images"}

    fast = attacks.PGD(EPS, steps=STEPS, alpha=ALPHA, random_start=True, seed=seed, batch_size=p["pgd_batch"])
    w = min(n, p["pgd_warm"])
    fast(model, x[:w], y[:w])  # warm-up
    x_fast, s_fast, m_fast = measure_best(lambda: fast(model, x, y), dev, p["repeats"])
    fast_acc = metrics.accuracy(model, x_fast, y, amp=False)
    amp_on = precision.amp_enabled(dev)
    out["nrlib"] = {"attack": fast.describe(), "batch": p["pgd_batch"], "amp_bf16": amp_on, "channels_last": True,
                    "seconds": s_fast, "images_per_s": n / s_fast, "robust_acc": fast_acc, "memory": m_fast}
    out["amp_gap_goal"] = GOALS["pgd_amp_gap"]
    if amp_on:
        fp32 = fast.replace(amp=False)
        fp32(model, x[:w], y[:w])
        x_32, s_32, m_32 = measure_best(lambda: fp32(model, x, y), dev, p["repeats"])
        acc_32 = metrics.accuracy(model, x_32, y, amp=False)
        out["nrlib_fp32"] = {"batch": p["pgd_batch"], "seconds": s_32, "images_per_s": n / s_32,
                             "robust_acc": acc_32, "memory": m_32}
        out["amp_gap_points"] = abs(fast_acc - acc_32)
        out["amp_gap_met"] = bool(out["amp_gap_points"] <= GOALS["pgd_amp_gap"])
    else:   # autocast is off on the CPU: the fast path is the fp32 run, so there is no gap to measure
        out["nrlib_fp32"] = None
        out["amp_gap_points"] = None
        out["amp_gap_met"] = None
        out["amp_gap_note"] = NOT_MEASURED_ON_CPU
    try:
        import torchattacks
    except ImportError:
        out["torchattacks"] = None
        out["ratio_images_per_s"] = None
        return out
    _torchattacks_pgd(model, x[:w], y[:w], p["ref_batch"], dev, seed, False)  # warm-up
    x_ref, s_ref, m_ref = measure_best(lambda: _torchattacks_pgd(model, x, y, p["ref_batch"], dev, seed, progress),
                                       dev, p["repeats"])
    out["torchattacks"] = {"version": torchattacks.__version__, "batch": p["ref_batch"], "amp_bf16": False,
                           "tf32_allowed": bool(torch.backends.cudnn.allow_tf32) if amp_on else None,
                           "seconds": s_ref, "images_per_s": n / s_ref,
                           "robust_acc": metrics.accuracy(model, x_ref, y, amp=False), "memory": m_ref}
    out["ratio_images_per_s"] = out["nrlib"]["images_per_s"] / out["torchattacks"]["images_per_s"]
    return out


# ----------------------------------------------------------------------------
# c. kernel dropout of conv1: vectorised vs loop
# ----------------------------------------------------------------------------
def bench_kernel_dropout(model, p: dict, dev, *, seed: int = 0, progress: bool = True):
    x, y = nrdata.load("cifar10", "test", n=p["kd_n"], seed=seed, device=dev)
    n, k = x.shape[0], model.conv1.out_channels
    w = min(n, p["kd_warm"])
    fragile.kernel_dropout_accuracy(model, x[:w], y[:w], "conv1")  # warm-up
    fragile.kernel_dropout_accuracy_naive(model, x[:w], y[:w], "conv1", [0], batch_size=p["naive_batch"])
    fast, s_fast, m_fast = measure_best(
        lambda: fragile.kernel_dropout_accuracy(model, x, y, "conv1", progress=progress), dev, p["repeats"])
    ref, s_ref, m_ref = measure_best(
        lambda: fragile.kernel_dropout_accuracy_naive(model, x, y, "conv1", batch_size=p["naive_batch"],
                                                      progress=progress), dev, p["repeats"])
    diff = (fast - ref).abs()
    out = {"layer": "conv1", "n": n, "n_kernels": k,
           "vectorised": {"seconds": s_fast, "kernel_images_per_s": k * n / s_fast,
                          "amp_bf16": dev.type == "cuda", "memory": m_fast},
           "naive": {"seconds": s_ref, "kernel_images_per_s": k * n / s_ref, "batch": p["naive_batch"],
                     "memory": m_ref},
           "acc_vectorised": fast.tolist(), "acc_naive": ref.tolist(),
           "max_abs_diff": float(diff.max()), "n_kernels_differing": int((diff > 0).sum())}
    out["ratio"] = out["vectorised"]["kernel_images_per_s"] / out["naive"]["kernel_images_per_s"]
    # the goal is for a GPU: on the CPU both sweeps do the same arithmetic at the
    # same (compute-bound) speed, and the ratio only shows the overhead saved
    out["goal_speedup"] = GOALS["dropout_speedup"]
    out["met"] = bool(out["ratio"] >= GOALS["dropout_speedup"]) if dev.type == "cuda" else None
    return out


# ----------------------------------------------------------------------------
# the table
# ----------------------------------------------------------------------------
def _fmt(v, spec=".1f"):
    if v is None:
        return "—"
    return format(v, spec) if isinstance(v, (int, float)) else str(v)


def table(record: dict) -> list[dict]:
    """Rows: section, nrlib, reference, ratio, goal, met (strings, for printing)."""
    rows = []

    def row(section, nrlib, ref="—", ratio="—", goal="—", met=None):
        rows.append({"section": section, "nrlib": nrlib, "reference": ref, "ratio": ratio, "goal": goal,
                     "met": "—" if met is None else ("yes" if met else "NO")})

    tr = record["training"]
    where = f"cached, trained on {tr['trained_on']}" if tr["cached"] else f"trained on {tr['trained_on']}"
    row(f"train ResNet-18 w={tr['model_kwargs'].get('width', 64)} ({where})",
        f"{tr['test_acc']:.2f}% in {tr['train_seconds']:.0f} s",
        goal=f"≥ {tr['goal_test_acc']:.0f}% test" if tr["goal_test_acc"] else "—", met=tr["met"])
    for name, t in tr["throughput"].items():
        row(f"train img/s (w={t['width']}, batch {t['batch']})", _fmt(t["images_per_s"]))
    pg = record["pgd"]
    ta = pg["torchattacks"]
    row("PGD-10 img/s (vs torchattacks)", _fmt(pg["nrlib"]["images_per_s"]),
        _fmt(ta["images_per_s"]) if ta else "not installed", _fmt(pg["ratio_images_per_s"], ".2f") + "×"
        if pg["ratio_images_per_s"] else "—")
    row("PGD-10 robust acc %", _fmt(pg["nrlib"]["robust_acc"], ".2f"),
        _fmt(ta["robust_acc"], ".2f") if ta else "—",
        f"Δ {pg['nrlib']['robust_acc'] - ta['robust_acc']:+.2f}" if ta else "—")
    if pg["amp_gap_points"] is None:
        row("PGD-10 robust acc %: fast vs fp32", _fmt(pg["nrlib"]["robust_acc"], ".2f"),
            pg.get("amp_gap_note", NOT_MEASURED_ON_CPU), goal=f"|Δ| ≤ {pg['amp_gap_goal']} (GPU)")
    else:
        row("PGD-10 robust acc %: fast vs fp32", _fmt(pg["nrlib"]["robust_acc"], ".2f"),
            _fmt(pg["nrlib_fp32"]["robust_acc"], ".2f"), f"|Δ| {pg['amp_gap_points']:.2f}",
            f"|Δ| ≤ {pg['amp_gap_goal']}", pg["amp_gap_met"])
    kd = record["kernel_dropout"]
    row(f"kernel dropout conv1 ({kd['n_kernels']}×{kd['n']}) s", _fmt(kd["vectorised"]["seconds"], ".2f"),
        _fmt(kd["naive"]["seconds"], ".2f"), f"{kd['ratio']:.2f}×", f"≥ {kd['goal_speedup']:.0f}× (GPU)", kd["met"])
    row("kernel dropout max |Δacc| pts", _fmt(kd["max_abs_diff"], ".3g"), "0",
        goal="0 (fp32)" if not kd["vectorised"]["amp_bf16"] else "small (bf16)",
        met=kd["max_abs_diff"] == 0 if not kd["vectorised"]["amp_bf16"] else None)
    unit = "peak MiB" if record["memory"]["cuda"] else "RSS hwm MiB"
    if ta:
        row(f"PGD-10 {unit}", _fmt(pg["nrlib"]["memory"]["peak_mib"], ".0f"),
            _fmt(ta["memory"]["peak_mib"], ".0f"),
            _fmt(_ratio(pg["nrlib"]["memory"]["peak_mib"], ta["memory"]["peak_mib"]), ".2f") + "×")
    row(f"kernel dropout {unit}", _fmt(kd["vectorised"]["memory"]["peak_mib"], ".0f"),
        _fmt(kd["naive"]["memory"]["peak_mib"], ".0f"),
        _fmt(_ratio(kd["vectorised"]["memory"]["peak_mib"], kd["naive"]["memory"]["peak_mib"]), ".2f") + "×")
    return rows


def format_table(rows: list[dict]) -> str:
    cols = ["section", "nrlib", "reference", "ratio", "goal", "met"]
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    line = lambda r: "  ".join(r[c].ljust(widths[c]) for c in cols).rstrip()  # noqa: E731
    return "\n".join([line({c: c for c in cols}), "  ".join("-" * widths[c] for c in cols),
                      *(line(r) for r in rows)])


# ----------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------
def run(profile: str = "auto", *, device=None, seed: int = 0, progress: bool | None = None) -> dict:
    """Run every section at ``profile`` and return the record (nothing written)."""
    dev = get_device(device)
    profile = default_profile(dev) if profile == "auto" else profiles.resolve(profile)
    p = SIZES[profile]
    progress = profile != "smoke" if progress is None else progress
    try:
        import torchattacks
        ta_version = torchattacks.__version__
    except ImportError:
        ta_version = None
    record = {
        "bench": "nrlib", "profile": profile, "sizes": p, "device": nrresults.device_name(dev),
        "device_slug": device_slug(dev), "device_type": dev.type, "threads": torch.get_num_threads(),
        "torch": str(torch.__version__), "cuda": torch.version.cuda, "torchattacks": ta_version,
        "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": nrresults.git_commit(), "seed": seed,
        "memory": {"cuda": dev.type == "cuda", "unit": "MiB", "kind": memory_kind(dev)},
    }
    t0 = time.perf_counter()
    model, record["training"] = bench_training(p, dev, seed=seed, progress=progress)
    record["pgd"] = bench_pgd(model, p, dev, seed=seed, progress=progress)
    record["kernel_dropout"] = bench_kernel_dropout(model, p, dev, seed=seed, progress=progress)
    record["seconds_total"] = time.perf_counter() - t0
    record["table"] = table(record)
    return record


def default_out(profile: str, device=None) -> Path:
    dev = get_device(device)
    suffix = "" if profile == default_profile(dev) else f"-{profile}"
    return nrresults.results_dir() / "bench" / f"{device_slug(dev)}{suffix}.json"


def main(argv: list[str] | None = None) -> int:
    """``python -m nrbook.bench [--profile auto|smoke|cpu|full] [--out PATH]``: time
    nrlib's fast paths against references on this device; print a table and
    write the numbers as JSON."""
    ap = argparse.ArgumentParser(prog="python -m nrbook.bench", description=main.__doc__.split(":")[0])
    ap.add_argument("--profile", default="auto", choices=["auto", *profiles.PROFILES],
                    help="auto: full on a CUDA GPU, cpu otherwise; smoke: tiny sizes for the tests")
    ap.add_argument("--out", default=None, help="JSON path (default data/results/bench/<device>.json)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    dev = get_device()
    profile = default_profile(dev) if args.profile == "auto" else profiles.resolve(args.profile)
    print(f"bench: profile={profile} device={nrresults.device_name(dev)} torch={torch.__version__}")
    record = run(profile, device=dev, seed=args.seed)
    out = Path(args.out) if args.out else default_out(profile, dev)
    atomic_write_bytes(out, (json.dumps(nrresults._clean(record), indent=1) + "\n").encode())
    print(format_table(record["table"]))
    print(f"({record['memory']['kind']})")
    print(f"wrote {out} in {record['seconds_total']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
