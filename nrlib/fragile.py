"""Fragile and null kernels of the first convolutional layer (paper 1).

Pravin, Martino, Nicosia & Ojha 2021, "Adversarial robustness in deep
learning: attacks on fragile neurons" (ICANN 2021), §3.3 "Fragile and Null
Kernels Identification": the kernels (output channels) of a layer are
"dropped out systematically one-by-one" and the model's test accuracy is
measured with each one gone (their Fig. 1, and Fig. 4 across training
stages). Kernels whose removal costs the most accuracy are the fragile ones,
those whose removal hardly matters the null ones.

What it holds, in the paper's order:

* ``kernel_dropout_accuracy`` (§3.3, Figs. 1 and 4) — vectorised: each batch
  of images runs through the layers before ``layer`` once; a forward hook on
  ``layer`` repeats its output K times along the batch axis with copy k's
  channel k zeroed, so the rest of the network scores K dropped kernels in one
  pass (K·N samples). Measured by the book's benchmarks, ``python -m
  nrbook.bench`` (section c). ``kernel_dropout_accuracy_naive`` is the
  reference: a Python loop that zeroes one kernel with
  ``nrlib.hooks.zero_channels`` and re-runs the whole model in fp32 each time.
* ``split_kernels`` (§3.3) — the fragile set F (dropout accuracy below the
  mean line) and the null set N (at or above it).
* ``adversarial_targeting`` (§4.3, Algorithm 1; Figs. 2–3) — for each ε, the
  share of examples whose adversarial perturbation moves the fragile kernels'
  outputs more, on average, than the null kernels'.
* Gavish–Donoho filtering of the null kernels (§4.1, eqs. 3–7): ``gd_lambda``,
  ``gd_omega``, ``gd_threshold``, ``svd_filter``; amplification of the fragile
  kernels (§4.2, eqs. 8–9): ``amplification``; the whole edit on a copy of the
  model: ``filter_kernels``; and the search for the noise level σ that the
  paper leaves to "a systematic search": ``sigma_grid``, ``sigma_search``.
  The equations lost from the paper's text are the book's reconstruction,
  stated in chapter 1: Gavish & Donoho 2014, eqs. (4), (5) and (11).

Dropping a kernel means zeroing that channel of the layer's output; for a
convolution without bias (the ResNets' ``conv1``) this is exactly zeroing the
kernel's weights, and the batch-norm that follows then sees a constant 0.
"""
from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .attacks import FGSM, Attack
from .precision import autocast
from .hooks import capture, get_layer, layer_channels, zero_channels
from .metrics import accuracy, hits
from .models import frozen
from .utils import (batches, check_bool, check_choice, check_eps, check_indices, check_input, check_int,
                    check_labels, check_number, num_classes)

# Samples (images × kernels) per forward pass of the vectorised sweep. On a GPU
# large passes keep the tensor cores busy (a bf16 ResNet-18 at 16k 32×32 images
# needs a few GB); on the CPU the work is compute-bound, so a moderate pass
# size only bounds memory.
SAMPLES_PER_PASS = {"cuda": 16384, "cpu": 1024}


def _n_channels(model: nn.Module, layer_name: str, module: nn.Module, x: torch.Tensor) -> int:
    """Output channels of ``module`` (read from the layer, else probed with one image)."""
    width = layer_channels(module)
    if width is not None:
        return width
    with torch.no_grad(), frozen(model), capture(model, layer_name) as store:
        model(x[:1])
    return int(store[layer_name][0].shape[1])


def _validate(model, x, y, layer, kernels, progress):
    check_input(model, x)
    y = check_labels(y, x.shape[0], num_classes(model)).to(x.device)
    check_bool("progress", progress)
    module = get_layer(model, layer)  # ValueError naming the layer and the model's layers
    n_channels = _n_channels(model, layer, module, x)
    idx = list(range(n_channels)) if kernels is None else check_indices("kernels", kernels, n_channels)
    return y, module, idx


def _repeat_point(model: nn.Module, module: nn.Module) -> nn.Module | None:
    """Where the batch can be repeated K times: ``None`` for a layer that is a
    direct child of the model (repeat its output), else the outermost module
    around it that is an element of an ``nn.Sequential`` — for a ResNet layer
    such as ``l2b1c1`` its residual block, whose input is the only stream into
    the block (repeating at the layer alone would leave the skip connection
    with N samples). The models' top-level forward chains their children."""
    path = next(name for name, m in model.named_modules() if m is module)
    parts = path.split(".")
    if len(parts) == 1:
        return None
    for depth in range(1, len(parts) + 1):
        parent = model.get_submodule(".".join(parts[:depth - 1]))
        if isinstance(parent, nn.Sequential) and depth > 1:
            return model.get_submodule(".".join(parts[:depth]))
    top = model.get_submodule(parts[0])
    if isinstance(top, (nn.ModuleList, nn.ModuleDict)):
        raise ValueError(f"cannot find where the stream into layer {path!r} can be repeated")
    return top


def _percent(correct: torch.Tensor, n: int) -> torch.Tensor:
    """Percent correct, rounded exactly as ``metrics.accuracy`` rounds it (a
    float32 mean, then ×100 in double), so the two sweeps compare with ==."""
    return 100.0 * (correct.float() / n).double()


@torch.no_grad()
def kernel_dropout_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, layer: str = "conv1",
                            kernels=None, *, batch_size: int | None = None, chunk: int | None = None,
                            amp: bool | None = None, progress: bool = False, per_image: bool = False):
    """Test accuracy (percent) with each kernel of ``layer`` dropped, one at a
    time (Pravin et al. 2021, §3.3; their Fig. 1).

    Returns a float64 CPU tensor with one accuracy per kernel: all output
    channels of ``layer`` (``kernels=None``) or those listed in ``kernels``,
    in that order. ``per_image=True`` returns ``(accuracies, share)`` where
    ``share[n]`` is the fraction of those kernels whose drop leaves image n
    correctly classified (float64, CPU): the mean of ``share`` × 100 is the
    mean of the accuracies (Fig. 1's red line), so a difference of two mean
    lines on the same images can be bootstrapped over images.

    Vectorised: a forward hook on ``layer`` returns its output repeated K times
    along the batch axis, copy k with channel ``kernels[k]`` zeroed; the layers
    after it then process K·N samples in one pass and the logits are read as
    K×N. (For a layer inside a residual block the batch is repeated where it
    enters the block, so that the skip connection carries K·N samples too.)
    ``chunk`` (K, kernels per pass) and ``batch_size`` (N, images per pass)
    bound the memory; by default all kernels go in one chunk and N is chosen
    so that K·N ≈ ``SAMPLES_PER_PASS`` (16,384 on a GPU, 1,024 on the CPU).
    The model is frozen (eval mode, no weight gradients) and left as it was;
    on CUDA the passes run under bf16 autocast (``amp``, as in
    ``nrlib.attacks``) with channels_last inputs, so a few predictions near a
    tie may differ from the fp32 ``kernel_dropout_accuracy_naive``; on the CPU
    (fp32 both) they agree exactly in the tests and in ``nrbook.bench``.
    """
    y, module, idx = _validate(model, x, y, layer, kernels, progress)
    check_bool("per_image", per_image)
    n, dev = x.shape[0], x.device
    budget = SAMPLES_PER_PASS.get(dev.type, SAMPLES_PER_PASS["cpu"])
    if chunk is not None:
        chunk = check_int("chunk", chunk, low=1)
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, low=1)
    check_bool("amp", amp, allow_none=True)
    if not idx:
        empty = torch.zeros(0, dtype=torch.float64)
        return (empty, torch.zeros(n, dtype=torch.float64)) if per_image else empty
    if chunk is None:
        chunk = len(idx) if batch_size is None else max(1, budget // batch_size)
    chunk = min(chunk, len(idx))
    if batch_size is None:
        batch_size = max(1, budget // chunk)
    batch_size = min(batch_size, n)

    entry = _repeat_point(model, module)
    state: dict = {}

    def repeat(_m, args):
        # K copies of the stream entering the block that holds ``layer``, so the
        # block's skip connection sees the same K·N batch as the layer does
        xin = args[0]
        return (xin.unsqueeze(0).expand(state["k"], *xin.shape).reshape(-1, *xin.shape[1:]),
                *args[1:])

    def hook(_m, _i, out):
        # copy k = the layer's output with channel ks[k] zeroed: one multiply by
        # a K×C mask of ones with a single 0 per row (× 0 as zero_channels does)
        ks = state["ks"]
        k, c = len(ks), out.shape[1]
        mask = torch.ones(k, c, device=out.device, dtype=out.dtype)
        mask[torch.arange(k, device=out.device), ks] = 0
        mask = mask.view(k, 1, c, *([1] * (out.dim() - 2)))
        copies = out.unsqueeze(0) if entry is None else out.unflatten(0, (k, -1))
        rep = (copies * mask).flatten(0, 1)
        return rep.contiguous(memory_format=torch.channels_last) if rep.dim() == 4 else rep

    correct = torch.zeros(len(idx), dtype=torch.long, device=dev)
    by_image = torch.zeros(n, dtype=torch.long, device=dev)
    idx_t = torch.tensor(idx, dtype=torch.long, device=dev)
    starts = [(i, j) for i in range(0, n, batch_size) for j in range(0, len(idx), chunk)]
    with frozen(model):
        handles = [module.register_forward_hook(hook)]
        if entry is not None:
            handles.append(entry.register_forward_pre_hook(repeat))
        try:
            for i, j in tqdm(starts, desc=f"dropout {layer}", disable=not progress, leave=False):
                xb, yb = x[i:i + batch_size], y[i:i + batch_size]
                if xb.dim() == 4:
                    # channels_last (NHWC): what cuDNN's tensor-core kernels and oneDNN want
                    xb = xb.contiguous(memory_format=torch.channels_last)
                ks = idx_t[j:j + chunk]
                state["ks"], state["k"] = ks, len(ks)
                with autocast(dev, amp):
                    logits = model(xb)
                hit = logits.argmax(1).view(len(ks), xb.shape[0]) == yb.view(1, -1)
                correct[j:j + len(ks)] += hit.sum(1)
                by_image[i:i + xb.shape[0]] += hit.sum(0)
        finally:
            for h in handles:
                h.remove()
    acc = _percent(correct.cpu(), n)
    return (acc, by_image.cpu().double() / len(idx)) if per_image else acc


def kernel_dropout_accuracy_naive(model: nn.Module, x: torch.Tensor, y: torch.Tensor, layer: str = "conv1",
                                  kernels=None, *, batch_size: int = 1024,
                                  progress: bool = False) -> torch.Tensor:
    """The reference sweep of ``kernel_dropout_accuracy`` (Pravin et al. 2021,
    §3.3): for each kernel, zero it with ``nrlib.hooks.zero_channels`` and run
    the whole model over ``x`` again with ``nrlib.metrics.accuracy`` (fp32, in
    batches of ``batch_size``). Returns a float64 CPU tensor of accuracies in
    percent, one per kernel."""
    y, _module, idx = _validate(model, x, y, layer, kernels, progress)
    batch_size = check_int("batch_size", batch_size, low=1)
    accs = []
    for k in tqdm(idx, desc=f"dropout {layer} (naive)", disable=not progress, leave=False):
        with zero_channels(model, layer, [k]):
            accs.append(accuracy(model, x, y, batch_size=batch_size, amp=False))
    return torch.tensor(accs, dtype=torch.float64)


# ----------------------------------------------------------------------------
# §3.3: the fragile and the null set
# ----------------------------------------------------------------------------
def _accuracy_vector(acc, name: str = "acc") -> np.ndarray:
    a = acc.detach().cpu().numpy() if isinstance(acc, torch.Tensor) else np.asarray(acc, dtype=float)
    if a.ndim != 1 or a.size < 2 or not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be a 1-D sequence of at least 2 finite accuracies (one per kernel), "
                         f"got shape {a.shape}" + ("" if a.size == 0 or np.all(np.isfinite(a)) else " with NaN/inf"))
    return a.astype(float)


def split_kernels(acc, *, n_fragile: int | None = None) -> tuple[list[int], list[int]]:
    """The fragile and the null kernels of a layer from its dropout accuracies
    (Pravin et al. 2021, §3.3, Fig. 1): ``(fragile, null)``, two sorted lists
    of kernel indices that together hold every kernel once.

    By default (the paper's rule) a kernel is **fragile** when the accuracy
    with it dropped is below the mean over all kernels (the red line of
    Fig. 1), and **null** otherwise; the paper draws null kernels "above the
    mean" and says nothing of a kernel exactly on it, which we count as null.
    ``n_fragile=k`` calls the k kernels with the lowest dropout accuracy
    fragile instead (ties broken by the lower index), for the chapter's slider.
    """
    a = _accuracy_vector(acc)
    if n_fragile is None:
        fragile = np.flatnonzero(a < a.mean())
    else:
        n_fragile = check_int("n_fragile", n_fragile, low=1, high=a.size - 1)
        fragile = np.sort(np.argsort(a, kind="stable")[:n_fragile])
    null = np.setdiff1d(np.arange(a.size), fragile)
    return [int(i) for i in fragile], [int(i) for i in null]


def _check_split(fragile, null, n_kernels: int) -> tuple[list[int], list[int]]:
    fragile = check_indices("fragile", fragile, n_kernels)
    null = check_indices("null", null, n_kernels)
    if not fragile and not null:
        raise ValueError(f"fragile={fragile} and null={null} are both empty; give the split of a layer of "
                         f"{n_kernels} kernels (split_kernels)")
    for nm, ids in (("fragile", fragile), ("null", null)):
        if len(set(ids)) != len(ids):
            raise ValueError(f"{nm}={ids} repeats a kernel; each kernel may appear once")
    both = sorted(set(fragile) & set(null))
    if both:
        raise ValueError(f"kernels {both} are in both fragile and null; the two sets must be disjoint")
    return fragile, null


def persistent_fragile(accs) -> list[int]:
    """The kernels that are fragile at every stage of training (Pravin et al.
    2021, Fig. 4, the red circles): the intersection of ``split_kernels``'s
    fragile sets over ``accs``, one dropout-accuracy vector per snapshot."""
    accs = list(accs.values()) if isinstance(accs, dict) else list(accs)
    if not accs:
        raise ValueError("accs is empty: give one dropout-accuracy vector per snapshot")
    sizes = {_accuracy_vector(a, f"accs[{i}]").size for i, a in enumerate(accs)}
    if len(sizes) != 1:
        raise ValueError(f"accs hold vectors of different lengths {sorted(sizes)}; every snapshot has the same kernels")
    common = set(split_kernels(accs[0])[0])
    for a in accs[1:]:
        common &= set(split_kernels(a)[0])
    return sorted(common)


def persistence_chance(sizes, n_kernels: int) -> np.ndarray:
    """The chance distribution of the number of kernels fragile at every snapshot (Fig. 4's red
    circles, Pravin et al. 2021 §5) if each snapshot's fragile set were drawn at random: ``sizes``
    holds the sets' sizes |F_t|, each a uniformly random subset of the ``n_kernels`` kernels,
    independent of the others. The intersection of the first two is hypergeometric; intersecting
    it with the next set is hypergeometric given its size, and so on (``scipy.stats.hypergeom``).
    Returns P(|F_1 ∩ … ∩ F_T| = j) for j = 0 … n_kernels; its mean is n_kernels·Π(|F_t|/n_kernels)."""
    from scipy.stats import hypergeom
    n_kernels = check_int("n_kernels", n_kernels, low=1)
    sizes = [check_int(f"sizes[{i}]", v, low=0, high=n_kernels) for i, v in enumerate(list(sizes))]
    if not sizes:
        raise ValueError("sizes is empty: give the size of each snapshot's fragile set")
    pmf = np.zeros(n_kernels + 1)
    pmf[sizes[0]] = 1.0
    j = np.arange(n_kernels + 1)
    for f in sizes[1:]:
        nxt = np.zeros_like(pmf)
        for m in np.flatnonzero(pmf):
            # |I ∩ F| for a fixed I of size m and F a random f-subset of n_kernels: hypergeometric
            nxt += pmf[m] * hypergeom.pmf(j, n_kernels, m, f)
        pmf = nxt
    return pmf


def persistence_test(observed: int, sizes, n_kernels: int) -> dict:
    """Observed persistent fragile kernels against chance (``persistence_chance``): ``expected``
    = n_kernels·Π(|F_t|/n_kernels), ``excess`` = observed − expected, and ``p`` = P(chance ≥
    observed), the one-sided p-value that the fragile sets overlap more than random sets of
    their sizes would."""
    pmf = persistence_chance(sizes, n_kernels)
    observed = check_int("observed", observed, low=0, high=min(list(sizes)))
    expected = float(n_kernels * np.prod([f / n_kernels for f in sizes]))
    return {"observed": observed, "expected": expected, "excess": observed - expected,
            "p": float(min(1.0, pmf[observed:].sum()))}


def training_influence(accs: dict) -> dict:
    """Fig. 4 of Pravin et al. 2021 for one model, from its dropout accuracies
    at each snapshot (``{fraction of training: accuracies}``, in training
    order): the fragile kernels and the mean-performance line at each
    snapshot, the kernels fragile at every one (``persistent``), the snapshot
    where the mean line peaks, and its rise from the first to the middle
    snapshot (``early_rise``) and from the middle to the last (``late_rise``),
    in accuracy points — the paper reads the line as rising "to a limit" on
    CIFAR-10 and rising then falling on MNIST; ``chance`` is the persistent count
    against random fragile sets of the same sizes (``persistence_test``)."""
    if not isinstance(accs, dict) or len(accs) < 2:
        raise ValueError("accs must map at least two snapshots (fractions of training) to dropout accuracies")
    snaps = sorted(accs)
    mean = {s: float(_accuracy_vector(accs[s], f"accs[{s}]").mean()) for s in snaps}
    out = {"fragile": {s: split_kernels(accs[s])[0] for s in snaps}, "mean": mean,
           "persistent": persistent_fragile([accs[s] for s in snaps]), "peak": max(snaps, key=mean.get)}
    out["chance"] = persistence_test(len(out["persistent"]), [len(out["fragile"][s]) for s in snaps],
                                     len(_accuracy_vector(accs[snaps[0]])))
    mid = snaps[len(snaps) // 2] if len(snaps) > 2 else snaps[-1]
    out["early_rise"] = mean[mid] - mean[snaps[0]]
    out["late_rise"] = mean[snaps[-1]] - mean[mid]
    return out


# ----------------------------------------------------------------------------
# §4.3, Algorithm 1: adversarial targeting
# ----------------------------------------------------------------------------
class _Stop(Exception):
    """Raised by a hook to end a forward pass once a layer's output is known."""

    def __init__(self, out):
        self.out = out


def layer_outputs(model: nn.Module, x: torch.Tensor, layers) -> dict[str, torch.Tensor]:
    """The outputs of every layer named in ``layers`` for ``x``, from one forward pass that stops
    once the last of them is known (hooks), in fp32 and eval mode."""
    names = [layers] if isinstance(layers, str) else list(layers)
    if not names:
        raise ValueError("layers is empty: name at least one layer (e.g. 'conv1')")
    modules = {n: get_layer(model, n) for n in names}
    got: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(_m, _i, out):
            got.setdefault(name, out.detach().float().clone())    # clone: a later in-place op
            if len(got) == len(modules):
                raise _Stop(got)
        return hook

    with torch.no_grad(), frozen(model):
        hs = [m.register_forward_hook(keep(n)) for n, m in modules.items()]
        try:
            model(x)
        except _Stop:
            return {n: got[n] for n in names}
        finally:
            for h in hs:
                h.remove()
    missing = [n for n in names if n not in got]
    raise ValueError(f"layers {missing} are not on the forward path of {type(model).__name__}")


def layer_output(model: nn.Module, x: torch.Tensor, layer: str = "conv1") -> torch.Tensor:
    """The output of ``layer`` for ``x``, running the model only up to it (a
    hook stops the forward pass there), in fp32 and eval mode."""
    return layer_outputs(model, x, [layer])[layer]


def _kernel_differences(model, x, x_adv, layers, batch_size) -> dict[str, torch.Tensor]:
    out = {n: [] for n in layers}
    for xb, xab in batches(x, x_adv, batch_size=batch_size):
        adv, clean = layer_outputs(model, xab, layers), layer_outputs(model, xb, layers)
        for n in layers:
            d = (adv[n] - clean[n]).abs()
            out[n].append(d.flatten(2).mean(2) if d.dim() > 2 else d)
    return {n: torch.cat(v) for n, v in out.items()}


def kernel_differences(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, layer: str = "conv1", *,
                       batch_size: int = 1024) -> torch.Tensor:
    """Algorithm 1's per-kernel attack concentration (Pravin et al. 2021,
    §4.3): for each example n and kernel k of ``layer``, the mean over the
    kernel's output positions of |F_k(x′_n) − F_k(x_n)|, with F the layer's
    output (for ``conv1``: the convolution before its batch norm). Returns an
    N×K float32 tensor on ``x``'s device."""
    check_input(model, x)
    check_input(model, x_adv, "x_adv")
    if x_adv.shape != x.shape:
        raise ValueError(f"x_adv has shape {tuple(x_adv.shape)}, but x has {tuple(x.shape)}; they must match")
    batch_size = check_int("batch_size", batch_size, low=1)
    return _kernel_differences(model, x, x_adv, [layer], batch_size)[layer]


def attacks_fragile(diff: torch.Tensor, fragile, null) -> torch.Tensor:
    """Algorithm 1's decision per example (Pravin et al. 2021, §4.3): True
    where the fragile kernels' mean difference exceeds the null kernels'
    (``diff``: the N×K output of ``kernel_differences``). An empty set's mean
    counts as 0 — a layer whose dropout accuracies are all equal has no kernel
    below their mean, so no fragile kernel, and no example attacks one."""
    if not isinstance(diff, torch.Tensor) or diff.dim() != 2:
        raise ValueError(f"diff must be an N×K tensor of kernel differences (kernel_differences), got "
                         f"{tuple(diff.shape) if isinstance(diff, torch.Tensor) else type(diff).__name__}")
    fragile, null = _check_split(fragile, null, diff.shape[1])
    return _set_mean(diff, fragile) > _set_mean(diff, null)


def top_kernel_fragile(diff: torch.Tensor, fragile) -> torch.Tensor:
    """Algorithm 1's other reading (Pravin et al. 2021, §4.3: the kernels' mean differences "are
    compared to see which is highest"): True where the single kernel with the highest mean
    difference is a fragile one. By chance (a random top kernel) an example does so with
    probability |F|/K."""
    if not isinstance(diff, torch.Tensor) or diff.dim() != 2:
        raise ValueError(f"diff must be an N×K tensor of kernel differences (kernel_differences), got "
                         f"{tuple(diff.shape) if isinstance(diff, torch.Tensor) else type(diff).__name__}")
    fragile = check_indices("fragile", fragile, diff.shape[1])
    mask = torch.zeros(diff.shape[1], dtype=torch.bool)
    mask[fragile] = True
    return mask.to(diff.device)[diff.argmax(1)]


def _share(diff: torch.Tensor, fragile, null) -> float:
    """The percentage of examples attacking the fragile kernels (``attacks_fragile``)."""
    return 100.0 * attacks_fragile(diff, fragile, null).float().mean().item()


def _set_means(diff: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """[N, S] booleans: per example and per kernel set (the rows of ``masks``, 0/1 over the K
    kernels, none empty or full), whether the set's mean difference exceeds the other kernels'
    — ``attacks_fragile`` for S sets at once."""
    d = diff.float()
    n_in = masks.sum(1)
    inside = d @ masks.T / n_in
    outside = (d.sum(1, keepdim=True) - d @ masks.T) / (masks.shape[1] - n_in)
    return inside > outside


def _set_mean(diff: torch.Tensor, kernels: list[int]) -> torch.Tensor:
    """Each row's mean over ``kernels`` (0 for an empty set)."""
    return diff[:, kernels].mean(1) if kernels else diff.new_zeros(diff.shape[0])


@dataclass
class Targeting:
    """What ``adversarial_targeting`` measured, one entry per ε (percent):
    ``share`` of the examples attacking the fragile kernels, ``accuracy`` on
    the adversarial examples, the mean per-kernel difference of each set, and
    ``diff[ε]``, the N×K differences (CPU), from which any other split of the
    kernels is scored without attacking again (``share_for``), and ``correct[ε]``,
    whether each adversarial example is still classified correctly (a bool array,
    for paired tests between models on the same images)."""

    eps: list[float]
    fragile: list[int]
    null: list[int]
    share: list[float]
    accuracy: list[float]
    fragile_diff: list[float]
    null_diff: list[float]
    diff: dict = field(default_factory=dict, repr=False)
    correct: dict = field(default_factory=dict, repr=False)

    def share_for(self, fragile, null) -> list[float]:
        """The targeting share at every ε for another fragile/null split."""
        return [_share(self.diff[e], fragile, null) for e in self.eps]

    def hits(self, eps: float, fragile=None, null=None) -> np.ndarray:
        """Per example at ``eps``: whether it attacks the fragile kernels (this split, or another
        one), as a bool array — what a paired test between two ε or two models needs."""
        fr, nu = (self.fragile, self.null) if fragile is None else (fragile, null)
        return attacks_fragile(self.diff[eps], fr, nu).numpy()

    def top_hits(self, eps: float, fragile=None) -> np.ndarray:
        """Per example at ``eps``: whether its highest-difference kernel is fragile (the argmax
        reading of Algorithm 1, ``top_kernel_fragile``), a bool array."""
        return top_kernel_fragile(self.diff[eps], self.fragile if fragile is None else fragile).numpy()

    def random_share(self, eps: float, draws: int = 200, seed: int = 0) -> float:
        """The share at ``eps`` with the fragile set replaced by random sets of the same size (the
        mean over ``draws`` of them): the chance level of Algorithm 1's mean reading, a permutation
        control for whether *these* kernels, not any set of their size, draw the attack."""
        draws, seed = check_int("draws", draws, low=1), check_int("seed", seed, low=0)
        k, n_f = self.diff[eps].shape[1], len(self.fragile)
        rng = np.random.default_rng(seed)
        sets = np.stack([np.sort(rng.choice(k, n_f, replace=False)) for _ in range(draws)])
        return float(self._set_shares([eps], sets).mean())

    def random_p(self, eps, draws: int = 20000, seed: int = 0) -> float:
        """A permutation test of Algorithm 1's mean reading: the percentage of sets of |F| kernels
        whose share at ``eps`` (a list: the mean share over those ε) is at least the fragile set's
        — every such set when there are at most ``draws`` of them (16 kernels: C(16, |F|) ≤ 12,870),
        else ``draws`` random ones. Small (≤ 5) when *these* kernels draw the attack more than
        almost any set of their size; large when the share is a property of the layer (the
        reading is "all or nothing" per model, so a set's share tends to be 0% or 100%, and the
        mean over sets, ``random_share``, can hide that)."""
        draws, seed = check_int("draws", draws, low=1), check_int("seed", seed, low=0)
        grid = [eps] if isinstance(eps, (int, float)) else list(eps)
        k, n_f = self.diff[grid[0]].shape[1], len(self.fragile)
        if n_f in (0, k):
            return 100.0
        if math.comb(k, n_f) <= draws:
            sets = np.array(list(itertools.combinations(range(k), n_f)))
        else:
            rng = np.random.default_rng(seed)
            sets = np.stack([np.sort(rng.choice(k, n_f, replace=False)) for _ in range(draws)])
        own = self._set_shares(grid, np.array([self.fragile]))[0]
        return float(100.0 * np.mean(self._set_shares(grid, sets) >= own - 1e-9))

    def _set_shares(self, grid, sets: np.ndarray) -> np.ndarray:
        """Each kernel set's share (the rows of ``sets``, each set's complement as its null),
        averaged over the ε of ``grid``: ``attacks_fragile`` for many sets at once."""
        k = self.diff[grid[0]].shape[1]
        if sets.shape[1] in (0, k):       # an empty or full set has no complement to mask: attacks_fragile
            fr = sets[0].tolist()
            return np.full(len(sets), np.mean([_share(self.diff[e], fr, sorted(set(range(k)) - set(fr)))
                                               for e in grid]))
        mask = torch.zeros(len(sets), k)
        mask[np.repeat(np.arange(len(sets)), sets.shape[1]), sets.reshape(-1)] = 1.0
        return np.mean([100.0 * _set_means(self.diff[e], mask).float().mean(0).numpy() for e in grid], 0)

    def kernel_means(self, eps: float) -> np.ndarray:
        """Each kernel's mean difference over the examples at ``eps`` (Algorithm 1's concentration)."""
        return self.diff[eps].mean(0).numpy()


def adversarial_targeting(model: nn.Module, x: torch.Tensor, y: torch.Tensor, fragile, null, eps, *,
                          attack: Attack | None = None, layer: str = "conv1", batch_size: int = 1024,
                          progress: bool = False) -> Targeting:
    """Pravin et al. 2021, Algorithm 1 (§4.3; Figs. 2–3): for each ε in
    ``eps``, the adversarial examples x′ (``attack`` with its ε replaced;
    FGSM by default, as in the paper), the outputs of ``layer`` for x and x′,
    each kernel's mean |difference| (``kernel_differences``) and, per example,
    whether the fragile kernels' mean difference exceeds the null kernels'
    (``attacks_fragile``). ``share``: the percentage of examples that do —
    the paper's "percentage of examples attacking fragile kernels" — and
    ``accuracy``: the model's accuracy on x′ (fp32). The differences need
    only the layers up to ``layer`` (``layer_output`` stops the forward pass
    there), so Algorithm 1 costs little beyond the attack itself.
    ``adversarial_targeting_layers`` reads several layers from the same x′.

    The paper counts every tested example; so do we (correctly classified or
    not). The model's weights are frozen throughout and left as they were."""
    return adversarial_targeting_layers(model, x, y, fragile, null, eps, attack=attack, layers=[layer],
                                        batch_size=batch_size, progress=progress)[layer]


def adversarial_targeting_layers(model: nn.Module, x: torch.Tensor, y: torch.Tensor, fragile, null, eps, *,
                                 attack: Attack | None = None, layers=("conv1",), batch_size: int = 1024,
                                 progress: bool = False) -> dict[str, Targeting]:
    """``adversarial_targeting`` (Pravin et al. 2021, Algorithm 1) at every layer of ``layers``
    (each with as many channels as conv1 has kernels, e.g. ``("conv1", "relu1")``: before conv1's
    batch norm and after its ReLU) from **one** set of adversarial examples per ε and one forward
    pass per batch: ``{layer: Targeting}``, whose ``correct`` and ``accuracy`` are the same x′'s."""
    check_input(model, x)
    y = check_labels(y, x.shape[0], num_classes(model)).to(x.device)
    layers = [layers] if isinstance(layers, str) else list(layers)
    if not layers or len(set(layers)) != len(layers):
        raise ValueError(f"layers={layers!r} must name at least one layer, each once")
    ks = {n: v.shape[1] for n, v in layer_outputs(model, x[:1], layers).items()}
    if len(set(ks.values())) != 1:
        raise ValueError(f"layers={layers!r} have different numbers of channels {ks}; one fragile/null "
                         "split of the kernels needs the same number in each")
    fragile, null = _check_split(fragile, null, ks[layers[0]])
    if isinstance(eps, (int, float)) and not isinstance(eps, bool):
        eps = [eps]
    eps = [check_eps(e, f"eps[{i}]") for i, e in enumerate(list(eps))]
    if not eps:
        raise ValueError("eps is empty: give at least one ε (pixel units, [0, 1])")
    if attack is None:
        attack = FGSM(eps[0])
    if not isinstance(attack, Attack):
        raise ValueError(f"attack={attack!r} must be an attack object of nrlib.attacks (e.g. attacks.FGSM(0.1))")
    check_bool("progress", progress)
    batch_size = check_int("batch_size", batch_size, low=1)
    res = {n: Targeting(eps=eps, fragile=fragile, null=null, share=[], accuracy=[], fragile_diff=[],
                        null_diff=[]) for n in layers}
    for e in tqdm(eps, desc="targeting", disable=not progress, leave=False):
        x_adv = attack.replace(eps=e)(model, x, y)
        c = hits(model, x_adv, y, amp=False)        # accuracy() is 100 × this mean, as here
        correct, acc = c.cpu().numpy(), 100.0 * c.float().mean().item()     # the same x′ at every layer
        for n, d in _kernel_differences(model, x, x_adv, layers, batch_size).items():
            d, r = d.cpu(), res[n]
            r.diff[e] = d
            r.share.append(_share(d, fragile, null))
            r.correct[e] = correct
            r.accuracy.append(acc)
            r.fragile_diff.append(_set_mean(d, fragile).mean().item())
            r.null_diff.append(_set_mean(d, null).mean().item())
    return res


# ----------------------------------------------------------------------------
# §4.1: Gavish–Donoho filtering of the null kernels
# ----------------------------------------------------------------------------
def _check_beta(beta) -> float:
    return check_number("beta", beta, low=0.0, high=1.0, low_open=True)


def gd_lambda(beta: float) -> float:
    """λ*(β) of Gavish & Donoho 2014, eq. (11) (Pravin et al. 2021, eq. 6, whose
    constants 8 and 14 are these): the optimal hard threshold for the singular
    values of an m×n matrix (β = m/n ≤ 1) with noise of known level σ is
    λ*(β)·√n·σ, where
    λ*(β) = √(2(β+1) + 8β / ((β+1) + √(β² + 14β + 1))). λ*(1) = 4/√3."""
    b = _check_beta(beta)
    return math.sqrt(2 * (b + 1) + 8 * b / ((b + 1) + math.sqrt(b * b + 14 * b + 1)))


def gd_omega(beta: float) -> float:
    """ω(β) ≈ 0.56β³ − 0.95β² + 1.82β + 1.43, Gavish & Donoho 2014, eq. (5):
    with the noise level unknown, the threshold is ω(β) times the median
    singular value (ω(1) ≈ 2.858)."""
    b = _check_beta(beta)
    return 0.56 * b ** 3 - 0.95 * b ** 2 + 1.82 * b + 1.43


def _check_shape(shape) -> tuple[int, int]:
    if not (isinstance(shape, (tuple, list, torch.Size)) and len(shape) == 2):
        raise ValueError(f"shape={shape!r} must be the matrix's (rows, columns)")
    r, c = (check_int(f"shape[{i}]", v, low=1) for i, v in enumerate(shape))
    return r, c


def _singular_values(s, shape=None) -> np.ndarray:
    a = s.detach().cpu().numpy() if isinstance(s, torch.Tensor) else np.asarray(s, dtype=float)
    if a.ndim != 1 or a.size == 0 or not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError("singular_values must be a non-empty 1-D sequence of finite values >= 0")
    if shape is not None and a.size != min(shape):
        raise ValueError(f"singular_values has {a.size} values, but a {shape[0]}×{shape[1]} matrix has "
                         f"min(shape) = {min(shape)}")
    return a.astype(float)


def gd_threshold(singular_values, shape, sigma: float | None = None) -> float:
    """The Gavish–Donoho hard threshold τ for the singular values of a matrix
    of ``shape`` (Pravin et al. 2021, eq. 5; Gavish & Donoho 2014): with
    m ≤ n its sides and β = m/n, τ = λ*(β)·√n·σ when the noise level σ (the
    standard deviation of an entry's noise) is known, else
    τ = ω(β)·median(singular values)."""
    m, n = sorted(_check_shape(shape))
    s = _singular_values(singular_values, (m, n))
    beta = m / n
    if sigma is None:
        return gd_omega(beta) * float(np.median(s))
    sigma = check_number("sigma", sigma, low=0.0)
    return gd_lambda(beta) * math.sqrt(n) * sigma


CLAMPS = ("hard", "cap")


@dataclass
class SVDFilter:
    """One filtered matrix (Pravin et al. 2021, eqs. 3–4, 7): the threshold
    ``tau``, the singular values before (``s``) and after (``s_filtered``),
    ``rank`` (singular values left non-zero) and ``kept`` (those at or above τ,
    left unchanged by either clamp)."""

    matrix: torch.Tensor
    tau: float
    s: np.ndarray
    s_filtered: np.ndarray
    rank: int
    kept: int
    clamp: str


def svd_filter(matrix: torch.Tensor, tau: float, clamp: str = "hard") -> SVDFilter:
    """W = U·diag(s)·Vᵀ (eq. 3), the singular values clamped at ``tau``
    (eq. 4), and W̃ = U·diag(s̃)·Vᵀ (eq. 7). The paper's "clamping all singular
    values to be at most equal to threshold τ … where r is the row up to which
    the matrix is truncated" reads two ways, both here:

    * ``clamp="hard"`` (default; Gavish & Donoho's hard threshold, the
      truncation to rank r): s̃ᵢ = sᵢ where sᵢ ≥ τ, else 0;
    * ``clamp="cap"``: s̃ᵢ = min(sᵢ, τ), every direction kept, the large ones
      shrunk to τ.

    Computed in float64; the result has ``matrix``'s dtype and device."""
    if not isinstance(matrix, torch.Tensor) or matrix.dim() != 2 or matrix.numel() == 0:
        raise ValueError(f"matrix must be a non-empty 2-D tensor, got "
                         f"{tuple(matrix.shape) if isinstance(matrix, torch.Tensor) else type(matrix).__name__}")
    tau = check_number("tau", tau, low=0.0)
    check_choice("clamp", clamp, CLAMPS)
    u, s, vh = torch.linalg.svd(matrix.detach().double().cpu(), full_matrices=False)
    sf = torch.where(s >= tau, s, torch.zeros_like(s)) if clamp == "hard" else s.clamp(max=tau)
    out = (u * sf) @ vh
    return SVDFilter(matrix=out.to(matrix.dtype).to(matrix.device), tau=tau, s=s.numpy(), s_filtered=sf.numpy(),
                     rank=int((sf > 0).sum()), kept=int((s >= tau).sum()), clamp=clamp)


AMPLIFY = ("ratio", "energy", "none")


def amplification(w_fragile: torch.Tensor, w_null: torch.Tensor, w_null_filtered: torch.Tensor,
                  rule: str = "ratio") -> float:
    """The factor α by which the fragile kernels are amplified (Pravin et al.
    2021, §4.2, eqs. 8–9, lost from the text; the book's reading):

    * ``"ratio"`` (default): α = ‖W_N‖_F / ‖W̃_N‖_F — the fragile kernels grow
      by the factor the null kernels' energy (Frobenius norm) shrank by;
    * ``"energy"``: α such that the layer's total energy is unchanged,
      α²‖W_F‖² + ‖W̃_N‖² = ‖W_F‖² + ‖W_N‖²;
    * ``"none"``: α = 1 (filtering alone).

    A filtered null matrix of norm 0 gives α = 1 under "ratio" (nothing to
    restore the proportion to)."""
    check_choice("rule", rule, AMPLIFY)
    f, n, nf = (float(t.detach().double().norm()) for t in (w_fragile, w_null, w_null_filtered))
    if rule == "none":
        return 1.0
    if rule == "ratio":
        return n / nf if nf > 0 else 1.0
    if f == 0:
        return 1.0
    return math.sqrt(max(0.0, 1.0 + (n * n - nf * nf) / (f * f)))


def filter_kernels(model: nn.Module, fragile, null, *, sigma: float | None = None, tau: float | None = None,
                   clamp: str = "hard", amplify: str = "ratio", layer: str = "conv1") -> tuple[nn.Module, dict]:
    """Pravin et al. 2021, §4.1–4.2 on a **copy** of ``model`` (the original is
    not touched): stack the flattened null kernels of ``layer`` into a
    |N|×(C·kh·kw) matrix, filter its singular values at the Gavish–Donoho
    threshold (``gd_threshold``: known noise level ``sigma``, or the
    median-based rule when ``sigma`` is None; or an explicit ``tau``) with
    ``clamp`` (``svd_filter``), put the filtered kernels back, and multiply the
    fragile kernels by α (``amplification`` rule ``amplify``).

    Returns ``(filtered_model, info)``, ``info`` holding ``tau``, ``sigma``,
    ``beta``, ``shape``, ``rank``, ``kept``, ``alpha``, the singular values
    before and after, and the Frobenius norms of the null and fragile sets
    before and after."""
    conv = get_layer(model, layer)
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(f"layer={layer!r} is a {type(conv).__name__}; filtering works on a Conv2d's kernels")
    w = conv.weight.detach()
    fragile, null = _check_split(fragile, null, w.shape[0])
    if not null:
        raise ValueError("null=[]: there are no null kernels to filter")
    if sigma is not None and tau is not None:
        raise ValueError(f"give sigma={sigma!r} or tau={tau!r}, not both")
    wn = w[null].reshape(len(null), -1)
    shape = tuple(wn.shape)
    s = torch.linalg.svdvals(wn.double().cpu())
    tau = gd_threshold(s, shape, sigma) if tau is None else check_number("tau", tau, low=0.0)
    filt = svd_filter(wn, tau, clamp)
    alpha = amplification(w[fragile], wn, filt.matrix, amplify)
    new = copy.deepcopy(model)
    with torch.no_grad():
        wnew = get_layer(new, layer).weight
        wnew[null] = filt.matrix.reshape(len(null), *w.shape[1:]).to(wnew.dtype)
        wnew[fragile] = w[fragile] * alpha
    m_, n_ = sorted(shape)
    info = {"tau": tau, "sigma": sigma, "beta": m_ / n_, "shape": shape, "rank": filt.rank, "kept": filt.kept,
            "clamp": clamp, "amplify": amplify, "alpha": alpha, "s": filt.s, "s_filtered": filt.s_filtered,
            "norm_null": float(wn.double().norm()), "norm_null_filtered": float(filt.matrix.double().norm()),
            "norm_fragile": float(w[fragile].double().norm()),
            "norm_fragile_amplified": float(w[fragile].double().norm()) * alpha}
    return new, info


def null_matrix(model: nn.Module, null, layer: str = "conv1") -> torch.Tensor:
    """The null kernels of ``layer`` flattened and stacked: the |N|×(C·kh·kw) matrix of §4 (float64, CPU)."""
    w = get_layer(model, layer).weight.detach()
    null = check_indices("null", null, w.shape[0])
    return w[null].reshape(len(null), -1).double().cpu()


def sigma_grid(matrix: torch.Tensor, points: int = 12) -> list[float]:
    """Noise levels σ for ``sigma_search``: ``points`` values, evenly spaced
    on a log scale, whose known-σ thresholds λ*(β)·√n·σ run from half the
    matrix's smallest singular value to just above its largest — from keeping
    every direction to keeping none."""
    if not isinstance(matrix, torch.Tensor) or matrix.dim() != 2 or matrix.numel() == 0:
        raise ValueError("matrix must be a non-empty 2-D tensor (null_matrix)")
    points = check_int("points", points, low=2)
    m, n = sorted(matrix.shape)
    s = torch.linalg.svdvals(matrix.double().cpu()).numpy()
    unit = gd_lambda(m / n) * math.sqrt(n)            # τ per unit of σ
    lo, hi = max(0.5 * s.min(), 1e-3 * s.max()) / unit, 1.05 * s.max() / unit
    return [float(v) for v in np.geomspace(lo, hi, points)]


def sigma_search(model: nn.Module, x: torch.Tensor, y: torch.Tensor, fragile, null, sigmas, *,
                 attack: Attack, clamp: str = "hard", amplify: str = "ratio", layer: str = "conv1",
                 max_clean_drop: float = 1.0, progress: bool = False, dataset: str | None = None) -> dict:
    """The "systematic search" for the noise level σ of eq. 5 (Pravin et al.
    2021, §4.1), with the objective the paper does not state and the book
    chooses: on a sample ``(x, y)`` of **training** images (never the test
    set), filter the null kernels at each σ in ``sigmas`` (``filter_kernels``)
    and score the filtered copy's clean accuracy and its accuracy under
    ``attack``; the chosen σ maximises the attacked accuracy among those whose
    clean accuracy is within ``max_clean_drop`` points of the original model's
    (ties: the smaller σ, the lighter filter); the original model is the
    baseline it is compared with.

    Returns ``{"rows": [{sigma, tau, rank, alpha, clean_acc, attacked_acc}, …],
    "best": the chosen row, "original": {clean_acc, attacked_acc}, "objective": the rule in
    words}``; ``dataset`` writes the attack's ε in it as the papers on that data do (MNIST: 0.2,
    CIFAR-10: 8/255; ``attacks.eps_text``)."""
    check_input(model, x)
    y = check_labels(y, x.shape[0], num_classes(model)).to(x.device)
    if not isinstance(attack, Attack):
        raise ValueError(f"attack={attack!r} must be an attack object of nrlib.attacks (e.g. attacks.FGSM(0.1))")
    sigmas = [check_number(f"sigmas[{i}]", v, low=0.0) for i, v in enumerate(list(sigmas))]
    if not sigmas:
        raise ValueError("sigmas is empty: give the noise levels to try (sigma_grid)")
    max_clean_drop = check_number("max_clean_drop", max_clean_drop, low=0.0)
    check_bool("progress", progress)
    objective = (f"max accuracy under {attack.describe(dataset)} on {len(y)} training images, clean accuracy "
                 f"within {max_clean_drop:g} points of the original's")        # checks `dataset` first

    def score(m):
        return accuracy(m, x, y, amp=False), accuracy(m, attack(m, x, y), y, amp=False)

    c0, a0 = score(model)
    rows = []
    for sg in tqdm(sorted(set(sigmas)), desc="σ search", disable=not progress, leave=False):
        fm, info = filter_kernels(model, fragile, null, sigma=sg, clamp=clamp, amplify=amplify, layer=layer)
        c, a = score(fm)
        rows.append({"sigma": sg, "tau": info["tau"], "rank": info["rank"], "kept": info["kept"],
                     "alpha": info["alpha"], "clean_acc": c, "attacked_acc": a})
    ok = [r for r in rows if r["clean_acc"] >= c0 - max_clean_drop] or rows[:1]
    best = max(ok, key=lambda r: (r["attacked_acc"], -r["sigma"]))
    return {"rows": rows, "best": best, "original": {"clean_acc": c0, "attacked_acc": a0},
            "objective": objective}
