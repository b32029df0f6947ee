"""One interface over the five papers' neuron rankings, their baselines and the leave-one-out oracle.

Each of the book's papers names its own "important" neurons, each on its own layer and with its own
sign. ``rank(method, model, layer, x, y)`` scores every output channel of one conv layer by any of
them and returns :class:`NeuronScores`, always in one direction: **a higher score means "claimed
more important for robustness"** (the methods whose paper ranks the other way are flipped, and
their entry below says how). Registered in ``METHODS``, which the tests run over:

=================  ==========================================================================  =========
method             score of channel c (higher = more important)                                 native at
=================  ==========================================================================  =========
``fragile``        Pravin et al. 2021 §3.3: the clean accuracy lost (points) when the kernel    ``conv1``
                   is dropped (its conv output zeroed) — a fragile kernel costs much.
``delta``          Suri & Evans 2020 eq. 2: −mean |Δ|, the smallest change of the neuron that   logits
                   flips the prediction (low Δ = sensitive). At a conv layer it is *carried     layer's
                   over* by linearising: Δ_c(x) = min_j (z_p − z_j) / |∂(z_p − z_j)/∂s_c|,     inputs
                   s_c a uniform shift of channel c's map (after batch norm); exact where the
                   map to the logits is linear (global pooling then the logits layer).
``sigma``          Zhang et al. 2021 eq. 1: σ, the mean L1 deviation of the channel's output     any
                   (after its ReLU) between x and attack(x).
``dominant``       Karnine et al. 2024 §3.4: how often the filter is among the top 10% by        every conv
                   mean |f(x) − f(x̃)| of a benign/adversarial pair (after the ReLU: the paper's
                   Keras ``Conv2D(activation="relu")`` output; pooled over classes).
``toggle``         Prattico 2022 §2.3: the neural-ranking score (activation × ∂z_ŷ/∂activation, every conv
                   its largest over the images) on attack(x), the channel's largest over its
                   positions (conv output, before batch norm, as the report's code profiles).
``random``         a uniform random score (seeded): the control every ranking must beat.       —
``weight_l1``      ‖W_c‖₁ of the conv's kernel (Li et al. 2017).                               —
``bn_gamma``       |γ_c| of the batch norm after the conv (Liu et al. 2017).                   —
``mean_activation``mean output after the ReLU over images and positions.                      —
``apoz``           1 − APoZ (Hu et al. 2016): the share of non-zero outputs after the ReLU —   —
                   a channel that is mostly 0 is claimed unimportant.
``taylor``         Molchanov et al. 2017: per image |mean over positions of a·∂L/∂a| (a after —
                   batch norm, L the cross-entropy on x), averaged over the images.
``taylor_adv``     the same on the loss of attack(x).                                          —
``loo``            the oracle: the *robust* accuracy lost (points) when the channel is removed  —
                   (zeroed after batch norm), the attack re-run against each ablated model.
``loo_loss``       the same oracle on a continuous outcome: the mean cross-entropy on the        —
                   adversarial examples gained when the channel is removed (Molchanov et al.
                   2019's loss-change oracle, run under the attack).
``loo_clean``      the same for clean accuracy.                                                —
=================  ==========================================================================  =========

How two rankings agree: ``agreement`` (Spearman's ρ, Kendall's τ-b for scores with ties, the top-k
overlap against its chance level with a hypergeometric p-value, and the rank-biased overlap ``rbo``
of Webber et al. 2010).

Where a method reads the layer: its conv output (``"conv"``), the batch norm that takes it
(``"bn"``: where a channel is removed), or the ReLU after that (``"act"``); ``sites`` finds them by
tracing one forward pass, so any model whose conv → BN → ReLU chain is in its forward works (where a
block adds its shortcut before the ReLU, ``"act"`` falls back to ``"bn"`` and ``NeuronScores.note``
says so). The ablations run K channels at once: the images are repeated K times along the batch and
copy k has channel k zeroed, so the attack of ``loo`` runs against all K ablated models in one batch.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy import stats as _st

from . import dominant as _dominant
from . import fragile as _frag
from . import metrics as _metrics
from . import ranking as _ranking
from . import sensitivity as _sens
from . import stats
from .attacks import FGSM, PGD, Attack
from .hooks import get_layer, layer_channels
from .models import frozen
from .utils import (batches, check_choice, check_fraction, check_indices, check_input, check_int, check_labels,
                    check_model, num_classes)

SITES = ("conv", "bn", "act")


@dataclass(frozen=True)
class NeuronScores:
    """One score per output channel of ``layer`` (float64, CPU; higher = claimed more important for
    robustness) and what it was computed on."""
    method: str
    layer: str
    scores: torch.Tensor
    native: bool
    site: str
    attack: str | None
    seed: int
    n_images: int
    seconds: float
    note: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def order(self) -> torch.Tensor:
        """Channels from most to least important; NaN last. Ties (a count score such as
        ``dominant``, an oracle whose channels all move the same few images) are broken at random,
        seeded by ``seed``, so that a top-k never leans towards low channel indices."""
        n = len(self.scores)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(self.seed) + 7919))
        key = -self.scores.nan_to_num(-math.inf)[perm]
        return perm[torch.argsort(key, stable=True)]

    def top(self, k: int) -> list[int]:
        """The ``k`` most important channels, most important first."""
        k = check_int("k", k, low=0, high=len(self.scores))
        return self.order[:k].tolist()

    def bottom(self, k: int) -> list[int]:
        """The ``k`` least important channels, least important first."""
        k = check_int("k", k, low=0, high=len(self.scores))
        return self.order.flip(0)[:k].tolist()

    def __len__(self) -> int:
        return len(self.scores)


@dataclass(frozen=True)
class Method:
    fn: object
    site: str
    needs_attack: bool
    native: tuple = ()          # layers that are the method's own ("*": any)
    default_attack: str = "pgd"
    reattacks: bool = False     # runs the attack itself (against each ablated model), takes attack=


# ----------------------------------------------------------------------------
# where a conv layer's channel lives: its conv output, the batch norm after it, the ReLU after that
# ----------------------------------------------------------------------------
def sites(model: nn.Module, layer: str, x: torch.Tensor) -> dict[str, str]:
    """``{"conv", "bn", "act"}`` → the module path of each place channel c of conv ``layer`` can be
    read, found by tracing one forward pass on ``x[:1]``: the BatchNorm whose input is the conv's
    output, and the ReLU whose input is that BatchNorm's output (or the conv's, where no BN is
    between them). A missing BN falls back to the conv,
    a missing ReLU (a residual sum comes first) to the BN, and so does a module the forward pass calls
    more than once (torchvision's ResNet blocks share one ReLU), since its hook would see two layers."""
    check_model(model)
    conv = get_layer(model, layer)
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(f"layer={layer!r} is a {type(conv).__name__}; neuron rankings score the output "
                         "channels of a conv layer (e.g. 'conv1')")
    path = {m: n for n, m in model.named_modules()}
    seen: dict[str, str] = {}
    held: dict[str, torch.Tensor] = {}          # the outputs themselves, kept alive: compared with `is`

    calls: dict[str, int] = {}

    def hook(m, inp, out):
        calls[path[m]] = calls.get(path[m], 0) + 1
        if m is conv and "conv" not in held:
            held["conv"] = out
        elif isinstance(m, nn.BatchNorm2d) and inp and inp[0] is held.get("conv") and "bn" not in seen:
            seen["bn"], held["bn"] = path[m], out
        elif (isinstance(m, nn.ReLU) and inp and "act" not in seen
              and inp[0] is held.get("bn", held.get("conv"))):     # after the BN, or the conv if none
            seen["act"] = path[m]
    handles = []
    for m in model.modules():
        if m is conv or isinstance(m, (nn.BatchNorm2d, nn.ReLU)):
            handles.append(m.register_forward_hook(hook))
    try:
        with frozen(model), torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    once = {k: v for k, v in seen.items() if calls.get(v, 0) == 1}   # a module run twice (torchvision's
    out = {"conv": path[conv]}                                        # shared ReLU) is no site of one layer
    out["bn"] = once.get("bn", out["conv"])
    out["act"] = out["bn"] if "bn" in seen and "bn" not in once else once.get("act", out["bn"])
    return out


def _capture_site(model, module_path, x, *, batch_size, grad_loss=None):
    """Per batch, the output of ``module_path`` (and, with ``grad_loss(logits, idx)``, its gradient)."""
    mod = get_layer(model, module_path)
    for i, xb in enumerate(batches(x, batch_size=batch_size)):
        st = {}
        h = mod.register_forward_hook(lambda m, a, o: st.__setitem__("a", o))
        try:
            if grad_loss is None:
                with torch.no_grad():
                    model(xb)
                yield i, st["a"].float(), None
            else:
                with torch.enable_grad():
                    logits = model(xb.detach().requires_grad_(True))   # a graph through frozen weights
                    g, = torch.autograd.grad(grad_loss(logits, i), st["a"])
                yield i, st["a"].detach().float(), g.float()
        finally:
            h.remove()


# ----------------------------------------------------------------------------
# the methods: each (model, layer, x, y, x_adv, site paths, seed, batch_size) -> (scores [C], note)
# ----------------------------------------------------------------------------
def _fragile(model, layer, x, y, xa, st, seed, bs):
    base = _metrics.hits(model, x, y, batch_size=bs, amp=False).double().mean().item() * 100
    acc = _frag.kernel_dropout_accuracy(model, x, y, layer, amp=False)
    return base - acc.double(), "clean accuracy lost with the kernel dropped (conv output zeroed)"


def _margin_grads(model, path, x, bs):
    """Δ carried over to a conv layer (Suri & Evans eq. 2 linearised): per image and channel, the
    smallest |uniform shift of the channel| that makes another class overtake the predicted one."""
    out = []
    for xb in batches(x, batch_size=bs):
        mod = get_layer(model, path)
        st = {}
        h = mod.register_forward_hook(lambda m, a, o: st.__setitem__("a", o))
        try:
            with torch.enable_grad():
                logits = model(xb.detach().requires_grad_(True))       # a graph through frozen weights
                a = st["a"]
                p = logits.argmax(1)
                best = torch.full((xb.shape[0], a.shape[1]), math.inf, dtype=torch.float64, device=xb.device)
                for j in range(logits.shape[1]):
                    other = p != j
                    if not other.any():
                        continue
                    gap = (logits.gather(1, p[:, None])[:, 0] - logits[:, j])
                    g, = torch.autograd.grad(gap.sum(), a, retain_graph=True)
                    slope = g.double().flatten(2).sum(2).abs()            # ∂gap/∂(uniform shift of c)
                    d = gap.detach().double()[:, None] / slope.clamp_min(1e-30)
                    d = torch.where(other[:, None] & (slope > 0), d, torch.full_like(d, math.inf))
                    best = torch.minimum(best, d)
        finally:
            h.remove()
        out.append(best.cpu())
    return torch.cat(out)


def _delta(model, layer, x, y, xa, st, seed, bs):
    d = _margin_grads(model, st["bn"], x, bs)
    mean = _sens.mean_sensitivity(d.float()).double()
    return -mean.nan_to_num(math.inf), ("Δ carried over by linearising the margin at the channel's map "
                                        "after batch norm; −mean |Δ| (low Δ = sensitive = important)")


def _sigma(model, layer, x, y, xa, st, seed, bs):
    s = _sens.layer_sensitivity(model, x, xa, [st["act"]], batch_size=bs)[st["act"]]["sigma"]
    return s.double().cpu(), "σ after the ReLU"


def _dominant_(model, layer, x, y, xa, st, seed, bs):
    diff = _dominant.filter_differences(model, [st["act"]], x, xa, batch_size=bs)[st["act"]]
    f = _dominant.frequency(_dominant.top_filters(diff, 0.1), diff.shape[1])
    return f.double().cpu(), "times among a pair's top 10% filters (counts: ties)"


def _toggle(model, layer, x, y, xa, st, seed, bs):
    r = _ranking.rank_neurons(model, xa, [st["conv"]], aggregate="max", batch_size=bs)
    s = r.score[st["conv"]]
    return s.flatten(1).amax(1).double().cpu(), "largest neural-ranking score over the channel's positions"


def _random(model, layer, x, y, xa, st, seed, bs):
    c = get_layer(model, layer).out_channels
    return torch.rand(c, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), ""


def _weight_l1(model, layer, x, y, xa, st, seed, bs):
    w = get_layer(model, layer).weight.detach()
    return w.abs().flatten(1).sum(1).double().cpu(), "L1 norm of the kernel"


def _bn_gamma(model, layer, x, y, xa, st, seed, bs):
    bn = get_layer(model, st["bn"])
    if not isinstance(bn, nn.BatchNorm2d) or bn.weight is None:
        raise ValueError(f"method='bn_gamma' needs a batch norm with a scale after layer={layer!r}; "
                         f"its output goes to {st['bn']!r}")
    return bn.weight.detach().abs().double().cpu(), "|γ| of the batch norm after the conv"


def _mean_activation(model, layer, x, y, xa, st, seed, bs):
    tot = 0
    for _, a, _ in _capture_site(model, st["act"], x, batch_size=bs):
        tot = tot + a.double().mean((2, 3)).sum(0)
    return (tot / x.shape[0]).cpu(), "mean output after the ReLU"


def _apoz(model, layer, x, y, xa, st, seed, bs):
    if st["act"] == st["bn"]:
        raise ValueError(f"method='apoz' needs a ReLU right after layer={layer!r}'s batch norm; "
                         "none was found (a residual sum comes first)")
    tot = 0
    for _, a, _ in _capture_site(model, st["act"], x, batch_size=bs):
        tot = tot + (a > 0).double().mean((2, 3)).sum(0)
    return (tot / x.shape[0]).cpu(), "share of non-zero outputs after the ReLU (1 − APoZ)"


def _taylor_on(model, path, x, y, bs):
    tot = 0
    ys = list(batches(y, batch_size=bs))
    loss = lambda logits, i: F.cross_entropy(logits.float(), ys[i], reduction="sum")
    for _, a, g in _capture_site(model, path, x, batch_size=bs, grad_loss=loss):
        tot = tot + (a * g).double().mean((2, 3)).abs().sum(0)
    return (tot / x.shape[0]).cpu()


def _taylor(model, layer, x, y, xa, st, seed, bs):
    return _taylor_on(model, st["bn"], x, y, bs), "|a·∂L/∂a| per image, a after batch norm, clean loss"


def _taylor_adv(model, layer, x, y, xa, st, seed, bs):
    return _taylor_on(model, st["bn"], xa, y, bs), "|a·∂L/∂a| per image, a after batch norm, attacked loss"


def _loo_clean(model, layer, x, y, xa, st, seed, bs):
    base, acc = ablation_accuracy(model, x, y, st["bn"], attack=None, batch_size=bs)
    return base - acc, "clean accuracy lost with the channel zeroed after batch norm"


def _loo(model, layer, x, y, xa, st, seed, bs, attack=None):
    base, acc = ablation_accuracy(model, x, y, st["bn"], attack=attack, batch_size=bs)
    return base - acc, "robust accuracy lost with the channel zeroed after batch norm, attack re-run"


def _loo_loss(model, layer, x, y, xa, st, seed, bs, attack=None):
    base, loss = ablation_accuracy(model, x, y, st["bn"], attack=attack, batch_size=bs, measure="loss")
    return loss - base, "adversarial cross-entropy gained with the channel zeroed after batch norm, attack re-run"


METHODS: dict[str, Method] = {
    "fragile": Method(_fragile, "conv", False, ("conv1",)),
    "delta": Method(_delta, "bn", False, ()),
    "sigma": Method(_sigma, "act", True, ("*",)),
    "dominant": Method(_dominant_, "act", True, ("*",)),
    "toggle": Method(_toggle, "conv", True, ("*",), "fgsm"),
    "random": Method(_random, "conv", False),
    "weight_l1": Method(_weight_l1, "conv", False),
    "bn_gamma": Method(_bn_gamma, "bn", False),
    "mean_activation": Method(_mean_activation, "act", False),
    "apoz": Method(_apoz, "act", False),
    "taylor": Method(_taylor, "bn", False),
    "taylor_adv": Method(_taylor_adv, "bn", True),
    "loo": Method(_loo, "bn", True, reattacks=True),
    "loo_loss": Method(_loo_loss, "bn", True, reattacks=True),
    "loo_clean": Method(_loo_clean, "bn", False),
}
PAPER_METHODS = ("fragile", "delta", "sigma", "dominant", "toggle")
BASELINES = ("random", "weight_l1", "bn_gamma", "mean_activation", "apoz", "taylor", "taylor_adv")
ORACLES = ("loo", "loo_loss", "loo_clean")


def default_attack(kind: str = "pgd", eps: float = 8 / 255) -> Attack:
    """The attack a method uses when none is given: L∞ PGD-10 (ε = 8/255), or FGSM for ``toggle``
    (Prattico 2022 ranks under FGSM)."""
    return FGSM(eps) if kind == "fgsm" else PGD(eps, steps=10)


def rank(method: str, model: nn.Module, layer: str, x: torch.Tensor, y: torch.Tensor, *,
         attack: Attack | None = None, seed: int = 0, batch_size: int = 256) -> NeuronScores:
    """Score every output channel of conv ``layer`` by ``method`` (see ``METHODS`` and the module
    docstring) on images ``x`` with labels ``y``; methods that need adversarial examples make them
    with ``attack`` (default: ``default_attack``) against the model as it is. The model is left as it
    was (eval mode inside, weights untouched)."""
    check_choice("method", method, METHODS)
    check_model(model)
    x = check_input(model, x)
    y = check_labels(y, x.shape[0], num_classes(model)).to(x.device)
    seed = check_int("seed", seed, low=0)
    batch_size = check_int("batch_size", batch_size, low=1)
    if attack is not None and not isinstance(attack, Attack):
        raise ValueError(f"attack={attack!r} must be an attack object of nrlib.attacks, e.g. attacks.PGD(8/255)")
    m = METHODS[method]
    st = sites(model, layer, x)
    t0 = time.perf_counter()
    atk = (attack or default_attack(m.default_attack)) if m.needs_attack else None   # unused: not recorded
    with frozen(model):
        xa = atk(model, x, y) if (m.needs_attack and not m.reattacks) else None
        if m.reattacks:
            scores, note = m.fn(model, layer, x, y, None, st, seed, batch_size, attack=atk)
        else:
            scores, note = m.fn(model, layer, x, y, xa, st, seed, batch_size)
    if m.site != "conv" and st[m.site] == st["bn" if m.site == "act" else "conv"]:
        note += f" (no {m.site} site after {layer}: read at {st[m.site]})"
    fin = scores[torch.isfinite(scores)]
    if method != "random" and fin.numel() > 1 and bool((fin == fin[0]).all()):
        note += ("; every channel scores the same, so the order is only the seeded tie-break"
                 + (" (the attack already leaves the model at 0% robust accuracy?)" if method == "loo" else ""))
    native = "*" in m.native or layer in m.native
    return NeuronScores(method, layer, scores.double().cpu(), native, m.site,
                        None if atk is None else atk.describe(), seed, x.shape[0],
                        time.perf_counter() - t0, note, {"sites": st})


def combine(parts) -> NeuronScores:
    """One ranking from rankings of the same method and layer made on disjoint sets of images (for
    instance the two halves of a split-half reliability): the scores averaged, each part weighted by
    its number of images, the seconds summed. The parts may differ in their attack's seed; the
    result records the first part's attack and seed."""
    parts = list(parts)
    if not parts or not all(isinstance(p, NeuronScores) for p in parts):
        raise ValueError("parts must be a non-empty list of the NeuronScores of rank(...)")
    a = parts[0]
    odd = [(p.method, p.layer, len(p)) for p in parts if (p.method, p.layer, len(p)) != (a.method, a.layer, len(a))]
    if odd:
        raise ValueError(f"parts must rank the same layer by the same method: {a.method!r} at {a.layer!r} "
                         f"({len(a)} channels), but also {odd}")
    n = sum(p.n_images for p in parts)
    if n <= 0:
        raise ValueError("parts must hold rankings made on at least one image")
    scores = sum(p.scores * p.n_images for p in parts) / n
    return NeuronScores(a.method, a.layer, scores, a.native, a.site, a.attack, a.seed, n,
                        sum(p.seconds for p in parts), a.note, a.meta)


# ----------------------------------------------------------------------------
# vectorised ablation: K channels removed at once, the attack re-run against every ablated model
# ----------------------------------------------------------------------------
class _Ablated(nn.Module):
    """``model`` run on K copies of a batch stacked along the batch axis, copy k with the output
    channels ``masks[k]`` (bool [K, C]) of module ``path`` replaced: scaled by ``beta`` and, where
    ``fill`` ([C] or None) is given, shifted by (1 − β)·fill — β = 0 with no fill removes the
    channel (zero-ablation), with fill = the channel's mean it is mean-ablation. A batch that is not
    K copies is an error, so an attack must see the whole stacked batch at once."""

    def __init__(self, model, path, masks, beta=0.0, fill=None):
        super().__init__()
        self.model, self.path, self.masks, self.beta, self.fill = model, path, masks, beta, fill

    def forward(self, xb):
        k = self.masks.shape[0]
        if xb.shape[0] % k:
            raise RuntimeError(f"the ablated batch holds {xb.shape[0]} images, not a multiple of the {k} copies")
        def hook(mod, a, o):
            tail = [1] * (o.dim() - 2)
            cut = self.masks.to(o.dtype).view(k, 1, -1, *tail) * (1 - self.beta)   # 1 − β where masked
            out = o.reshape(k, o.shape[0] // k, *o.shape[1:]) * (1 - cut)
            if self.fill is not None:
                out = out + cut * self.fill.to(o.dtype).view(1, 1, -1, *tail)
            return out.reshape_as(o)
        h = get_layer(self.model, self.path).register_forward_hook(hook)
        try:
            return self.model(xb)
        finally:
            h.remove()


ABLATIONS = ("zero", "mean")
MEASURES = ("accuracy", "loss")


def ablated(model: nn.Module, path: str, channels, *, beta: float = 0.0,
            means: torch.Tensor | None = None) -> nn.Module:
    """``model`` with the output ``channels`` of module ``path`` removed, as a module any attack
    can take (SPSA, C&W, …): zeroed, or with ``means`` ([C]) put in their place (mean-ablation),
    or kept at ``beta`` of their value (β-suppression, Zhang et al. 2021 §IV-B). The model's own
    weights are untouched: the change is a forward hook active only inside the returned module."""
    check_model(model)
    beta = check_fraction("beta", beta)
    c = _channels_of(model, path)
    dev = next(model.parameters()).device
    mask = _masks([channels], c, device=dev, name="channels")
    return _Ablated(model, path, mask, beta, _fill(means, c, path, dev)).eval()


def pruned(model: nn.Module, path: str, channels) -> nn.Module:
    """A copy of ``model`` with the output ``channels`` of module ``path`` removed for good: a
    forward hook on the copy zeroes them in training as at test time, so the copy can be fine-tuned
    (prune, then a fixed fine-tuning budget: chapter 6) and its copies (``copy.deepcopy``, as
    ``nrlib.dominant.finetune`` makes) keep the cut. ``model`` itself is untouched."""
    check_model(model)
    c = _channels_of(model, path)
    m = copy.deepcopy(model)
    keep = ~_masks([channels], c, device=next(m.parameters()).device, name="channels")[0]

    def hook(mod, a, o):
        return o * keep.to(o.dtype).view(1, -1, *([1] * (o.dim() - 2)))
    get_layer(m, path).register_forward_hook(hook)
    return m


def _channels_of(model: nn.Module, path: str) -> int:
    """How many output channels module ``path`` has (a conv or a batch norm), or a clear error."""
    mod = get_layer(model, path)
    c = layer_channels(mod)
    if c is None:
        raise ValueError(f"path={path!r} must name a layer that states its channels (a conv or a batch "
                         f"norm), got {type(mod).__name__}")
    return c


def _masks(sets, c: int, *, device, name: str = "sets[{}]") -> torch.Tensor:
    """bool [len(sets), c]: row i marks the channels of ``sets[i]``, checked to lie in [0, c) (an error
    names the set as ``name.format(i)``)."""
    masks = torch.zeros(len(sets), c, dtype=torch.bool, device=device)
    for i, s in enumerate(sets):
        masks[i, check_indices(name.format(i), s, c)] = True
    return masks


def _fill(means, c: int, path: str, device):
    """``means`` checked to hold one value per channel of ``path`` and moved to ``device`` (None: none)."""
    if means is None:
        return None
    if tuple(means.shape) != (c,):
        raise ValueError(f"means must hold one value per channel of {path!r} ({c}), got shape {tuple(means.shape)}")
    return means.to(device)


def channel_means(model: nn.Module, x: torch.Tensor, path: str, *, batch_size: int = 256) -> torch.Tensor:
    """The mean of each output channel of module ``path`` over the images ``x`` and the positions
    (what mean-ablation puts in a removed channel's place)."""
    x = check_input(model, x)
    total, count = 0.0, 0
    with frozen(model):
        for _, a, _ in _capture_site(model, path, x, batch_size=batch_size):
            total = total + a.double().transpose(0, 1).reshape(a.shape[1], -1).sum(1)
            count += a[:, 0].numel()
    return (total / count).float()


def ablation_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, path: str, sets=None, *,
                      attack: Attack | None = None, batch_size: int = 256, chunk: int | None = None,
                      per_image: bool = False, how: str = "zero", beta: float = 0.0,
                      means: torch.Tensor | None = None, measure: str = "accuracy"):
    """Accuracy (percent) of the model with each set of channels in ``sets`` (default: each channel
    alone) removed at module ``path`` — clean, or under ``attack`` run afresh against each modified
    model (not transferred). ``how``: ``"zero"`` sets the channels to 0, ``"mean"`` to their mean
    (``means``, default ``channel_means`` on ``x``); ``beta`` in [0, 1] keeps β of the channel
    instead (β-suppression, Zhang et al. 2021 §IV-B: β·a + (1 − β)·fill; β = 0 removes it). Returns
    ``(base, acc)``: the intact model's accuracy and one accuracy per set (float64);
    ``per_image=True`` returns per-image hits instead ([N] and [S, N] bool). ``measure="loss"``
    gives the cross-entropy instead of accuracy (the mean, or per image as float64): a continuous
    outcome, far less noisy than 0/1 hits when one channel moves few predictions (the loss change is
    Molchanov et al. 2019's oracle of a unit's importance). The sets go ``chunk`` at a time
    (default: so that chunk·N ≤ ``batch_size``·8) as copies of the images in one batch."""
    x = check_input(model, x)
    y = check_labels(y, x.shape[0], num_classes(model)).to(x.device)
    check_choice("how", how, ABLATIONS)
    check_choice("measure", measure, MEASURES)
    beta = check_fraction("beta", beta)
    if attack is not None and not isinstance(attack, Attack):
        raise ValueError(f"attack={attack!r} must be an attack object of nrlib.attacks, e.g. attacks.PGD(8/255)")
    mod = get_layer(model, path)
    with torch.no_grad():
        c = _frag._n_channels(model, path, mod, x)
    if sets is None:
        sets = [[i] for i in range(c)]
    masks = _masks(sets, c, device=x.device)
    fill = None
    if how == "mean":
        fill = _fill(channel_means(model, x, path, batch_size=batch_size) if means is None else means,
                     c, path, x.device)
    n = x.shape[0]
    chunk = chunk or max(1, (batch_size * 8) // n)
    hits = []
    with frozen(model):
        base = _outcome_under(model, x, y, attack, measure)
        for i in range(0, len(sets), chunk):
            mk = masks[i:i + chunk]
            k = mk.shape[0]
            net = _Ablated(model, path, mk, beta, fill)
            xr, yr = x.repeat(k, *([1] * (x.dim() - 1))), y.repeat(k)
            hits.append(_outcome_under(net, xr, yr, attack, measure).view(k, n))
    hits = torch.cat(hits)
    if per_image:
        return base.cpu(), hits.cpu()
    scale = 100 if measure == "accuracy" else 1
    return base.double().mean().item() * scale, hits.double().mean(1).cpu() * scale


def _outcome_under(net, x, y, attack, measure="accuracy"):
    if attack is not None:       # one batch: an ablated net must see all its stacked copies at once
        x = attack.replace(batch_size=x.shape[0])(net, x, y)
    if measure == "accuracy":
        return _metrics.hits(net, x, y, batch_size=x.shape[0], amp=False)
    with torch.no_grad():
        return F.cross_entropy(net(x).double(), y, reduction="none")


# ----------------------------------------------------------------------------
# how two rankings of the same channels agree
# ----------------------------------------------------------------------------
def rbo(a, b, p: float = 0.9) -> float:
    """Rank-biased overlap, extrapolated (Webber, Moffat & Zobel 2010, eq. 32), of two orderings of
    the same items (most important first): RBO_ext = (X_k/k)·p^k + ((1−p)/p)·Σ_{d≤k} (X_d/d)·p^d,
    X_d the size of the overlap of the two top-d prefixes and k the lists' length. 1 for identical
    orders; ``p`` sets how top-heavy it is (the first d ranks carry about 1 − p^d of the weight)."""
    a, b = [int(v) for v in a], [int(v) for v in b]
    if len(a) != len(b) or sorted(a) != sorted(b) or not a:
        raise ValueError(f"a and b must order the same items (got {len(a)} and {len(b)} items)")
    if not (isinstance(p, (int, float)) and 0 < p < 1):
        raise ValueError(f"p={p!r} must lie in (0, 1): the persistence of the rank-biased overlap")
    k = len(a)
    seen_a, seen_b, x, total = set(), set(), 0, 0.0
    for d, (u, v) in enumerate(zip(a, b), 1):
        x += (u in seen_b) + (v in seen_a) + (u == v)
        seen_a.add(u)
        seen_b.add(v)
        total += x / d * p ** d
    return float(x / k * p ** k + (1 - p) / p * total)


def topk_overlap(a, b, k: int) -> dict:
    """The top-``k`` sets of two orderings of n items: their overlap (count), Jaccard index, the
    overlap two random k-sets share on average (k²/n) and the probability that two random k-sets
    share at least as many (hypergeometric, ``scipy.stats.hypergeom``)."""
    a, b = [int(v) for v in a], [int(v) for v in b]
    n = len(a)
    k = check_int("k", k, low=1, high=n)
    if len(b) != n:
        raise ValueError(f"a and b must order the same {n} items, got {len(b)} in b")
    inter = len(set(a[:k]) & set(b[:k]))
    return {"overlap": inter, "jaccard": inter / (2 * k - inter), "expected": k * k / n,
            "p": float(_st.hypergeom(n, k, k).sf(inter - 1))}


def agreement(a: NeuronScores, b, *, k: int | None = None, p: float = 0.9) -> dict:
    """How two rankings of the same layer's channels agree: Spearman's ρ (and ``spearman_ci``, its
    Fisher-z interval over the channels, ``stats.spearman_interval``) and Kendall's τ-b of the
    scores (τ-b handles the ties of count scores such as ``dominant``), the top-``k`` overlap
    (default: 10% of the channels) against chance (``topk_overlap``), and ``rbo`` of the orders.
    ``b`` may also be a ranking made elsewhere — one score per channel, higher = more important
    (a chapter's own, per-class or per-position, measurement reduced to channels)."""
    if isinstance(a, NeuronScores) and not isinstance(b, NeuronScores):
        v = torch.as_tensor(np.asarray(b, dtype=np.float64))
        if v.shape != a.scores.shape:
            raise ValueError(f"b must hold one score per channel of {a.layer!r} ({len(a)}), "
                             f"got shape {tuple(v.shape)}")
        b = NeuronScores("given", a.layer, v, False, "", None, a.seed, 0, 0.0)
    for name, s in (("a", a), ("b", b)):
        if not isinstance(s, NeuronScores):
            raise ValueError(f"{name} must be the NeuronScores of rank(...), got {type(s).__name__}")
    if len(a) != len(b) or a.layer != b.layer:
        raise ValueError(f"a and b must score the same layer's channels: {a.layer!r} ({len(a)}) and "
                         f"{b.layer!r} ({len(b)})")
    k = max(1, round(0.1 * len(a))) if k is None else k
    x, y = a.scores.nan_to_num(-math.inf).numpy(), b.scores.nan_to_num(-math.inf).numpy()
    fin = np.isfinite(x) & np.isfinite(y)
    ok = fin.sum() > 2 and np.ptp(x[fin]) > 0 and np.ptp(y[fin]) > 0    # a constant ranking: no ρ
    rho = _st.spearmanr(x[fin], y[fin]).statistic if ok else math.nan
    tau = _st.kendalltau(x[fin], y[fin], variant="b").statistic if ok else math.nan
    ci = stats.spearman_interval(float(rho), int(fin.sum())) if ok and fin.sum() >= 4 else None
    return {"spearman": float(rho), "spearman_ci": ci, "kendall_b": float(tau),
            "rbo": rbo(a.order, b.order, p),
            **{f"top_{q}": v for q, v in topk_overlap(a.order, b.order, k).items()}, "k": k}
