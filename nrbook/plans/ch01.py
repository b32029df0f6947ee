"""The plan of chapter 1 (Pravin et al. 2021, fragile kernels), for ``nrbook.budget``."""
from __future__ import annotations

import functools

from nrlib import fragile
from ..cost import Net, Work, attack, forward, notebook_sizes, training

NOTEBOOK = "01_fragile_kernels"
SWEEP = fragile.SAMPLES_PER_PASS["cuda"]     # images × kernels per pass of the dropout sweep


@functools.lru_cache(maxsize=None)
def _kernels(net: Net) -> int:
    """conv1's kernels (K): the copies of each image the dropout sweep scores."""
    from nrlib import models

    return models.build(net.arch, net.dataset, **dict(net.kwargs)).conv1.out_channels


def plan(profile: str) -> list[Work]:
    """Chapter 1 (Pravin et al. 2021): ResNet-18/50/101 on MNIST and CIFAR-10 trained per seed under
    two schedules (cosine and ``constant_lr``), each run keeping snapshots at 10% and 50% that are
    scored on its test images; the kernel dropout sweep is a forward pass of K copies of each image
    (``fragile.kernel_dropout_accuracy``, K = conv1's kernels); Algorithm 1 is an FGSM step and a
    scoring forward pass per ε (``adversarial_targeting_layers``; the clean and adversarial conv1 /
    relu1 outputs stop after the stem and are left out); the σ search scores the original and each
    filtered copy clean and under FGSM (``sigma_search``); Fig. 3 adds PGD per ε on the original and
    both filtered models (``metrics.robust_hits``). §7 repeats all of it for the other seeds (one
    σ search, at the chosen clamp)."""
    nb = NOTEBOOK
    sz = notebook_sizes(nb, profile)
    S, P = sz["SIZES"], sz["params"]
    archs, datasets, snaps = P["ARCHS"], P["DATASETS"], P["SNAPS"]
    N, n_search = min(S["n_test"], 10000), S["n_search"]
    eps = {"cifar10": sorted(set(S["eps"]["cifar10"]) | {P["eps_cifar"]}),
           "mnist": sorted(set(S["eps"]["mnist"]) | {P["eps_mnist"]})}
    n_seeds = S["seeds"] if P.get("n_seeds") is None else P["n_seeds"]
    net = {(a, d): Net.of(a, "pravin", profile, d) for d in datasets for a in archs}
    r50c, r50m = net["resnet50", "cifar10"], net["resnet50", "mnist"]
    out: list[Work] = []

    def train_all(stage, variant=None):      # load_models: one run per arch × dataset (3 snapshots)
        for (a, d), n in net.items():
            out.extend(training(a, "pravin", profile, dataset=d, variant=variant, stage=stage))

    def clean(stage):                        # clean_metrics: every snapshot on the test images
        for (a, d), n in net.items():
            out.extend(forward(stage, n, len(snaps) * N, what="clean accuracy"))

    def dropout(stage):                      # dropout_all: K copies of each image, every snapshot
        for (a, d), n in net.items():
            out.extend(forward(stage, n, len(snaps) * _kernels(n) * N, batch=SWEEP,
                               what="kernel dropout"))

    def targeting(stage):                    # Algorithm 1 on ResNet-50 CIFAR-10, every snapshot
        out.extend(attack(stage, r50c, len(snaps) * N * len(eps["cifar10"]), 1, what="FGSM"))

    def paired(stage):                       # paired_metrics: clean hits at 100% and 10%
        out.extend(forward(stage, r50c, 2 * N, what="clean hits"))

    def search(stage, clamps):               # σ search: original + each σ, clean and under FGSM
        rows = clamps * (1 + S["sigma_points"])
        out.extend(attack(stage, r50m, rows * n_search, 1, what="σ search: FGSM"))
        out.extend(forward(stage, r50m, rows * n_search, what="σ search: clean accuracy"))

    def fig3(stage):                         # original, filtered, searched: FGSM and PGD per ε
        n = 3 * len(eps["mnist"]) * N
        out.extend(attack(stage, r50m, n, 1, what="Algorithm 1: FGSM"))
        out.extend(attack(stage, r50m, n, S["pgd_steps"], what=f"PGD-{S['pgd_steps']}"))

    train_all("train")
    clean("untimed")                         # cell 7, outside any timer
    dropout("dropout")
    out.extend(forward("neurons", r50c, N, what="rank fragile: clean hits"))
    out.extend(forward("neurons", r50c, _kernels(r50c) * N, batch=SWEEP, what="rank fragile: dropout"))
    targeting("targeting")
    paired("untimed")                        # cell 22, outside any timer
    search("sigma_search", len(fragile.CLAMPS))   # one search per clamp
    fig3("fig3")
    train_all("train_constant", "constant_lr")
    clean("untimed")
    dropout("dropout_constant")
    for _ in range(n_seeds - 1):             # run_seed: every seed but the first, from scratch
        train_all("seeds")
        clean("seeds")
        dropout("seeds")
        targeting("seeds")
        paired("seeds")
        search("seeds", 1)                   # at the chosen clamp only
        fig3("seeds")
        train_all("seeds", "constant_lr")
        clean("seeds")
        dropout("seeds")
    return out
