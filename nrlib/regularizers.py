"""Training-loss terms that act on neurons.

* ``sensitivity_loss`` — Suri & Evans 2020, eq. 5, the sensitivity
  regulariser, as the public code (sauron, ``sensitivity_training.py``)
  implements it. ``fit(..., objective=Objective(terms=[SensitivityPenalty()]))`` trains with it
  (``nrlib.objectives``).
* ``sns_loss`` — Zhang et al. 2021, eq. 12, the Sensitive Neuron
  Stabilizing term: the sensitive neurons' deviation between clean and
  adversarial inputs. ``objectives.SNSPenalty`` adds λ·L_sns to the
  adversarial-training loss (eq. 13).
* ``rescale_features`` — the function-preserving rescaling (features ×c, the
  logits layer's weight ×1/c) under which eq. 5 as coded falls as 1/c.
"""
from __future__ import annotations

import copy

import torch

from .models import VGG
from .sensitivity import _deviation
from .utils import check_int, check_number


def _check(features, weight, y, top_k):
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[0] < 2:
        raise ValueError(f"weight must be the logits layer's [classes ≥ 2, features] matrix, "
                         f"got {getattr(weight, 'shape', type(weight).__name__)}")
    if not isinstance(features, torch.Tensor) or features.dim() != 2 or features.shape[1] != weight.shape[1]:
        raise ValueError(f"features must be [batch, {weight.shape[1]}] (the logits layer's inputs), "
                         f"got {getattr(features, 'shape', type(features).__name__)}")
    if not isinstance(y, torch.Tensor) or y.shape != (features.shape[0],):
        raise ValueError(f"y must hold one label per image ({features.shape[0]}), got {getattr(y, 'shape', y)}")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= weight.shape[0]):
        raise ValueError(f"y holds labels in [{int(y.min())}, {int(y.max())}]; the model has "
                         f"{weight.shape[0]} classes")
    return check_int("top_k", top_k, low=1, high=weight.shape[1])


def sensitivity_terms(features: torch.Tensor, weight: torch.Tensor, y: torch.Tensor, *,
                      top_k: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """The two terms of Suri & Evans 2020's sensitivity regulariser (eq. 5,
    the "reduced version"), as the public code computes them:

    * R1 = max over the C(C−1)/2 class pairs (a, b) of the mean of the
      ``top_k`` largest |W[a, i] − W[b, i]| over features i (W the logits
      layer's weight, [C, F]);
    * R2 = the mean over the batch and over all C classes c of the mean of
      the ``top_k`` largest |f_i · (W[y, i] − W[c, i])| / Σ_j f_j (f the
      image's features, y its label). The code averages over every class,
      the label's own term being 0, so R2 is (C−1)/C times the mean over the
      other classes.

    Both are differentiable in ``features`` and ``weight``; returns (R1, R2)."""
    top_k = _check(features, weight, y, top_k)
    c = weight.shape[0]
    a, b = torch.triu_indices(c, c, offset=1, device=weight.device)
    pair = (weight[a] - weight[b]).abs()                                # [pairs, F]
    r1 = pair.topk(top_k, dim=1).values.mean(1).max()
    f = features.float()
    norm = f.sum(1, keepdim=True).clamp_min(1e-12)                      # Σ_j f_j per image
    diff = weight[y][:, None, :] - weight[None, :, :]                   # W_y − W_c, [N, C, F]
    term = (f[:, None, :] * diff / norm[:, :, None]).abs()
    r2 = term.topk(top_k, dim=2).values.mean(2).mean()
    return r1, r2


def sensitivity_loss(features: torch.Tensor, weight: torch.Tensor, y: torch.Tensor, *,
                     top_k: int = 16, delta1: float = 10.0, delta2: float = 100.0) -> torch.Tensor:
    """δ1·R1 + δ2·R2 (``sensitivity_terms``), added to the cross-entropy
    (Suri & Evans 2020, eq. 5; the code's δ1 = 10, δ2 = 100, top-16)."""
    delta1 = check_number("delta1", delta1, low=0.0)
    delta2 = check_number("delta2", delta2, low=0.0)
    r1, r2 = sensitivity_terms(features, weight, y, top_k=top_k)
    return delta1 * r1 + delta2 * r2


def rescale_features(model, c: float):
    """A copy of a VGG (``models.VGG``) whose features z are ×``c`` and whose logits are unchanged:
    the last batch norm's γ and β ×c (ReLU, max-pooling and global average pooling are positively
    homogeneous, so the features they produce scale by c) and the logits layer's weight ×1/c. Both
    terms of Suri & Evans 2020's eq. 5 as coded (``sensitivity_terms``) then fall as 1/c — R1 is
    in units of the weights; R2's f/Σf is scale-free and its weight differences shrink — so a
    network can drive the regulariser towards 0 without changing what it computes, at any size;
    and Δ (eq. 2, a change of a feature) grows as c. What the regulariser rewards is partly a
    change of units, not robustness in image space."""
    if not isinstance(model, VGG):
        raise ValueError(f"model must be an nrlib.models.VGG (the last batch norm feeds the features through "
                         f"ReLU and pooling only), got {type(model).__name__}")
    c = check_number("c", c, low=0.0, low_open=True)
    out = copy.deepcopy(model)
    bn = getattr(out, f"bn{out.n_conv}")
    with torch.no_grad():
        bn.weight.mul_(c)
        bn.bias.mul_(c)
        out.fc1.weight.div_(c)
    return out


def sns_loss(acts_clean: dict, acts_adv: dict, sensitive: dict | None = None) -> torch.Tensor:
    """L_sns (Zhang et al. 2021, eq. 12): Σ over the layers l of ``acts_clean``
    and over their sensitive neurons m ∈ Ω_l of (1/dim)·‖F_l^m(x) − F_l^m(x′)‖₁,
    averaged over the pairs of the batch. ``acts_clean``/``acts_adv``: layer →
    outputs [N, C, ...] for x and x′; ``sensitive``: layer → channel indices
    (a layer missing from it, or ``sensitive=None``, counts all its neurons:
    SNS_all). Differentiable; 0 for identical activations."""
    if not isinstance(acts_clean, dict) or not acts_clean or not isinstance(acts_adv, dict):
        raise ValueError("acts_clean and acts_adv must be non-empty dicts layer -> outputs [N, C, ...]")
    missing = sorted(set(acts_clean) - set(acts_adv))
    if missing:
        raise ValueError(f"acts_adv lacks the layers {missing} of acts_clean")
    total = None
    for name, a in acts_clean.items():
        b = acts_adv[name]
        if not isinstance(a, torch.Tensor) or a.dim() < 2 or a.shape != b.shape:
            raise ValueError(f"layer {name!r}: clean {getattr(a, 'shape', a)} and adversarial "
                             f"{getattr(b, 'shape', b)} outputs must be tensors [N, C, ...] of one shape")
        d = _deviation(a.float(), b.float())
        idx = None if sensitive is None else sensitive.get(name)
        if idx is not None:
            idx = torch.as_tensor(idx, dtype=torch.long, device=d.device)
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= d.shape[1]):
                raise ValueError(f"sensitive[{name!r}] holds channels outside [0, {d.shape[1] - 1}]")
            d = d[:, idx]
        term = d.sum(1).mean()
        total = term if total is None else total + term
    return total
