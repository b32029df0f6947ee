"""Accuracy, attack success and set similarity, batched and in percent."""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch

from .attacks import autocast
from .models import frozen
from .utils import check_labels, check_pixels


@torch.no_grad()
def predict(model, x: torch.Tensor, *, batch_size: int = 8192, amp: bool | None = None) -> torch.Tensor:
    """Predicted classes of ``x`` (pixels in [0, 1]) in eval mode, batched."""
    check_pixels(x)
    out = []
    with frozen(model):
        for i in range(0, x.shape[0], batch_size):
            with autocast(x.device, amp):
                out.append(model(x[i:i + batch_size]).argmax(1))
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long, device=x.device)


def accuracy(model, x: torch.Tensor, y: torch.Tensor, **kw) -> float:
    """Top-1 accuracy in percent."""
    y = check_labels(y, x.shape[0]).to(x.device)
    return 100.0 * (predict(model, x, **kw) == y).float().mean().item()


def robust_accuracy(model, x: torch.Tensor, y: torch.Tensor, attack: Callable, eps: float,
                    **attack_kw) -> float:
    """Accuracy (percent) on ``attack(model, x, y, eps, **attack_kw)``."""
    return accuracy(model, attack(model, x, y, eps, **attack_kw), y)


def targeted_success(model, x_adv: torch.Tensor, target: torch.Tensor) -> float:
    """Share (percent) of targeted adversarial examples classified as their target."""
    return accuracy(model, x_adv, target)


def success_matrix(pred: torch.Tensor, source: torch.Tensor, target: torch.Tensor,
                   num_classes: int = 10) -> np.ndarray:
    """Targeted success rate (percent) per (source class, target class) cell;
    NaN on the diagonal (Karnine et al. 2024, Tables 2–3)."""
    src, tgt, ok = (t.detach().cpu().numpy() for t in (source, target, pred == target))
    hits = np.zeros((num_classes, num_classes))
    counts = np.zeros((num_classes, num_classes))
    np.add.at(hits, (src, tgt), ok)
    np.add.at(counts, (src, tgt), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = 100.0 * hits / counts
    m[counts == 0] = np.nan
    return m


def _as_set(a) -> set:
    if torch.is_tensor(a):
        a = a.detach().cpu().numpy()
    if isinstance(a, np.ndarray):
        return set(a.ravel().tolist())
    return {x.item() if isinstance(x, np.generic) or (torch.is_tensor(x) and x.numel() == 1) else x for x in a}


def jaccard(a: Iterable, b: Iterable) -> float:
    """|A ∩ B| / |A ∪ B| of two sets (1.0 for two empty sets); items may be
    numbers, NumPy/torch scalars or any hashable (e.g. (layer, c, h, w) tuples)."""
    a, b = _as_set(a), _as_set(b)
    return 1.0 if not (a | b) else len(a & b) / len(a | b)


def mean_pairwise_jaccard(sets: list) -> float:
    """Mean Jaccard index over all unordered pairs of sets."""
    vals = [jaccard(sets[i], sets[j]) for i in range(len(sets)) for j in range(i + 1, len(sets))]
    return float(np.mean(vals)) if vals else 1.0
