"""The evidence behind a verdict: a number with its 95% interval, sample size and method.

A verdict on a sample of images is only as good as the sample: 16.0% against 14.0% on 200 images
is four images. Every estimate here is an :class:`Estimate` — a ``float`` (so a notebook computes
and prints with it as with any number) that also carries ``low``, ``high`` (the interval, in the
same unit), ``n`` (the sample size), ``method`` and, for a test, ``p``. ``results.write`` stores
the interval beside the value; ``nrlib.papers`` judges a claim on the interval, not the point.

* :func:`proportion` — a share of images, Wilson score (default) or Clopper–Pearson (exact)
  interval (scipy's ``binomtest(...).proportion_ci``).
* :func:`cluster_proportion` — a share of outcomes that come in groups (an image's nine targeted
  pairs): the interval from a bootstrap over whole groups, and ``n`` the number of groups, since
  outcomes of one image are not independent.
* :func:`paired_difference` — two models or attacks on the *same* images: the difference of their
  success shares with Newcombe's (1998) hybrid score interval for paired proportions (method 10)
  and the exact McNemar test (a binomial test on the discordant images).
* :func:`paired_bootstrap` — any per-image statistic of two paired samples (mean of a − b by
  default), percentile bootstrap interval (``scipy.stats.bootstrap``, ``paired=True``).
* :func:`bootstrap_weights` — any statistic of one or more samples of images (a ratio of sums, a
  top-k set chosen on the images) with the percentile bootstrap interval: the statistic is given
  how many times each image was drawn, so it is computed once per resample without copying data.
* :func:`against_random_sets` — one chosen set (of features to prune) against many random sets of
  the same size, on the same images: the difference of means with a two-way bootstrap interval
  (images and random draws resampled independently), so the random control's own spread between
  draws widens the interval; ``p`` is the share of draws that do at least as badly.
* :func:`spearman` — Spearman's ρ (``scipy.stats.spearmanr``) with a permutation-test p-value
  (``scipy.stats.permutation_test``) and the Fisher-z interval with Bonett & Wright's (2000)
  variance (1 + ρ²/2)/(n − 3).
* :func:`partial_spearman` — Spearman's ρ of two scores with a third held fixed (the ranks'
  residuals correlated).
* :func:`holm` — Holm's step-down adjustment of a family of p-values.
* :func:`seeds` — the mean over training seeds with the t-interval (``scipy.stats.t``); with one
  seed there is no interval (``low``/``high`` None).
* :func:`against` — an estimate against a fixed reference (its chance level): the interval moved.
* :func:`difference` — two *independent* estimates: the difference with half-widths combined in
  quadrature (an approximation, labelled as such).
* :func:`sample_unit` — what an estimate's ``n`` counts where it is not images (``"seeds"``).
* :func:`n_to_settle` — for an interval that straddles a threshold, about how many samples would
  make it clear the threshold if the estimate stayed where it is (the half-width shrinks as 1/√n).
"""
from __future__ import annotations

import math
import numbers
import re

import numpy as np
from scipy import stats as _st

from .utils import check_choice, check_int, check_number

LEVEL = 0.95
PROPORTION_METHODS = {"wilson": "wilson", "clopper-pearson": "exact"}

# how seeds() named its repeats in the method text, for results stored before Estimate.unit
_SEEDS_METHOD = re.compile(r"^(?:mean of \d+|one of) (\S+)")


class Estimate(float):
    """A number with its evidence. Behaves as the ``float`` ``value`` in arithmetic and formatting;
    ``low``/``high`` bound the ``level`` interval (None when the sample gives none), ``n`` is the
    sample size and ``unit`` says what it counts where that is not the data's own samples (images,
    pairs, clusters): ``"seeds"`` or ``"draws"`` for :func:`seeds`, ``""`` otherwise. ``method``
    says how the interval was computed and ``p`` is a test's p-value where there is one.
    Arithmetic on an Estimate gives a plain float: an interval does not survive a transformation
    it was not computed for."""

    __slots__ = ("low", "high", "n", "method", "p", "level", "unit")

    def __new__(cls, value, low=None, high=None, *, n=None, method="", p=None, level=LEVEL, unit=""):
        value = check_number("value", value)
        self = super().__new__(cls, value)
        if (low is None) != (high is None):
            raise ValueError(f"low={low!r} and high={high!r}: give both bounds of the interval or neither")
        if low is not None:
            low, high = check_number("low", low), check_number("high", high)
            # an interval must hold its own estimate (a rounding hair is forgiven)
            tol = 1e-9 * max(1.0, abs(value))
            if not (low - tol <= value <= high + tol):
                raise ValueError(f"the interval [{low}, {high}] does not contain the estimate value={value}")
            low, high = min(low, value), max(high, value)
        self.low, self.high = low, high
        self.n = None if n is None else check_int("n", n, low=0)
        if not isinstance(method, str):
            raise ValueError(f"method={method!r} must be a string naming how the interval was computed")
        self.method = method
        if not isinstance(unit, str):
            raise ValueError(f"unit={unit!r} must be a string naming what n counts "
                             "('' for the data's samples)")
        self.unit = unit
        self.p = None if p is None else check_number("p", p, low=0.0, high=1.0)
        self.level = check_number("level", level, low=0.0, high=1.0, low_open=True, high_open=True)
        return self

    @property
    def value(self) -> float:
        return float(self)

    @property
    def has_interval(self) -> bool:
        return self.low is not None

    @property
    def half_width(self) -> float | None:
        return None if self.low is None else (self.high - self.low) / 2.0

    def evidence(self) -> dict:
        """What ``results.write`` stores beside the value (JSON-ready)."""
        out = {"low": self.low, "high": self.high, "n": self.n, "method": self.method, "level": self.level}
        if self.p is not None:
            out["p"] = self.p
        if self.unit:
            out["unit"] = self.unit
        return out

    @classmethod
    def from_evidence(cls, value, evidence: dict | None) -> "Estimate | float":
        """Rebuild an Estimate from a stored value and its ``evidence()`` dict (a plain float when
        there is no evidence: results written before intervals existed still load)."""
        if not isinstance(evidence, dict):
            return float(value)
        method = evidence.get("method", "")
        unit = evidence.get("unit")
        if unit is None:        # stored before the field existed: seeds() named the unit in its method
            m = _SEEDS_METHOD.match(method)
            unit = m.group(1).rstrip(":,") if m else ""
        return cls(value, evidence.get("low"), evidence.get("high"), n=evidence.get("n"), method=method,
                   p=evidence.get("p"), level=evidence.get("level", LEVEL), unit=unit)

    def scaled(self, factor: float) -> "Estimate":
        """The same estimate in another unit (e.g. a share ×100 for percent)."""
        f = check_number("factor", factor, low=0.0, low_open=True)
        return Estimate(self * f, None if self.low is None else self.low * f,
                        None if self.high is None else self.high * f,
                        n=self.n, method=self.method, p=self.p, level=self.level, unit=self.unit)

    def __repr__(self) -> str:
        iv = "" if self.low is None else f" [{self.low:.4g}, {self.high:.4g}]"
        return f"Estimate({float(self):.4g}{iv}, n={self.n}, {self.method!r})"

    def __reduce__(self):
        return (_rebuild, (float(self), self.evidence()))


def _rebuild(value, evidence):
    return Estimate.from_evidence(value, evidence)


def is_estimate(v) -> bool:
    return isinstance(v, Estimate)


def _array(a, dtype=None) -> np.ndarray:
    """A tensor (on any device), array or sequence as a NumPy array."""
    return np.asarray(a.detach().cpu() if hasattr(a, "detach") else a, dtype=dtype)


def _bools(name: str, a) -> np.ndarray:
    arr = _array(a)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of per-image outcomes (True/False or 0/1), "
                         f"got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: an interval needs at least one image")
    if arr.dtype != bool:
        if not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name} must hold 0/1 or True/False per image; got values {np.unique(arr)[:5]}")
        arr = arr.astype(bool)
    return arr


def _bootstrap_bounds(res, value: float) -> tuple[float, float]:
    """The percentile interval of a ``scipy.stats.bootstrap`` result around ``value``: the point
    itself when every resample was equal (scipy gives NaN), and always holding the point."""
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(lo) and math.isfinite(hi)):     # a degenerate sample: every resample equal
        lo = hi = value
    return min(lo, value), max(hi, value)


def _level(level) -> float:
    return check_number("level", level, low=0.0, high=1.0, low_open=True, high_open=True)


def proportion(k, n=None, *, method: str = "wilson", scale: float = 100.0, level: float = LEVEL) -> Estimate:
    """A share of images with its interval: ``k`` successes out of ``n`` (or ``k`` a 1-D bool
    sequence, one outcome per image, with ``n`` None). Wilson score interval by default, or
    ``method="clopper-pearson"`` (exact); both by ``scipy.stats.binomtest(k, n).proportion_ci``.
    ``scale`` = 100 gives percent (the book's unit), 1 a fraction."""
    check_choice("method", method, PROPORTION_METHODS)
    if n is None:
        arr = _bools("k", k)
        k, n = int(arr.sum()), int(arr.size)
    n = check_int("n", n, low=1)
    k = check_int("k", k, low=0, high=n)
    scale = check_number("scale", scale, low=0.0, low_open=True)
    lo, hi = _share_ci(k, n, _level(level), method)
    return Estimate(k / n * scale, lo * scale, hi * scale, n=n, method=method, level=level)


def cluster_proportion(k, groups, *, scale: float = 100.0, n_resamples: int = 2000, seed: int = 0,
                       level: float = LEVEL) -> Estimate:
    """A share of outcomes that come in clusters — e.g. targeted success over (image, target) pairs,
    nine per image (Karnine et al. 2024, §3.3; chapter 4 §3) — with the percentile interval of a
    bootstrap that resamples whole clusters (``scipy.stats.bootstrap`` of Σk/Σm over the clusters'
    successes k and sizes m, ``paired=True``). The outcomes of one image move together, so the
    sample size is the number of clusters, not of outcomes: treating 4,500 pairs of 500 images as
    independent would make the interval up to three times too narrow. ``k`` is a 1-D bool sequence
    (one outcome each), ``groups`` the cluster of each outcome (any labels); one outcome per cluster
    gives about the Wilson interval of :func:`proportion`."""
    arr = _bools("k", k)
    g = _array(groups)
    if g.ndim != 1 or g.shape != arr.shape:
        raise ValueError(f"groups must give the cluster of each of the {arr.size} outcomes (1-D, same length); "
                         f"got shape {g.shape}")
    check_int("n_resamples", n_resamples, low=100)
    check_int("seed", seed, low=0)
    scale = check_number("scale", scale, low=0.0, low_open=True)
    _, inv = np.unique(g, return_inverse=True)
    hits = np.bincount(inv, weights=arr.astype(float))
    sizes = np.bincount(inv).astype(float)
    value = float(hits.sum() / sizes.sum())
    if hits.size < 2:
        raise ValueError(f"groups holds {hits.size} cluster: an interval over clusters needs at least 2")
    res = _st.bootstrap((hits, sizes), lambda h, m, axis=-1: h.sum(axis) / m.sum(axis), paired=True,
                        vectorized=True, n_resamples=n_resamples, confidence_level=_level(level),
                        method="percentile", random_state=seed)
    lo, hi = _bootstrap_bounds(res, value)
    return Estimate(value * scale, lo * scale, hi * scale, n=int(hits.size),
                    method=f"bootstrap over {hits.size} clusters of {arr.size} outcomes ({n_resamples} resamples)",
                    level=level)


def _share_ci(k: int, n: int, level: float, method: str = "wilson") -> tuple[float, float]:
    """The interval of the share k/n (scipy's binomtest; ``method`` a key of PROPORTION_METHODS)."""
    ci = _st.binomtest(k, n).proportion_ci(confidence_level=level, method=PROPORTION_METHODS[method])
    return ci.low, ci.high


def paired_difference(a, b, *, scale: float = 100.0, level: float = LEVEL) -> Estimate:
    """share(a) − share(b) for two per-image outcomes on the **same** images (two models, or two
    attacks, each correct/successful or not per image), with Newcombe's (1998) hybrid score interval
    for paired proportions (his method 10: the Wilson intervals of both shares combined with the
    correlation φ of the 2×2 table) and the exact McNemar p-value (``scipy.stats.binomtest`` on the
    discordant pairs). ``scale`` = 100 gives percentage points."""
    a, b = _bools("a", a), _bools("b", b)
    if a.shape != b.shape:
        raise ValueError(f"a and b must hold one outcome per image for the same images; "
                         f"got {a.size} and {b.size} outcomes")
    scale = check_number("scale", scale, low=0.0, low_open=True)
    level = _level(level)
    n = a.size
    both, only_a, only_b = int((a & b).sum()), int((a & ~b).sum()), int((~a & b).sum())
    neither = n - both - only_a - only_b
    p1, p2 = (both + only_a) / n, (both + only_b) / n
    l1, u1 = _share_ci(both + only_a, n, level)
    l2, u2 = _share_ci(both + only_b, n, level)
    den = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    phi = 0.0 if den == 0 else (both * neither - only_a * only_b) / math.sqrt(den)
    d = p1 - p2
    lo = d - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    hi = d + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    m = only_a + only_b
    p = 1.0 if m == 0 else float(_st.binomtest(only_a, m, 0.5).pvalue)
    return Estimate(d * scale, max(-1.0, lo) * scale, min(1.0, hi) * scale, n=n,
                    method="paired (Newcombe score; McNemar exact p)", p=p, level=level)


def paired_bootstrap(a, b, statistic=None, *, scale: float = 1.0, n_resamples: int = 2000, seed: int = 0,
                     level: float = LEVEL) -> Estimate:
    """A statistic of two paired per-image samples (default: mean(a) − mean(b)) with the percentile
    bootstrap interval over images (``scipy.stats.bootstrap`` with ``paired=True``)."""
    a = _array(a, float)
    b = _array(b, float)
    if a.ndim != 1 or a.shape != b.shape or a.size < 2:
        raise ValueError(f"a and b must be 1-D samples of the same length ≥ 2 (one value per image); "
                         f"got shapes {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("a and b must hold finite numbers")
    check_int("n_resamples", n_resamples, low=100)
    check_int("seed", seed, low=0)
    scale = check_number("scale", scale, low=0.0, low_open=True)
    stat = statistic or (lambda u, v, axis=-1: np.mean(u, axis=axis) - np.mean(v, axis=axis))
    value = float(stat(a, b))
    res = _st.bootstrap((a, b), stat, paired=True, vectorized=True, n_resamples=n_resamples,
                        confidence_level=_level(level), method="percentile", random_state=seed)
    lo, hi = _bootstrap_bounds(res, value)
    return Estimate(value * scale, lo * scale, hi * scale, n=a.size,
                    method=f"paired bootstrap ({n_resamples} resamples)", level=level)


def bootstrap_weights(statistic, *sizes, n_resamples: int = 2000, seed: int = 0, level: float = LEVEL,
                      batch: int = 250) -> Estimate:
    """A statistic that is not a mean of per-image values — a ratio of sums over images, a set of
    neurons chosen on the images — with its percentile bootstrap interval over images
    (``scipy.stats.bootstrap`` resamples the images' indices). Each of the samples (``sizes``: one
    per group, e.g. per target class) is resampled on its own; ``statistic(*w)`` gets, per sample, how
    many times each image was drawn (float arrays [B, n_j], one row per resample) and returns [B]
    values. The point value is the statistic with every weight 1. Two quantities computed from the
    same weights inside one statistic (a − b) make a paired comparison."""
    sizes = tuple(check_int("sizes", n, low=2) for n in sizes)
    if not sizes:
        raise ValueError("sizes must name at least one sample size (the number of images)")
    check_int("n_resamples", n_resamples, low=100)
    check_int("seed", seed, low=0)
    batch = check_int("batch", batch, low=1)

    def counts(i, n):                  # [..., n] drawn indices → [B, n] times each image was drawn
        i = np.asarray(i, dtype=np.int64).reshape(-1, n)
        w = np.zeros(i.shape, dtype=float)
        np.add.at(w, (np.arange(i.shape[0])[:, None], i), 1.0)
        return w

    def stat(*idx, axis=-1):
        lead = np.shape(idx[0])[:-1]
        out = np.asarray(statistic(*(counts(i, n) for i, n in zip(idx, sizes))), dtype=float)
        return out.reshape(lead)

    value = float(np.asarray(statistic(*(np.ones((1, n)) for n in sizes)), dtype=float).reshape(-1)[0])
    res = _st.bootstrap(tuple(np.arange(n) for n in sizes), stat, vectorized=True, paired=False,
                        n_resamples=n_resamples, batch=batch, confidence_level=_level(level),
                        method="percentile", random_state=seed)
    lo, hi = _bootstrap_bounds(res, value)
    return Estimate(value, lo, hi, n=sum(sizes), method=f"bootstrap over images ({n_resamples} resamples)",
                    level=level)


def bootstrap_mean(a, *, n_resamples: int = 2000, seed: int = 0, level: float = LEVEL,
                   unit: str = "") -> Estimate:
    """The mean of a per-image sample (e.g. a share averaged over an ε grid, image by image) with
    its percentile bootstrap interval over images (``scipy.stats.bootstrap``); ``unit`` names what
    the sample counts where it is not images (``"classes"``, ``"draws"`` of a Monte Carlo chance
    level)."""
    a = _array(a, float)
    if a.ndim != 1 or a.size < 2 or not np.isfinite(a).all():
        raise ValueError(f"a must be a 1-D sample of ≥ 2 finite numbers (one per image); got shape {a.shape}")
    check_int("n_resamples", n_resamples, low=100)
    check_int("seed", seed, low=0)
    value = float(a.mean())
    res = _st.bootstrap((a,), lambda u, axis=-1: np.mean(u, axis=axis), vectorized=True,
                        n_resamples=n_resamples, confidence_level=_level(level), method="percentile",
                        random_state=seed)
    lo, hi = _bootstrap_bounds(res, value)
    return Estimate(value, lo, hi, n=a.size, method=f"bootstrap ({n_resamples} resamples)", level=level,
                    unit=unit)


def against_random_sets(chosen, random, *, worse: str = "less", scale: float = 100.0,
                        n_resamples: int = 2000, seed: int = 0, level: float = LEVEL) -> Estimate:
    """One chosen set against ``R`` random sets of the same size on the same ``n`` images: the
    difference mean(chosen) − mean(random) (``chosen``: n per-image outcomes; ``random``: R × n)
    with a two-way percentile bootstrap interval — images and random draws resampled independently,
    the standard bootstrap for a crossed design — so the interval carries both the sample of
    images and the spread between random draws. ``p`` is the rank test of the chosen set among the
    draws, (1 + #draws at least as extreme) / (R + 1), one-sided in the direction ``worse``
    (``"less"``: a draw as low as the chosen set's mean or lower counts; ``"greater"``: as high).
    Suri & Evans (2020) §3 prune the most sensitive features; a random set of the same size is
    the control that says whether *sensitive* matters."""
    c = _array(chosen, float)
    r = _array(random, float)
    if c.ndim != 1 or c.size < 2:
        raise ValueError(f"chosen must be 1-D with one value per image (≥ 2 images); got shape {c.shape}")
    if r.ndim != 2 or r.shape[1] != c.size or r.shape[0] < 2:
        raise ValueError(f"random must be (draws ≥ 2) × {c.size} images, one row per random set; "
                         f"got shape {r.shape}")
    if not (np.isfinite(c).all() and np.isfinite(r).all()):
        raise ValueError("chosen and random must hold finite numbers")
    check_choice("worse", worse, ("less", "greater"))
    check_int("n_resamples", n_resamples, low=100)
    check_int("seed", seed, low=0)
    scale = check_number("scale", scale, low=0.0, low_open=True)
    n, R = c.size, r.shape[0]
    rng = np.random.default_rng(seed)
    boot = np.empty(n_resamples)
    for start in range(0, n_resamples, 250):              # image weights, 250 resamples at a time
        b = min(250, n_resamples - start)
        w = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(b)], 1) / n
        per_draw = r @ w                                   # R × b: each draw's mean, resampled images
        draws = rng.integers(0, R, (R, b))                 # the draws, resampled
        boot[start:start + b] = c @ w - per_draw[draws, np.arange(b)].mean(0)
    value = float(c.mean() - r.mean())
    alpha = 1 - _level(level)
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    lo, hi = min(float(lo), value), max(float(hi), value)
    means = r.mean(1)
    extreme = (means <= c.mean()) if worse == "less" else (means >= c.mean())
    p = (1 + int(extreme.sum())) / (R + 1)
    return Estimate(value * scale, lo * scale, hi * scale, n=n, p=p,
                    method=f"two-way bootstrap over images and {R} random sets ({n_resamples} resamples)",
                    level=level)


def p_from_interval(est: Estimate, side: str = "less") -> float:
    """A one-sided p-value read off an estimate's interval by the normal approximation: its
    standard error taken as (high − low) / (2·z) at the interval's level, p = Φ(value / se) for the
    hypothesis "below 0" (``side="less"``) or 1 − Φ for "above 0". Unlike a rank test among R random
    draws, whose p cannot fall below 1/(R + 1), it is continuous, so a family corrected by ``holm``
    can reject (e.g. ``against_random_sets`` over many rankings and layers)."""
    if not (isinstance(est, Estimate) and est.has_interval):
        raise ValueError(f"est must be a stats.Estimate with an interval, got {est!r}")
    check_choice("side", side, ("less", "greater"))
    z = float(_st.norm.ppf(0.5 + est.level / 2))
    se = (est.high - est.low) / (2 * z)
    if se <= 0:                          # a degenerate interval: the sign alone decides
        below = float(est) < 0 if side == "less" else float(est) > 0
        return 0.0 if below else 1.0
    cdf = float(_st.norm.cdf(float(est) / se))
    return cdf if side == "less" else 1.0 - cdf


def side(est) -> str:
    """Where an estimate's interval lies against 0: ``"above"`` (low > 0), ``"below"`` (high < 0)
    or ``"across"``; ``"—"`` for ``None`` (nothing measured). The one test behind every generated
    "above / below / across 0" sentence of the book, so that a chapter's prose and its tables read
    an interval the same way. An estimate without an interval is an error, not a guess."""
    if est is None:
        return "—"
    if not (isinstance(est, Estimate) and est.has_interval):
        raise ValueError(f"est must be a stats.Estimate with an interval (or None), got {est!r}")
    return "above" if est.low > 0 else "below" if est.high < 0 else "across"


def simultaneous(est: Estimate, m: int, level: float = LEVEL) -> Estimate:
    """``est`` with its interval widened to hold for a family of ``m`` tests at once (Bonferroni:
    each interval at level 1 − (1 − ``level``)/m), so that a verdict read off it is corrected for
    the family. Each side is stretched by z₍1−α/2m₎ / z₍1−α/2₎ about the point, the normal
    approximation that ``p_from_interval`` also makes (a bootstrap's far tails would need far more
    resamples than its 95% interval). m = 1 returns the interval unchanged."""
    if not (isinstance(est, Estimate) and est.has_interval):
        raise ValueError(f"est must be a stats.Estimate with an interval, got {est!r}")
    m = check_int("m", m, low=1)
    level = _level(level)
    if abs(est.level - level) > 1e-12:
        raise ValueError(f"est's interval is at level {est.level}, not {level}: widen it from the level it has")
    alpha = 1 - level
    k = float(_st.norm.ppf(1 - alpha / (2 * m)) / _st.norm.ppf(1 - alpha / 2))
    v = float(est)
    return Estimate(v, v - k * (v - est.low), v + k * (est.high - v), n=est.n, p=est.p,
                    method=f"{est.method}; Bonferroni over {m} tests", level=level, unit=est.unit)


def spearman(x, y, *, permutations: int = 2000, seed: int = 0, level: float = LEVEL) -> Estimate:
    """Spearman's rank correlation of paired ``x``, ``y`` with a two-sided permutation-test p-value
    (``scipy.stats.permutation_test``, the pairings permuted) and a Fisher-z interval with the
    Bonett–Wright variance (1 + ρ²/2)/(n − 3) (needs n ≥ 4)."""
    x = _array(x, float)
    y = _array(y, float)
    if x.ndim != 1 or x.shape != y.shape or x.size < 4:
        raise ValueError(f"x and y must be 1-D, of the same length ≥ 4; got shapes {x.shape} and {y.shape}")
    check_int("permutations", permutations, low=100)
    check_int("seed", seed, low=0)
    level = _level(level)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        raise ValueError("x or y is constant: a rank correlation is undefined")
    rho = float(_st.spearmanr(x, y).statistic)
    perm = _st.permutation_test((x,), lambda u: _st.spearmanr(u, y).statistic, permutation_type="pairings",
                                n_resamples=permutations, alternative="two-sided", random_state=seed)
    e = spearman_interval(rho, x.size, level=level)
    return Estimate(rho, e.low, e.high, n=x.size, p=float(perm.pvalue),
                    method=f"{e.method}; permutation p ({permutations})", level=level)


def spearman_interval(rho: float, n: int, *, level: float = LEVEL) -> Estimate:
    """A Spearman correlation ``rho`` of ``n`` pairs with its Fisher-z interval, the Bonett–Wright
    variance (1 + ρ²/2)/(n − 3) (n ≥ 4), and no test: what ``spearman`` returns without its
    permutation p, cheap enough for every pair of a ranking table."""
    rho = check_number("rho", rho, low=-1.0, high=1.0)
    n = check_int("n", n, low=4)
    level = _level(level)
    z = float(_st.norm.ppf(0.5 + level / 2))
    r = min(max(rho, -0.999999), 0.999999)
    se = math.sqrt((1 + r * r / 2) / (n - 3))
    lo, hi = math.tanh(math.atanh(r) - z * se), math.tanh(math.atanh(r) + z * se)
    return Estimate(rho, min(lo, rho), max(hi, rho), n=n, method="Spearman; Fisher z (Bonett–Wright)",
                    level=level)


def spearman_difference(x, y, z, *, n_resamples: int = 2000, seed: int = 0, level: float = LEVEL) -> Estimate:
    """ρ(x, y) − ρ(x, z): two Spearman correlations that share ``x``, all three measured on the same
    units (e.g. a layer's channels), with the percentile bootstrap interval over the units, resampled
    together (``scipy.stats.bootstrap``). The two correlations share x, so their errors move
    together and an interval of each alone would misstate that of their difference. Chapter 6 §4
    reads it with x a ranking of the vanilla model, y the same ranking after clean fine-tuning and z
    after adversarial fine-tuning: above 0, adversarial training reordered the channels more than
    fine-tuning as long did. The interval covers the channels' sampling only, not the images' (the
    rankings' own reliabilities do that). Ties take average ranks, as in ``scipy.stats.spearmanr``;
    a resample in which one of the three is constant counts as ρ = 0."""
    x, y, z = (_array(a, float) for a in (x, y, z))
    if x.ndim != 1 or x.shape != y.shape or x.shape != z.shape or x.size < 4:
        raise ValueError(f"x, y and z must be 1-D, of the same length ≥ 4; got shapes {x.shape}, "
                         f"{y.shape} and {z.shape}")
    for name, a in (("x", x), ("y", y), ("z", z)):
        if not np.isfinite(a).all():
            raise ValueError(f"{name} must hold finite numbers")
        if np.ptp(a) == 0:
            raise ValueError(f"{name} is constant: a rank correlation is undefined")
    check_int("n_resamples", n_resamples, low=100)
    check_int("seed", seed, low=0)

    def rho(a, b):                      # row-wise Spearman of [B, n] samples
        ra, rb = (_st.rankdata(v, axis=-1) for v in (a, b))
        ra, rb = ra - ra.mean(-1, keepdims=True), rb - rb.mean(-1, keepdims=True)
        den = np.sqrt((ra * ra).sum(-1) * (rb * rb).sum(-1))
        return np.where(den > 0, (ra * rb).sum(-1) / np.where(den > 0, den, 1.0), 0.0)

    def stat(i, axis=-1):
        i = np.asarray(i)
        return rho(x[i], y[i]) - rho(x[i], z[i])

    value = float(_st.spearmanr(x, y).statistic - _st.spearmanr(x, z).statistic)
    res = _st.bootstrap((np.arange(x.size),), stat, vectorized=True, n_resamples=n_resamples,
                        confidence_level=_level(level), method="percentile", random_state=seed)
    lo, hi = _bootstrap_bounds(res, value)
    return Estimate(value, lo, hi, n=x.size, method=f"bootstrap over units ({n_resamples} resamples)",
                    level=level)


def partial_spearman(x, y, given) -> float:
    """Spearman's partial rank correlation of ``x`` and ``y`` with ``given`` held fixed: the Pearson
    correlation of the ranks' residuals after each is regressed on the ranks of ``given``, i.e.
    (ρ_xy − ρ_xg·ρ_yg) / √((1 − ρ_xg²)(1 − ρ_yg²)) from ``scipy.stats.spearmanr``'s matrix — how far
    x and y go together beyond what both share with ``given`` (e.g. two neuron scores beyond the
    neurons' size). NaN when x or y is all explained by ``given``."""
    x, y, g = (_array(v, float).ravel() for v in (x, y, given))
    if not (x.shape == y.shape == g.shape) or x.size < 4:
        raise ValueError(f"x, y and given must be 1-D, of the same length ≥ 4; got {x.shape}, {y.shape}, {g.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all() and np.isfinite(g).all()):
        raise ValueError("x, y and given must hold finite numbers")
    r = _st.spearmanr(np.stack([x, y, g], 1)).statistic
    den = math.sqrt(max(0.0, (1 - r[0, 2] ** 2) * (1 - r[1, 2] ** 2)))
    return float((r[0, 1] - r[0, 2] * r[1, 2]) / den) if den > 0 else math.nan


def holm(pvalues) -> np.ndarray:
    """Holm's (1979) step-down adjusted p-values for a family of tests: sorted ascending, the i-th
    smallest (from 0) is multiplied by (m − i), made non-decreasing and capped at 1. A test is
    rejected at level α when its adjusted p ≤ α; the family-wise error stays ≤ α."""
    p = _array(pvalues, float).ravel()
    if p.size == 0 or not np.all((p >= 0) & (p <= 1)):
        raise ValueError(f"pvalues must be a non-empty list of p-values in [0, 1]; got {p[:5]!r}")
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate(p[order] * (p.size - np.arange(p.size))))
    out = np.empty_like(adj)
    out[order] = adj
    return out


def seeds(values, *, what: str = "seeds", level: float = LEVEL) -> Estimate:
    """The mean over training seeds (or other independent repeats, named by ``what``: ``"draws"``
    of a dataset) with the Student-t interval (``scipy.stats.t.interval``); one value gives the
    value with no interval."""
    v = np.asarray(list(values), dtype=float)
    if v.ndim != 1 or v.size == 0 or not np.isfinite(v).all():
        raise ValueError(f"values must be a non-empty 1-D sequence of finite numbers (one per seed); got {v!r}")
    if not (isinstance(what, str) and what):
        raise ValueError(f"what={what!r} must name the repeats (e.g. 'seeds', 'draws')")
    level = _level(level)
    mean = float(v.mean())
    if v.size < 2:
        return Estimate(mean, n=1, method=f"one of {what}: no interval", level=level, unit=what)
    sd = float(v.std(ddof=1))
    if sd == 0:
        lo = hi = mean
    else:
        lo, hi = _st.t.interval(level, df=v.size - 1, loc=mean, scale=sd / math.sqrt(v.size))
    return Estimate(mean, float(lo), float(hi), n=int(v.size), method=f"mean of {v.size} {what}, t-interval",
                    level=level, unit=what)


def difference(a, b) -> Estimate | float:
    """a − b for two **independent** estimates (different images or models): the interval's
    half-widths combined in quadrature (a normal approximation; for paired samples use
    :func:`paired_difference` or :func:`paired_bootstrap`). Without both intervals, a plain float;
    where the two n count different things (images and the draws of a chance level), no n."""
    for name, v in (("a", a), ("b", b)):
        if not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(float(v)):
            raise ValueError(f"{name}={v!r} must be a finite number or an Estimate")
    d = float(a) - float(b)
    if not (is_estimate(a) and is_estimate(b) and a.has_interval and b.has_interval):
        return d
    lo = d - math.hypot(float(a) - a.low, b.high - float(b))
    hi = d + math.hypot(a.high - float(a), float(b) - b.low)
    ns = [x.n for x in (a, b) if x.n is not None]
    if a.unit != b.unit:          # n counts different things (images and Monte Carlo draws): no one n
        return Estimate(d, lo, hi, method="independent difference (quadrature)")
    return Estimate(d, lo, hi, n=min(ns) if ns else None, method="independent difference (quadrature)",
                    unit=a.unit)



def against(est, value: float) -> Estimate:
    """``est`` − ``value`` for a fixed reference (a chance level, a floor): the same interval moved
    by ``value``, so a rule "greater than chance" is judged on the estimate's own interval."""
    if not is_estimate(est):
        raise ValueError(f"est={est!r} must be an Estimate (e.g. stats.proportion(...))")
    value = check_number("value", value)
    move = (lambda v: None if v is None else v - value)
    return Estimate(float(est) - value, move(est.low), move(est.high), n=est.n, p=est.p, level=est.level,
                    method=f"{est.method} − {value:.4g}", unit=est.unit)


def sample_unit(est) -> str:
    """What ``est.n`` counts when it is not images, pairs or clusters: ``est.unit`` (the repeats of
    :func:`seeds`, ``"seeds"`` or ``"draws"``); ``""`` otherwise and for a plain number.
    A table prints "n ≈ 5 seeds would settle it", not an n a reader would take for images."""
    return est.unit if is_estimate(est) else ""


def n_to_settle(est: Estimate, threshold: float) -> int | None:
    """About how many samples would make ``est``'s interval clear ``threshold`` if the estimate
    stayed where it is: n·(half-width / |estimate − threshold|)², the half-width shrinking as 1/√n.
    None when there is no interval or sample size, the estimate sits on the threshold (up to
    floating-point rounding: 2.0000000000000018 against 2 is on it), or the
    interval already ends on it (the rule cannot say how many more would do). None too for
    ``against_random_sets``' intervals: their spread between random draws does not shrink with
    more images, so no n of images is sure to settle them."""
    if not is_estimate(est) or not est.has_interval or not est.n or "random sets" in est.method:
        return None
    gap = abs(float(est) - check_number("threshold", threshold))
    side = (est.high - float(est)) if threshold > float(est) else (float(est) - est.low)
    if gap <= 1e-9 * max(1.0, abs(float(threshold))) or side <= 0:    # on it, up to rounding
        return None
    n = int(math.ceil(est.n * (side / gap) ** 2))
    return n if n > est.n else None
