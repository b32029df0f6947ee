"""The cost plan of chapter 2, ``02_one_neuron`` (Suri & Evans 2020), for ``nrbook.budget``."""
from __future__ import annotations

from dataclasses import replace

from nrlib import attacks, metrics, neurons, sensitivity

from ..cost import Net, Work, attack, default_of, forward, notebook_sizes, training

NOTEBOOK = "02_one_neuron"
ATTACK_BATCH = default_of(attacks.pgd, "batch_size")      # the images of one attack pass
PREDICT_BATCH = default_of(metrics.predict, "batch_size")  # robust hits, predictions
FEATURE_BATCH = default_of(sensitivity.features, "batch_size")
SPSA_BATCH = attacks.SPSA.batch_size                       # SPSA's queries per forward pass
RANK_BATCH = default_of(neurons.rank, "batch_size")


def _pgd(stage: str, net: Net, images: float, steps: int, restarts: int = 1, what: str = "PGD") -> list[Work]:
    """``attacks.pgd`` itself (``cost.attack``); the caller adds the pass that scores the result
    (``metrics.robust_hits``)."""
    return attack(stage, net, images, steps, restarts=restarts, batch=ATTACK_BATCH, score=False,
                  what=f"{what}-{steps} ×{restarts}")


def _ns(stage: str, net: Net, images: int, ranks: int, steps: int, what: str) -> list[Work]:
    """``sensitivity.ns_success``: one single-neuron attack per (image, rank) row, batched by 1024;
    per row a clean forward (the target features), ``steps`` input-gradient steps each followed by a
    forward pass (the cross-entropy that keeps the best iterate), and the prediction of the result;
    plus the clean prediction of each image."""
    rows = float(images) * ranks
    return [Work(stage, net, "attack", rows * steps, 1024, f"{what}: neuron attack"),
            Work(stage, net, "forward", rows * (steps + 2) + images, 1024, f"{what}: targets, best, predictions")]


def _train(profile: str, variant: str, seed: int, stage: str) -> list[Work]:
    """``zoo_get`` from scratch (``cost.training``), the seed named in the table."""
    out = training("vgg19", "cifar", profile, variant=variant, stage=stage)
    if seed:                                        # name the twin's run apart from seed 0's
        out = [replace(w, what=w.what.replace("standard", f"standard (seed {seed})")) for w in out]
    return out


def plan(profile: str) -> list[Work]:
    """Chapter 2 (Suri & Evans 2020): four VGG-19s of the cifar recipe trained (standard, L∞- and
    L2-adversarial, the sensitivity regulariser) and a standard twin of the next seed. Δ and its
    statistics are one forward pass per image to the features (``sens.features``; Δ itself is
    closed-form arithmetic on them); the k-NS attack is one single-neuron PGD per (image, rank) row
    with a forward pass after every step (``sens.ns_success``); PGD, transfer, restarts and the ε
    sweep are ``attacks.pgd`` runs scored by a forward pass; pruning re-runs PGD with channels
    zeroed (its clean accuracy is a masked product on the features, no pass); SPSA's queries are
    forward passes, ``samples`` per image and step; the neuron rankings are a forward pass with a
    backward through the head only (counted as a second forward pass)."""
    nb = notebook_sizes(NOTEBOOK, profile)
    S, P = nb["SIZES"], nb["params"]
    models, top_k, eps_linf = P["MODELS"], P["top_k"], P["eps_linf"]
    net = Net.of("vgg19", "cifar", profile)           # every model of the chapter is this VGG-19
    n_feat = _features(net)
    top_k = min(top_k, n_feat)
    n_test = min(S["n_test"], 10000)                   # n_test ≥ 10000: the whole test set
    na = S["n_attack"]
    ranks = len({*range(top_k), *(round(f * (n_feat - 1)) for f in P["FR"])})   # cell 21's RANKS
    out: list[Work] = []

    # train: the four variants (seed 0); then what runs untimed around them — the test accuracy
    # (HIT), the attack images' accuracy and features (cell 21), the rescaled standard model (cell 57)
    for m in models:
        out += _train(profile, m, 0, "train")
    out += forward("untimed", net, len(models) * n_test, what="test accuracy")
    out += forward("untimed", net, 2 * len(models) * na, what="attack images: hits, features")
    out += forward("untimed", net, 4 * S["n_kde"] + 3 * n_test, what="rescaled features")

    # delta: features of the training images (μ, σ) and of the KDE images, per model
    out += forward("delta", net, len(models) * (S["n_stats"] + S["n_kde"]), batch=FEATURE_BATCH, what="features")

    # ns_attack: per model L∞ on every rank of RANKS, L2 on the first top_k, and L∞ in |scaled Δ| order
    for m in models:
        out += _ns("ns_attack", net, na, 2 * ranks + top_k, S["ns_steps"], f"k-NS {m}")

    # pgd: per model and norm, PGD with restarts, scored
    for m in models:
        for norm in P["EPS"]:
            out += _pgd("pgd", net, na, S["pgd_steps"], S["restarts"], f"PGD {norm} {m}")
            out += forward("pgd", net, na, batch=PREDICT_BATCH, what="robust hits")
    # prune: per model the test features once; PGD (one restart) on the unpruned model and on the
    # 2 criteria × 2 sizes of pruned sets; the random sets (DRAWS per size, 3 at smoke: cell 36) on
    # linf_at only
    draws = 3 if profile == "smoke" else P["DRAWS"]
    n_sets = 1 + len(P["CRIT"]) * len(P["FRAC"])
    for m in models:
        runs = n_sets + (len(P["FRAC"]) * draws if m == "linf_at" else 0)
        out += forward("prune", net, n_test, batch=FEATURE_BATCH, what=f"test features {m}")
        out += _pgd("prune", net, runs * na, S["pgd_steps"], what=f"PGD pruned {m}")
        out += forward("prune", net, runs * na, batch=PREDICT_BATCH, what="robust hits")

    # neurons: per model the predictions of the first min(500, n_stats) training images and the
    # Δ-ranking's forward pass with gradients to the last conv's BN (the head: counted as a forward)
    n_b = min(500, S["n_stats"])
    out += forward("neurons", net, len(models) * 2 * n_b, batch=RANK_BATCH, what="predict, Δ ranking")

    # twin: the standard model of seed + 1, and its untimed accuracies (attack and test images)
    out += _train(profile, "standard", P["seed"] + 1, "twin")
    out += forward("twin", net, na + n_test, what="twin hits (untimed)")

    # transfer: PGD crafted on the source for every attack image, replayed on the target (cell 61's
    # PAIRS: those read from the notebook, then the two §4 directions and the twin control)
    pairs = list(P["PAIRS"]) + [("linf_at", "sensitivity"), ("l2_at", "sensitivity"), ("standard", "standard_twin")]
    out += _pgd("transfer", net, len(pairs) * na, S["pgd_steps"], S["restarts"], "PGD L∞ transfer")
    out += forward("transfer", net, len(pairs) * na, batch=PREDICT_BATCH, what="replayed on the target")

    # restarts: PGD with many restarts on linf_at and sensitivity
    for m in ("linf_at", "sensitivity"):
        out += _pgd("restarts", net, na, S["pgd_steps"], S["many_restarts"], f"PGD L∞ {m}")
        out += forward("restarts", net, na, batch=PREDICT_BATCH, what="robust hits")

    # spsa: standard and sensitivity, on the first n attack images; every query a forward pass
    sp = S["spsa"]
    n_sp = min(sp["n"], na)
    for m in ("standard", "sensitivity"):
        out += forward("spsa", net, n_sp * sp["samples"] * sp["steps"], batch=SPSA_BATCH, what=f"SPSA queries {m}")
        out += forward("spsa", net, n_sp, batch=PREDICT_BATCH, what="robust hits")

    # eps_sweep: PGD (one restart) at every ε of SWEEP (the slider's ε and 2 … 64/255: cell 65)
    epsg = sorted({eps_linf, *S["eps_grid"]})
    sweep = sorted({*epsg, *(k / 255 for k in (2, 4, 8, 16, 32, 64))})
    for m in models:
        out += _pgd("eps_sweep", net, len(sweep) * na, S["sweep_steps"], what=f"PGD L∞ {m}")
        out += forward("eps_sweep", net, len(sweep) * na, batch=PREDICT_BATCH, what="robust hits")

    # slider_cache: k-NS (ranks 0 … top_k − 1) at every slider ε but eps_linf (reused from ns_attack)
    nsl = min(S["n_slider"], na)
    for m in models:
        for e in epsg:
            if e != eps_linf:
                out += _ns("slider_cache", net, nsl, top_k, S["ns_steps"], f"k-NS {m} ε={e * 255:.0f}")
    return out


def _features(net: Net) -> int:
    """The logits layer's inputs (fc1's features) of the VGG-19 at this profile's width."""
    from nrlib import hooks, models

    return hooks.logits_layer(models.build(net.arch, net.dataset, **dict(net.kwargs)))[1].in_features
