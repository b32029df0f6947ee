"""Dominant filters and split-model adversarial fine-tuning (Karnine et al. 2024).

Chapter 4 of the book (``notebooks/04_dominant_filters.ipynb``) calls every
function here; each docstring names the section of the paper it implements
and the chapter section that uses it.

§3.4 (filter identification): for each benign/adversarial pair, the output of
a conv layer is compared filter by filter — the mean over positions of
|f_c(x) − f_c(x̃)| — and the top 10% filters of each pair are recorded. The
frequency with which a filter appears in those top sets over many pairs
(Fig. 4) ranks the filters; the most frequent ones are the *dominant filters*
(Figs. 5–6).

§3.5 (model splitting): each conv layer is split into a trainable part (the
dominant filters) and a frozen part (the rest), whose outputs are put back in
the original channel order before the next layer (Fig. 7). Here the split is
done on the weights, not on the outputs: one convolution with the weight
``cat([w_train, w_frozen])[inverse]`` gives exactly the outputs of the two
parallel convs re-assembled, and gradients reach ``w_train`` only. Table 12's
percentages (in ``nrlib/papers/karnine2024.json``) match this split exactly
when the top ``ceil(p·C)`` filters of each layer train and the dense layers
train too (e.g. base, 10%: 4 + 7 filters train, 2,126 of the 19,328 conv
weights do not); that is the default here (``train_dense=True``). Layers are found by the paper's names
(``conv1``, ``l1b1c1``, …) and replaced at their module path, so nested
convs (a ResNet's ``stages.0.0.c1``) split too.

§4 (experiments): ``finetune`` (split model or the whole model, static or
online adversarial set), ``finetune_and_evaluate`` (one row of Tables 6–11)
and ``epoch_seconds`` (the wall time of split vs full fine-tuning, which the
paper claims but does not measure).
"""
from __future__ import annotations

import copy
import math
import re
from collections import OrderedDict
from typing import Iterable, Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .precision import autocast
from .hooks import capture, layer_names
from .models import SHAPES, frozen
from . import fitting, metrics, stats
from .metrics import mean_pairwise_jaccard
from .objectives import Objective
from .utils import batches, check_bool, check_indices, check_int, check_labels, check_number, check_pixels
from .utils import check_input, check_model, num_classes as _num_classes


def n_top(channels: int, frac: float) -> int:
    """Number of filters in the top ``frac`` of a layer: ``ceil(frac·C)``, at least 1."""
    channels = check_int("channels", channels, low=1)
    frac = check_number("frac", frac, low=0.0, high=1.0, low_open=True)
    return max(1, math.ceil(frac * channels - 1e-9))


@torch.no_grad()
def filter_differences(model: nn.Module, layers: list[str], x: torch.Tensor, x_adv: torch.Tensor,
                       *, batch_size: int = 1024) -> "OrderedDict[str, torch.Tensor]":
    """Karnine et al. 2024 §3.4 (chapter 4 §4): per-filter mean |output(x) − output(x̃)|.

    Returns, for each layer name, an N×C tensor: for pair n and filter c the
    mean over spatial positions of the absolute difference between the layer's
    output on the benign image and on its adversarial counterpart.
    """
    layers = layer_names(model, layers)
    check_input(model, x, "x")
    check_input(model, x_adv, "x_adv")
    if x.shape != x_adv.shape:
        raise ValueError(f"x and x_adv must have the same shape, got {tuple(x.shape)} and {tuple(x_adv.shape)}")
    out = OrderedDict((n, []) for n in layers)
    with frozen(model):
        for xc, xa in batches(x, x_adv, batch_size=batch_size):
            xb = torch.cat([xc, xa])
            with capture(model, layers) as acts, autocast(x.device):
                model(xb)
            for n in layers:
                a = acts[n][0].float()
                if a.dim() < 3:
                    raise ValueError(f"layers names {n!r}, whose output is shaped {tuple(a.shape[1:])} per image; "
                                     "filter differences need conv outputs, C×H×W per image")
                clean, adv = a.chunk(2)
                out[n].append((clean - adv).abs().flatten(2).mean(2))
    return OrderedDict((n, torch.cat(v)) for n, v in out.items())


def top_filters(diff: torch.Tensor, frac: float = 0.1) -> torch.Tensor:
    """Indices (N×k, k = ceil(frac·C)) of the most affected filters of each pair
    (Karnine et al. 2024 §3.4: "the top 10% of the affected filters for each of the
    900 benign-adversarial pairs"; chapter 4 §4)."""
    if not torch.is_tensor(diff) or diff.dim() != 2:
        raise ValueError(f"diff must be an N×C tensor (pairs × filters), got "
                         f"{tuple(diff.shape) if torch.is_tensor(diff) else type(diff).__name__}")
    if diff.shape[1] == 0 or not diff.is_floating_point():
        raise ValueError(f"diff must hold float differences for at least one filter; got {diff.dtype} "
                         f"shape {tuple(diff.shape)}")
    if not bool(torch.isfinite(diff).all()):
        raise ValueError("diff holds NaN or inf; the filter differences must be finite")
    return diff.topk(n_top(diff.shape[1], frac), dim=1).indices


def frequency(top_idx: torch.Tensor, channels: int) -> torch.Tensor:
    """How often each filter appears in the per-pair top sets (Karnine et al. 2024,
    Fig. 4's histogram; chapter 4 §4)."""
    channels = check_int("channels", channels, low=1)
    if not torch.is_tensor(top_idx):
        raise ValueError(f"top_idx must be a tensor of filter indices (top_filters(...)), got {type(top_idx).__name__}")
    check_indices("top_idx", top_idx.flatten().unique(), channels)
    return torch.bincount(top_idx.flatten(), minlength=channels)


def dominant_filters(freq: torch.Tensor, frac: float = 0.1) -> torch.Tensor:
    """The ``ceil(frac·C)`` most frequent filters, sorted by index (Karnine et al.
    2024, §3.5's dominant filters; chapter 4 §4–5)."""
    if not torch.is_tensor(freq) or freq.dim() != 1:
        raise ValueError(f"freq must be a 1-D tensor of counts per filter, got "
                         f"{tuple(freq.shape) if torch.is_tensor(freq) else type(freq).__name__}")
    if freq.numel() == 0 or freq.dtype == torch.bool or not bool(torch.isfinite(freq.float()).all()):
        raise ValueError(f"freq must hold a finite count for each of at least one filter; got {freq.dtype} "
                         f"shape {tuple(freq.shape)}")
    k = n_top(freq.numel(), frac)
    # stable tie-break by filter index: sort by (-count, index); the values as they are (counts or shares)
    vals = freq.tolist()
    order = sorted(range(freq.numel()), key=lambda c: (-vals[c], c))
    return torch.tensor(sorted(order[:k]), dtype=torch.long)


# ----------------------------------------------------------------------------
# §3.4 end to end: which filters dominate, per class and pooled
# ----------------------------------------------------------------------------
def compared_layers(model: nn.Module, convs=None) -> "OrderedDict[str, str]":
    """For each conv layer (paper name; all of them by default), the layer
    whose output §3.4 compares (Karnine et al. 2024, §3.4; chapter 4 §4): the
    ReLU right after it (``conv1`` → ``relu1``, ``l1b1c1`` → ``l1b1r1``) —
    what a Keras ``Conv2D(activation="relu")`` layer, the paper's code base,
    returns — or the conv itself where no such ReLU exists."""
    paths = conv_paths(model)
    if convs is None:
        names = list(paths)
    elif isinstance(convs, str):
        names = [convs]
    elif isinstance(convs, Iterable) and not isinstance(convs, (bytes, Mapping)):
        names = list(convs)
    else:
        raise ValueError(f"convs={convs!r} must be a conv layer name or a list of them (None: all)")
    if not names:
        raise ValueError(f"convs={convs!r} names no conv layer" + (
            f"; conv layers are {list(paths)}" if paths else f": a {type(model).__name__} has no conv layers"))
    known = model.layers() if hasattr(model, "layers") else {}
    out = OrderedDict()
    for c in names:
        if c not in paths:
            raise ValueError(f"convs names {c!r}, which is not a conv layer; conv layers are {list(paths)}")
        relu = re.sub(r"^conv(\d+)$", r"relu\1", c) if c.startswith("conv") else re.sub(r"c(\d+)$", r"r\1", c)
        out[c] = relu if relu in known else c
    return out


def class_frequencies(diff: torch.Tensor, source: torch.Tensor, frac: float = 0.1,
                      num_classes: int = 10) -> torch.Tensor:
    """Fig. 4 for every class at once (Karnine et al. 2024, §3.4; chapter 4 §4):
    a ``num_classes × C`` tensor whose row k counts how often each filter is
    among the top ``frac`` of a pair whose benign image is of class k.
    ``diff`` is one layer's N×C output of :func:`filter_differences`."""
    if not torch.is_tensor(diff) or diff.dim() != 2:
        raise ValueError(f"diff must be an N×C tensor (pairs × filters), got "
                         f"{tuple(diff.shape) if torch.is_tensor(diff) else type(diff).__name__}")
    num_classes = check_int("num_classes", num_classes, low=2)
    source = check_labels(source, diff.shape[0], num_classes, name="source")
    return _class_counts(top_filters(diff, frac).cpu().numpy(), source.cpu().numpy(), diff.shape[1], num_classes)


def _class_counts(top: np.ndarray, source: np.ndarray, channels: int, num_classes: int) -> torch.Tensor:
    """``num_classes × channels`` counts of each filter in the top sets (rows of ``top``) of each class."""
    key = source[:, None] * channels + top                  # (class, filter) as one index per slot
    counts = np.bincount(key.ravel(), minlength=num_classes * channels)
    return torch.from_numpy(counts.reshape(num_classes, channels))


def dominant_frequencies(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, source: torch.Tensor, *,
                         frac: float = 0.1, convs=None, num_classes: int = 10,
                         batch_size: int = 1024) -> "OrderedDict[str, torch.Tensor]":
    """The §3.4 procedure on benign/adversarial pairs (Karnine et al. 2024,
    §3.4, Figs. 4–6; chapter 4 §4 for the base model, §6 for the shallow and
    dense models): per conv layer, the ``num_classes × C`` top-``frac``
    frequencies of :func:`class_frequencies`, measured on the output of
    :func:`compared_layers`. ``source`` is the class of each benign image
    (the pairs of :func:`targeted_pairs`, attacked toward their targets)."""
    layers = compared_layers(model, convs)
    check_pixels(x, "x")
    num_classes = check_int("num_classes", num_classes, low=2)
    check_labels(source, x.shape[0], num_classes, name="source")
    check_number("frac", frac, low=0.0, high=1.0, low_open=True)
    diffs = filter_differences(model, list(layers.values()), x, x_adv, batch_size=batch_size)
    return OrderedDict((c, class_frequencies(diffs[r], source, frac, num_classes)) for c, r in layers.items())


def pair_tops(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, *, frac: float = 0.1, convs=None,
              batch_size: int = 1024) -> "OrderedDict[str, torch.Tensor]":
    """Each pair's top-``frac`` filters per conv layer (Karnine et al. 2024, §3.4;
    chapter 4 §4): ``{conv: N×k indices}`` of :func:`top_filters` on the output of
    :func:`compared_layers` — what :func:`stability_bootstrap` resamples. ``x_adv``
    may be any perturbation of ``x`` (an attack, or random noise as a control)."""
    layers = compared_layers(model, convs)
    check_number("frac", frac, low=0.0, high=1.0, low_open=True)
    diffs = filter_differences(model, list(layers.values()), x, x_adv, batch_size=batch_size)
    return OrderedDict((c, top_filters(diffs[r], frac).cpu()) for c, r in layers.items())


def stability_bootstrap(tops: Mapping[str, torch.Tensor], source, channels: int, frac: float = 0.1, *,
                        groups=None, pairs=(), num_classes: int = 10, n_resamples: int = 1000,
                        seed: int = 0, level: float = 0.95) -> dict:
    """:func:`class_stability` of several conditions measured on the same pairs (Karnine
    et al. 2024, §3.4, "the top 10% filters remain mostly the same"; chapter 4 §4), each a
    ``stats.Estimate`` with a percentile bootstrap interval. ``tops`` = {condition: N×k top
    filters of each pair, e.g. ``pair_tops(...)[conv]``} for one layer of ``channels`` filters;
    ``source`` the class of each pair's image. A resample draws images with replacement within
    each class — whole ``groups`` (e.g. an image's 9 targeted pairs; default: each pair
    alone) — and is the same for every condition, so each ``(a, b)`` of ``pairs`` also gets
    the paired difference a − b under key ``(a, b)``."""
    if not isinstance(tops, Mapping) or not tops:
        raise ValueError("tops must be a non-empty dict condition -> N×k top filters (pair_tops(...)[conv])")
    channels = check_int("channels", channels, low=1)
    num_classes = check_int("num_classes", num_classes, low=2)
    n_resamples = check_int("n_resamples", n_resamples, low=100)
    T = {}
    for name, t in tops.items():
        if not torch.is_tensor(t) or t.dim() != 2 or t.shape[1] != n_top(channels, frac):
            raise ValueError(f"tops[{name!r}] must be an N×{n_top(channels, frac)} tensor of filter indices "
                             f"(the top {frac:.0%} of {channels} filters per pair), got "
                             f"{tuple(t.shape) if torch.is_tensor(t) else type(t).__name__}")
        check_indices(f"tops[{name!r}]", t.flatten().unique(), channels)
        T[name] = t.cpu().numpy()
    n = next(iter(T.values())).shape[0]
    if any(t.shape[0] != n for t in T.values()):
        raise ValueError(f"tops hold {[t.shape[0] for t in T.values()]} pairs; every condition needs the same pairs")
    src = check_labels(source, n, num_classes, name="source").cpu().numpy()
    grp = np.arange(n) if groups is None else check_labels(groups, n, n + 1, name="groups").cpu().numpy()
    for a, b in pairs:
        if a not in T or b not in T:
            raise ValueError(f"pairs names ({a!r}, {b!r}); conditions are {list(T)}")
    members = {k: [np.flatnonzero(grp == g) for g in np.unique(grp[src == k])] for k in np.unique(src)}
    stab = lambda name, rows: class_stability(_class_counts(T[name][rows], src[rows], channels, num_classes),
                                              frac)
    rng = np.random.default_rng(check_int("seed", seed, low=0))
    draws = {key: [] for key in [*T, *pairs]}
    for _ in range(n_resamples):
        rows = np.concatenate([np.concatenate([g[i] for i in rng.integers(0, len(g), len(g))])
                               for g in members.values()])
        val = {name: stab(name, rows) for name in T}
        for key in draws:
            draws[key].append(val[key] if key in T else val[key[0]] - val[key[1]])
    point = {name: stab(name, np.arange(n)) for name in T}
    point.update({(a, b): point[a] - point[b] for a, b in pairs})
    q = (1 - level) / 2
    out = {}
    for key, v in draws.items():
        lo, hi = np.quantile(v, [q, 1 - q])
        out[key] = stats.Estimate(point[key], min(lo, point[key]), max(hi, point[key]), n=len(np.unique(grp)),
                                  method=f"bootstrap over images ({n_resamples} resamples)", level=level)
    return out


def random_dominant(model: nn.Module, frac: float = 0.1, *, seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    """The control for a split model's choice of filters (chapter 4 §6): for each conv
    layer, ``ceil(frac·C)`` filters drawn at random (sorted) — as many as
    :func:`dominant_sets` picks, so the split trains the same number of parameters."""
    check_number("frac", frac, low=0.0, high=1.0, low_open=True)
    rng = np.random.default_rng(check_int("seed", seed, low=0))
    out = OrderedDict()
    for name, path in conv_paths(model).items():
        C = model.get_submodule(path).out_channels
        out[name] = torch.from_numpy(np.sort(rng.choice(C, n_top(C, frac), replace=False))).long()
    return out


def dominant_sets(freq: Mapping[str, torch.Tensor], frac: float = 0.1) -> "OrderedDict[str, torch.Tensor]":
    """The dominant filters of each layer, pooled over classes (Karnine et al.
    2024, §3.5; chapter 4 §4–6): the ``ceil(frac·C)`` most frequent filters of
    the summed per-class frequencies — the filters the split model trains."""
    if not isinstance(freq, Mapping):
        raise ValueError(f"freq must be a dict layer -> frequencies (dominant_frequencies(...)), "
                         f"got {type(freq).__name__}")
    check_number("frac", frac, low=0.0, high=1.0, low_open=True)
    for c, f in freq.items():
        if not torch.is_tensor(f) or f.dim() not in (1, 2):
            raise ValueError(f"freq[{c!r}] must be a 1-D (filters) or 2-D (classes × filters) tensor of counts, "
                             f"got {tuple(f.shape) if torch.is_tensor(f) else type(f).__name__}")
    return OrderedDict((c, dominant_filters(f.sum(0) if f.dim() == 2 else f, frac)) for c, f in freq.items())


def class_stability(freq: torch.Tensor, frac: float = 0.1) -> float:
    """How alike the per-class dominant sets of one layer are (Karnine et al.
    2024, §3.4: "the top 10% filters remain mostly the same"; chapter 4 §4):
    the mean pairwise Jaccard index of the classes' top-``frac`` sets (rows of
    a ``K × C`` frequency tensor); 1 when every class has the same set."""
    if not torch.is_tensor(freq) or freq.dim() != 2 or freq.shape[0] < 2:
        raise ValueError(f"freq must be a classes × filters tensor with at least 2 classes, got "
                         f"{'shape ' + str(tuple(freq.shape)) if torch.is_tensor(freq) else type(freq).__name__}")
    return mean_pairwise_jaccard([dominant_filters(row, frac).tolist() for row in freq])


def random_stability(channels: int, k: int, *, n_sets: int = 10, trials: int = 200, seed: int = 0) -> float:
    """The baseline for :func:`class_stability` (chapter 4 §4): the mean
    pairwise Jaccard index of ``n_sets`` random ``k``-subsets of ``channels``
    filters, averaged over ``trials`` draws."""
    channels = check_int("channels", channels, low=1)
    k = check_int("k", k, low=1, high=channels)
    n_sets = check_int("n_sets", n_sets, low=2)
    rng = np.random.default_rng(check_int("seed", seed, low=0))
    return float(np.mean([mean_pairwise_jaccard([rng.choice(channels, k, replace=False) for _ in range(n_sets)])
                          for _ in range(check_int("trials", trials, low=1))]))


# ----------------------------------------------------------------------------
# the split model (§3.5)
# ----------------------------------------------------------------------------
class SplitConv2d(nn.Module):
    """A conv layer split into a trainable part (the dominant filters) and a
    frozen part (the rest), outputs in the original channel order (Karnine et
    al. 2024, §3.5, Fig. 7; chapter 4 §5).

    Fig. 7 draws two parallel convs whose outputs are re-assembled; the same
    result comes from gathering the weights, ``W = cat([w_train, w_frozen])[inverse]``,
    and running one convolution — without the channel concatenation and
    re-indexing of the outputs, which inside a channels_last model cost layout
    copies. Measured on the base CNN (2,048 MNIST images, batches of 128,
    RMSprop, 1 CPU thread, best of 8 interleaved epochs): two convs 1.74 s,
    gathered weights 1.16 s, full fine-tuning 1.10 s. Only ``w_train`` (and
    ``b_train``) are parameters, so weight gradients reach the trainable
    filters only."""

    def __init__(self, conv: nn.Conv2d, trainable):
        super().__init__()
        if not isinstance(conv, nn.Conv2d):
            raise ValueError(f"conv must be an nn.Conv2d, got {type(conv).__name__}")
        if conv.padding_mode != "zeros":
            raise ValueError(f"padding_mode={conv.padding_mode!r} is not supported; only 'zeros'")
        C = conv.out_channels
        trainable = torch.tensor(sorted(set(check_indices("trainable", trainable, C))), dtype=torch.long)
        chosen = set(trainable.tolist())
        rest = torch.tensor([c for c in range(C) if c not in chosen], dtype=torch.long)
        self.in_channels, self.out_channels = conv.in_channels, C
        self.conv_kw = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups)
        w, b = conv.weight.detach(), conv.bias.detach() if conv.bias is not None else None
        self.w_train = nn.Parameter(w[trainable].clone())
        self.b_train = nn.Parameter(b[trainable].clone()) if b is not None else None
        self.register_buffer("w_frozen", w[rest].clone())
        self.register_buffer("b_frozen", b[rest].clone() if b is not None else None)
        self.register_buffer("trainable_idx", trainable.to(w.device))
        self.register_buffer("frozen_idx", rest.to(w.device))
        self.register_buffer("inverse", torch.argsort(torch.cat([trainable, rest])).to(w.device))

    def full_weight(self) -> torch.Tensor:
        """The full weight in the original filter order (differentiable in ``w_train``)."""
        return torch.cat([self.w_train, self.w_frozen])[self.inverse]

    def full_bias(self) -> torch.Tensor | None:
        """The full bias in the original filter order (None for a conv without bias)."""
        return None if self.b_train is None else torch.cat([self.b_train, self.b_frozen])[self.inverse]

    def forward(self, x):
        return F.conv2d(x, self.full_weight(), self.full_bias(), **self.conv_kw)

    def merged(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The full weight (and bias) in the original channel order, detached."""
        with torch.no_grad():
            return self.full_weight(), self.full_bias()

    def to_conv(self) -> nn.Conv2d:
        """The plain ``nn.Conv2d`` with the merged weights."""
        w, b = self.merged()
        conv = nn.Conv2d(w.shape[1] * self.conv_kw["groups"], w.shape[0], tuple(w.shape[2:]),
                         bias=b is not None, **self.conv_kw).to(w.device, w.dtype)
        conv.weight = nn.Parameter(w.clone())        # clone keeps the layout (channels_last stays so)
        if b is not None:
            conv.bias = nn.Parameter(b.clone())
        return conv

    def extra_repr(self) -> str:
        return f"trainable={self.trainable_idx.tolist()}, frozen={self.frozen_idx.numel()} filters"


def conv_paths(model: nn.Module) -> "OrderedDict[str, str]":
    """Each conv layer's paper name → its dotted module path (chapter 4 §5):
    ``conv1`` → ``conv1`` in the MNIST CNNs, ``l1b1c1`` → ``stages.0.0.c1``
    in a ResNet. Names come from ``model.conv_layers()`` (``model.layers()``);
    a model without them is described by its module paths."""
    check_model(model)
    path_of = {}
    for p, m in model.named_modules():
        path_of.setdefault(id(m), p)
    if hasattr(model, "conv_layers"):
        convs = model.conv_layers()
    else:
        convs = OrderedDict((p, m) for p, m in model.named_modules() if isinstance(m, nn.Conv2d))
    return OrderedDict((n, path_of[id(m)]) for n, m in convs.items())


def _copy(model: nn.Module, *, trainable: bool) -> nn.Module:
    """A deep copy of ``model`` with every parameter's ``requires_grad`` set to ``trainable``."""
    m = copy.deepcopy(model)
    for p in m.parameters():
        p.requires_grad_(trainable)
    return m


def _set_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new)


def split_model(model: nn.Module, dominant: Mapping[str, object], *, train_dense: bool = True) -> nn.Module:
    """A copy of ``model`` ready for split-model adversarial fine-tuning
    (Karnine et al. 2024, §3.5, Fig. 7, Table 12; chapter 4 §5–6).

    Each conv layer named in ``dominant`` (paper names: ``conv1``,
    ``l3b2c2``, …) becomes a :class:`SplitConv2d` at its module path, whose
    given filters train; every other parameter is frozen, except the dense
    layers when ``train_dense`` (the reading that reproduces Table 12).
    Batch-norm layers keep their frozen affine parameters but, as in any
    ``model.train()`` pass, update their running statistics (the paper's MNIST
    CNNs have none).
    """
    check_bool("train_dense", train_dense)
    check_model(model)
    if not isinstance(dominant, Mapping):
        raise ValueError(f"dominant must be a dict conv layer -> filter indices (e.g. dominant_sets(...)), "
                         f"got {type(dominant).__name__}")
    m = _copy(model, trainable=False)
    paths = conv_paths(m)
    unknown = sorted(set(dominant) - set(paths))
    if unknown:
        raise ValueError(f"dominant names layers {unknown} that are not conv layers; conv layers are {list(paths)}")
    for name, idx in dominant.items():
        conv = m.get_submodule(paths[name])
        check_indices(f"dominant[{name!r}]", idx, conv.out_channels)
        _set_module(m, paths[name], SplitConv2d(conv, idx))
    if train_dense:
        for mod in m.modules():
            if isinstance(mod, nn.Linear):
                for p in mod.parameters():
                    p.requires_grad_(True)
    return m


def merge_split(model: nn.Module) -> nn.Module:
    """The plain model again (chapter 4 §6): every :class:`SplitConv2d`, at
    whatever depth, put back as an ``nn.Conv2d`` at its path, so the result
    has the original's ``state_dict`` keys; every parameter trainable."""
    check_model(model)
    m = _copy(model, trainable=True)
    for path, mod in list(m.named_modules()):
        if isinstance(mod, SplitConv2d):
            _set_module(m, path, mod.to_conv())      # a new nn.Conv2d: its parameters train too
    return m


def trainable_share(model: nn.Module) -> dict[str, float]:
    """Trainable and total parameter counts and the percentage frozen
    (Karnine et al. 2024, Table 12; chapter 4 §5). Frozen filters of a
    :class:`SplitConv2d` are buffers, so they are added to the total here."""
    check_model(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    total += sum(m.w_frozen.numel() + (m.b_frozen.numel() if m.b_frozen is not None else 0)
                 for m in model.modules() if isinstance(m, SplitConv2d))
    if total == 0:
        raise ValueError(f"model (a {type(model).__name__}) has no parameters to share out")
    return {"trainable": trainable, "total": total, "frozen_pct": 100.0 * (total - trainable) / total}


# ----------------------------------------------------------------------------
# the experiments of §3.3–§4
# ----------------------------------------------------------------------------
def targeted_pairs(x: torch.Tensor, y: torch.Tensor, num_classes: int = 10):
    """Karnine et al. 2024, §3.3–3.4 (chapter 4 §3): every image paired with
    each of the other ``num_classes − 1`` classes as a target ("9 adversarial
    examples for a single image"). Returns ``(x_rep, source, target)`` with
    N·(K−1) rows."""
    num_classes = check_int("num_classes", num_classes, low=2)
    check_pixels(x, "x")
    y = check_labels(y, x.shape[0], num_classes).to(x.device)
    offs = torch.arange(1, num_classes, device=y.device)
    target = (y[:, None] + offs[None, :]) % num_classes
    k = num_classes - 1
    return x.repeat_interleave(k, 0), y.repeat_interleave(k), target.flatten()


def _check_clean_and_attacked(x, x_adv, name: str, why: str) -> None:
    """Images ``x`` (named ``name``) and their attacked versions ``<name>_adv``: pixels, one per image."""
    check_pixels(x, name, allow_uint8=True)
    check_pixels(x_adv, f"{name}_adv", allow_uint8=True)
    if x_adv.shape != x.shape:
        raise ValueError(f"{name}_adv is shaped {tuple(x_adv.shape)} but {name} {tuple(x.shape)}; {why}")


def finetune(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor | None = None, *,
             dominant: Mapping[str, object] | None = None, mix: str = "benign+adv",
             adversary=None, x_val=None, y_val=None, x_val_adv=None, train_dense: bool = True,
             **fit_kw):
    """Adversarial fine-tuning of a trained model (Karnine et al. 2024 §3.5, §4;
    chapter 4 §6–7).

    ``dominant`` = {conv layer: filter indices} trains only those filters (and
    the dense layers when ``train_dense``) — the split model; ``None`` trains
    every parameter — conventional adversarial training. ``mix="adv"`` uses
    the adversarial images only, ``"benign+adv"`` the clean images together
    with their adversarial counterparts (Goodfellow et al. 2015), and
    ``"benign"`` the clean images alone (no ``x_adv`` or ``adversary``): the
    λ = 0 twin of a run, the same fine-tuning without adversarial data, which
    separates what the adversarial images do from what any fine-tuning does
    to the transfer accuracy of the paper's protocol. With
    ``x_adv`` the adversarial set is static (made once against the original
    model, the paper's protocol); with ``adversary(model, x, y)`` — an attack
    object such as ``attacks.PGD(0.3, steps=7)`` — it is regenerated against
    the model being trained at every batch (Madry et al. 2018). ``fit_kw`` go
    to ``nrlib.fitting.fit``. Returns ``(plain model, history)``; the history
    holds ``share`` (:func:`trainable_share` of what trained).
    """
    if mix not in ("adv", "benign+adv", "benign"):
        raise ValueError(f"mix={mix!r} is not allowed; choose 'adv', 'benign+adv' or 'benign'")
    if mix == "benign" and not (x_adv is None and adversary is None and x_val_adv is None):
        raise ValueError("mix='benign' fine-tunes on the clean images alone: give neither x_adv, x_val_adv "
                         "nor adversary")
    if mix != "benign" and (x_adv is None) == (adversary is None):
        raise ValueError("give exactly one of x_adv (static adversarial set) or adversary (online)")
    check_model(model)
    check_bool("train_dense", train_dense)
    if x_adv is not None:
        _check_clean_and_attacked(x, x_adv, "x", "the static adversarial set holds one adversarial image "
                                  "per image of x")
    if x_val_adv is not None:
        if x_val is None or y_val is None:
            raise ValueError("x_val_adv needs x_val and y_val too (the clean validation images and their labels)")
        _check_clean_and_attacked(x_val, x_val_adv, "x_val", "they must hold the same images, clean and attacked")
    if dominant is not None:
        m = split_model(model, dominant, train_dense=train_dense)
    else:
        m = _copy(model, trainable=True)
    if x_val is not None and x_val_adv is not None:
        x_val, y_val = (x_val_adv, y_val) if mix == "adv" else (torch.cat([x_val, x_val_adv]), torch.cat([y_val, y_val]))
    if mix == "benign":
        hist = fitting.fit(m, x, y, x_val=x_val, y_val=y_val, **fit_kw)
    elif adversary is not None:
        hist = fitting.fit(m, x, y, objective=Objective(adversary=adversary, mix=mix), x_val=x_val, y_val=y_val,
                           **fit_kw)
    else:
        xt, yt = (x_adv, y) if mix == "adv" else (torch.cat([x, x_adv]), torch.cat([y, y]))
        hist = fitting.fit(m, xt, yt, x_val=x_val, y_val=y_val, **fit_kw)
    hist["share"] = trainable_share(m)
    return (merge_split(m) if dominant is not None else m).eval(), hist


def finetune_and_evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor | None = None, *,
                          x_test: torch.Tensor, y_test: torch.Tensor, x_test_adv: torch.Tensor,
                          **finetune_kw) -> tuple[nn.Module, dict, dict]:
    """One cell pair of Karnine et al. 2024, Tables 6–11 (chapter 4 §6):
    :func:`finetune` (same arguments), then the benign accuracy on
    ``x_test`` and the "adversarial accuracy" on ``x_test_adv`` — adversarial
    test images made against the *original* model, the paper's protocol.
    Returns ``(model, record, history)``; the record holds ``clean``, ``adv``
    (percent, ``stats.proportion`` with its Wilson interval over the test images),
    ``hits`` (each test image right or wrong, for paired comparisons), ``seconds``,
    ``epochs``, ``s_per_epoch`` (each epoch's training and validation pass) and
    ``trainable_pct``."""
    check_input(model, x_test, "x_test")
    check_labels(y_test, x_test.shape[0], _num_classes(model), name="y_test")
    check_input(model, x_test_adv, "x_test_adv")
    if x_test_adv.shape != x_test.shape:
        raise ValueError(f"x_test_adv is shaped {tuple(x_test_adv.shape)} but x_test {tuple(x_test.shape)}; "
                         "it holds the adversarial version of each test image")
    tuned, hist = finetune(model, x, y, x_adv, **finetune_kw)
    n = len(hist["epoch"])
    hits = {"clean": metrics.hits(tuned, x_test, y_test).cpu(), "adv": metrics.hits(tuned, x_test_adv, y_test).cpu()}
    rec = dict(clean=stats.proportion(hits["clean"]), adv=stats.proportion(hits["adv"]),
               seconds=hist["total_seconds"], epochs=n, s_per_epoch=sum(hist["seconds"]) / n,
               trainable_pct=100.0 - hist["share"]["frozen_pct"], hits=hits)
    return tuned, rec, hist


def training_macs(model: nn.Module, dominant: Mapping[str, object] | None = None, *,
                  train_dense: bool = True) -> dict[str, int]:
    """Multiply-accumulates per image of one training step, ideally computed (Karnine et al.
    2024 §3.5: the split model is "computation-friendly, since it involves a smaller amount of
    trainable parameters"; chapter 4 §6). Three parts over the conv and dense layers (pooling
    and activations, a few per cent, left out): ``forward``, every layer; ``input_grad``, the
    gradient at the input of every layer above the lowest one with a trainable weight;
    ``weight_grad``, the weight gradient of the trainable filters only — ``len(dominant[conv])/C``
    of a split conv's, none of a frozen layer's, all of a dense layer's when ``train_dense``.
    ``dominant=None``: the whole model trains. This is what a split that skips its frozen
    filters' weight gradients costs; :class:`SplitConv2d` forms the whole weight gradient and
    keeps the trainable rows, so its wall time (:func:`epoch_seconds`) measures this
    implementation, not that ideal."""
    check_model(model)
    check_bool("train_dense", train_dense)
    names = {id(model.get_submodule(p)): n for n, p in conv_paths(model).items()}
    if dominant is not None:
        if not isinstance(dominant, Mapping):
            raise ValueError(f"dominant must be a dict conv layer -> filter indices or None, got "
                             f"{type(dominant).__name__}")
        unknown = sorted(set(dominant) - set(names.values()))
        if unknown:
            raise ValueError(f"dominant names layers {unknown} that are not conv layers; conv layers are "
                             f"{list(names.values())}")
    rows = []
    def hook(mod, inp, out):
        if isinstance(mod, nn.Conv2d):
            per_out = mod.in_channels // mod.groups * math.prod(mod.kernel_size)
            name, chans = names.get(id(mod)), mod.out_channels
            if dominant is None:
                share = 1.0
            elif name in dominant:
                share = len(set(check_indices(f"dominant[{name!r}]", dominant[name], chans))) / chans
            else:
                share = 0.0
        else:
            per_out, share = mod.in_features, 1.0 if (dominant is None or train_dense) else 0.0
        rows.append((out[0].numel() * per_out, share))
    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    p = next(model.parameters())
    try:
        with frozen(model):
            model(torch.zeros(1, *SHAPES[getattr(model, "dataset", "mnist")], device=p.device, dtype=p.dtype))
    finally:
        for h in hooks:
            h.remove()
    first = next((i for i, (_, share) in enumerate(rows) if share > 0), len(rows))
    out = {"forward": sum(m for m, _ in rows), "input_grad": sum(m for m, _ in rows[first + 1:]),
           "weight_grad": int(round(sum(m * share for m, share in rows)))}
    out["total"] = sum(out.values())
    return out


def epoch_seconds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, dominant: Mapping[str, object], *,
                  rounds: int = 2, train_dense: bool = True, seed: int = 0, **fit_kw) -> dict[str, list[float]]:
    """Wall time of one training epoch of the split model vs the whole model
    on the same data (chapter 4 §6; Karnine et al. 2024 claim the split model
    is "computation-friendly" without measuring it). Epochs alternate
    split, full, full, split, … (``2·rounds`` epochs of each in all) so that
    a drift of the machine's load hits both alike. Returns
    ``{"split": [s, …], "full": [s, …]}``; ``fit_kw`` (optimizer, lr,
    batch_size, …) go to ``nrlib.fitting.fit``, which runs here without a
    validation set, so the seconds are training alone."""
    rounds = check_int("rounds", rounds, low=1)
    check_int("seed", seed, low=0)
    fixed = sorted(set(fit_kw) & {"max_epochs", "patience", "seed", "progress"})
    if fixed:
        raise ValueError(f"fit_kw={fixed} are set by epoch_seconds itself (one epoch, no early stopping, "
                         "seed + round, no progress bar); leave them out")
    nets = {"split": split_model(model, dominant, train_dense=train_dense), "full": _copy(model, trainable=True)}
    out = {"split": [], "full": []}
    for r in range(rounds):
        for name in ("split", "full", "full", "split"):
            h = fitting.fit(nets[name], x, y, max_epochs=1, patience=None, seed=seed + r, progress=False, **fit_kw)
            out[name].append(h["seconds"][0])
    return out
