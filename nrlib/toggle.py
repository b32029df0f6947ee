"""Toggle activity and neural ranking — Prattico 2022, "FGSM attack and toggle activity".

The report's public code (github marcopra/Toggle-Activity,
``ToggleActivity/NeuronProfiler.py``) profiles a CIFAR-10 ResNet-20: every
leaf ``Conv2d`` output, taken before batch norm, numbered from 0 in forward
order (its ``layer_index``). Here a *neuron* is one element (c, h, w) of such
an output; by default the layers are the network's main-path convs
(``model.conv_layers()``): the 19 of a ResNet-20 (numbers 0…18, the report's
``LayerName``); the 17 of our ResNet-18 (the report's code would also count
its three 1×1 shortcut convs).

* Binary threshold (§2.2, Fig. 3): a Gaussian KDE of the neuron's values over
  a profiling dataset (Silverman's bandwidth, scipy's convention
  ``h = σ̂ · (3n/4)^(-1/5)``); the threshold is the lowest point of the density
  between its two most prominent peaks. **Fallback** when the density has
  fewer than two peaks (no valley) or the neuron is constant: ``"zero"`` —
  the report's code, which returns 0 there (and for a neuron that is always
  0) — or ``"midpoint"`` of the neuron's historical range, nrlib's earlier
  rule. ``kde_threshold`` does this for one 1-D array with scipy;
  ``fit_thresholds`` does it for every neuron of a network at once on the
  device (counts binned on a grid and convolved with each neuron's Gaussian by
  FFT, prominences from masked min/max over the grid). The report's code
  evaluates KDEpy's FFTKDE on 100 points and smooths it (Savitzky–Golay, window
  7); we use 128 points and ignore peaks below 5% of the density's maximum.
* Ternary thresholds (§2.2, Fig. 4): the report's text takes "a percentage of
  the historical maximum". ``ternary_rule="range"`` (ours): low / high =
  min + f·(max − min) with f = 0.25 / 0.75; ``"report"`` (its code,
  ``get_ternary_threshold(mode='neuron')``): f·(max + min) with f = 0.10 / 0.90.
* Toggle activity (§2.2): the share of neurons that take both states over a
  dataset — binary: at least once ≤ threshold and once > threshold; ternary:
  at least once ≤ low and once > high. Only the per-neuron min and max over
  the dataset matter, so datasets are summarised by their extrema, and the
  extrema of a union are the min/max of the parts' extrema
  (``merge_extrema``).
* The report's experiments (§3.2): ``size_sweep`` (Figs. 6–8),
  ``equal_size`` (Figs. 9–10), ``eps_sweep`` (Fig. 11); each returns a
  ``Datasets`` of extrema that any ``Thresholds`` can then score.
The thresholds and the profiling they need live in ``nrlib.thresholds``, the neural ranking in
``nrlib.ranking``; this module has the activity and the experiments, and gathers all three for
the chapter (``toggle.fit_thresholds``, ``toggle.rank_neurons``, …).

* Neural ranking (§2.3, Tables 1–2): the score of a neuron on an image is its
  contribution to the predicted class, activation × ∂z_ŷ/∂activation
  (gradient × input, Shrikumar et al. 2016, at the neuron); over a dataset a
  neuron's score is its largest contribution, and its class the prediction
  of the image that gave it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn

from .hooks import capture
from .metrics import accuracy, predict
from .models import frozen
from .utils import check_choice, check_input, check_int, check_number
from .utils import check_callable, check_labels, check_list, num_classes
from .thresholds import (DEFAULT_BINS, FALLBACKS, IQR_NORMAL, KINDS, MIN_PROMINENCE, PAD_BANDWIDTHS,
                         PERCENTILE_BUDGET, REPORT_GRID, REPORT_PAD, REPORT_SAVGOL, TERNARY, TERNARY_RULES,
                         Thresholds, VALLEY_RULES, batch_minmax, check_thresholds, compare_with_reference,
                         fit_thresholds, kde_threshold, kde_thresholds, layer_table, neuron_shape,
                         neuron_values, profiled_layers, relu_layers, ternary_thresholds)
from .ranking import (AGGREGATES, Ranking, rank_neurons)


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
    check_input(model, x)
    names = profiled_layers(model, layers)
    check_int("batch_size", batch_size, low=1)
    N = x.shape[0]
    ns = _check_sizes(sizes, N) if sizes is not None else [N]
    out, cur = {}, None
    bounds = sorted(set(ns) | set(range(0, N, batch_size)) | {N})
    with frozen(model), torch.no_grad():
        for a, b in zip(bounds[:-1], bounds[1:]):
            with capture(model, names) as store:
                model(x[a:b])
            ext = {n_: batch_minmax(store[n_][0]) for n_ in names}
            cur = ext if cur is None else merge_extrema(cur, ext)
            if b in ns:
                out[b] = {k: (v[0].clone(), v[1].clone()) for k, v in cur.items()}
    return out if sizes is not None else out[N]


def _check_sizes(sizes, high: int | None = None) -> list[int]:
    """``sizes`` as the sorted distinct dataset sizes, each an integer in [1, high]."""
    items = check_list("sizes", sizes, what="dataset sizes (integers >= 1)")
    return sorted({check_int(f"sizes[{i}]", s, low=1, high=high) for i, s in enumerate(items)})


def merge_extrema(*parts: Extrema) -> Extrema:
    """The extrema of the union of datasets from the extrema of each (the
    per-neuron min of the mins and max of the maxes; all parts cover the same layers)."""
    if not parts:
        raise ValueError("parts: merge_extrema needs at least one Extrema (layer -> (min, max)) to merge")
    for i, p in enumerate(parts):
        _check_extrema(f"parts[{i}]", p)
    layers = [list(p) for p in parts]
    if any(ls != layers[0] for ls in layers):
        raise ValueError(f"parts cover different layers ({[list(p) for p in parts]}); "
                         "merge extrema of the same layers only")
    for i, p in enumerate(parts[1:], 1):
        for k in p:
            if p[k][0].shape != parts[0][k][0].shape or p[k][0].device != parts[0][k][0].device:
                raise ValueError(f"parts[{i}][{k!r}] holds {tuple(p[k][0].shape)} neurons on {p[k][0].device} but "
                                 f"parts[0][{k!r}] holds {tuple(parts[0][k][0].shape)} on "
                                 f"{parts[0][k][0].device}; merge extrema of the same model's layers only")
    out = {}
    for k in parts[0]:
        out[k] = (torch.stack([p[k][0] for p in parts]).amin(0), torch.stack([p[k][1] for p in parts]).amax(0))
    return out


def toggled(mn: torch.Tensor, mx: torch.Tensor, low: torch.Tensor, high: torch.Tensor | None = None) -> torch.Tensor:
    """Which neurons toggle over a dataset whose per-neuron extrema are ``mn``,
    ``mx``: at least once ≤ ``low`` and at least once > ``high`` (binary:
    ``high = low`` = the threshold)."""
    for name, t in (("mn", mn), ("mx", mx)):
        if not torch.is_tensor(t):
            raise ValueError(f"{name} must be a tensor of per-neuron extrema, got {type(t).__name__}")
    if mx.shape != mn.shape:
        raise ValueError(f"mn is shaped {tuple(mn.shape)} but mx {tuple(mx.shape)}; they must match")
    for name, t in (("low", low), ("high", high)):
        if torch.is_tensor(t) and t.shape != mn.shape and t.dim() > 0:
            raise ValueError(f"{name} is shaped {tuple(t.shape)} but the extrema {tuple(mn.shape)}; "
                             "thresholds and extrema must be of the same layer")
        if not torch.is_tensor(t) and (t is not None or name == "low"):
            check_number(name, t)
    high = low if high is None else high
    return (mn <= low) & (mx > high)


def _check_extrema(name: str, ext) -> Extrema:
    """``ext`` is an Extrema: a non-empty dict layer -> (min, max), two tensors of one shape."""
    if not isinstance(ext, dict) or not ext:
        raise ValueError(f"{name} must be a non-empty Extrema, a dict layer -> (min, max) as extrema() returns; "
                         f"got {type(ext).__name__} {ext!r:.60}")
    for k, v in ext.items():
        if not (isinstance(v, (tuple, list)) and len(v) == 2 and all(torch.is_tensor(t) for t in v)):
            hint = (" (extrema(..., sizes=...) returns {n: Extrema}: take one of its values)"
                    if isinstance(v, dict) else "")
            raise ValueError(f"{name}[{k!r}] must be a pair (min, max) of tensors, got {type(v).__name__}{hint}")
        if v[0].shape != v[1].shape:
            raise ValueError(f"{name}[{k!r}] holds a min shaped {tuple(v[0].shape)} and a max shaped "
                             f"{tuple(v[1].shape)}; they must match")
    return ext


def toggle_activity(ext: Extrema, th: Thresholds, kind: str = "binary") -> dict[str, float]:
    """Toggle activity in percent per layer and in total (key ``"total"``, over
    all neurons of all layers) — Prattico 2022 §2.2."""
    check_choice("kind", kind, KINDS)
    check_thresholds(th)
    _check_extrema("ext", ext)
    missing = [n for n in th.layers if n not in ext]
    if missing:
        raise ValueError(f"ext lacks the layers {missing} of th (it has {list(ext)}); measure the extrema "
                         "of the layers the thresholds were fitted on")
    for name in th.layers:
        if ext[name][0].shape != th.binary[name].shape:
            raise ValueError(f"ext[{name!r}] holds {tuple(ext[name][0].shape)} neurons but th has thresholds for "
                             f"{tuple(th.binary[name].shape)}; extrema and thresholds must be of the same model")
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
# the report's experiments (§3.2)
# ----------------------------------------------------------------------------
@dataclass
class Datasets:
    """The per-neuron extrema of several datasets, keyed ``(arm, tag)`` — e.g.
    ``("clean", 50)`` and ``("clean+fgsm", 50)`` in a size sweep — so that any
    ``Thresholds`` (fallback, ternary rule) can score them afterwards; ``acc``:
    the model's accuracy (%) on the attacked images of an arm, same keys;
    ``x_adv``: the attacked images, where the procedure keeps them."""
    ext: dict[tuple[str, Any], Extrema]
    acc: dict[tuple[str, Any], float] = field(default_factory=dict)
    x_adv: torch.Tensor | None = None

    def __post_init__(self):
        if not isinstance(self.ext, dict):
            raise ValueError(f"ext must be a dict (arm, tag) -> Extrema, got {type(self.ext).__name__}")
        for k, e in self.ext.items():
            if not (isinstance(k, tuple) and len(k) == 2):
                raise ValueError(f"ext keys must be (arm, tag) pairs such as ('clean', 50), got {k!r}")
            _check_extrema(f"ext[{k!r}]", e)
        if not isinstance(self.acc, dict):
            raise ValueError(f"acc must be a dict (arm, tag) -> accuracy %, got {type(self.acc).__name__}")
        if self.x_adv is not None and not torch.is_tensor(self.x_adv):
            raise ValueError(f"x_adv must be a tensor of images or None, got {type(self.x_adv).__name__}")

    def activity(self, th: Thresholds, kind: str = "binary",
                 keys: Sequence[tuple[str, Any]] | None = None) -> dict[tuple[str, Any], dict[str, float]]:
        """``toggle_activity`` of every dataset, or of ``keys`` only, in their order:
        key → {layer: %, "total": %}."""
        if keys is None:
            keys = list(self.ext)
        missing = [k for k in keys if k not in self.ext]
        if missing:
            raise KeyError(f"keys {missing} are not datasets here; there are {list(self.ext)}")
        return {k: toggle_activity(self.ext[k], th, kind) for k in keys}

    def totals(self, th: Thresholds, kind: str = "binary") -> dict[tuple[str, Any], float]:
        """The total toggle activity (%) of every dataset."""
        return {k: a["total"] for k, a in self.activity(th, kind).items()}

    def mean_std(self, th: Thresholds, kind: str = "binary") -> dict[str, tuple[dict, dict]]:
        """Per arm, the mean and the standard deviation over its tags (the draws
        of ``equal_size``) of the toggle activity per layer and in total."""
        act, out = self.activity(th, kind), {}
        for arm in dict.fromkeys(a for a, _ in act):
            rows = [v for (a, _), v in act.items() if a == arm]
            keys = list(rows[0])
            m = np.array([[r[k] for k in keys] for r in rows])
            out[arm] = (dict(zip(keys, m.mean(0).tolist())), dict(zip(keys, m.std(0).tolist())))
        return out


def _attack_name(attack) -> str:
    """``"fgsm"`` for ``attacks.FGSM(...)``; a function's own name; else ``"adv"``."""
    if hasattr(attack, "replace"):      # an nrlib.attacks object
        return type(attack).__name__.lower()
    name = getattr(attack, "__name__", "adv")
    return "adv" if name.startswith("<") else name.lower()


def _check_xy(x, y, n, what):
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} images but y has {y.shape[0]} labels")
    if n > x.shape[0]:
        raise ValueError(f"{what}={n} is larger than the {x.shape[0]} images given")


def _check_run(model, x, y, attack, layers, batch_size):
    """The arguments every experiment shares, checked before any attack runs:
    returns the layer names and ``y`` as class indices."""
    check_input(model, x)
    y = check_labels(y, x.shape[0], num_classes(model))
    check_callable("attack", attack, "an attack: attacks.FGSM(...) or a function (model, x, y) -> x_adv")
    check_int("batch_size", batch_size, low=1)
    return profiled_layers(model, layers), y


def size_sweep(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack, sizes: Sequence[int], *,
               layers: Sequence[str] | None = None, batch_size: int = 500) -> Datasets:
    """Prattico 2022 §3.2.1, Figs. 6–8 (chapter 5, §3): for each n in ``sizes``
    the first n images of ``x`` (nested datasets) — arm ``"clean"`` — and those
    n images together with their ``attack`` versions (2n images) — arm
    ``"clean+<attack>"``, e.g. ``"clean+fgsm"``. One attack and two network
    passes over the largest dataset (``extrema`` of every prefix); keeps the
    attacked images in ``x_adv`` and the accuracy on each prefix in ``acc``."""
    layers, y = _check_run(model, x, y, attack, layers, batch_size)
    ns = _check_sizes(sizes)
    N = ns[-1]
    _check_xy(x, y, N, "max(sizes)")
    arm = f"clean+{_attack_name(attack)}"
    xa = attack(model, x[:N], y[:N])
    ec = extrema(model, x[:N], layers, sizes=ns, batch_size=batch_size)
    ea = extrema(model, xa, layers, sizes=ns, batch_size=batch_size)
    hit = (predict(model, xa) == y[:N].to(xa.device)).float()
    ds = Datasets({}, x_adv=xa)
    for n in ns:
        ds.ext[("clean", n)] = ec[n]
        ds.ext[(arm, n)] = merge_extrema(ec[n], ea[n])
        ds.acc[(arm, n)] = 100.0 * hit[:n].mean().item()
    return ds


def equal_size(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack, n: int, draws: int, *,
               seed: int = 0, layers: Sequence[str] | None = None, batch_size: int = 500) -> Datasets:
    """Prattico 2022 §3.2.2, Fig. 9, and with ε = 1 §3.2.3, Fig. 10 (chapter 5,
    §5): datasets of equal size. Per draw, ``n`` images picked at random from
    ``x`` (without replacement; ``seed``): arm ``"clean"`` is those n images,
    arm ``"half+<attack>"`` the first n/2 of them together with their
    ``attack`` versions (also n images). Keys ``(arm, draw)``; ``mean_std``
    averages over the draws."""
    layers, y = _check_run(model, x, y, attack, layers, batch_size)
    n = check_int("n", n, low=2)
    draws = check_int("draws", draws, low=1)
    _check_xy(x, y, n, "n")
    rng = np.random.default_rng(check_int("seed", seed, low=0))
    arm, h = f"half+{_attack_name(attack)}", n // 2
    ds = Datasets({})
    for d in range(draws):
        idx = torch.from_numpy(rng.choice(x.shape[0], n, replace=False)).to(x.device)
        xc, yc = x[idx], y[idx]
        ec = extrema(model, xc, layers, sizes=[h, n], batch_size=batch_size)
        xa = attack(model, xc[:h], yc[:h])
        ds.ext[("clean", d)] = ec[n]
        ds.ext[(arm, d)] = merge_extrema(ec[h], extrema(model, xa, layers, batch_size=batch_size))
        ds.acc[(arm, d)] = accuracy(model, xa, yc[:h])
    return ds


def eps_sweep(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack, eps_grid: Sequence[float], *,
              layers: Sequence[str] | None = None, batch_size: int = 500) -> Datasets:
    """Prattico 2022 §3.2.3, Fig. 11 (chapter 5, §6): the images ``x`` alone
    (key ``("clean", 0.0)``) and together with their attacked versions at each
    ε of ``eps_grid`` (keys ``("clean+<attack>", ε)``, the attack made by
    ``attack.replace(eps=ε)``); ``acc`` holds the accuracy under each ε."""
    if not hasattr(attack, "replace"):
        raise ValueError("attack must be an nrlib.attacks object (e.g. attacks.FGSM(8/255)) so that "
                         "eps_sweep can vary its ε with attack.replace(eps=...)")
    layers, y = _check_run(model, x, y, attack, layers, batch_size)
    eps_grid = [check_number(f"eps_grid[{i}]", e, low=0.0)
                for i, e in enumerate(check_list("eps_grid", eps_grid, what="ε values >= 0"))]
    made = {e: attack.replace(eps=e) for e in eps_grid}   # each ε checked by the attack itself, before any pass
    _check_xy(x, y, x.shape[0], "len(x)")
    arm = f"clean+{_attack_name(attack)}"
    ec = extrema(model, x, layers, batch_size=batch_size)
    ds = Datasets({("clean", 0.0): ec})
    for e in eps_grid:
        xa = made[float(e)](model, x, y)
        ds.ext[(arm, float(e))] = merge_extrema(ec, extrema(model, xa, layers, batch_size=batch_size))
        ds.acc[(arm, float(e))] = accuracy(model, xa, y)
    return ds


# what the chapter uses as toggle.<name>: this module's own and those it gathers
__all__ = ["DEFAULT_BINS", "FALLBACKS", "IQR_NORMAL", "KINDS", "MIN_PROMINENCE", "PAD_BANDWIDTHS",
           "PERCENTILE_BUDGET", "REPORT_GRID", "REPORT_PAD", "REPORT_SAVGOL", "TERNARY", "TERNARY_RULES",
           "Thresholds", "VALLEY_RULES", "batch_minmax", "check_thresholds", "compare_with_reference",
           "fit_thresholds", "kde_threshold", "kde_thresholds", "layer_table", "neuron_shape",
           "neuron_values", "profiled_layers", "relu_layers", "ternary_thresholds", "AGGREGATES", "Ranking",
           "rank_neurons", "Datasets", "Extrema", "eps_sweep", "equal_size", "extrema", "merge_extrema",
           "size_sweep", "toggle_activity", "toggled"]
