"""Fast training, adversarial training, checkpoints and the model zoo.

* ``fit`` — one loop for clean and adversarial training. The data stay on
  the device as whole tensors (no DataLoader: on MNIST the loader, not the
  model, is the bottleneck); on a GPU the forward pass runs under bf16
  autocast and the model in channels_last (tensor cores, about 2× fp32).
  Early stopping on validation accuracy restores the best weights.
  Only parameters with ``requires_grad`` are optimised, which is how the
  split model of Karnine et al. 2024 (§3.5) trains only its dominant filters.
* Adversarial training (Madry et al. 2018; Goodfellow et al. 2015 for the
  clean:adversarial mixture) — pass ``adversary(model, x, y) -> x_adv``;
  ``mix="adv"`` trains on adversarial examples only, ``mix="benign+adv"``
  on each clean batch together with its adversarial counterpart.
* ``save_checkpoint`` / ``load_checkpoint`` — atomic writes, loads with
  ``torch.load(..., weights_only=True)`` and a SHA-256 over the tensors, so a
  truncated or altered file is detected and named.
* The fast CIFAR-10 recipe (``RECIPES["cifar"]``): the training set stays on
  the device as uint8 (4× smaller than float), random crop + flip run on the
  device for a whole batch at once (``crop_flip``), bf16 autocast and
  channels_last on a GPU, SGD with Nesterov momentum and a one-cycle learning
  rate (Smith & Topin 2019). No label smoothing: it masks gradients and
  flatters robustness, which every chapter measures.
* ``zoo_get`` — load a cached checkpoint or train and save it; the cache key
  covers architecture, dataset, recipe settings, profile and seed. Recipes
  with ``snapshots`` also keep the model at fractions of training (Pravin et
  al. 2021 study epochs 10/50/100 of one run): ``zoo_get(..., snapshot=0.1)``.
"""
from __future__ import annotations

import contextlib
import hashlib
from collections import OrderedDict
import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import data as nrdata
from . import hooks
from . import models as nrmodels
from . import results as nrresults
from .precision import autocast
from .attacks import PGD
from .regularizers import SensitivityPenalty, SNSPenalty
from .sensitivity import _features_of, logits_layer
from .metrics import accuracy
from .profiles import PROFILES, resolve as resolve_profile
from .utils import (atomic_torch_save, check_bool, check_callable, check_choice, check_fraction, check_input, check_int,
                    check_labels, check_model, check_number, get_device, num_classes, seed_everything)

OPTIMIZERS = ("rmsprop", "adam", "sgd")
MIXES = ("clean", "adv", "benign+adv")


class CorruptCheckpointError(ValueError):
    """A checkpoint file that cannot be read or whose tensors fail their checksum."""


class CheckpointMismatchError(ValueError):
    """A checkpoint whose weights do not fit the model it is loaded into."""


SCHEDULES = ("constant", "onecycle", "cosine")


def make_optimizer(params, name: str, lr: float, weight_decay: float = 0.0):
    """RMSprop with Keras's defaults (ρ=0.9, ε=1e-7) — the optimiser of Karnine
    et al. 2024 §3.1 — Adam, or SGD with Nesterov momentum 0.9."""
    params = list(params) if not isinstance(params, torch.Tensor) else [params]
    if not params:
        raise ValueError("params is empty: there is nothing to optimise (are all requires_grad=False?)")
    check_choice("optimizer", name, OPTIMIZERS)
    lr = check_number("lr", lr, low=0.0, low_open=True)
    weight_decay = check_number("weight_decay", weight_decay, low=0.0)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=0.9, eps=1e-7, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)


def crop_flip(x: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Random ``pad``-pixel translation (zero padding, then a random 32×32 crop,
    as ``RandomCrop(32, padding=4)``) and a random horizontal flip, for a whole
    batch at once on its device; works on uint8 or float images (N×C×H×W)."""
    # shape and dtype only: a scan of the values would cost a device sync per batch
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[0] == 0 or not (
            x.dtype == torch.uint8 or x.is_floating_point()):
        got = f"shape {tuple(x.shape)}, dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a non-empty N×C×H×W batch of uint8 or float images, got {got}")
    pad = check_int("pad", pad, low=0)
    n, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n, 1, 1, 1), device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (n, 1, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, 1, h, 1) + dy
    j = torch.arange(w, device=x.device).view(1, 1, 1, w)
    flip = torch.rand(n, 1, 1, 1, device=x.device) < 0.5
    cols = torch.where(flip, w - 1 - j, j) + dx          # a flipped crop reads its columns backwards
    # one gather per axis: rows first (N×C×h×W+2p), then columns
    out = xp.gather(2, rows.expand(n, c, h, w + 2 * pad))
    return out.gather(3, cols.expand(n, c, h, w))


def _pixels(x: torch.Tensor) -> torch.Tensor:
    """Images as the models take them: raw uint8 pixels to floats in [0, 1] (a new tensor); float
    images unchanged."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
        x_val: torch.Tensor | None = None, y_val: torch.Tensor | None = None,
        optimizer: str = "rmsprop", lr: float = 1e-3, batch_size: int = 128,
        max_epochs: int = 10, patience: int | None = 2,
        adversary: Callable | None = None, mix: str = "clean",
        weight_decay: float = 0.0, schedule: str = "constant", label_smoothing: float = 0.0,
        augment: Callable | None = None, on_epoch: Callable | None = None,
        penalty: Callable | None = None, logit_pairing: float = 0.0, pair_penalty: Callable | None = None,
        frozen=(), seed: int = 0, progress: bool = True, desc: str = "train") -> dict:
    """Train ``model`` on ``(x, y)`` (pixels in [0, 1] as float, or raw uint8
    bytes, on the model's device).

    Early stopping (Karnine et al. 2024 §3.1: "monitoring the accuracy … over
    a patience of 2 epochs"): stop when validation accuracy has not improved
    for ``patience`` epochs and restore the best weights. ``schedule="onecycle"``
    ramps the learning rate linearly from lr/25 to ``lr`` over the first 25 %
    of the steps and back down to ~0 (Smith & Topin 2019); ``"cosine"``
    starts at ``lr`` with no warm-up and decays it along a half cosine to 0
    over all the steps (Loshchilov & Hutter 2017, one cycle without restarts),
    so the model at 10 % of training is a model trained at a high learning
    rate for 10 % of its steps, not one in the middle of a warm-up. ``augment(xb)``
    transforms each batch (e.g. ``crop_flip``); ``on_epoch(epoch, model)`` is
    called after each epoch (the zoo's snapshots). ``penalty(features, weight, y)``
    is added to each batch's loss, given the inputs of the model's logits
    layer ([B, F], with gradients), that layer's weight and the labels (e.g.
    ``regularizers.SensitivityPenalty()``, Suri & Evans 2020 eq. 5). ``logit_pairing`` λ > 0
    (with ``mix="benign+adv"``) adds λ times the mean over the batch of the squared L2 distance
    between each clean image's logits and its adversarial copy's — adversarial logit pairing
    (Kannan et al. 2018; Zhang et al. 2021 §V-A use λ = 0.5). ``pair_penalty(acts_clean, acts_adv)``
    (with ``mix="benign+adv"``; it names its ``layers``) is added too, given those layers'
    outputs for the clean half and the adversarial half of the batch, with gradients (e.g.
    ``regularizers.SNSPenalty``, Zhang et al. 2021 eq. 13). ``frozen`` names modules kept in
    eval mode while the rest trains (locked batch norms keep their running statistics and
    normalise with them, as at test time). Returns a history dict with
    per-epoch loss, train and validation accuracy and seconds.
    """
    check_input(model, x, allow_uint8=True)
    y = check_labels(y, x.shape[0], num_classes(model))
    if (x_val is None) != (y_val is None):
        raise ValueError(f"x_val and y_val go together; got x_val={'None' if x_val is None else 'a tensor'} "
                         f"and y_val={'None' if y_val is None else 'a tensor'}")
    if x_val is not None:
        check_input(model, x_val, "x_val", allow_uint8=True)
        y_val = check_labels(y_val, x_val.shape[0], num_classes(model), name="y_val")
    max_epochs = check_int("max_epochs", max_epochs, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    check_choice("mix", mix, MIXES)
    if (mix == "clean") != (adversary is None):
        raise ValueError(f"mix={mix!r} needs adversary={'None' if mix == 'clean' else 'an attack'}")
    for nm, fn in (("adversary", adversary), ("augment", augment), ("on_epoch", on_epoch),
                   ("penalty", penalty)):
        if fn is not None:
            check_callable(nm, fn)
    logit_pairing = check_number("logit_pairing", logit_pairing, low=0.0)
    if logit_pairing and mix != "benign+adv":
        raise ValueError(f"logit_pairing={logit_pairing} pairs clean and adversarial logits: it needs "
                         f"mix='benign+adv', got mix={mix!r}")
    if pair_penalty is not None:
        check_callable("pair_penalty", pair_penalty)
        if mix != "benign+adv" or not getattr(pair_penalty, "layers", None):
            raise ValueError("pair_penalty compares clean and adversarial activations: it needs "
                             f"mix='benign+adv' (got {mix!r}) and a .layers attribute naming the layers")
        pair_layers = hooks.layer_names(model, list(pair_penalty.layers), name="pair_penalty.layers")
    frozen_mods = [hooks.get_layer(model, n) for n in hooks.layer_names(model, list(frozen), name="frozen")] \
        if frozen else []
    if patience is not None:
        patience = check_int("patience", patience, low=1)
    check_choice("schedule", schedule, SCHEDULES)
    label_smoothing = check_fraction("label_smoothing", label_smoothing)
    seed = check_int("seed", seed, low=0)
    check_bool("progress", progress)
    if not isinstance(desc, str):
        raise ValueError(f"desc={desc!r} must be a string (the progress bar's label)")
    y = y.to(x.device)
    if x_val is not None:
        x_val = _pixels(x_val)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters (all requires_grad=False)")
    dev = x.device
    # channels_last (NHWC): what cuDNN's tensor-core kernels and oneDNN on the CPU
    # want; measured 1.37x faster forward passes of the base MNIST CNN on 2 CPU cores
    model.to(memory_format=torch.channels_last)
    opt = make_optimizer(params, optimizer, lr, weight_decay)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    n = x.shape[0]
    sched = None
    if schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr, total_steps=max_epochs * math.ceil(n / batch_size), pct_start=0.25,
            anneal_strategy="linear", div_factor=25.0, final_div_factor=1e3, cycle_momentum=False)
    elif schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max_epochs * math.ceil(n / batch_size),
                                                           eta_min=0.0)
    hist = {"epoch": [], "loss": [], "train_acc": [], "val_acc": [], "seconds": []}
    head = logits_layer(model)[1] if penalty is not None else None
    best_acc, best_state, since_best = -math.inf, None, 0
    bar = tqdm(range(1, max_epochs + 1), desc=desc, disable=not progress, leave=False)
    t_start = time.perf_counter()
    for epoch in bar:
        t0 = time.perf_counter()
        model.train()
        for mod in frozen_mods:
            mod.eval()
        perm = torch.randperm(n, generator=gen).to(dev)
        tot_loss = tot_correct = tot_seen = 0.0
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            xb, yb = x[idx], y[idx]
            if augment is not None:
                xb = augment(xb)
            xb = _pixels(xb)
            if adversary is not None:
                xa = adversary(model, xb, yb)
                xb, yb = (xa, yb) if mix == "adv" else (torch.cat([xb, xa]), torch.cat([yb, yb]))
            with autocast(dev), (_features_of(model) if penalty else contextlib.nullcontext({})) as feats, \
                    (hooks.capture(model, pair_layers, detach=False) if pair_penalty
                     else contextlib.nullcontext({})) as acts:
                logits = model(xb)
            loss = F.cross_entropy(logits.float(), yb, label_smoothing=label_smoothing)
            if penalty is not None:
                loss = loss + penalty(feats["z"].float().flatten(1), head.weight.float(), yb)
            if pair_penalty is not None:
                half = logits.shape[0] // 2           # [clean; adversarial], as mixed above
                loss = loss + pair_penalty({n: a[0][:half] for n, a in acts.items()},
                                           {n: a[0][half:] for n, a in acts.items()})
            if logit_pairing:
                half = logits.shape[0] // 2           # [clean; adversarial], as mixed above
                lf = logits.float()
                loss = loss + logit_pairing * (lf[:half] - lf[half:]).pow(2).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            tot_loss += loss.detach() * len(yb)
            tot_correct += (logits.argmax(1) == yb).sum()
            tot_seen += len(yb)
        hist["epoch"].append(epoch)
        hist["loss"].append(float(tot_loss) / tot_seen)
        hist["train_acc"].append(100.0 * float(tot_correct) / tot_seen)
        va = accuracy(model, x_val, y_val) if x_val is not None else float("nan")
        hist["val_acc"].append(va)
        hist["seconds"].append(time.perf_counter() - t0)
        bar.set_postfix(loss=f"{hist['loss'][-1]:.3f}", val=f"{va:.2f}")
        if on_epoch is not None:
            on_epoch(epoch, model)
        if x_val is None or patience is None:
            continue
        if va > best_acc:
            best_acc, since_best = va, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            since_best += 1
            if since_best >= patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    hist["best_val_acc"] = best_acc if best_state is not None else (hist["val_acc"][-1] if hist["val_acc"] else float("nan"))
    hist["total_seconds"] = time.perf_counter() - t_start
    return hist


SNS_MODES = ("sen", "dyn", "all", "rand")


def sns_trainable(model: nn.Module, layers) -> list[str]:
    """What SNS fine-tunes when it stabilises ``layers`` (Zhang et al. 2021, §V-C: "parameters
    of the bottom several layers are locked"): for each VGG block named in ``layers`` (``conv<i>``
    or ``relu<i>``) its convolution and batch norm (``conv<i>``, ``bn<i>``), and the logits layer
    (``fc1``); any other named layer as it is."""
    layers = hooks.layer_names(model, layers)
    mods, out = dict(model.named_modules()), []
    for n in layers:
        i = n[4:] if n.startswith(("conv", "relu")) else None
        block = [f"conv{i}", f"bn{i}"] if i and f"conv{i}" in mods else [n]
        out += [b for b in block if b in mods and mods[b] is not None and any(True for _ in mods[b].parameters())]
    return list(dict.fromkeys([*out, logits_layer(model)[0]]))


def sns_finetune(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, layers, trainable, adversary: Callable,
                 mode: str = "sen", share: float = 0.1, weight: float = 5.0, select_n: int | None = None,
                 reselect_n: int = 200, pick_seed: int | None = None, seed: int = 0, **fit_kw) -> dict:
    """Sensitive Neuron Stabilizing (Zhang et al. 2021, §V-C, Algorithm 1): fine-tune
    ``model`` on ``(x, y)`` with L_adv + ``weight``·L_sns (eq. 13), where L_adv is PAT's
    1:1 clean:adversarial cross-entropy with ``adversary`` and L_sns (eq. 12) the deviation
    of the sensitive neurons of ``layers``. Only the parameters of the modules named in
    ``trainable`` (e.g. ``sns_trainable(model, layers)``: conv8 … conv13, their batch norms
    and fc1) are trained; the others are locked (their ``requires_grad`` flags restored
    afterwards) and the locked batch norms stay in eval mode, so their statistics do not move
    either. ``mode``: ``"sen"`` — the top ``share`` of each layer by σ, selected once before
    training on the pairs (x, adversary(x)) of ``select_n`` training images (None: all of
    them, Algorithm 1 step 1); ``"dyn"`` — selected the same way, then re-selected after every
    epoch on ``reselect_n`` fresh random training images (the paper's 200); ``"all"`` — every
    neuron of the layers; ``"rand"`` — a random ``share`` of each layer, drawn with
    ``pick_seed`` (None: ``seed``). ``fit_kw`` goes to ``fit`` (optimizer, lr, batch_size,
    max_epochs, schedule, augment, …). Returns ``{"history", "sensitive" (the final sets;
    None for "all"), "selections" (one per selection)}``."""
    from .sensitivity import select_sensitive

    check_choice("mode", mode, SNS_MODES)
    share = check_fraction("share", share, low_open=True)
    check_callable("adversary", adversary)
    layers = hooks.layer_names(model, layers)
    trainable = hooks.layer_names(model, trainable, name="trainable")
    select_n = x.shape[0] if select_n is None else check_int("select_n", select_n, low=1)
    reselect_n = check_int("reselect_n", reselect_n, low=1)
    seed = check_int("seed", seed, low=0)
    pick_seed = seed if pick_seed is None else check_int("pick_seed", pick_seed, low=0)
    gen = torch.Generator().manual_seed(seed)

    def select(n):
        idx = torch.randperm(x.shape[0], generator=gen)[:n].to(x.device)
        xs = _pixels(x[idx])
        return select_sensitive(model, xs, adversary(model, xs, y[idx]), layers, share=share)

    if mode in ("sen", "dyn"):
        chosen = select(select_n)
    elif mode == "rand":
        chosen, pick = {}, torch.Generator().manual_seed(pick_seed)
        with torch.no_grad(), hooks.capture(model, layers) as acts:      # a ReLU's width: from its output
            model(_pixels(x[:1]))
        for n in layers:
            c = acts[n][0].shape[1]
            chosen[n] = torch.randperm(c, generator=pick)[: max(1, round(share * c))].sort().values.tolist()
    else:
        chosen = None
    selections = [] if chosen is None else [{n: list(v) for n, v in chosen.items()}]
    penalty = SNSPenalty(tuple(layers), sensitive=chosen, weight=weight)

    def on_epoch(epoch, m):
        if mode == "dyn":
            new = select(reselect_n)
            chosen.clear()
            chosen.update(new)                 # the penalty holds this dict: the next epoch uses it
            selections.append({n: list(v) for n, v in chosen.items()})

    prefixes = tuple(f"{t}." for t in trainable)
    locked_bn = [n for n, mod in model.named_modules() if isinstance(mod, nn.modules.batchnorm._BatchNorm)
                 and not n.startswith(prefixes) and n not in trainable]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(prefixes))
    try:
        hist = fit(model, x, y, adversary=adversary, mix="benign+adv", pair_penalty=penalty,
                   on_epoch=on_epoch, frozen=locked_bn, seed=seed, **fit_kw)
    finally:
        for p, f in flags:
            p.requires_grad_(f)
    return {"history": hist, "sensitive": chosen, "selections": selections}


# ----------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------
def _digest(state: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


_PLAIN = (str, int, float, bool, type(None))


def _check_meta(value, where: str = "meta") -> None:
    """Only what ``torch.load(..., weights_only=True)`` reads back: plain Python
    values (exact types: a NumPy float or torch's version string is refused on
    load), lists, tuples, dicts with string keys, and tensors."""
    if type(value) in _PLAIN or isinstance(value, torch.Tensor):
        return
    if type(value) in (list, tuple):
        for i, v in enumerate(value):
            _check_meta(v, f"{where}[{i}]")
        return
    if type(value) in (dict, OrderedDict):
        for k, v in value.items():
            if type(k) is not str:
                raise ValueError(f"{where} has the key {k!r}; checkpoint meta keys must be strings")
            _check_meta(v, f"{where}[{k!r}]")
        return
    raise ValueError(f"{where}={value!r} is a {type(value).__name__}, which a weights_only checkpoint cannot "
                     "hold; use str, int, float, bool, None, lists, dicts or tensors (e.g. float(x), str(v))")


def save_checkpoint(path: str | Path, model_or_state, meta: dict | None = None) -> Path:
    """Write weights + ``meta`` (plain Python values) atomically, with a checksum."""
    if not isinstance(path, (str, Path)) or not str(path):
        raise ValueError(f"path={path!r} must be a file path (str or pathlib.Path)")
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ValueError(f"model_or_state must be an nn.Module or a state dict of name → tensor, "
                         f"got {type(model_or_state).__name__}")
    if meta is not None and not isinstance(meta, dict):
        raise ValueError(f"meta={meta!r} must be a dict of plain values (or None)")
    _check_meta(dict(meta or {}))
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    return atomic_torch_save({"state_dict": state, "meta": dict(meta or {}), "sha256": _digest(state)}, path)


def load_checkpoint(path: str | Path, model: nn.Module | None = None, *, map_location="cpu") -> tuple[dict, dict]:
    """Load with ``weights_only=True``; verify the checksum; optionally load into
    ``model``. Returns ``(state_dict, meta)``. Raises ``CorruptCheckpointError``."""
    if not isinstance(path, (str, Path)) or not str(path):
        raise ValueError(f"path={path!r} must be a file path (str or pathlib.Path)")
    path = Path(path)
    if model is not None:
        check_model(model)
    if isinstance(map_location, str):   # 'gpu' and friends get get_device's message
        map_location = get_device(map_location)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
        state, meta, digest = obj["state_dict"], obj["meta"], obj["sha256"]
    except Exception as e:
        raise CorruptCheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}: {e}); "
                                     "delete it to retrain") from e
    if _digest(state) != digest:
        raise CorruptCheckpointError(f"checkpoint {path} fails its SHA-256 check; delete it to retrain")
    if model is not None:
        _check_fits(path, state, meta, model)
        model.load_state_dict(state)
    return state, meta


def _check_fits(path: Path, state: dict, meta: dict, model: nn.Module) -> None:
    """Name the file and the architecture it holds when its weights do not fit ``model``."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if not (missing or extra or shapes):
        return
    held = meta.get("arch", "an unknown architecture") if isinstance(meta, dict) else "an unknown architecture"
    held_ds = f" for {meta['dataset']!r}" if isinstance(meta, dict) and meta.get("dataset") else ""
    held_kw = f" {meta['model_kwargs']}" if isinstance(meta, dict) and meta.get("model_kwargs") else ""
    target = getattr(model, "arch", "") or type(model).__name__
    target_ds = f" for {model.dataset!r}" if getattr(model, "dataset", "") else ""
    what = "; ".join(p for p in (f"missing {missing[:3]}" + ("…" if len(missing) > 3 else "") if missing else "",
                                 f"unexpected {extra[:3]}" + ("…" if len(extra) > 3 else "") if extra else "",
                                 f"shapes differ: {shapes[:3]}" + ("…" if len(shapes) > 3 else "") if shapes else "")
                     if p)
    raise CheckpointMismatchError(f"checkpoint {path} holds {held!r}{held_ds}{held_kw}, which does not fit the "
                                  f"{target!r} model{target_ds} it is loaded into ({what}); "
                                  f"build models.build({held!r}, ...) with the same settings to load it")


# ----------------------------------------------------------------------------
# the zoo
# ----------------------------------------------------------------------------
# The settings every SNS variant of the cifar recipe shares (Zhang et al. 2021 §V-C, Algorithm 1).
_SNS = {"init": "standard", "finetune": "sns", "sns_layers": [f"relu{i}" for i in range(8, 14)],
        "sns_weight": 5.0, "sns_share": 0.1, "sns_select_n": None, "sns_reselect_n": 200, "sns_pick_seed": None,
        "mix": "benign+adv", "adv_norm": "linf", "adv_eps": 8 / 255, "snapshots": [],
        "profiles": {"smoke": {"adv_steps": 1, "adv_alpha": 1.0, "epochs": 1, "lr": 0.02},
                     "cpu": {"adv_steps": 2, "adv_alpha": 1 / math.sqrt(2), "epochs": 4, "lr": 0.1},
                     "full": {"adv_steps": 10, "adv_alpha": 1 / math.sqrt(10), "epochs": 10, "lr": 0.2}}}

# Recipes: how a model is trained, the sizes each profile uses, and what each
# profile measured (airbench's habit: the evidence sits beside the recipe).
# Every recipe goes through the one path of ``zoo_get``: settings at the
# recipe's top level hold for every profile, a profile's entry may override
# them, and a setting written ``{"default": v, "<arch>": w}`` resolves per
# architecture. ``n_val`` > 0 holds that many training images out for early
# stopping (``patience``); ``n_test`` test images are scored once, after
# training, and never used to choose anything. No recipe uses label smoothing:
# it is known to mask gradients and flatter robustness, and every chapter
# measures its models under attack.
RECIPES = {
    # Karnine et al. 2024 §3.1: RMSprop, lr 1e-3, early stopping on validation
    # accuracy with patience 2; Keras's default batch of 32 (the paper gives
    # none). 42,000 training images as in §4 ("we take 42,000 benign images"),
    # the other 18,000 for validation.
    "karnine": {
        "dataset": "mnist", "archs": ["shallow", "base", "dense"],
        "optimizer": "rmsprop", "lr": 1e-3, "batch_size": 32, "patience": 2, "n_val_split": 18000,
        "profiles": {
            "smoke": {"n_train": 2000, "n_val": 500, "n_test": 10000, "epochs": 1},
            "cpu": {"n_train": 42000, "n_val": 18000, "n_test": 10000, "epochs": 10},
            "full": {"n_train": 42000, "n_val": 18000, "n_test": 10000, "epochs": 30},
        },
        "evidence": {   # data/results/zoo/cpu.json; the paper's accuracies: nrlib/papers/karnine2024.json
            "cpu": "shallow 98.99%, base 99.14%, dense 99.14% test accuracy after 10 / 6 / 8 epochs "
                   "(early stopping); 89 / 115 / 193 s; 2-core CPU, 1 seed, 2026-11-25",
        },
    },
    # The fast CIFAR-10 recipe for papers 1, 2, 3 and 5 (they trained for
    # 100–350 epochs): SGD + Nesterov, one-cycle lr, weight decay 5e-4, random
    # crop + flip on the device, no validation split. `cpu` trains
    # width-reduced versions of the big architectures (width 16: a quarter of
    # the channels) on a 10,000-image subset, and ResNet-20 at its real width
    # on all 50,000 images; `smoke` only exercises the code.
    "cifar": {
        "dataset": "cifar10", "archs": ["resnet20", "resnet18", "resnet50", "resnet101", "vgg16", "vgg19"],
        "optimizer": "sgd", "schedule": "onecycle", "weight_decay": 5e-4, "augment": "crop_flip",
        "snapshots": [0.1, 0.5],
        "profiles": {
            "smoke": {"n_train": 2000, "n_test": 500, "width": {"default": 8, "resnet20": 4},
                      "batch_size": 64, "lr": 0.1, "epochs": 3},
            "cpu": {"n_train": {"default": 10000, "resnet20": 50000}, "n_test": 10000, "batch_size": 128,
                    "lr": 0.1, "width": {"default": 16, "resnet50": 8, "resnet101": 8},
                    "epochs": {"default": 10, "resnet20": 6, "resnet50": 6, "resnet101": 6}},
            "full": {"n_train": 50000, "n_test": 10000, "width": {"default": 64, "resnet20": 16},
                     "batch_size": 512, "lr": 0.4, "epochs": {"default": 30, "resnet18": 24, "resnet20": 40}},
        },
        # Variants train any model of the recipe another way (``zoo_get(..., variant="linf_at")``);
        # each overrides the settings above, and its own "profiles" override them per profile.
        # Suri & Evans 2020 (Table 1) compare a standard VGG-19 with PGD adversarial training
        # (Madry et al. 2018) against L∞ ε = 8/255 and L2 ε = 0.5, trained on adversarial examples
        # only, and with their sensitivity regulariser (eq. 5, public code: lr 0.01, batch 128).
        # PGD starts at a random point of the ball; ``adv_alpha`` is its step in units of ε (None:
        # 2.5·ε/steps). `cpu` and `smoke` use one step of 1.25·ε from the random start, the
        # "fast" adversarial training of Wong, Rice & Kolter 2020, at the cost of one extra
        # forward-backward pass per batch instead of seven.
        "variants": {
            "standard": {},
            "linf_at": {"mix": "adv", "adv_norm": "linf", "adv_eps": 8 / 255,
                        "profiles": {"smoke": {"adv_steps": 1, "adv_alpha": 1.25},
                                     "cpu": {"adv_steps": 1, "adv_alpha": 1.25},
                                     "full": {"adv_steps": 7, "adv_alpha": None}}},
            "l2_at": {"mix": "adv", "adv_norm": "l2", "adv_eps": 0.5,
                      "profiles": {"smoke": {"adv_steps": 1, "adv_alpha": 1.25},
                                   "cpu": {"adv_steps": 1, "adv_alpha": 1.25},
                                   "full": {"adv_steps": 7, "adv_alpha": None}}},
            "sensitivity": {"penalty": "sensitivity", "lr": 0.01, "batch_size": 128},
            # Zhang et al. 2021 §V-A: PAT — L∞ PGD ε = 8/255, k = 10 steps of α = ε/√k, each clean
            # batch trained together with its adversarial copy (1:1); ALP (Kannan et al. 2018) adds
            # 0.5 × the squared L2 distance between the clean and adversarial logits. `cpu` runs
            # k = 2 (α = ε/√2) and `smoke` k = 1 (α = ε), to fit a 2-core CPU.
            "pat": {"mix": "benign+adv", "adv_norm": "linf", "adv_eps": 8 / 255,
                    "profiles": {"smoke": {"adv_steps": 1, "adv_alpha": 1.0},
                                 "cpu": {"adv_steps": 2, "adv_alpha": 1 / math.sqrt(2)},
                                 "full": {"adv_steps": 10, "adv_alpha": 1 / math.sqrt(10)}}},
            "alp": {"mix": "benign+adv", "adv_norm": "linf", "adv_eps": 8 / 255, "logit_pairing": 0.5,
                    "profiles": {"smoke": {"adv_steps": 1, "adv_alpha": 1.0},
                                 "cpu": {"adv_steps": 2, "adv_alpha": 1 / math.sqrt(2)},
                                 "full": {"adv_steps": 10, "adv_alpha": 1 / math.sqrt(10)}}},
            # Zhang et al. 2021 §V-C, Algorithm 1: SNS fine-tunes the vanilla model (``init``)
            # with PAT's loss plus λ = 5 times eq. 12 over the sensitive neurons (top 10% by σ on
            # L∞ PGD examples of the training set) of conv8–conv13; conv8–conv13, their batch norms
            # and fc1 train, the bottom layers are locked. Eq. 12 acts on each block's output after
            # its batch norm and ReLU (relu8–relu13): on the convolution's output before the batch
            # norm the penalty is scale-free to the network (the batch norm undoes any scale), so
            # it shrinks those weights until the batch norm's ε dominates and the model collapses
            # to chance (measured at `cpu`). The paper gives no epochs ("much fewer epochs compared
            # to PAT"): 40% of PAT's at `cpu` (same peak lr), a third at `full` (half PAT's peak
            # lr, since it starts from a trained model), under the same one-cycle schedule.
            **{f"sns_{mode}": {**_SNS, "sns_mode": mode} for mode in SNS_MODES},
        },
        "evidence": {   # data/results/zoo/cpu.json; 1 seed, 2-core CPU (ResNet-50/101: 2026-11-25; the others 2026-12-02)
            "cpu": "ResNet-20 83.83% (740 s); ResNet-18 w16 69.99% (120 s); ResNet-50 w8 52.84% (176 s); "
                   "ResNet-101 w8 48.69% (356 s); VGG-16 w16 69.91% (57 s); VGG-19 w16 66.47% (76 s); "
                   "VGG-19 w16 variants: linf_at 44.38% (133 s), l2_at 52.55% (123 s), "
                   "sensitivity 65.97% (75 s); VGG-16 w16 variants: pat 55.92% (201 s), alp 46.21% (182 s), "
                   "and fine-tuned from vanilla (2026-12-03): sns_sen 46.07% (79 s), sns_dyn 10.00% (81 s), "
                   "sns_all 10.00% (46 s), sns_rand 59.91 / 63.60 / 61.95% (169 / 47 / 46 s)",
            "full": "not run yet (its accuracy goals: nrlib/papers/zoo.json)",
        },
    },
    # Pravin et al. 2021 study one run of each ResNet at three ages (epochs 10, 50 and 100 of
    # 100), on MNIST and CIFAR-10. One run per model here too, with snapshots at 10 % and 50 %
    # of training, under a cosine schedule without warm-up (a one-cycle schedule's 10 % point
    # is mid-warm-up, not a young trained model). The paper does not state its stem; ours is
    # the CIFAR-style 3×3 conv1 with 64 kernels at full width. `cpu` keeps a 16-kernel conv1
    # (`stem`) on a body of width 8, so that every depth has the same 16 kernels to study
    # (not narrower: width-4 ResNets in channels_last hung or crashed in the CPU's backward
    # pass, 2-core CPU, torch 2.14); crop + flip for CIFAR-10 only (a flipped digit is another digit).
    "pravin": {
        "dataset": ["mnist", "cifar10"], "archs": ["resnet18", "resnet50", "resnet101"],
        "optimizer": "sgd", "schedule": "cosine", "weight_decay": 5e-4,
        "augment": {"default": None, "cifar10": "crop_flip"}, "snapshots": [0.1, 0.5],
        "profiles": {
            "smoke": {"n_train": 100, "n_test": 100, "width": 8, "batch_size": 50, "lr": 0.05, "epochs": 3},
            "cpu": {"n_train": 2000, "n_test": 1000, "width": 8, "stem": 16,
                    "batch_size": 64, "lr": 0.05, "epochs": 10},
            # sized for chapter 1's budget (six networks × 3 seeds, ≤ 10 minutes on one GPU), not the
            # paper's 100 epochs on every image: 20,000 images × 10 epochs at full width
            "full": {"n_train": 20000, "n_test": 10000, "width": 64, "batch_size": 256, "lr": 0.1,
                     "epochs": 10},
        },
        "evidence": {
            "cpu": "not run yet",
            "full": "not run yet",
        },
    },
}
_NOT_HASHED = ("archs", "profiles", "evidence", "variants")     # what does not change how a model is trained
STANDARD = "standard"           # the variant that is the recipe itself
PENALTIES = {"sensitivity": SensitivityPenalty}     # a variant's "penalty": what fit adds to the loss
AUGMENTS = {"crop_flip": crop_flip}


def checkpoint_dir() -> Path:
    return nrdata.data_root() / "checkpoints"


def recipe_datasets(recipe: str) -> list[str]:
    """The datasets a recipe trains on (most recipes: one)."""
    check_choice("recipe", recipe, tuple(RECIPES))
    ds = RECIPES[recipe]["dataset"]
    return [ds] if isinstance(ds, str) else list(ds)


def _check_recipe_dataset(recipe: str, dataset: str | None) -> str:
    datasets = recipe_datasets(recipe)
    if dataset is None:
        if len(datasets) > 1:
            raise ValueError(f"dataset=None: recipe {recipe!r} trains on {datasets}; say which")
        return datasets[0]
    if dataset not in datasets:
        raise ValueError(f"dataset={dataset!r} does not match recipe {recipe!r}, which trains on "
                         f"{datasets[0]!r}" + (f" (or {datasets[1:]})" if len(datasets) > 1 else ""))
    return dataset


def recipe_variants(recipe: str) -> list[str]:
    """The variants of a recipe (``["standard"]`` for a recipe without any)."""
    check_choice("recipe", recipe, tuple(RECIPES))
    return list(RECIPES[recipe].get("variants", {STANDARD: {}}))


def _check_variant(recipe: str, variant: str | None) -> str:
    if variant is None:
        return STANDARD
    check_choice("variant", variant, recipe_variants(recipe))
    return variant


def recipe_settings(arch: str, recipe: str, profile: str, dataset: str | None = None,
                    variant: str | None = None, overrides: dict | None = None) -> dict:
    """Everything that trains ``arch`` on ``dataset`` with ``recipe`` at
    ``profile``: the recipe's shared settings overridden by the profile's,
    then by the ``variant``'s shared and per-profile settings (``None`` or
    ``"standard"``: the recipe itself), resolved for the architecture and
    dataset (a setting ``{"default": v, "<arch>": w, "<dataset>": u,
    "<dataset>/<arch>": t}`` gives the most specific of t, w, u, v that it
    holds). ``dataset`` may be omitted for a recipe with one dataset. ``overrides`` replaces
    settings by name last (each must be one of the resolved settings: a typo is an error), e.g.
    ``{"sns_weight": 1.0}`` for an SNS variant with another λ."""
    check_choice("recipe", recipe, tuple(RECIPES))
    check_choice("profile", profile, PROFILES)
    dataset = _check_recipe_dataset(recipe, dataset)
    variant = _check_variant(recipe, variant)
    rc = RECIPES[recipe]
    merged = {**{k: v for k, v in rc.items() if k not in _NOT_HASHED}, **rc["profiles"][profile]}
    if variant != STANDARD:
        var = rc["variants"][variant]
        merged.update({k: v for k, v in var.items() if k not in _NOT_HASHED})
        merged.update(var.get("profiles", {}).get(profile, {}))
        merged["variant"] = variant
    merged["dataset"] = dataset

    def resolve(v):
        if isinstance(v, dict) and "default" in v:
            return next((v[k] for k in (f"{dataset}/{arch}", arch, dataset) if k in v), v["default"])
        return v
    out = {k: resolve(v) for k, v in merged.items()}
    if overrides:
        if not isinstance(overrides, dict):
            raise ValueError(f"overrides={overrides!r} must be a dict of setting -> value")
        unknown = sorted(set(overrides) - set(out) | ({"variant", "dataset"} & set(overrides)))
        if unknown:
            raise ValueError(f"overrides {unknown} are not settings that can change for {arch!r} with "
                             f"recipe {recipe!r}, variant {variant!r}; settings: "
                             f"{sorted(set(out) - {'variant', 'dataset'})}")
        out.update(overrides)
    return out


def zoo_key(arch: str, dataset: str, recipe: str, profile: str, seed: int, variant: str | None = None,
            overrides: dict | None = None) -> str:
    """The cache key: architecture, dataset, recipe (and variant, unless it is
    the standard one), profile, seed, and a short hash of the settings that
    train this architecture at this profile (with ``overrides``) — and, for a
    variant that fine-tunes another (``init``), that model's key — so that
    changing them retrains (and changing another profile, architecture or
    variant does not)."""
    variant = _check_variant(recipe, variant)
    settings = recipe_settings(arch, recipe, profile, dataset, variant, overrides)
    if settings.get("init"):
        settings["init_key"] = zoo_key(arch, dataset, recipe, profile, seed, settings["init"])
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    name = recipe if variant == STANDARD else f"{recipe}+{variant}"
    return f"{dataset}/{arch}/{name}-{h}-{profile}-seed{seed}"


def _snapshot_path(path: Path, snapshot: float | None) -> Path:
    return path if snapshot is None or snapshot == 1.0 else path.with_name(f"{path.stem}@{snapshot:.2f}.pt")


def train_val_data(dataset: str, recipe: str, profile: str, seed: int = 0, device=None,
                   dtype: torch.dtype = torch.uint8, arch: str | None = None):
    """The training and validation tensors a recipe uses at a profile (raw
    uint8 by default; validation tensors are ``None`` for a recipe without a
    validation split). ``arch`` picks a per-architecture training-set size."""
    sizes = recipe_settings(arch or "", recipe, profile, dataset)
    x, y = nrdata.load(dataset, "train", device=device, dtype=dtype)
    n_val = sizes.get("n_val_split")
    if not n_val:
        idx = nrdata.stratified_subset(y.cpu().numpy(), sizes["n_train"], seed) \
            if sizes["n_train"] < len(y) else np.arange(len(y))
        idx_t = torch.from_numpy(idx).to(x.device)
        return x[idx_t], y[idx_t], None, None
    tr, va = nrdata.train_val_split(len(y), n_val, seed)
    rng = np.random.default_rng(seed)
    tr = np.sort(rng.permutation(tr)[: sizes["n_train"]])
    va = np.sort(rng.permutation(va)[: sizes["n_val"]])
    tr_t, va_t = torch.from_numpy(tr).to(x.device), torch.from_numpy(va).to(x.device)
    return x[tr_t], y[tr_t], x[va_t], y[va_t]


def model_kwargs(arch: str, recipe: str, profile: str, dataset: str | None = None) -> dict:
    """Constructor arguments of ``models.build`` for a recipe's profile (the
    width of the width-reduced CIFAR models, and a ResNet's ``stem`` where the
    recipe sets one)."""
    sizes = recipe_settings(arch, recipe, profile, dataset)
    kw = {"width": sizes["width"]} if "width" in sizes and arch in nrmodels.WIDTH_ARCHS else {}
    if sizes.get("stem") is not None and arch.startswith("resnet"):
        kw["stem"] = sizes["stem"]
    return kw


def snapshot_epochs(epochs: int, fractions) -> dict[int, float]:
    """The epoch at which each fraction of training ends (at least epoch 1);
    a ValueError when two fractions fall on the same epoch (too few epochs)."""
    out: dict[int, float] = {}
    for f in fractions:
        e = max(1, round(f * epochs))
        if e in out:
            raise ValueError(f"snapshots {out[e]} and {f} both fall on epoch {e} of {epochs}; "
                             "train for more epochs or keep fewer snapshots")
        out[e] = f
    return out


def variant_training(settings: dict) -> dict:
    """``fit``'s ``adversary``, ``mix`` and ``penalty`` for resolved recipe
    settings: PGD from a random start, seeded afresh for every batch, with
    step ``adv_alpha``·ε (None: 2.5·ε/steps), where ``adv_norm`` is set."""
    out = {}
    if settings.get("adv_norm"):
        eps, a = settings["adv_eps"], settings.get("adv_alpha")
        out["adversary"] = PGD(eps, steps=settings["adv_steps"], norm=settings["adv_norm"],
                               alpha=None if a is None else a * eps, seed=None)
        out["mix"] = settings.get("mix", "adv")
    if settings.get("penalty"):
        check_choice("penalty", settings["penalty"], tuple(PENALTIES))
        out["penalty"] = PENALTIES[settings["penalty"]]()
    if settings.get("logit_pairing"):
        out["logit_pairing"] = settings["logit_pairing"]
    return out


def zoo_get(arch: str, dataset: str = "mnist", recipe: str = "karnine", profile: str = "cpu",
            seed: int = 0, *, variant: str | None = None, overrides: dict | None = None,
            snapshot: float | None = None, device=None, progress: bool = True, retrain: bool = False):
    """The model ``arch`` trained on ``dataset`` with ``recipe`` at ``profile``:
    loaded from ``data/checkpoints/<key>.pt`` if present, else trained and saved
    atomically. ``snapshot`` (a fraction listed in the recipe's ``snapshots``,
    or 1.0) returns the model as it was at that point of the same run.
    ``variant`` (one of ``recipe_variants(recipe)``) trains it another way:
    adversarial training with PGD (``adv_norm``, ``adv_eps``, ``adv_steps``,
    ``adv_alpha`` in units of ε, ``mix``) or with a loss ``penalty``; a variant
    with ``init`` fine-tunes the zoo's ``init`` model of the same seed instead of
    training from scratch (``finetune="sns"``: ``sns_finetune`` with the
    ``sns_*`` settings). ``overrides`` changes settings by name (see
    ``recipe_settings``); they are part of the cache key. Returns
    ``(model, meta)``; ``meta`` holds the settings, the training history, the
    seconds it took, the test accuracy, the git commit of the code that
    trained it and whether it came from the cache."""
    check_choice("recipe", recipe, tuple(RECIPES))
    check_choice("profile", profile, PROFILES)
    check_int("seed", seed, low=0)
    rc = RECIPES[recipe]
    check_choice("arch", arch, rc["archs"])
    dataset = _check_recipe_dataset(recipe, dataset)
    variant = _check_variant(recipe, variant)
    if snapshot is not None:
        check_choice("snapshot", snapshot, list(rc.get("snapshots", [])) + [1.0])
    dev = get_device(device)
    key = zoo_key(arch, dataset, recipe, profile, seed, variant, overrides)
    path = checkpoint_dir() / f"{key}.pt"
    kw = model_kwargs(arch, recipe, profile, dataset)
    want = _snapshot_path(path, snapshot)
    if want.is_file() and not retrain:
        model = nrmodels.build(arch, dataset, **kw).to(dev)
        _, meta = load_checkpoint(want, model, map_location=dev)
        model.to(memory_format=torch.channels_last).eval()
        return model, {**meta, "cached": True, "path": str(want)}
    st = recipe_settings(arch, recipe, profile, dataset, variant, overrides)
    if st.get("init"):
        return _zoo_finetune(arch, dataset, recipe, profile, seed, variant, st, key, path, dev, progress)
    seed_everything(seed)
    model = nrmodels.build(arch, dataset, **kw).to(dev)
    base = {"key": key, "arch": arch, "dataset": dataset, "recipe": recipe, "variant": variant,
            "profile": profile, "seed": seed,
            "settings": st, "git_commit": nrresults.git_commit(),
            # str(): torch.__version__ is a TorchVersion, which weights_only=True refuses to unpickle
            "device": str(dev), "device_name": nrresults.device_name(dev), "torch": str(torch.__version__),
            "model_kwargs": kw}
    # uint8 on the device: 150 MB for all of CIFAR-10 instead of 600 MB of float32
    xtr, ytr, xva, yva = train_val_data(dataset, recipe, profile, seed, device=dev, arch=arch)
    xte, yte = nrdata.load(dataset, "test", n=st["n_test"] if st["n_test"] < 10000 else None,
                           seed=seed, device=dev)
    snaps = snapshot_epochs(st["epochs"], st.get("snapshots", []))

    def on_epoch(epoch, m):
        if epoch in snaps and snaps[epoch] != 1.0:
            m.eval()
            acc = accuracy(m, xte, yte)
            save_checkpoint(_snapshot_path(path, snaps[epoch]), m,
                            {**base, "snapshot": snaps[epoch], "epoch": epoch, "test_acc": acc})
            m.train()

    hist = fit(model, xtr, ytr, x_val=xva, y_val=yva, optimizer=st["optimizer"], lr=st["lr"],
               batch_size=st["batch_size"], max_epochs=st["epochs"], patience=st.get("patience"),
               weight_decay=st.get("weight_decay", 0.0), schedule=st.get("schedule", "constant"),
               augment=AUGMENTS.get(st.get("augment")), on_epoch=on_epoch if snaps else None,
               **variant_training(st), seed=seed, progress=progress,
               desc=arch if variant == STANDARD else f"{arch}+{variant}")
    meta = {**base, "history": hist, "train_seconds": hist["total_seconds"], "snapshot": 1.0,
            "epoch": len(hist["epoch"]), "n_train": int(len(ytr)), "n_test": int(len(yte)),
            "test_acc": accuracy(model, xte, yte)}
    save_checkpoint(path, model, meta)
    model.eval()
    _record_if_zoo(model, meta, seed, overrides, dev)
    if want != path:   # the snapshot was written during this run
        return zoo_get(arch, dataset, recipe, profile, seed, variant=variant, snapshot=snapshot, device=dev)
    return model, {**meta, "cached": False, "path": str(path)}


FINETUNES = ("sns",)      # what a variant with ``init`` does to its starting model


def _zoo_finetune(arch, dataset, recipe, profile, seed, variant, st, key, path, dev, progress):
    """``zoo_get``'s path for a variant that fine-tunes the zoo's ``st["init"]`` model."""
    check_choice("finetune", st.get("finetune"), FINETUNES)
    model, init = zoo_get(arch, dataset, recipe, profile, seed, variant=st["init"], device=dev,
                          progress=progress)
    base = {"key": key, "arch": arch, "dataset": dataset, "recipe": recipe, "variant": variant,
            "profile": profile, "seed": seed, "settings": st, "init_key": init["key"],
            "init_train_seconds": init["train_seconds"], "git_commit": nrresults.git_commit(),
            "device": str(dev), "device_name": nrresults.device_name(dev), "torch": str(torch.__version__),
            "model_kwargs": init.get("model_kwargs", {})}
    seed_everything(seed)
    xtr, ytr, _, _ = train_val_data(dataset, recipe, profile, seed, device=dev, arch=arch)
    xte, yte = nrdata.load(dataset, "test", n=st["n_test"] if st["n_test"] < 10000 else None,
                           seed=seed, device=dev)
    layers = list(st["sns_layers"])
    t0 = time.perf_counter()
    out = sns_finetune(model, xtr, ytr, layers=layers, trainable=sns_trainable(model, layers),
                       adversary=variant_training(st)["adversary"], mode=st["sns_mode"],
                       share=st["sns_share"], weight=st["sns_weight"], select_n=st["sns_select_n"],
                       reselect_n=st["sns_reselect_n"], pick_seed=st["sns_pick_seed"], seed=seed,
                       optimizer=st["optimizer"], lr=st["lr"], batch_size=st["batch_size"],
                       max_epochs=st["epochs"], patience=None, weight_decay=st.get("weight_decay", 0.0),
                       schedule=st.get("schedule", "constant"), augment=AUGMENTS.get(st.get("augment")),
                       progress=progress, desc=f"{arch}+{variant}")
    hist = out["history"]
    meta = {**base, "history": hist, "train_seconds": time.perf_counter() - t0, "snapshot": 1.0,
            "epoch": len(hist["epoch"]), "n_train": int(len(ytr)), "n_test": int(len(yte)),
            "sensitive": out["sensitive"], "selections": out["selections"],
            "test_acc": accuracy(model, xte, yte)}
    save_checkpoint(path, model, meta)
    model.eval()
    _record_if_zoo(model, meta, seed, None, dev)
    return model, {**meta, "cached": False, "path": str(path)}


# ----------------------------------------------------------------------------
# command line: train (or load) the zoo and record its test accuracy
# ----------------------------------------------------------------------------
def zoo_entry(arch: str, dataset: str, recipe: str, variant: str | None = None) -> str:
    """A model's name in ``data/results/zoo/<profile>.json``: the architecture for a recipe with one
    dataset (``resnet18``), ``<dataset>/<arch>`` for a recipe that trains on several
    (``pravin``: ``mnist/resnet18``), so that no two recipes' models share a name; a variant
    other than the standard one follows a ``+`` (``vgg19+linf_at``)."""
    name = arch if len(recipe_datasets(recipe)) == 1 else f"{dataset}/{arch}"
    variant = _check_variant(recipe, variant)
    return name if variant == STANDARD else f"{name}+{variant}"


def _record_if_zoo(model, meta: dict, seed: int, overrides, dev) -> None:
    """``record_zoo`` for a model ``zoo_get`` has just trained, when it is the zoo table's kind: seed 0
    and the recipe's own settings (no ``overrides``)."""
    if seed == 0 and not overrides:
        record_zoo(model, meta, device=dev)


def record_zoo(model, meta: dict, *, device=None) -> Path:
    """Write one zoo model's test accuracy, training time and settings into
    ``data/results/zoo/<profile>.json`` (the README's zoo table), keeping the other models' entries;
    ``meta`` is ``zoo_get``'s. Called by ``zoo_get`` whenever it trains a seed-0 model of a recipe's
    own settings, so the table always describes the checkpoint the chapters load."""
    profile, entry = meta["profile"], zoo_entry(meta["arch"], meta["dataset"], meta["recipe"], meta["variant"])
    try:
        old = nrresults.read("zoo", profile)
    except FileNotFoundError:
        old = {}
    metrics, seconds, params = (dict(old.get(k, {})) for k in ("metrics", "seconds", "params"))
    metrics[f"test_acc/{entry}"] = meta["test_acc"]
    metrics[f"train_s/{entry}"] = seconds[entry] = meta["train_seconds"]
    params[entry] = {"key": meta["key"], "recipe": meta["recipe"], "variant": meta["variant"],
                     "git_commit": meta.get("git_commit"), "trained_on": meta.get("device_name", meta["device"]),
                     "epochs": len(meta["history"]["epoch"]), "n_train": meta.get("n_train"),
                     "n_test": meta.get("n_test"), "params": nrmodels.count_params(model),
                     **meta.get("model_kwargs", {})}
    return nrresults.write("zoo", profile, metrics, seconds=seconds, params=params, device=device)


def main(argv: list[str] | None = None) -> int:
    """``python -m nrlib.train [--recipe cifar] [--profile auto|smoke|cpu|full] [--archs …] [--datasets …]``:
    train (or load from the cache) each model of a recipe and write its test
    accuracy and training time to ``data/results/zoo/<profile>.json``."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m nrlib.train", description=main.__doc__.split("\n")[0])
    ap.add_argument("--recipe", default="cifar", choices=list(RECIPES))
    ap.add_argument("--profile", default="auto", choices=["auto", *PROFILES],
                    help="auto: full on a CUDA GPU, cpu otherwise")
    ap.add_argument("--archs", nargs="+", default=None, help="default: every model of the recipe")
    ap.add_argument("--datasets", nargs="+", default=None, help="default: every dataset of the recipe")
    ap.add_argument("--variants", nargs="+", default=None,
                    help="default: the standard one (see RECIPES[recipe]['variants'])")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    profile = resolve_profile(args.profile)
    archs = args.archs or RECIPES[args.recipe]["archs"]
    for a in archs:
        check_choice("archs", a, RECIPES[args.recipe]["archs"])
    datasets = args.datasets or recipe_datasets(args.recipe)
    for d in datasets:
        _check_recipe_dataset(args.recipe, d)
    variants = args.variants or [STANDARD]
    for v in variants:
        _check_variant(args.recipe, v)
    dev = get_device()
    try:
        old = nrresults.read("zoo", profile)
    except FileNotFoundError:
        old = {}
    # drop the earlier entries of models whose settings have changed since (another cache key)
    current = {zoo_entry(a, d, r, v) for r in RECIPES for d in recipe_datasets(r) for a in RECIPES[r]["archs"]
               for v in recipe_variants(r)
               if (old.get("params", {}).get(zoo_entry(a, d, r, v)) or {}).get("key")
               == zoo_key(a, d, r, profile, args.seed, v)}
    if old:
        nrresults.write("zoo", profile, {k: v for k, v in old.get("metrics", {}).items()
                                         if k.split("/", 1)[-1] in current},
                        seconds={k: v for k, v in old.get("seconds", {}).items() if k in current},
                        params={k: v for k, v in old.get("params", {}).items() if k in current}, device=dev)
    print(f"zoo: recipe={args.recipe} profile={profile} device={nrresults.device_name(dev)}")
    for dataset, arch, variant in ((d, a, v) for d in datasets for a in archs for v in variants):
        model, meta = zoo_get(arch, dataset, args.recipe, profile, args.seed, variant=variant, device=dev)
        acc, entry = meta["test_acc"], zoo_entry(arch, dataset, args.recipe, variant)
        path = record_zoo(model, meta, device=dev)
        print(f"  {entry:18s} test {acc:6.2f}%  {nrmodels.count_params(model):>11,} params  trained "
              f"{meta['train_seconds']:7.1f} s on {meta.get('device_name', meta['device'])}"
              f"{'  (cached)' if meta['cached'] else ''}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
