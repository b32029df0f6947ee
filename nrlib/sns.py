"""Sensitive Neuron Stabilizing training (Zhang et al. 2021, §V-C, Algorithm 1): which layers
SNS fine-tunes (``sns_trainable``) and the fine-tuning itself (``sns_finetune``), whose loss is
the objective PAT + λ·L_sns (``objectives.SNSPenalty``, eqs. 12–13)."""
from __future__ import annotations

import re
from typing import Callable

import torch
import torch.nn as nn

from . import hooks
from .fitting import fit, pixels
from .objectives import Objective, SNSPenalty
from .sensitivity import select_sensitive
from .utils import check_callable, check_choice, check_fraction, check_int

SNS_MODES = ("sen", "dyn", "all", "rand")


def sns_trainable(model: nn.Module, layers) -> list[str]:
    """What SNS fine-tunes when it stabilises ``layers`` (Zhang et al. 2021, §V-C: "parameters
    of the bottom several layers are locked"): for each VGG block named in ``layers`` (``conv<i>``,
    ``bn<i>`` or ``relu<i>``: the penalty before batch norm, after it, or after the ReLU) its
    convolution and batch norm (``conv<i>``, ``bn<i>``), and the logits layer (``fc1``); any other
    named layer as it is."""
    layers = hooks.layer_names(model, layers)
    mods, out = dict(model.named_modules()), []
    for n in layers:
        m = re.fullmatch(r"(?:conv|bn|relu)(\d+)", n)
        i = m.group(1) if m else None
        block = [f"conv{i}", f"bn{i}"] if i and f"conv{i}" in mods else [n]
        out += [b for b in block if b in mods and mods[b] is not None and any(True for _ in mods[b].parameters())]
    return list(dict.fromkeys([*out, hooks.logits_layer(model)[0]]))


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
        xs = pixels(x[idx])
        return select_sensitive(model, xs, adversary(model, xs, y[idx]), layers, share=share)

    if mode in ("sen", "dyn"):
        chosen = select(select_n)
    elif mode == "rand":
        chosen, pick = {}, torch.Generator().manual_seed(pick_seed)
        with torch.no_grad(), hooks.capture(model, layers) as acts:      # a ReLU's width: from its output
            model(pixels(x[:1]))
        for n in layers:
            c = acts[n][0].shape[1]
            chosen[n] = torch.randperm(c, generator=pick)[: max(1, round(share * c))].sort().values.tolist()
    else:
        chosen = None
    selections = [] if chosen is None else [{n: list(v) for n, v in chosen.items()}]
    objective = Objective(adversary=adversary, mix="benign+adv",
                          terms=[SNSPenalty(tuple(layers), sensitive=chosen, weight=weight)])

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
        hist = fit(model, x, y, objective=objective, on_epoch=on_epoch, frozen=locked_bn, seed=seed, **fit_kw)
    finally:
        for p, f in flags:
            p.requires_grad_(f)
    return {"history": hist, "sensitive": chosen, "selections": selections}
