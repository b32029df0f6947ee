"""The thresholds of toggle activity — Prattico 2022, "FGSM attack and toggle activity", §2.2 —
and the profiling of a network's neurons they are fitted on (``nrlib.toggle`` has the activity,
the report's experiments and, via ``nrlib.ranking``, the neural ranking; see its docstring).

* Binary threshold (Fig. 3): the lowest point of a Gaussian KDE of the neuron's values between
  its two most prominent peaks, with a ``fallback`` where there is no valley: ``kde_threshold``
  for one 1-D array with scipy, ``fit_thresholds`` for every neuron of a network at once on the
  device (binned counts convolved with each neuron's Gaussian by FFT).
* Ternary thresholds (Fig. 4): ``ternary_thresholds``, ``ternary_rule`` "range" (ours) or
  "report" (its code).
* ``Thresholds`` holds a network's fitted thresholds and extrema; ``relu_layers``,
  ``layer_table``, ``neuron_values`` and ``compare_with_reference`` inspect what was profiled.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .hooks import capture, layer_names
from .models import SHAPES, frozen
from .utils import batches, check_choice, check_input, check_int, check_number
from .utils import check_bool, check_model

DEFAULT_BINS = 128
FALLBACKS = ("zero", "midpoint")   # the binary threshold of a neuron without a valley
TERNARY_RULES = ("range", "report")
TERNARY = {"range": (0.25, 0.75),   # ours: min + f·(max − min)
           "report": (0.10, 0.90)}  # the report's code: f·(max + min)
KINDS = ("binary", "ternary")
PAD_BANDWIDTHS = 3.0       # the KDE grid reaches 3 bandwidths beyond the data on each side
MIN_PROMINENCE = 0.05      # peaks less prominent than 5 % of the density maximum are sampling ripples, not modes
# The valley rule: "book" (nrlib's: 5% prominence cut, the lowest grid point between the two most
# prominent peaks) or "report" (the report's get_kde_threshold: a 100-point KDE, smoothed by a
# Savitzky-Golay filter of window 7 and order 3, every local maximum a peak, and the lowest strict
# local minimum strictly between the two most prominent peaks; 0 where there is none).
VALLEY_RULES = ("book", "report")
REPORT_GRID = 100          # KDEpy's FFTKDE(...).evaluate(100) in the report's code
REPORT_SAVGOL = (7, 3)     # scipy.signal.savgol_filter(y, window_length=7, polyorder=3)
REPORT_PAD = 0.05          # KDEpy's autogrid: max(5% of the range, the kernel's practical support)
KDEPY_ATOL, KDEPY_XTOL = 1e-4, 1e-3   # KDEpy's practical support: where the kernel falls to atol (+ xtol)
IQR_NORMAL = (1.3489795003921634, 4.6526957480816815)   # Φ⁻¹(.75) − Φ⁻¹(.25), Φ⁻¹(.99) − Φ⁻¹(.01)


def _silverman(std: torch.Tensor | float, n: int):
    """scipy.stats.gaussian_kde's 'silverman' factor for 1-D data, times σ̂."""
    return std * (n * 3.0 / 4.0) ** (-1.0 / 5.0)


def _kdepy_bandwidth(std, q, n: int):
    """KDEpy's ``silvermans_rule`` (the report's ``FFTKDE(bw='silverman')``), per neuron:
    σ = min(σ̂, IQR/1.349) times (3n/4)^(−1/5); where that σ is 0 (a neuron 0 on most
    images, as after a ReLU) the 1–99% spread / 4.653 instead, and 1.0 for a constant neuron.
    ``q`` holds the 1st, 25th, 75th and 99th percentiles (numpy's linear rule)."""
    f = (n * 3.0 / 4.0) ** (-1.0 / 5.0)
    sigma = torch.minimum(std, (q[2] - q[1]) / IQR_NORMAL[0])
    wide = (q[3] - q[0]) / IQR_NORMAL[1]
    return torch.where(sigma > 0, sigma * f, torch.where(wide > 0, wide * f, torch.ones_like(std)))


def _kdepy_support(h):
    """KDEpy's ``practical_support`` of a Gaussian of bandwidth ``h``: the distance at which
    the kernel falls to 1e-4 (its brentq root, plus its xtol of 1e-3) — the grid's padding
    and the kernel's truncation in the report's KDE."""
    arg = (KDEPY_ATOL * h * math.sqrt(2 * math.pi)).clamp(max=1 - 1e-12)
    return h * torch.sqrt(-2.0 * torch.log(arg)) + KDEPY_XTOL


def _percentiles(sorted_v: torch.Tensor, qs=(1, 25, 75, 99)) -> list[torch.Tensor]:
    """numpy's default (linear) percentiles of each column of a column-sorted table."""
    n = sorted_v.shape[0]
    out = []
    for q in qs:
        pos = q / 100 * (n - 1)
        i = int(math.floor(pos))
        j = min(i + 1, n - 1)
        out.append(sorted_v[i] + (pos - i) * (sorted_v[j] - sorted_v[i]))
    return out


def _fallback_value(mn, mx, fallback: str):
    """The binary threshold of a neuron without a valley: 0 (the report's code) or the midpoint of [mn, mx]."""
    check_choice("fallback", fallback, FALLBACKS)
    return 0.0 * mn if fallback == "zero" else 0.5 * (mn + mx)


def kde_threshold(values, *, grid: int | None = None, fallback: str = "zero", valley: str = "book",
                  return_details: bool = False):
    """Binary threshold of one neuron (Prattico 2022 §2.2, Fig. 3), with scipy.

    ``valley="book"``: Gaussian KDE (Silverman bandwidth) of ``values`` on a
    grid of ``grid`` points (default 512) over [min − 3h, max + 3h]; the
    threshold is the grid point of lowest density between the two most
    prominent peaks (``scipy.signal.find_peaks`` prominences, peaks under 5%
    of the maximum dropped). ``valley="report"``: the report's
    ``get_kde_threshold`` — the KDE on 100 points over [min − pad, max + pad]
    (pad = max(5% of the range, 4h), KDEpy's grid), smoothed by a
    Savitzky–Golay filter (window 7, order 3), every local maximum a peak, and
    the lowest *strict local minimum strictly between* the two most prominent
    peaks, with the report's own KDE (KDEpy's ``FFTKDE``: Silverman's rule with
    min(σ, IQR/1.349), linear binning, the kernel cut where it falls to 1e-4).
    When there is no valley (fewer than two peaks, no minimum between them,
    or a constant sample) the threshold is the ``fallback``: ``"zero"``
    (the report's code) or ``"midpoint"`` of [min, max]. With
    ``return_details`` also returns a dict with the grid, density, peaks and
    whether the fallback was used. Chapter 5, §2.
    """
    from scipy.signal import argrelextrema, find_peaks, peak_prominences, savgol_filter
    from scipy.stats import gaussian_kde

    check_choice("fallback", fallback, FALLBACKS)
    check_choice("valley", valley, VALLEY_RULES)
    grid = (512 if valley == "book" else REPORT_GRID) if grid is None else grid
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size < 2 or not np.all(np.isfinite(v)):
        raise ValueError(f"values must be a finite 1-D sample of at least 2 numbers; got {v.size} values"
                         + ("" if np.all(np.isfinite(v)) else " with NaN/inf"))
    check_int("grid", grid, low=16)
    lo, hi = float(v.min()), float(v.max())
    details = {"grid": None, "density": None, "peaks": [], "fallback": True}
    if hi > lo and v.std() > 0 and valley == "report":
        import warnings
        from KDEpy import FFTKDE      # the report's own KDE: FFTKDE(bw='silverman').fit(v).evaluate(100)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # KDEpy warns where Silverman's σ is 0 and it widens it
            xs, dens = FFTKDE(kernel="gaussian", bw="silverman").fit(v).evaluate(grid)
        dens = savgol_filter(dens, *REPORT_SAVGOL)
        peaks = find_peaks(dens)[0]
        mins = argrelextrema(dens, np.less)[0]
        details.update(grid=xs, density=dens)
        if len(peaks) >= 2 and len(mins):
            top = np.sort(peaks[np.argsort(peak_prominences(dens, peaks)[0], kind="stable")[-2:]])
            inner = mins[(mins > top[0]) & (mins < top[1])]
            if len(inner):
                details.update(peaks=top.tolist(), fallback=False)
                thr = float(xs[inner[np.argmin(dens[inner])]])
                return (thr, details) if return_details else thr
    elif hi > lo and v.std() > 0:
        h = _silverman(v.std(ddof=1), v.size)
        xs = np.linspace(lo - PAD_BANDWIDTHS * h, hi + PAD_BANDWIDTHS * h, grid)
        dens = gaussian_kde(v, bw_method="silverman")(xs)
        peaks, props = find_peaks(dens, prominence=MIN_PROMINENCE * dens.max())
        details.update(grid=xs, density=dens)
        if len(peaks) >= 2:
            top = np.sort(peaks[np.argsort(props["prominences"])[-2:]])
            valley = top[0] + int(np.argmin(dens[top[0]:top[1] + 1]))
            details.update(peaks=top.tolist(), fallback=False)
            thr = float(xs[valley])
            return (thr, details) if return_details else thr
    thr = float(_fallback_value(lo, hi, fallback))
    return (thr, details) if return_details else thr


def kde_thresholds(values: torch.Tensor, *, bins: int | None = None, fallback: str = "zero",
                   valley: str = "book", chunk: int | None = None):
    """Binary thresholds of many neurons at once — the vectorised ``kde_threshold``.

    ``values`` is (samples × neurons). Returns ``(threshold, bimodal)`` per
    neuron; where ``bimodal`` is False the threshold is the ``fallback``. See
    ``fit_thresholds`` for a network's neurons over datasets too large to
    hold; this is the in-memory form (tests compare it with the scipy version).
    """
    check_choice("fallback", fallback, FALLBACKS)
    check_choice("valley", valley, VALLEY_RULES)
    bins = _bins(bins, valley)
    v = values.float()
    n = v.shape[0]
    mn, mx = v.min(0).values, v.max(0).values
    std = v.std(0, unbiased=True)
    h = _kdepy_bandwidth(std, _percentiles(v.sort(0).values), n) if valley == "report" else None
    lo, step, h = _grid(mn, mx, std, n, bins, valley, h)
    counts = _bin_counts(v, lo, step, bins, linear=valley == "report")
    return _valleys(counts, lo, step, h, mn, mx, fallback=fallback, valley=valley, chunk=chunk)


def _bins(bins, valley: str) -> int:
    """The grid size: the report's 100 points for its valley rule, else ``bins`` (default 128)."""
    if bins is None:
        return REPORT_GRID if valley == "report" else DEFAULT_BINS
    return check_int("bins", bins, low=16, high=4096)


def _grid(mn, mx, std, n, bins, valley: str = "book", h=None):
    """Each neuron's KDE grid (lowest point, step) and bandwidth: scipy's Silverman h and 3h of
    padding (``"book"``), or KDEpy's ``h`` (given) and autogrid padding (``"report"``)."""
    if valley == "book":
        h = _silverman(std, n)
        pad = PAD_BANDWIDTHS * h
    else:
        pad = torch.maximum(REPORT_PAD * (mx - mn), _kdepy_support(h))
    lo = mn - pad
    step = (mx - mn + 2 * pad) / (bins - 1)
    return lo, step, h


def _bin_counts(v: torch.Tensor, lo, step, bins, counts: torch.Tensor | None = None, linear: bool = False):
    """Add the binned counts of ``v`` (samples × neurons) to ``counts`` (neurons × bins): each
    value to its nearest grid point, or with ``linear`` shared between the two grid points
    around it in proportion to its distance (KDEpy's ``linear_binning``)."""
    nn_ = v.shape[1]
    if counts is None:
        counts = torch.zeros(nn_, bins, device=v.device, dtype=torch.float32)
    safe = torch.where(step > 0, step, torch.ones_like(step))
    base = torch.arange(nn_, device=v.device).mul_(bins)
    pos = ((v - lo) / safe).clamp_(0, bins - 1)
    if not linear:
        flat = pos.round().long() + base
        counts.view(-1).index_add_(0, flat.reshape(-1), torch.ones(flat.numel(), device=v.device))
        return counts
    i = pos.floor().clamp_(max=bins - 2)
    frac = pos - i
    flat = i.long() + base
    counts.view(-1).index_add_(0, flat.reshape(-1), (1 - frac).reshape(-1))
    counts.view(-1).index_add_(0, (flat + 1).reshape(-1), frac.reshape(-1))
    return counts


def _valleys(counts, lo, step, h, mn, mx, *, fallback: str = "zero", valley: str = "book",
             chunk: int | None = None):
    """Per neuron: the density (binned counts ⊛ Gaussian of bandwidth h), its two
    most prominent peaks (scipy's definition of prominence), and the grid point
    of lowest density between them; the ``fallback`` where there is none.
    ``valley="report"``: the density smoothed by the report's Savitzky–Golay
    filter, no prominence cut, and the lowest strict local minimum strictly
    between the two peaks (``kde_threshold`` says the same for one neuron)."""
    n_neurons, bins = counts.shape
    if chunk is None:   # neurons per pass: each holds chunk × bins × bins temporaries
        chunk = 8192 if counts.is_cuda else 1024
    thr = _fallback_value(mn, mx, fallback).clone()
    bimodal = torch.zeros(n_neurons, dtype=torch.bool, device=counts.device)
    L = 2 * bins
    kk = torch.arange(L, device=counts.device, dtype=torch.float32)
    offs = torch.where(kk < bins, kk, kk - L)                   # circular offsets −bins…bins−1
    ar = torch.arange(bins, device=counts.device)
    for s in range(0, n_neurons, chunk):
        e = min(s + chunk, n_neurons)
        c, st, hh = counts[s:e], step[s:e], h[s:e]
        ok = (hh > 0) & (st > 0)
        r = torch.where(ok, st / torch.where(ok, hh, torch.ones_like(hh)), torch.zeros_like(st))
        w = torch.exp(-0.5 * (offs[None] * r[:, None]) ** 2)    # each neuron's Gaussian, in grid steps
        if valley == "report":       # KDEpy cuts the kernel at its practical support
            reach = torch.floor(_kdepy_support(hh) / torch.where(ok, st, torch.ones_like(st)))
            w = torch.where(offs.abs()[None] <= reach[:, None], w, torch.zeros_like(w))
        d = torch.fft.irfft(torch.fft.rfft(c, n=L) * torch.fft.rfft(w, n=L), n=L)[:, :bins]
        d = d.clamp_min(0)
        if valley == "report":       # the report smooths the density before it looks for extrema
            from scipy.signal import savgol_filter
            d = torch.from_numpy(savgol_filter(d.double().cpu().numpy(), *REPORT_SAVGOL, axis=1)).to(d)
        # strict local maxima (the grid is padded, so the edges are never peaks)
        peak = torch.zeros_like(d, dtype=torch.bool)
        peak[:, 1:-1] = (d[:, 1:-1] > d[:, :-2]) & (d[:, 1:-1] >= d[:, 2:])
        # prominence of each peak (only the peaks: P per neuron, P ≪ bins): height above the
        # higher of the two lowest points reached before meeting higher ground on either side
        P = max(2, int(peak.sum(1).max()))
        at = torch.sort(peak.to(torch.uint8), dim=1, descending=True, stable=True).indices[:, :P]
        valid = torch.gather(peak, 1, at)                       # [n, P]: a real peak (else padding)
        pv, pos = torch.gather(d, 1, at), at[:, :, None]
        higher = d[:, None, :] > pv[:, :, None]                 # [n, P, i]: d[i] > d[peak]
        left = torch.where(higher & (ar[None, None] < pos), ar, -1).amax(2).clamp_min(0)
        right = torch.where(higher & (ar[None, None] > pos), ar, bins).amin(2).clamp_max(bins - 1)
        inf = torch.tensor(float("inf"), device=d.device)
        dd = d[:, None, :].expand(-1, P, -1)
        lmin = torch.where((ar >= left[..., None]) & (ar[None, None] <= pos), dd, inf).amin(2)
        rmin = torch.where((ar <= right[..., None]) & (ar[None, None] >= pos), dd, inf).amin(2)
        prom = pv - torch.maximum(lmin, rmin)
        cut = MIN_PROMINENCE if valley == "book" else 0.0
        prom = torch.where(valid & (prom >= cut * d.amax(1, keepdim=True)), prom, -inf)
        top = prom.topk(2, dim=1)
        has2 = torch.isfinite(top.values[:, 1]) & ok
        two = torch.gather(at, 1, top.indices)                  # the two peaks' grid positions
        p1 = two.amin(1)
        p2 = two.amax(1)
        if valley == "book":
            between = (ar[None] >= p1[:, None]) & (ar[None] <= p2[:, None])
        else:                        # strict local minima strictly between the two peaks
            strict = torch.zeros_like(peak)
            strict[:, 1:-1] = (d[:, 1:-1] < d[:, :-2]) & (d[:, 1:-1] < d[:, 2:])
            between = strict & (ar[None] > p1[:, None]) & (ar[None] < p2[:, None])
            has2 = has2 & between.any(1)
        low_at = torch.where(between, d, inf).argmin(1)
        t = lo[s:e] + low_at.float() * st
        thr[s:e] = torch.where(has2, t, thr[s:e])
        bimodal[s:e] = has2
    return thr, bimodal


def ternary_thresholds(mn, mx, fractions: tuple[float, float] | None = None, rule: str = "range"):
    """Low and high ternary thresholds of neurons whose historical extrema are
    ``mn``, ``mx`` (Prattico 2022 §2.2, Fig. 4). ``rule="range"`` (ours):
    mn + f·(mx − mn), default f = (0.25, 0.75); ``"report"`` (the report's code,
    ``NeuronProfiler.get_ternary_threshold(mode='neuron')``): f·(mx + mn),
    default f = (0.10, 0.90) — a fraction of the maximum where the minimum is 0
    (after a ReLU), but not of the range for pre-BN values that go negative.
    Chapter 5, §2 and §4."""
    check_choice("ternary_rule", rule, TERNARY_RULES)
    lo_f, hi_f = TERNARY[rule] if fractions is None else fractions
    lo_f = check_number("ternary[0]", lo_f, low=0.0, high=1.0)
    hi_f = check_number("ternary[1]", hi_f, low=lo_f, high=1.0)
    if rule == "range":
        return mn + lo_f * (mx - mn), mn + hi_f * (mx - mn)
    return lo_f * (mx + mn), hi_f * (mx + mn)


# ----------------------------------------------------------------------------
# profiling a network
# ----------------------------------------------------------------------------
@dataclass
class Thresholds:
    """Per-layer neuron thresholds (tensors shaped like one output, C×H×W): the
    binary one, the ternary low / high, whether the neuron's density has a
    valley (``bimodal``), and the historical ``min`` / ``max`` they come from.
    ``with_rules`` gives the same profile under another fallback or ternary rule."""
    layers: list[str]
    binary: dict[str, torch.Tensor]
    low: dict[str, torch.Tensor]
    high: dict[str, torch.Tensor]
    bimodal: dict[str, torch.Tensor]
    n_profile: int = 0
    ternary: tuple[float, float] = TERNARY["range"]
    info: dict = field(default_factory=dict)
    fallback: str = "zero"
    ternary_rule: str = "range"
    min: dict[str, torch.Tensor] = field(default_factory=dict)
    max: dict[str, torch.Tensor] = field(default_factory=dict)
    valley: str = "book"

    def n_neurons(self, layer: str | None = None) -> int:
        names = self.layers if layer is None else [layer]
        return sum(self.binary[n].numel() for n in names)

    def bimodal_share(self) -> dict[str, float]:
        """Percent of neurons with a KDE valley, per layer and in total (key
        ``"total"``); the others take the fallback threshold."""
        out = {n: 100.0 * self.bimodal[n].float().mean().item() for n in self.layers}
        out["total"] = 100.0 * sum(int(self.bimodal[n].sum()) for n in self.layers) / self.n_neurons()
        return out

    def with_rules(self, *, fallback: str | None = None, ternary_rule: str | None = None,
                   ternary: tuple[float, float] | None = None) -> "Thresholds":
        """The same profile with another binary ``fallback`` and/or ternary rule
        (chapter 5, §4: what each rule does to toggle activity). Valleys are kept;
        only the fallback neurons' binary thresholds and the ternary pair change.
        A new rule without ``ternary`` takes that rule's default fractions."""
        if not self.min:
            raise ValueError("these Thresholds carry no historical min/max (made by hand?); "
                             "with_rules needs those of fit_thresholds")
        fb = self.fallback if fallback is None else check_choice("fallback", fallback, FALLBACKS)
        rule = self.ternary_rule if ternary_rule is None else check_choice("ternary_rule", ternary_rule, TERNARY_RULES)
        fr = ternary if ternary is not None else (self.ternary if rule == self.ternary_rule else TERNARY[rule])
        out = dataclasses.replace(self, binary={}, low={}, high={}, fallback=fb, ternary_rule=rule,
                                  ternary=tuple(float(f) for f in fr), info=dict(self.info))
        for n in self.layers:
            mn, mx = self.min[n], self.max[n]
            out.binary[n] = torch.where(self.bimodal[n], self.binary[n], _fallback_value(mn, mx, fb))
            out.low[n], out.high[n] = ternary_thresholds(mn, mx, out.ternary, rule)
        return out


def profiled_layers(model, layers):
    check_model(model)
    if layers is None:
        if not hasattr(model, "conv_layers"):
            raise ValueError(f"layers=None means the model's conv_layers(), which a {type(model).__name__} "
                             "does not have; name the layers to profile (e.g. layers=['conv1'])")
        return list(model.conv_layers())
    return layer_names(model, layers)   # a non-empty list of known layers, else a clear error


@torch.no_grad()
def _outputs(model, xb, names, shapes: dict | None = None):
    """The named layers' outputs for one batch, flattened to (batch × neurons),
    fp32; records each layer's output shape (C×H×W) in ``shapes``."""
    with capture(model, names) as store:
        model(xb)
    if shapes is not None:
        shapes.update({n: tuple(store[n][0].shape[1:]) for n in names})
    return {n: store[n][0].float().contiguous().flatten(1) for n in names}


def relu_layers(model: nn.Module) -> list[str]:
    """The model's ReLU outputs in forward order (its ``layers()`` that are ``nn.ReLU``
    modules): where Prattico 2022's stored profiles (``resnet20-relu_*``) and KDE
    thresholds read its neurons, after the activation. For a CIFAR ResNet-20, 19
    layers (``relu1`` and two per block). Chapter 5, §2 and every section after."""
    check_model(model)
    if not hasattr(model, "layers"):
        raise ValueError(f"model: relu_layers needs a model with layers() (an nrlib model), "
                         f"got a {type(model).__name__}")
    names = [n for n, m in model.layers().items() if isinstance(m, nn.ReLU)]
    if not names:
        raise ValueError(f"model: a {type(model).__name__} has no nn.ReLU module among its layers()")
    return names


def layer_table(model: nn.Module, layers: Sequence[str] | None = None) -> list[dict]:
    """The profiled layers as the report numbers them (Prattico 2022, Tables 1–2,
    ``LayerName``; ``layer_index`` of its code): one row per layer in forward
    order with its 0-based ``layer_no``, name and output shape (c, h, w) —
    chapter 5, §1. One forward pass of a blank image of the model's dataset."""
    names = profiled_layers(model, layers)
    p = next(model.parameters(), None)
    dataset = getattr(model, "dataset", "cifar10")
    if p is None or dataset not in SHAPES:
        raise ValueError(f"model: layer_table needs a model with parameters and a dataset in {list(SHAPES)} "
                         f"(model.dataset), got a {type(model).__name__} with dataset={dataset!r}")
    x = torch.zeros(1, *SHAPES[dataset], device=p.device)
    shapes = {}
    with frozen(model):
        _outputs(model, x, names, shapes)
    shapes = {n: neuron_shape(n, s) for n, s in shapes.items()}
    return [{"layer_no": i, "layer": n, "c": shapes[n][0], "h": shapes[n][1], "w": shapes[n][2],
             "neurons": int(np.prod(shapes[n]))} for i, n in enumerate(names)]


def neuron_shape(layer: str, shape: tuple) -> tuple:
    """A neuron grid as (c, h, w): a dense layer's F outputs are (F, 1, 1)."""
    if not 1 <= len(shape) <= 3:
        raise ValueError(f"layer {layer!r} has outputs shaped {tuple(shape)} per image; neurons are numbered "
                         "(c, h, w) for C×H×W (conv) or F (dense) outputs only")
    return tuple(shape) + (1,) * (3 - len(shape))


def neuron_values(model: nn.Module, x: torch.Tensor, layer: str, *, batch_size: int = 500) -> torch.Tensor:
    """The values of every neuron of ``layer`` over the images ``x``: a
    (images × neurons) fp32 tensor — the sample a neuron's KDE is fitted to
    (chapter 5, §2: the check against the reference KDE and the density figure)."""
    check_input(model, x)
    profiled_layers(model, [layer])
    with frozen(model):
        return torch.cat([_outputs(model, xb, [layer])[layer] for xb in batches(x, batch_size=batch_size)])


def compare_with_reference(values, th: Thresholds, layer: str, *, n: int = 50, seed: int = 0) -> dict:
    """Check ``fit_thresholds`` against the one-neuron ``kde_threshold`` — KDEpy's
    ``FFTKDE``, the report's own code, for ``valley="report"``; scipy's
    ``gaussian_kde`` for ``"book"`` — on ``n`` neurons of ``layer`` — half with a valley, half without where there are
    enough — whose profiling values are the columns of ``values`` (from
    ``neuron_values`` on the profiling images). Returns the neurons checked,
    how many of them have a valley, on how many the two agree about valley vs
    fallback, and, where they agree, the largest and median threshold difference
    in percent of the neuron's range. Chapter 5, §2."""
    check_int("n", n, low=1)
    check_int("seed", seed, low=0)
    check_thresholds(th)
    if layer not in th.layers:
        raise ValueError(f"layer={layer!r} is not a layer of th; its layers are {th.layers}")
    v = values.detach().cpu().numpy() if torch.is_tensor(values) else np.asarray(values)
    want = th.binary[layer].numel()
    if v.ndim != 2 or v.dtype.kind not in "fiu" or v.shape[0] < 2 or v.shape[1] != want:
        raise ValueError(f"values must be an (images × neurons) table of numbers with at least 2 images and the "
                         f"{want} neurons of {layer!r} (neuron_values(model, x, {layer!r})); got "
                         f"{v.dtype} shape {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError("values holds NaN or inf; the profiling values must be finite")
    bim = th.bimodal[layer].flatten().cpu().numpy()
    vec = th.binary[layer].flatten().cpu().numpy()
    rng = np.random.default_rng(seed)
    pick = np.concatenate([rng.permutation(np.flatnonzero(bim))[: n // 2],
                           rng.permutation(np.flatnonzero(~bim))[: n - n // 2]])
    ref = [kde_threshold(v[:, j], fallback=th.fallback, valley=th.valley, return_details=True) for j in pick]
    agree = np.array([(not d["fallback"]) == bool(bim[j]) for (_, d), j in zip(ref, pick)])
    span = np.where(np.ptp(v[:, pick], axis=0) > 0, np.ptp(v[:, pick], axis=0), 1.0)
    diff = 100.0 * np.abs(np.array([t for t, _ in ref]) - vec[pick]) / span
    return {"layer": layer, "neurons": int(len(pick)), "bimodal": int(bim[pick].sum()), "agree": int(agree.sum()),
            "max_diff_pct": float(diff[agree].max()) if agree.any() else float("nan"),
            "median_diff_pct": float(np.median(diff[agree])) if agree.any() else float("nan")}


def fit_thresholds(model: nn.Module, x: torch.Tensor, layers: Sequence[str] | None = None, *,
                   bins: int | None = None, fallback: str = "zero", ternary_rule: str = "range",
                   ternary: tuple[float, float] | None = None, valley: str = "book", batch_size: int = 500,
                   progress: bool = True) -> Thresholds:
    """Fit every neuron's thresholds over the images ``x`` (Prattico 2022 §2.2,
    Figs. 3–4; the report's ``NeuronProfiler``): the binary KDE-valley
    threshold (``fallback`` where there is no valley: ``"zero"``, the report's
    code, or ``"midpoint"``) and the ternary pair (``ternary_thresholds`` with
    ``ternary_rule`` and its fractions ``ternary``, default that rule's).
    ``valley`` picks the valley rule (``"book"`` or ``"report"``, see
    ``kde_threshold``); ``bins`` the grid (default 128, the report's rule 100).
    Chapter 5, §2.

    Two passes over ``x``: min / max / mean / σ per neuron (the KDE grid and
    Silverman bandwidth), then counts on each neuron's grid; the densities and
    valleys are computed for all neurons at once (``_valleys``).
    """
    check_choice("valley", valley, VALLEY_RULES)
    bins = _bins(bins, valley)
    check_int("batch_size", batch_size, low=1)
    check_choice("fallback", fallback, FALLBACKS)
    check_choice("ternary_rule", ternary_rule, TERNARY_RULES)
    check_bool("progress", progress)
    if ternary is not None and (not isinstance(ternary, (tuple, list)) or len(ternary) != 2):
        raise ValueError(f"ternary={ternary!r} must be a pair (low, high) of fractions, or None for the "
                         f"rule's default {TERNARY[ternary_rule]}")
    fr = TERNARY[ternary_rule] if ternary is None else tuple(ternary)
    ternary_thresholds(torch.zeros(1), torch.ones(1), fr, ternary_rule)    # validates the fractions early
    check_input(model, x)
    names = profiled_layers(model, layers)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"x has {n} image(s); profiling needs at least 2")
    with frozen(model):
        stats, shapes = {}, {}
        for xb in tqdm(list(batches(x, batch_size=batch_size)), desc="thresholds 1/2", disable=not progress,
                       leave=False):
            for name, a in _outputs(model, xb, names, shapes).items():
                s = stats.get(name)
                a64 = a.double()
                cur = (a.amin(0), a.amax(0), a64.sum(0), (a64 ** 2).sum(0))
                stats[name] = cur if s is None else (torch.minimum(s[0], cur[0]), torch.maximum(s[1], cur[1]),
                                                     s[2] + cur[2], s[3] + cur[3])
        grids, counts = {}, {}
        q = _layer_percentiles(model, x, names, shapes, batch_size) if valley == "report" else {}
        for name, (mn, mx, s1, s2) in stats.items():
            std = ((s2 - s1 ** 2 / n) / (n - 1)).clamp_min(0).sqrt().float()
            h = _kdepy_bandwidth(std, q[name], n) if valley == "report" else None
            grids[name] = _grid(mn, mx, std, n, bins, valley, h)
        for xb in tqdm(list(batches(x, batch_size=batch_size)), desc="thresholds 2/2", disable=not progress,
                       leave=False):
            for name, a in _outputs(model, xb, names).items():
                lo, step, _ = grids[name]
                counts[name] = _bin_counts(a, lo, step, bins, counts.get(name), linear=valley == "report")
    th = Thresholds(names, {}, {}, {}, {}, n_profile=n, ternary=tuple(float(f) for f in fr), fallback=fallback,
                    ternary_rule=ternary_rule, valley=valley)
    for name in names:
        mn, mx = stats[name][0], stats[name][1]
        lo, step, h = grids[name]
        thr, bim = _valleys(counts[name], lo, step, h, mn, mx, fallback=fallback, valley=valley)
        shp = shapes[name]
        th.binary[name], th.bimodal[name] = thr.view(shp), bim.view(shp)
        th.min[name], th.max[name] = mn.view(shp), mx.view(shp)
        th.low[name], th.high[name] = ternary_thresholds(th.min[name], th.max[name], th.ternary, ternary_rule)
    th.info["bimodal_share"] = th.bimodal_share()
    return th


PERCENTILE_BUDGET = 2 ** 27   # profiling values sorted at once for the percentiles (512 MB of fp32)


def _layer_percentiles(model, x, names, shapes, batch_size) -> dict[str, list[torch.Tensor]]:
    """The 1st, 25th, 75th and 99th percentile of each neuron of ``names`` over the images
    ``x`` (KDEpy's bandwidth needs them): the layers in groups whose values fit
    ``PERCENTILE_BUDGET``, one pass over ``x`` per group, each layer's table sorted once."""
    groups, size = [[]], 0
    for name in names:
        k = math.prod(shapes[name]) * x.shape[0]
        if groups[-1] and size + k > PERCENTILE_BUDGET:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += k
    out = {}
    for group in groups:
        vals = {n: [] for n in group}
        for xb in batches(x, batch_size=batch_size):
            for n, a in _outputs(model, xb, group).items():
                vals[n].append(a)
        out.update({n: _percentiles(torch.cat(v).sort(0).values) for n, v in vals.items()})
    return out


def check_thresholds(th, name: str = "th") -> None:
    """``th`` is a Thresholds with at least one layer and its binary, low and high thresholds."""
    if not isinstance(th, Thresholds):
        raise ValueError(f"{name} must be a Thresholds (fit_thresholds(...)), got {type(th).__name__}")
    if not th.layers:
        raise ValueError(f"{name} has no layers; fit thresholds of at least one layer")
    for part in ("binary", "low", "high"):
        missing = [n for n in th.layers if n not in getattr(th, part)]
        if missing:
            raise ValueError(f"{name}.{part} lacks the layers {missing} of {name}.layers")


def batch_minmax(a: torch.Tensor):
    """Min and max over the batch. ``.contiguous()`` first: a batch reduction of a
    channels_last tensor is ~20× slower on the CPU than a copy plus the reduction
    of a contiguous one (measured 3.2 s vs 0.14 s for a ResNet-18's 17 layers)."""
    mn, mx = torch.aminmax(a.float().contiguous(), dim=0)
    return mn, mx
