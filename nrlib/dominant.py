"""Dominant filters and split-model adversarial fine-tuning (Karnine et al. 2024).

§3.4 (filter identification): for each benign/adversarial pair, the output of
a conv layer is compared filter by filter — the mean over positions of
|f_c(x) − f_c(x̃)| — and the top 10% filters of each pair are recorded. The
frequency with which a filter appears in those top sets over many pairs
(Fig. 4) ranks the filters; the most frequent ones are the *dominant filters*
(Figs. 5–6).

§3.5 (model splitting): each conv layer is split into two parallel convs,
one holding the dominant filters (trainable) and one the rest (frozen); their
outputs are put back in the original channel order before the next layer
(Fig. 7). Table 12's percentages match this split for the shallow and base
models exactly when the top ``ceil(p·C)`` filters of each layer train and the
dense layers train too (e.g. base, 10%: 4 + 7 filters, 2,126 conv weights
frozen-out of 19,328, 14.33% of 120,042 parameters frozen); that is the
default here (``train_dense=True``).
"""
from __future__ import annotations

import copy
import math
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attacks import autocast
from .hooks import capture
from .models import frozen
from .utils import check_number, check_pixels


def n_top(channels: int, frac: float) -> int:
    """Number of filters in the top ``frac`` of a layer: ``ceil(frac·C)``, at least 1."""
    frac = check_number("frac", frac, low=0.0, high=1.0, low_open=True)
    return max(1, math.ceil(frac * channels - 1e-9))


@torch.no_grad()
def filter_differences(model: nn.Module, layers: list[str], x: torch.Tensor, x_adv: torch.Tensor,
                       *, batch_size: int = 1024) -> "OrderedDict[str, torch.Tensor]":
    """Karnine et al. 2024 §3.4: per-filter mean |output(x) − output(x̃)|.

    Returns, for each layer name, an N×C tensor: for pair n and filter c the
    mean over spatial positions of the absolute difference between the layer's
    output on the benign image and on its adversarial counterpart.
    """
    check_pixels(x, "x")
    check_pixels(x_adv, "x_adv")
    if x.shape != x_adv.shape:
        raise ValueError(f"x and x_adv must have the same shape, got {tuple(x.shape)} and {tuple(x_adv.shape)}")
    out = OrderedDict((n, []) for n in layers)
    with frozen(model):
        for i in range(0, x.shape[0], batch_size):
            xb = torch.cat([x[i:i + batch_size], x_adv[i:i + batch_size]])
            with capture(model, layers) as acts, autocast(x.device):
                model(xb)
            for n in layers:
                a = acts[n][0].float()
                clean, adv = a.chunk(2)
                out[n].append((clean - adv).abs().flatten(2).mean(2))
    return OrderedDict((n, torch.cat(v)) for n, v in out.items())


def top_filters(diff: torch.Tensor, frac: float = 0.1) -> torch.Tensor:
    """Indices (N×k, k = ceil(frac·C)) of the most affected filters of each pair."""
    return diff.topk(n_top(diff.shape[1], frac), dim=1).indices


def frequency(top_idx: torch.Tensor, channels: int) -> torch.Tensor:
    """How often each filter appears in the per-pair top sets (Fig. 4's histogram)."""
    return torch.bincount(top_idx.flatten(), minlength=channels)


def dominant_filters(freq: torch.Tensor, frac: float = 0.1) -> torch.Tensor:
    """The ``ceil(frac·C)`` most frequent filters, sorted by index (§3.5's dominant filters)."""
    k = n_top(freq.numel(), frac)
    # stable tie-break by filter index: sort by (-count, index)
    order = sorted(range(freq.numel()), key=lambda c: (-int(freq[c]), c))
    return torch.tensor(sorted(order[:k]), dtype=torch.long)


# ----------------------------------------------------------------------------
# the split model
# ----------------------------------------------------------------------------
class SplitConv2d(nn.Module):
    """A conv layer split into a trainable part (the dominant filters) and a
    frozen part (the rest), outputs re-assembled in the original channel order
    (Karnine et al. 2024, Fig. 7). Weight gradients are computed for the
    trainable filters only."""

    def __init__(self, conv: nn.Conv2d, trainable: torch.Tensor):
        super().__init__()
        C = conv.out_channels
        trainable = torch.as_tensor(trainable, dtype=torch.long).flatten().unique().cpu()
        if trainable.numel() and (int(trainable.min()) < 0 or int(trainable.max()) >= C):
            raise ValueError(f"trainable filters {trainable.tolist()} outside [0, {C - 1}]")
        rest = torch.tensor([c for c in range(C) if c not in set(trainable.tolist())], dtype=torch.long)
        self.conv_kw = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups)
        w, b = conv.weight.detach(), conv.bias.detach() if conv.bias is not None else None
        self.w_train = nn.Parameter(w[trainable].clone())
        self.b_train = nn.Parameter(b[trainable].clone()) if b is not None else None
        self.register_buffer("w_frozen", w[rest].clone())
        self.register_buffer("b_frozen", b[rest].clone() if b is not None else None)
        self.register_buffer("trainable_idx", trainable)
        self.register_buffer("frozen_idx", rest)
        self.register_buffer("inverse", torch.argsort(torch.cat([trainable, rest])))

    def forward(self, x):
        parts = []
        if self.w_train.shape[0]:
            parts.append(F.conv2d(x, self.w_train, self.b_train, **self.conv_kw))
        if self.w_frozen.shape[0]:
            parts.append(F.conv2d(x, self.w_frozen, self.b_frozen, **self.conv_kw))
        return torch.cat(parts, 1)[:, self.inverse]

    def merged(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The full weight (and bias) in the original channel order."""
        w = torch.cat([self.w_train.detach(), self.w_frozen])[self.inverse]
        b = None if self.b_train is None else torch.cat([self.b_train.detach(), self.b_frozen])[self.inverse]
        return w, b


def split_model(model: nn.Module, dominant: dict[str, torch.Tensor], *, train_dense: bool = True) -> nn.Module:
    """A copy of ``model`` ready for split-model adversarial fine-tuning (§3.5).

    Each conv layer named in ``dominant`` becomes a :class:`SplitConv2d`
    whose given filters train; every other conv layer is frozen; dense layers
    train when ``train_dense`` (the reading that reproduces Table 12), else
    they are frozen too.
    """
    m = copy.deepcopy(model)
    for p in m.parameters():
        p.requires_grad_(False)
    convs = m.conv_layers()
    unknown = set(dominant) - set(convs)
    if unknown:
        raise ValueError(f"dominant names layers {sorted(unknown)} that are not conv layers; "
                         f"conv layers are {list(convs)}")
    for name, idx in dominant.items():
        setattr(m, name, SplitConv2d(convs[name], idx).to(convs[name].weight.device))
    if train_dense:
        for mod in m.modules():
            if isinstance(mod, nn.Linear):
                for p in mod.parameters():
                    p.requires_grad_(True)
    return m


def merge_split(model: nn.Module) -> nn.Module:
    """The plain model again: every :class:`SplitConv2d` put back as an ``nn.Conv2d``."""
    m = copy.deepcopy(model)
    for name, mod in list(m.named_children()):
        if isinstance(mod, SplitConv2d):
            w, b = mod.merged()
            conv = nn.Conv2d(w.shape[1] * mod.conv_kw["groups"], w.shape[0], tuple(w.shape[2:]),
                             bias=b is not None, **mod.conv_kw).to(w.device)
            conv.weight.data.copy_(w)
            if b is not None:
                conv.bias.data.copy_(b)
            setattr(m, name, conv)
    for p in m.parameters():
        p.requires_grad_(True)
    return m


def trainable_share(model: nn.Module) -> dict[str, float]:
    """Trainable and total parameter counts and the percentage frozen (Table 12).
    Frozen filters of a :class:`SplitConv2d` are buffers, so they count here."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    total += sum(m.w_frozen.numel() + (m.b_frozen.numel() if m.b_frozen is not None else 0)
                 for m in model.modules() if isinstance(m, SplitConv2d))
    return {"trainable": trainable, "total": total, "frozen_pct": 100.0 * (total - trainable) / total}


# ----------------------------------------------------------------------------
# the experiment's two procedures
# ----------------------------------------------------------------------------
def targeted_pairs(x: torch.Tensor, y: torch.Tensor, num_classes: int = 10):
    """§3.4: every image paired with each of the other ``num_classes − 1``
    classes as a target ("9 adversarial examples for a single image").
    Returns ``(x_rep, source, target)`` with N·(K−1) rows."""
    offs = torch.arange(1, num_classes, device=y.device)
    target = (y[:, None] + offs[None, :]) % num_classes
    k = num_classes - 1
    return x.repeat_interleave(k, 0), y.repeat_interleave(k), target.flatten()


def finetune(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor | None = None, *,
             dominant: dict[str, torch.Tensor] | None = None, mix: str = "benign+adv",
             adversary=None, x_val=None, y_val=None, x_val_adv=None, train_dense: bool = True,
             **fit_kw):
    """Adversarial fine-tuning of a trained model (Karnine et al. 2024 §3.5, §4).

    ``dominant`` = {conv layer: filter indices} trains only those filters (and
    the dense layers when ``train_dense``) — the split model; ``None`` trains
    every parameter — conventional adversarial training. ``mix="adv"`` uses
    the adversarial images only, ``"benign+adv"`` the clean images together
    with their adversarial counterparts. With ``x_adv`` the adversarial set is
    static (made once against the original model, the paper's protocol);
    with ``adversary(model, x, y)`` it is regenerated against the model being
    trained at every batch (Madry et al. 2018). Returns ``(plain model, history)``.
    """
    from .train import fit  # late import: train does not depend on this module

    if (x_adv is None) == (adversary is None):
        raise ValueError("give exactly one of x_adv (static adversarial set) or adversary (online)")
    if mix not in ("adv", "benign+adv"):
        raise ValueError(f"mix={mix!r} is not allowed; choose 'adv' or 'benign+adv'")
    if dominant is not None:
        m = split_model(model, dominant, train_dense=train_dense)
    else:
        m = copy.deepcopy(model)
        for p in m.parameters():
            p.requires_grad_(True)
    if x_val is not None and x_val_adv is not None:
        x_val, y_val = (x_val_adv, y_val) if mix == "adv" else (torch.cat([x_val, x_val_adv]), torch.cat([y_val, y_val]))
    if adversary is not None:
        hist = fit(m, x, y, adversary=adversary, mix=mix, x_val=x_val, y_val=y_val, **fit_kw)
    else:
        xt, yt = (x_adv, y) if mix == "adv" else (torch.cat([x, x_adv]), torch.cat([y, y]))
        hist = fit(m, xt, yt, x_val=x_val, y_val=y_val, **fit_kw)
    hist["share"] = trainable_share(m)
    return (merge_split(m) if dominant is not None else m).eval(), hist
