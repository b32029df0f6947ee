"""The plan of chapter 6 (five rankings of the neurons that matter), for ``nrbook.budget``."""
from __future__ import annotations

import functools
import math

from nrlib import attacks, fragile, neurons

from ..cost import Net, Work, attack, default_of, forward, notebook_sizes, training

NOTEBOOK = "06_neuron_rankings"
CLASSES = 10            # CIFAR-10: delta's margin takes one backward pass per class
# neurons.ablation_accuracy stacks the sets' copies up to batch_size·8 images a batch
ABLATE_BATCH = default_of(neurons.ablation_accuracy, "batch_size") * 8
ATTACK_BATCH = default_of(attacks.pgd, "batch_size")
RANK_BATCH = default_of(neurons.rank, "batch_size")
SPSA_BATCH = attacks.SPSA.batch_size
DROP_BATCH = fragile.SAMPLES_PER_PASS["cuda"]          # kernel dropout's copies per pass on a GPU
MEANS_BATCH = default_of(neurons.channel_means, "batch_size")
FT_BATCH = 128          # §5's fine-tuning batch (the notebook's FT): clean + adversarial, 256 a step


def _flops(model, shape) -> tuple[tuple[str, float], ...]:
    """The forward FLOPs of each conv and linear layer of ``model`` on one image, in the order the
    forward pass runs them (hooks on one pass; 2 per multiply-add, as ``cost`` counts them)."""
    import torch
    import torch.nn as nn

    names, order = {m: n for n, m in model.named_modules()}, []

    def hook(m, _a, o):
        per = (m.in_channels // m.groups * math.prod(m.kernel_size) if isinstance(m, nn.Conv2d)
               else m.in_features)
        order.append((names[m], 2.0 * o.numel() * per))
    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model.eval()(torch.rand(1, *shape))
    finally:
        for h in hs:
            h.remove()
    return tuple(order)


def _after(flops, layer: str) -> float:
    """The share of the forward FLOPs in the layers that run after ``layer``: what a pass that starts
    at the layer (kernel dropout's repeated copies) or a backward that ends at its activation
    costs, as a share of a whole forward pass."""
    i = [n for n, _ in flops].index(layer)
    return sum(f for _, f in flops[i + 1:]) / sum(f for _, f in flops)


@functools.lru_cache(maxsize=None)
def _book(net: Net) -> tuple[tuple[str, float], ...]:
    from nrlib import models

    return _flops(models.build(net.arch, net.dataset, **dict(net.kwargs)), models.SHAPES[net.dataset])


@functools.lru_cache(maxsize=None)
def _layer(net: Net, layer: str) -> tuple[int, float]:
    """(output channels of conv ``layer`` of ``net``, the share of its FLOPs after the layer)."""
    from nrlib import models

    c = models.build(net.arch, net.dataset, **dict(net.kwargs)).get_submodule(layer).out_channels
    return c, _after(_book(net), layer)


@functools.lru_cache(maxsize=None)
def _own(profile: str, layer: str) -> tuple[Net, float, int, float]:
    """§8's torchvision ResNet-18 (ImageNet stem: 7×7 stride 2 and a max pool, so far fewer FLOPs on a
    32×32 image than the book's CIFAR ResNet-18): the book's ResNet-18 that stands in for it, the
    share of that net's FLOPs one of its passes costs, and the layer's channels and share after it."""
    import torchvision

    net = Net.of("resnet18", "cifar", profile)
    tv = torchvision.models.resnet18(num_classes=10)
    own = _flops(tv, (3, 32, 32))
    scale = sum(f for _, f in own) / sum(f for _, f in _book(net))
    return net, scale, tv.get_submodule(layer).out_channels, _after(own, layer)


def _rank(stage: str, net: Net, method: str, layer: str, n: float, steps: int,
          scale: float = 1.0, layer_shape=None) -> list[Work]:
    """The passes of ``neurons.rank(method, …)`` on ``n`` images at conv ``layer``; ``steps``: the
    PGD steps of its attack (1: toggle's FGSM). A backward to an activation costs the forward of the
    layers above it (input gradients only, the weights frozen); it is counted as such a forward."""
    c, after = layer_shape or _layer(net, layer)
    n = n * scale
    fwd = lambda k, what: forward(stage, net, k, batch=RANK_BATCH, what=f"{method} {layer}: {what}")
    adv = lambda: [Work(stage, net, "attack", n * steps, ATTACK_BATCH, f"{method} {layer}: PGD-{steps}")]
    if method in ("weight_l1", "bn_gamma", "random"):                  # read off the weights
        return []
    if method in ("mean_activation", "apoz"):
        return fwd(n, "activations")
    if method == "fragile":          # clean hits; kernel dropout: the layers below once, above C times
        return fwd(n * (2 - after), "hits, layers below") + [
            Work(stage, net, "forward", c * n * after, DROP_BATCH, f"fragile {layer}: {c} kernels dropped")]
    if method == "delta":            # one forward, a backward to the BN output per class
        return fwd(n + CLASSES * n * after, f"margin + {CLASSES} backwards")
    if method in ("sigma", "dominant"):                                # clean and adversarial pass
        return adv() + fwd(2 * n, "clean + adversarial activations")
    if method in ("toggle", "taylor", "taylor_adv"):                   # forward + backward to the layer
        return (adv() if method != "taylor" else []) + fwd(n * (1 + after), "activation × gradient")
    if method == "loo_clean":                                          # intact + each channel removed
        return forward(stage, net, n * (c + 1), batch=ABLATE_BATCH, what=f"loo_clean {layer}")
    if method in ("loo", "loo_loss"):                                  # PGD re-run per ablated copy
        return attack(stage, net, n * (c + 1), steps, batch=ABLATE_BATCH, what=f"{method} {layer}")
    raise ValueError(f"method={method!r} has no cost here")


def _ablate(stage: str, net: Net, n: int, sets: int, steps: int | None, what: str) -> list[Work]:
    """``neurons.ablation_accuracy`` of ``sets`` channel sets on ``n`` images: the intact model and
    each set's copy, under a fresh PGD of ``steps`` (None: clean)."""
    if steps is None:
        return forward(stage, net, n * (sets + 1), batch=ABLATE_BATCH, what=what)
    return attack(stage, net, n * (sets + 1), steps, batch=ABLATE_BATCH, what=what)


def plan(profile: str) -> list[Work]:
    """Chapter 6: VGG-16 trained four ways (``standard``, ``pat`` on ``n_seeds`` seeds, and
    ``pat_ft`` / ``clean_ft`` fine-tuned from the standard model), each evaluated clean and under
    PGD; thirteen channel rankings (``neurons.rank``) of three conv layers of the PAT model and of
    three twins, each a few forward passes, an attack, or a backward to the layer per image — the
    leave-one-out oracles a PGD re-run on every channel's ablated copy; every channel set of §5
    (rankings' top/bottom-k, random sets) ablated and attacked afresh (``ablation_accuracy``);
    prune / protect arms adversarially fine-tuned (``dominant.finetune``) and evaluated; the checks
    (other ablations and ε, SPSA whose queries are forward passes); the extra PAT seeds' headline
    test at the last layer; a torchvision ResNet-18 ranked on 64 images."""
    nb = NOTEBOOK
    S, P = notebook_sizes(nb, profile)["SIZES"], notebook_sizes(nb, profile)["params"]
    arch, layers, last, share = P["ARCH"], P["LAYERS"], P["L_LAST"], P["share"]
    pm, oracles = list(neurons.PAPER_METHODS), list(P["ORACLES"])
    rankings = [*pm, *[b for b in neurons.BASELINES if b != "random"], *oracles]
    cheap = [m for m in rankings if m not in oracles]
    shares = sorted(set(S["shares"]) | {share})
    net = Net.of(arch, "cifar", profile)
    n_models = len(P["VARIANTS"]) - 1 + S["n_seeds"]                   # pat on every seed
    nr, nl, ne, es = S["n_rank"], S["n_loo"], S["n_eval"], S["eval_steps"]
    steps = lambda m: 1 if m == "toggle" else S["rank_steps"]          # toggle ranks under FGSM

    # models: every model trained from scratch (pat on each seed), then clean + PGD on split B
    out = [w for v in P["VARIANTS"].values() for w in training(
        arch, "cifar", profile, variant=v, seeds=S["n_seeds"] if v == "pat" else 1, stage="models")]
    out += forward("models", net, n_models * ne, what="clean hits")
    out += attack("models", net, n_models * ne, es, batch=ATTACK_BATCH, what="PGD on split B")

    # rank: every cheap ranking, random and loo_clean on A, A1, A2 (2·n_rank images) per layer
    for L in layers:
        for m in [*cheap, "random", "loo_clean"]:
            out += _rank("rank", net, m, L, 2 * nr, steps(m))
    # oracle: loo and loo_loss on the two halves of the first n_loo images
    for o in oracles:
        for L in layers:
            out += _rank("oracle", net, o, L, nl, S["loo_steps"])
    # rank_aligned: the cheap rankings again on vanilla, pat_ft and clean_ft
    for _ in P["TWINS"]:
        for L in layers:
            for m in cheap:
                out += _rank("rank_aligned", net, m, L, 2 * nr, steps(m))

    # (the channel means of mean-ablation, 3·n_rank forwards, run outside every timer: left out)
    # interventions: per layer, each set (top-k per share, random sets, bottom-k at the share)
    # ablated on split B, robust (fresh PGD per ablated copy) and clean
    sets = (len(shares) * len(rankings) + len(rankings)
            + sum(S["n_random"] if f == share else S["n_random_curve"] for f in shares))
    for L in layers:
        out += _ablate("interventions", net, ne, sets, es, f"{L}: {sets} sets under PGD")
        out += _ablate("interventions", net, ne, sets, None, f"{L}: {sets} sets clean")

    # finetune: prune arms (intact, the paper rankings, weight_l1, the oracle, random sets) and
    # protect arms (dense only, every parameter, the paper rankings, weight_l1, random sets), each
    # benign+adv fine-tuning with PGD made per batch, then clean + PGD on split B
    n_ft = S["n_ft"] * S["ft_epochs"]
    prune, split = 1 + len(pm) + 2 + S["n_ft_random"], len(pm) + 1 + S["n_ft_random"]
    flops = _book(net)
    mine = sum(f for name, f in flops if name in layers) / sum(f for _, f in flops)
    out += [Work("finetune", net, "train", prune * 2 * n_ft, 2 * FT_BATCH, "prune: fine-tune every weight"),
            Work("finetune", net, "train", 2 * n_ft, 2 * FT_BATCH, "protect: every parameter"),
            # a split arm: weight gradients of the three layers' filters (and the fc) only, so a
            # forward, the backward to the inputs above conv1 and those layers' weight gradients
            Work("finetune", net, "attack", split * 2 * n_ft, 2 * FT_BATCH, "protect: split arms"),
            Work("finetune", net, "forward", split * 2 * n_ft * mine, 2 * FT_BATCH,
                 "protect: split arms' weight gradients"),
            Work("finetune", net, "forward", 2 * n_ft, 2 * FT_BATCH, "protect: dense only (fc's backward)")]
    arms = prune + split + 2
    out += [Work("finetune", net, "attack", arms * n_ft * S["ft_steps"], FT_BATCH, f"PGD-{S['ft_steps']}")]
    out += forward("finetune", net, arms * ne, what="clean hits")
    out += attack("finetune", net, arms * ne, es, batch=ATTACK_BATCH, what="PGD on split B")

    # checks: the headline sets at the last layer under the other ablation, β = 0.5 and each ε;
    # then PGD and SPSA (steps × samples forward queries per image) on three models
    keys = len(rankings) + min(S["n_random_check"], S["n_random"])
    for what in ["other ablation", "β = 0.5", *[f"ε = {e * 255:.0f}/255" for e in S["eps_sweep"]]]:
        out += _ablate("checks", net, ne, keys, es, f"{last}: {what}")
    sp, q = S["n_spsa"], S["spsa"]["steps"] * S["spsa"]["samples"]
    for _ in range(3):                               # intact, oracle's top-k, the most robust's largest
        out += attack("checks", net, sp, es, batch=ATTACK_BATCH, what="PGD (SPSA's images)")
        out += forward("checks", net, sp * q, batch=SPSA_BATCH, what="SPSA queries")
        out += forward("checks", net, sp, what="SPSA: score")

    # seeds: on each extra PAT seed, every ranking at the last layer, the channel means, and the
    # headline sets (top-k of each ranking, n_random random sets) under PGD
    for _ in range(S["n_seeds"] - 1):
        for m in rankings:
            o = m in oracles
            out += _rank("seeds", net, m, last, nl if o else nr, S["loo_steps"] if o else steps(m))
        out += forward("seeds", net, nr, batch=MEANS_BATCH, what="channel means")
        out += _ablate("seeds", net, ne, len(rankings) + S["n_random"], es, f"{last}: headline sets")

    # own_model: a torchvision ResNet-18 (its FLOPs, counted on the book's ResNet-18 at a scale) on
    # the notebook's 64 images at layer2.0.conv1, PGD-1: three rankings and three sets removed
    layer = "layer2.0.conv1"
    own, scale, c, after = _own(profile, layer)
    for m in ("weight_l1", "taylor", "sigma"):
        out += _rank("own_model", own, m, layer, 64, 1, scale=scale, layer_shape=(c, after))
    out += forward("own_model", own, 64 * scale * (3 + 1), what="3 sets removed, clean")
    return out
