"""Neural ranking — Prattico 2022, "FGSM attack and toggle activity", §2.3, Tables 1–2: the score
of a neuron on an image is its contribution to the predicted class, activation ×
∂z_ŷ/∂activation (gradient × input, Shrikumar et al. 2016, at the neuron); over a dataset a
neuron's score is its largest contribution (``aggregate``), and its class the prediction of the
image that gave it. ``rank_neurons`` returns a ``Ranking``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from .hooks import capture
from .models import frozen
from .utils import batches, check_choice, check_input, check_int
from .thresholds import neuron_shape, profiled_layers


@dataclass
class Ranking:
    """Per-neuron scores (max over the dataset of activation × ∂z_ŷ/∂activation)
    and the predicted class of the image that gave each maximum."""
    layers: list[str]
    score: dict[str, torch.Tensor]
    cls: dict[str, torch.Tensor]

    def __post_init__(self):
        if isinstance(self.layers, str) or not isinstance(self.layers, (list, tuple)) or not self.layers:
            raise ValueError(f"layers={self.layers!r} must be a non-empty list of layer names")
        self.layers = list(self.layers)
        for part in ("score", "cls"):
            d = getattr(self, part)
            missing = [n for n in self.layers if not isinstance(d, dict) or not torch.is_tensor(d.get(n))]
            if missing:
                raise ValueError(f"{part} must be a dict layer -> tensor covering layers; it lacks {missing}")
        for n in self.layers:
            if self.cls[n].shape != self.score[n].shape:
                raise ValueError(f"cls[{n!r}] is shaped {tuple(self.cls[n].shape)} but score[{n!r}] "
                                 f"{tuple(self.score[n].shape)}; they must match")
            neuron_shape(n, tuple(self.score[n].shape))

    def top(self, k: int = 10) -> list[dict]:
        """The ``k`` highest-scoring neurons (Prattico 2022, Tables 1–2): rank,
        layer name, ``layer_no`` — the layer's 0-based position among the ranked
        layers in forward order, the report's ``LayerName`` — channel, h, w,
        score and class."""
        flat = torch.cat([self.score[n].flatten() for n in self.layers])
        k = check_int("k", k, low=1, high=flat.numel())
        vals, idx = flat.topk(k)
        sizes = np.cumsum([0] + [self.score[n].numel() for n in self.layers])
        rows = []
        for r, (v, i) in enumerate(zip(vals.tolist(), idx.tolist())):
            li = int(np.searchsorted(sizes, i, side="right") - 1)
            name = self.layers[li]
            c, h, w = np.unravel_index(i - sizes[li], neuron_shape(name, tuple(self.score[name].shape)))
            rows.append({"rank": r, "layer": name, "layer_no": li, "c": int(c), "h": int(h), "w": int(w),
                         "score": float(v), "class": int(self.cls[name].flatten()[i - sizes[li]])})
        return rows

    def layer_counts(self, k: int) -> dict[str, int]:
        """How many of the top-``k`` neurons sit in each layer."""
        counts = {n: 0 for n in self.layers}
        for row in self.top(k):
            counts[row["layer"]] += 1
        return counts

    def mean_layer(self, k: int) -> float:
        """The mean ``layer_no`` of the top-``k`` neurons: where the critical
        neurons sit (the report's §4.1: middle vs final layers). Chapter 5, §7."""
        return float(np.mean([r["layer_no"] for r in self.top(k)]))

    def top_set(self, k: int) -> set[tuple[str, int, int, int]]:
        """The top-``k`` neurons as a set of (layer, c, h, w), to compare rankings
        (``metrics.jaccard``)."""
        return {(r["layer"], r["c"], r["h"], r["w"]) for r in self.top(k)}


AGGREGATES = ("max", "mean", "abs_max")


def rank_neurons(model: nn.Module, x: torch.Tensor, layers: Sequence[str] | None = None, *,
                 aggregate: str = "max", batch_size: int = 250) -> Ranking:
    """Neural ranking (Prattico 2022 §2.3, §3.1): score every neuron of ``layers``
    by its contribution to the predicted class, activation × ∂z_ŷ/∂activation,
    per image; a neuron's score over ``x`` aggregates its contributions:
    ``aggregate="max"`` (default: its largest), ``"mean"`` (its average over
    the images) or ``"abs_max"`` (its largest in magnitude, either sign) — the
    report does not say which. Its class is the prediction of the image that
    gave its largest (``"mean"``: largest) contribution. Weights stay frozen.
    Chapter 5, §7."""
    check_input(model, x)
    names = profiled_layers(model, layers)
    check_choice("aggregate", aggregate, AGGREGATES)
    check_int("batch_size", batch_size, low=1)
    best, cls, total = {}, {}, {}
    with frozen(model):
        for xb in batches(x, batch_size=batch_size):
            with capture(model, names, detach=False) as store:
                xb = xb.detach().requires_grad_(True)   # a graph through the frozen weights
                logits = model(xb)
            pred = logits.argmax(1)
            acts = [store[n][0] for n in names]
            grads = torch.autograd.grad(logits.gather(1, pred[:, None]).sum(), acts)
            for n, a, g in zip(names, acts, grads):
                s = (a.detach() * g).float().contiguous()    # N×C×H×W contributions (see batch_minmax)
                if aggregate == "mean":
                    total[n] = s.sum(0) + total.get(n, 0.0)
                v, j = (s.abs() if aggregate == "abs_max" else s).max(0)
                c = pred[j]
                if n not in best:
                    best[n], cls[n] = v, c
                else:
                    upd = v > best[n]
                    best[n] = torch.where(upd, v, best[n])
                    cls[n] = torch.where(upd, c, cls[n])
    if aggregate == "mean":
        best = {n: total[n] / x.shape[0] for n in names}
    return Ranking(names, best, cls)
