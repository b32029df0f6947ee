"""Toggle activity and neural ranking — Prattico 2022, "FGSM attack and toggle activity".

A *neuron* is one element (c, h, w) of a conv layer's output, taken before
batch norm (the report's public code profiles the conv outputs); by default
the conv layers of the network's main path (``model.conv_layers()``: 17 for a
ResNet-18, numbered 1…17 as the report's ``LayerName`` column; shortcut convs
are not neurons of the path).

* Binary threshold (§2.2, Fig. 3): a Gaussian KDE of the neuron's values over
  a profiling dataset (Silverman's bandwidth, scipy's convention
  ``h = σ̂ · (3n/4)^(-1/5)``); the threshold is the lowest point of the density
  between its two most prominent peaks. **Fallback** when the density has
  fewer than two peaks (no valley) or the neuron is constant: the midpoint of
  its historical range. ``kde_threshold`` does this for one 1-D array with
  scipy; ``profile`` does it for every neuron at once on the device (counts
  binned on a grid and convolved with each neuron's Gaussian by FFT,
  prominences from masked min/max over the grid).
* Ternary thresholds (§2.2, Fig. 4): fractions ``lo`` and ``hi`` of the
  neuron's historical range [min, max].
* Toggle activity (§2.2): the share of neurons that take both states over a
  dataset — binary: at least once ≤ threshold and once > threshold; ternary:
  at least once ≤ low and once > high. Only the per-neuron min and max over
  the dataset matter, so datasets are summarised by their extrema, and the
  extrema of a union are the min/max of the parts' extrema.
* Neural ranking (§2.3, Tables 1–2): the score of a neuron on an image is its
  contribution to the predicted class, activation × ∂z_ŷ/∂activation
  (gradient × input, Shrikumar et al. 2016, at the neuron); over a dataset a
  neuron's score is its largest contribution, and its class the prediction
  of the image that gave it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .hooks import capture, get_layer
from .models import frozen
from .utils import check_int, check_number

DEFAULT_BINS = 128
TERNARY = (0.25, 0.75)     # ternary low / high as fractions of the historical range
PAD_BANDWIDTHS = 3.0       # the KDE grid reaches 3 bandwidths beyond the data on each side
MIN_PROMINENCE = 0.05      # peaks less prominent than 5 % of the density maximum are sampling ripples, not modes


def _silverman(std: torch.Tensor | float, n: int):
    """scipy.stats.gaussian_kde's 'silverman' factor for 1-D data, times σ̂."""
    return std * (n * 3.0 / 4.0) ** (-1.0 / 5.0)


def kde_threshold(values, *, grid: int = 512, return_details: bool = False):
    """Binary threshold of one neuron (Prattico 2022 §2.2, Fig. 3), with scipy.

    Gaussian KDE (Silverman bandwidth) of ``values`` on a grid over
    [min − 3h, max + 3h]; the threshold is the grid point of lowest density
    between the two most prominent peaks (``scipy.signal.find_peaks``
    prominences). Fallback when there is no valley (fewer than two peaks, or a
    constant sample): the midpoint of [min, max]. With ``return_details`` also
    returns a dict with the grid, density, peaks and whether the fallback was used.
    """
    from scipy.signal import find_peaks
    from scipy.stats import gaussian_kde

    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size < 2 or not np.all(np.isfinite(v)):
        raise ValueError(f"values must be a finite 1-D sample of at least 2 numbers; got {v.size} values"
                         + ("" if np.all(np.isfinite(v)) else " with NaN/inf"))
    check_int("grid", grid, low=16)
    lo, hi = float(v.min()), float(v.max())
    mid = 0.5 * (lo + hi)
    details = {"grid": None, "density": None, "peaks": [], "fallback": True}
    if hi > lo and v.std() > 0:
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
    return (mid, details) if return_details else mid


def kde_thresholds(values: torch.Tensor, *, bins: int = DEFAULT_BINS, chunk: int | None = None):
    """Binary thresholds of many neurons at once — the vectorised ``kde_threshold``.

    ``values`` is (samples × neurons). Returns ``(threshold, bimodal)`` per
    neuron. See ``profile`` for datasets too large to hold; this is the
    in-memory form (tests compare it with the scipy version).
    """
    v = values.float()
    n = v.shape[0]
    mn, mx = v.min(0).values, v.max(0).values
    std = v.std(0, unbiased=True)
    lo, step, h = _grid(mn, mx, std, n, bins)
    counts = _bin_counts(v, lo, step, bins)
    return _valleys(counts, lo, step, h, mn, mx, chunk=chunk)


def _grid(mn, mx, std, n, bins):
    h = _silverman(std, n)
    lo = mn - PAD_BANDWIDTHS * h
    step = (mx - mn + 2 * PAD_BANDWIDTHS * h) / (bins - 1)
    return lo, step, h


def _bin_counts(v: torch.Tensor, lo, step, bins, counts: torch.Tensor | None = None):
    """Add the nearest-grid-point counts of ``v`` (samples × neurons) to ``counts`` (neurons × bins)."""
    nn_ = v.shape[1]
    if counts is None:
        counts = torch.zeros(nn_, bins, device=v.device, dtype=torch.float32)
    safe = torch.where(step > 0, step, torch.ones_like(step))
    idx = ((v - lo) / safe).round().clamp_(0, bins - 1).long()
    flat = idx + torch.arange(nn_, device=v.device).mul_(bins)
    counts.view(-1).index_add_(0, flat.reshape(-1), torch.ones(flat.numel(), device=v.device))
    return counts


def _valleys(counts, lo, step, h, mn, mx, *, chunk: int | None = None):
    """Per neuron: the density (binned counts ⊛ Gaussian of bandwidth h), its two
    most prominent peaks (scipy's definition of prominence), and the grid point
    of lowest density between them; the midpoint of [mn, mx] where there is none."""
    n_neurons, bins = counts.shape
    if chunk is None:   # neurons per pass: each holds chunk × bins × bins temporaries
        chunk = 8192 if counts.is_cuda else 1024
    thr = 0.5 * (mn + mx)
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
        d = torch.fft.irfft(torch.fft.rfft(c, n=L) * torch.fft.rfft(w, n=L), n=L)[:, :bins]
        d = d.clamp_min(0)
        # strict local maxima (the grid is padded, so the edges are never peaks)
        peak = torch.zeros_like(d, dtype=torch.bool)
        peak[:, 1:-1] = (d[:, 1:-1] > d[:, :-2]) & (d[:, 1:-1] >= d[:, 2:])
        # prominence: height above the higher of the two lowest points reached
        # before meeting higher ground on either side (or the edge)
        higher = d[:, None, :] > d[:, :, None]                  # [n, p, i]: d[i] > d[p]
        left = torch.where(higher & (ar[None, None] < ar[None, :, None]), ar, -1).amax(2).clamp_min(0)
        right = torch.where(higher & (ar[None, None] > ar[None, :, None]), ar, bins).amin(2).clamp_max(bins - 1)
        inf = torch.tensor(float("inf"), device=d.device)
        dd = d[:, None, :].expand(-1, bins, -1)
        lmin = torch.where((ar >= left[..., None]) & (ar[None, None] <= ar[None, :, None]), dd, inf).amin(2)
        rmin = torch.where((ar <= right[..., None]) & (ar[None, None] >= ar[None, :, None]), dd, inf).amin(2)
        prom = d - torch.maximum(lmin, rmin)
        prom = torch.where(peak & (prom >= MIN_PROMINENCE * d.amax(1, keepdim=True)), prom, -inf)
        top = prom.topk(2, dim=1)
        has2 = torch.isfinite(top.values[:, 1]) & ok
        p1 = top.indices.amin(1)
        p2 = top.indices.amax(1)
        between = (ar[None] >= p1[:, None]) & (ar[None] <= p2[:, None])
        valley = torch.where(between, d, inf).argmin(1)
        t = lo[s:e] + valley.float() * st
        thr[s:e] = torch.where(has2, t, thr[s:e])
        bimodal[s:e] = has2
    return thr, bimodal


# ----------------------------------------------------------------------------
# profiling a network
# ----------------------------------------------------------------------------
@dataclass
class Thresholds:
    """Per-layer neuron thresholds (tensors shaped like one output, C×H×W)."""
    layers: list[str]
    binary: dict[str, torch.Tensor]
    low: dict[str, torch.Tensor]
    high: dict[str, torch.Tensor]
    bimodal: dict[str, torch.Tensor]
    n_profile: int = 0
    ternary: tuple[float, float] = TERNARY
    info: dict = field(default_factory=dict)

    def n_neurons(self, layer: str | None = None) -> int:
        names = self.layers if layer is None else [layer]
        return sum(self.binary[n].numel() for n in names)


def _batches(x: torch.Tensor, batch_size: int):
    for i in range(0, x.shape[0], batch_size):
        yield x[i:i + batch_size]


def _layer_names(model, layers):
    if layers is None:
        return list(model.conv_layers())
    names = [layers] if isinstance(layers, str) else list(layers)
    for n in names:
        get_layer(model, n)      # a clear error for an unknown name
    return names


@torch.no_grad()
def _outputs(model, xb, names, shapes: dict | None = None):
    """The named layers' outputs for one batch, flattened to (batch × neurons),
    fp32; records each layer's output shape (C×H×W) in ``shapes``."""
    with capture(model, names) as store:
        model(xb)
    if shapes is not None:
        shapes.update({n: tuple(store[n][0].shape[1:]) for n in names})
    return {n: store[n][0].float().contiguous().flatten(1) for n in names}


def profile(model: nn.Module, x: torch.Tensor, layers: Sequence[str] | None = None, *,
            bins: int = DEFAULT_BINS, ternary: tuple[float, float] = TERNARY,
            batch_size: int = 500, progress: bool = True) -> Thresholds:
    """Profile every neuron of ``layers`` over the images ``x`` (Prattico 2022
    §2.2): binary KDE-valley thresholds and ternary range fractions.

    Two passes over ``x``: min / max / mean / σ per neuron (the KDE grid and
    Silverman bandwidth), then counts on each neuron's grid; the densities and
    valleys are computed for all neurons at once (``_valleys``).
    """
    check_int("bins", bins, low=16, high=4096)
    check_int("batch_size", batch_size, low=1)
    lo_f = check_number("ternary[0]", ternary[0], low=0.0, high=1.0)
    hi_f = check_number("ternary[1]", ternary[1], low=lo_f, high=1.0)
    names = _layer_names(model, layers)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"x has {n} image(s); profiling needs at least 2")
    with frozen(model):
        stats, shapes = {}, {}
        for xb in tqdm(list(_batches(x, batch_size)), desc="profile 1/2", disable=not progress, leave=False):
            for name, a in _outputs(model, xb, names, shapes).items():
                s = stats.get(name)
                a64 = a.double()
                cur = (a.amin(0), a.amax(0), a64.sum(0), (a64 ** 2).sum(0))
                stats[name] = cur if s is None else (torch.minimum(s[0], cur[0]), torch.maximum(s[1], cur[1]),
                                                     s[2] + cur[2], s[3] + cur[3])
        grids, counts = {}, {}
        for name, (mn, mx, s1, s2) in stats.items():
            var = ((s2 - s1 ** 2 / n) / (n - 1)).clamp_min(0)
            grids[name] = _grid(mn, mx, var.sqrt().float(), n, bins)
        for xb in tqdm(list(_batches(x, batch_size)), desc="profile 2/2", disable=not progress, leave=False):
            for name, a in _outputs(model, xb, names).items():
                lo, step, _ = grids[name]
                counts[name] = _bin_counts(a, lo, step, bins, counts.get(name))
    th = Thresholds(names, {}, {}, {}, {}, n_profile=n, ternary=(lo_f, hi_f))
    for name in names:
        mn, mx = stats[name][0], stats[name][1]
        lo, step, h = grids[name]
        thr, bim = _valleys(counts[name], lo, step, h, mn, mx)
        shp = shapes[name]
        th.binary[name] = thr.view(shp)
        th.bimodal[name] = bim.view(shp)
        th.low[name] = (mn + lo_f * (mx - mn)).view(shp)
        th.high[name] = (mn + hi_f * (mx - mn)).view(shp)
    th.info["bimodal_share"] = {nm: 100.0 * th.bimodal[nm].float().mean().item() for nm in names}
    return th


# ----------------------------------------------------------------------------
# extrema and toggle activity
# ----------------------------------------------------------------------------
Extrema = dict  # layer -> (min, max), each C×H×W


def extrema(model: nn.Module, x: torch.Tensor, layers: Sequence[str] | None = None, *,
            sizes: Iterable[int] | None = None, batch_size: int = 500):
    """Per-neuron min and max of ``layers`` over the images ``x``.

    With ``sizes``, the extrema of every prefix ``x[:n]`` for ``n`` in ``sizes``
    in one pass (nested datasets of growing size): returns ``{n: Extrema}``.
    """
    names = _layer_names(model, layers)
    N = x.shape[0]
    ns = sorted({check_int("sizes[i]", int(s), low=1, high=N) for s in (sizes or [N])})
    out, cur = {}, None
    bounds = sorted(set(ns) | set(range(0, N, batch_size)) | {N})
    with frozen(model), torch.no_grad():
        for a, b in zip(bounds[:-1], bounds[1:]):
            with capture(model, names) as store:
                model(x[a:b])
            ext = {n_: _minmax(store[n_][0]) for n_ in names}
            cur = ext if cur is None else merge(cur, ext)
            if b in ns:
                out[b] = {k: (v[0].clone(), v[1].clone()) for k, v in cur.items()}
    return out if sizes is not None else out[N]


def _minmax(a: torch.Tensor):
    """Min and max over the batch. ``.contiguous()`` first: a batch reduction of a
    channels_last tensor is ~20× slower on the CPU than a copy plus the reduction
    of a contiguous one (measured 3.2 s vs 0.14 s for a ResNet-18's 17 layers)."""
    mn, mx = torch.aminmax(a.float().contiguous(), dim=0)
    return mn, mx


def merge(*parts: Extrema) -> Extrema:
    """The extrema of the union of datasets from the extrema of each."""
    out = {}
    for k in parts[0]:
        out[k] = (torch.stack([p[k][0] for p in parts]).amin(0), torch.stack([p[k][1] for p in parts]).amax(0))
    return out


def toggled(mn: torch.Tensor, mx: torch.Tensor, low: torch.Tensor, high: torch.Tensor | None = None) -> torch.Tensor:
    """Which neurons toggle over a dataset whose per-neuron extrema are ``mn``,
    ``mx``: at least once ≤ ``low`` and at least once > ``high`` (binary:
    ``high = low`` = the threshold)."""
    high = low if high is None else high
    return (mn <= low) & (mx > high)


def toggle_activity(ext: Extrema, th: Thresholds, kind: str = "binary") -> dict[str, float]:
    """Toggle activity in percent per layer and in total (key ``"total"``, over
    all neurons of all layers) — Prattico 2022 §2.2."""
    if kind not in ("binary", "ternary"):
        raise ValueError(f"kind={kind!r} is not allowed; choose one of ['binary', 'ternary']")
    out, hit, tot = {}, 0, 0
    for name in th.layers:
        mn, mx = ext[name]
        t = toggled(mn, mx, th.binary[name]) if kind == "binary" else toggled(mn, mx, th.low[name], th.high[name])
        out[name] = 100.0 * t.float().mean().item()
        hit += int(t.sum())
        tot += t.numel()
    out["total"] = 100.0 * hit / tot
    return out


# ----------------------------------------------------------------------------
# neural ranking
# ----------------------------------------------------------------------------
@dataclass
class Ranking:
    """Per-neuron scores (max over the dataset of activation × ∂z_ŷ/∂activation)
    and the predicted class of the image that gave each maximum."""
    layers: list[str]
    score: dict[str, torch.Tensor]
    cls: dict[str, torch.Tensor]

    def top(self, k: int = 10) -> list[dict]:
        """The ``k`` highest-scoring neurons: rank, layer name, layer number (1-based,
        the report's ``LayerName``), channel, h, w, score and class."""
        flat = torch.cat([self.score[n].flatten() for n in self.layers])
        k = check_int("k", k, low=1, high=flat.numel())
        vals, idx = flat.topk(k)
        sizes = np.cumsum([0] + [self.score[n].numel() for n in self.layers])
        rows = []
        for r, (v, i) in enumerate(zip(vals.tolist(), idx.tolist())):
            li = int(np.searchsorted(sizes, i, side="right") - 1)
            name = self.layers[li]
            c, h, w = np.unravel_index(i - sizes[li], tuple(self.score[name].shape))
            rows.append({"rank": r, "layer": name, "layer_no": li + 1, "c": int(c), "h": int(h), "w": int(w),
                         "score": float(v), "class": int(self.cls[name].flatten()[i - sizes[li]])})
        return rows

    def layer_counts(self, k: int) -> dict[str, int]:
        """How many of the top-``k`` neurons sit in each layer."""
        counts = {n: 0 for n in self.layers}
        for row in self.top(k):
            counts[row["layer"]] += 1
        return counts


def rank_neurons(model: nn.Module, x: torch.Tensor, layers: Sequence[str] | None = None, *,
                 batch_size: int = 250) -> Ranking:
    """Neural ranking (Prattico 2022 §2.3, §3.1): score every neuron of ``layers``
    by its contribution to the predicted class, activation × ∂z_ŷ/∂activation,
    per image; a neuron's score over ``x`` is its maximum, its class the
    prediction of the image that gave it. Weights stay frozen."""
    names = _layer_names(model, layers)
    check_int("batch_size", batch_size, low=1)
    best, cls = {}, {}
    with frozen(model):
        for xb in _batches(x, batch_size):
            with capture(model, names, detach=False) as store:
                xb = xb.detach().requires_grad_(True)   # a graph through the frozen weights
                logits = model(xb)
            pred = logits.argmax(1)
            acts = [store[n][0] for n in names]
            grads = torch.autograd.grad(logits.gather(1, pred[:, None]).sum(), acts)
            for n, a, g in zip(names, acts, grads):
                s = (a.detach() * g).float().contiguous()    # N×C×H×W contributions (see _minmax)
                v, j = s.max(0)
                c = pred[j]
                if n not in best:
                    best[n], cls[n] = v, c
                else:
                    upd = v > best[n]
                    best[n] = torch.where(upd, v, best[n])
                    cls[n] = torch.where(upd, c, cls[n])
    return Ranking(names, best, cls)
