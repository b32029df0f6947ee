"""Recipes: how each model of the book trains — the settings per profile, architecture, dataset
and variant, with the evidence each profile measured beside them (airbench's habit) — and what a
recipe resolves to: its settings (``recipe_settings``), its training data (``train_val_data``),
the model's constructor arguments (``model_kwargs``), its snapshots (``snapshot_epochs``) and
the objective it trains with (``variant_objective``). ``nrlib.zoo`` trains and caches them."""
from __future__ import annotations

import math

import numpy as np
import torch

from . import data as nrdata
from . import models as nrmodels
from .attacks import PGD
from .fitting import crop_flip
from .objectives import LogitPairing, Objective, SensitivityPenalty
from .profiles import PROFILES
from .sns import SNS_MODES
from .utils import check_choice


# ----------------------------------------------------------------------------
# the recipes
# ----------------------------------------------------------------------------
# The settings every SNS variant of the cifar recipe shares (Zhang et al. 2021 §V-C, Algorithm 1).
_SNS = {"init": "standard", "finetune": "sns", "sns_layers": [f"relu{i}" for i in range(8, 14)],
        "sns_weight": 5.0, "sns_share": 0.1, "sns_select_n": None, "sns_reselect_n": 200, "sns_pick_seed": None,
        "mix": "benign+adv", "adv_norm": "linf", "adv_eps": 8 / 255, "snapshots": [],
        "profiles": {"smoke": {"adv_steps": 1, "adv_alpha": 1.0, "epochs": 1, "lr": 0.02, "n_train": 500},
                     "cpu": {"adv_steps": 2, "adv_alpha": 1 / math.sqrt(2), "epochs": 4, "lr": 0.1},
                     "full": {"adv_steps": 3, "adv_alpha": 1 / math.sqrt(3), "epochs": 5, "lr": 0.2}}}

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
    # on all 50,000 images; `smoke` only exercises the code. `full` is sized so that one chapter's
    # run fits one GPU loan of at most 8 minutes of compute (`python -m nrbook.budget`): 15 epochs
    # on all 50,000 images; ResNet-18 at the usual width (64), VGG-16 and VGG-19 at half of it (32:
    # chapter 3 trains 34 VGG-16s, chapter 2 spends its minutes on the paper's attacks);
    # ResNet-20 at its real width for 40 epochs; PAT, ALP and SNS with PGD-3 (Zhang et al.: 10).
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
            "full": {"n_train": 50000, "n_test": 10000,
                     "width": {"default": 64, "resnet20": 16, "vgg16": 32, "vgg19": 32},
                     "batch_size": 512, "lr": 0.4, "epochs": {"default": 15, "resnet20": 40}},
        },
        # Variants train any model of the recipe another way (``zoo_get(..., variant="linf_at")``);
        # each overrides the settings above, and its own "profiles" override them per profile.
        # Suri & Evans 2020 (Table 1) compare a standard VGG-19 with PGD adversarial training
        # (Madry et al. 2018) against L∞ ε = 8/255 and L2 ε = 0.5, trained on adversarial examples
        # only, and with their sensitivity regulariser (eq. 5, public code: lr 0.01, batch 128).
        # PGD starts at a random point of the ball; ``adv_alpha`` is its step in units of ε (None:
        # 2.5·ε/steps). `cpu` and `smoke` use one step of 1.25·ε from the random start, the
        # "fast" adversarial training of Wong, Rice & Kolter 2020, at the cost of one extra
        # forward-backward pass per batch instead of seven — except Suri & Evans's two (linf_at,
        # l2_at), which `cpu` trains with PGD-3 (step 2.5·ε/3): one step left them at 44–53% clean
        # accuracy, too weak a robust model to judge what adversarial training does to features.
        "variants": {
            "standard": {},
            "linf_at": {"mix": "adv", "adv_norm": "linf", "adv_eps": 8 / 255,
                        "profiles": {"smoke": {"adv_steps": 1, "adv_alpha": 1.25},
                                     "cpu": {"adv_steps": 3, "adv_alpha": None},
                                     "full": {"adv_steps": 7, "adv_alpha": None}}},
            "l2_at": {"mix": "adv", "adv_norm": "l2", "adv_eps": 0.5,
                      "profiles": {"smoke": {"adv_steps": 1, "adv_alpha": 1.25},
                                   "cpu": {"adv_steps": 3, "adv_alpha": None},
                                   "full": {"adv_steps": 7, "adv_alpha": None}}},
            # The regulariser's top-k: the code's 16 of VGG-19's 512 features (3%), scaled with the
            # width (VGG-19 is the only model the book trains with it: 256 features at `full`, 128 at
            # `cpu`, 64 at `smoke`). The code trains 150 epochs and keeps the checkpoint with the best L2 PGD-20
            # accuracy on the CIFAR-10 *test* set, the split its Table 1 reports on; `full` keeps the
            # epoch with the best L2 PGD accuracy (ε = 0.5) on training images held out of training
            # (``select``, ``n_val_split``), so that the test set chooses nothing. `cpu` keeps the last
            # epoch: there the held-out L2 PGD-10 accuracy stays at 2-10% in every epoch and peaks
            # at epoch 2 of 10, with 31% clean accuracy (seed 0, 2026-12-06), so the rule would keep
            # a barely trained model; `smoke` selects, to exercise the path.
            "sensitivity": {"penalty": "sensitivity", "lr": 0.01, "batch_size": 128,
                            "profiles": {
                                "smoke": {"penalty_top_k": 2, "n_val_split": 200, "n_val": 200,
                                          "select": {"norm": "l2", "eps": 0.5, "steps": 2}},
                                "cpu": {"penalty_top_k": 4},
                                "full": {"penalty_top_k": 8, "n_val_split": 1000, "n_val": 1000,
                                         "select": {"norm": "l2", "eps": 0.5, "steps": 20}}}},
            # Zhang et al. 2021 §V-A: PAT — L∞ PGD ε = 8/255, k = 10 steps of α = ε/√k, each clean
            # batch trained together with its adversarial copy (1:1); ALP (Kannan et al. 2018) adds
            # 0.5 × the squared difference between the clean and adversarial logits, averaged over
            # the logits as in Kannan et al.'s mean-squared-error form (summed over CIFAR-10's 10
            # logits, the term is 10× larger: at `cpu` that ALP lost 9.7 clean points against PAT,
            # where the paper's loses 0.7). `full` runs k = 3 (α = ε/√3), `cpu` k = 2 (α = ε/√2) and
            # `smoke` k = 1 (α = ε), to fit one GPU loan and a 2-core CPU.
            "pat": {"mix": "benign+adv", "adv_norm": "linf", "adv_eps": 8 / 255,
                    "profiles": {"smoke": {"adv_steps": 1, "adv_alpha": 1.0},
                                 "cpu": {"adv_steps": 2, "adv_alpha": 1 / math.sqrt(2)},
                                 "full": {"adv_steps": 3, "adv_alpha": 1 / math.sqrt(3)}}},
            "alp": {"mix": "benign+adv", "adv_norm": "linf", "adv_eps": 8 / 255, "logit_pairing": 0.5,
                    "logit_pairing_reduce": "mean",
                    "profiles": {"smoke": {"adv_steps": 1, "adv_alpha": 1.0},
                                 "cpu": {"adv_steps": 2, "adv_alpha": 1 / math.sqrt(2)},
                                 "full": {"adv_steps": 3, "adv_alpha": 1 / math.sqrt(3)}}},
            # Zhang et al. 2021 §V-C, Algorithm 1: SNS fine-tunes the vanilla model (``init``)
            # with PAT's loss plus λ = 5 times eq. 12 over the sensitive neurons (top 10% by σ on
            # L∞ PGD examples of the training set) of conv8–conv13; conv8–conv13, their batch norms
            # and fc1 train, the bottom layers are locked. Eq. 12 acts on each block's output after
            # its batch norm and ReLU (relu8–relu13): on the convolution's output before the batch
            # norm the penalty is scale-free to the network (the batch norm undoes any scale), so
            # it shrinks those weights until the batch norm's ε dominates and the model collapses
            # to chance (measured at `cpu`). The paper gives no epochs ("much fewer epochs compared
            # to PAT"): 40% of PAT's at `cpu` (same peak lr), a third at `full` (half PAT's peak
            # lr, since it starts from a trained model), under the same one-cycle schedule; PGD-3 at
            # `full`, as PAT's.
            **{f"sns_{mode}": {**_SNS, "sns_mode": mode} for mode in SNS_MODES},
            # PAT fine-tuned from the vanilla model (chapter 6): SNS's path with λ = 0 and every
            # layer trainable, i.e. plain PAT continued from the vanilla weights for SNS's epochs, so
            # that channel c of the vanilla model and of this one are the same unit before and after
            # adversarial training ("did AT change which neurons matter?" asked per neuron).
            "pat_ft": {**_SNS, "sns_mode": "all", "sns_weight": 0.0,
                       "sns_layers": [f"relu{i}" for i in range(1, 14)]},
            # pat_ft's clean twin: the vanilla model fine-tuned on clean images only, every layer
            # trainable, with pat_ft's epochs, peak lr and schedule, so that what pat_ft changes and
            # this twin does not can be put down to the adversarial loss, not to fine-tuning itself.
            "clean_ft": {"init": "standard", "finetune": "plain", "snapshots": [],
                         "profiles": {p: {k: v[k] for k in ("epochs", "lr", "n_train") if k in v}
                                      for p, v in _SNS["profiles"].items()}},
        },
        "evidence": {   # data/results/zoo/cpu.json; 1 seed, 2-core CPU (ResNet-50/101: 2026-11-25; the others 2026-12-02)
            "cpu": "ResNet-20 83.83% (740 s); ResNet-18 w16 69.99% (120 s); ResNet-50 w8 52.84% (176 s); "
                   "ResNet-101 w8 48.69% (356 s); VGG-16 w16 69.91% (57 s); VGG-19 w16 66.47% (106 s, 2026-12-06); "
                   "VGG-19 w16 variants (2026-12-06): linf_at 41.12% (PGD-3, 282 s; one step: 44.38%), "
                   "l2_at 51.71% (PGD-3, 327 s; one step: 52.55%), sensitivity 66.11% (top-4, last epoch, "
                   "112 s); VGG-16 w16 variants: pat 55.92% (201 s), alp 46.21% (182 s, its logit pairing summed "
                   "over the logits; the averaged form it trains with now is not measured yet), "
                   "and fine-tuned from vanilla (2026-12-03): sns_sen 46.07% (79 s), sns_dyn 10.00% (81 s), "
                   "sns_all 10.00% (46 s), sns_rand 59.91 / 63.60 / 61.95% (169 / 47 / 46 s); "
                   "pat_ft 59.36% (147 s) and its clean twin clean_ft 72.00% (30 s, 2026-12-06)",
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
    # MNIST at `cpu` trains on 20,000 images for 3 epochs, so that its snapshots at "10%" and
    # "50%" fall on epochs 1 and 2 (313 and 626 steps): the paper's 10-epoch MNIST model is a
    # trained one; 32 steps of 2,000 images left ResNet-50 at 20-27%, and 157 steps of 10,000
    # images left it at 86.7% on seed 0, below chapter 1's 90% floor.
    # The variant ``constant_lr`` trains the same networks at a constant learning rate: under
    # the cosine schedule the rate reaches 0 at the end, so the last snapshot cannot get worse,
    # and Fig. 4's shape of the mean line (rises to a limit, or rises then falls) is judged on it.
    "pravin": {
        "dataset": ["mnist", "cifar10"], "archs": ["resnet18", "resnet50", "resnet101"],
        "optimizer": "sgd", "schedule": "cosine", "weight_decay": 5e-4,
        "augment": {"default": None, "cifar10": "crop_flip"}, "snapshots": [0.1, 0.5],
        "profiles": {
            "smoke": {"n_train": 100, "n_test": 100, "width": 8, "batch_size": 50, "lr": 0.05, "epochs": 3},
            "cpu": {"n_train": {"default": 2000, "mnist": 20000}, "n_test": 1000, "width": 8, "stem": 16,
                    "batch_size": 64, "lr": 0.05, "epochs": {"default": 10, "mnist": 3}},
            # sized for chapter 1's budget (six networks × 2 schedules × 3 seeds in one run of at
            # most 8 minutes on one GPU, `python -m nrbook.budget`: about 410 s estimated), not the
            # paper's 100 epochs on every image: 20,000 images × 10 epochs, conv1 with the paper's 64
            # kernels (`stem`) on a body of half the paper's width (32; at 64 the estimate is 1,520 s)
            "full": {"n_train": 20000, "n_test": 10000, "width": 32, "stem": 64, "batch_size": 256,
                     "lr": 0.1, "epochs": 10},
        },
        "variants": {"standard": {}, "constant_lr": {"schedule": "constant"}},
        "evidence": {   # the models' own test accuracy on 1,000 images; seed 0, 2-core CPU, 2026-12-05
            "cpu": "cosine: MNIST ResNet-18 / 50 / 101 99.1 / 98.8 / 99.0% (68 / 176 / 262 s), CIFAR-10 "
                   "41.8 / 32.7 / 33.9% (24 / 64 / 98 s); constant_lr: MNIST 97.9 / 95.1 / 97.5%, "
                   "CIFAR-10 37.8 / 34.9 / 29.1%; the snapshots' accuracies are in chapter 1",
            "full": "not run yet",
        },
    },
}
_NOT_HASHED = ("archs", "profiles", "evidence", "variants")     # what does not change how a model is trained
STANDARD = "standard"           # the variant that is the recipe itself
PENALTIES = {"sensitivity": SensitivityPenalty}     # a variant's "penalty": a term of its objective
AUGMENTS = {"crop_flip": crop_flip}


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


def train_val_data(dataset: str, recipe: str, profile: str, seed: int = 0, device=None,
                   dtype: torch.dtype = torch.uint8, arch: str | None = None, variant: str | None = None):
    """The training and validation tensors a recipe (or its ``variant``) uses at a profile (raw
    uint8 by default; validation tensors are ``None`` for a recipe without a
    validation split). ``arch`` picks a per-architecture training-set size."""
    sizes = recipe_settings(arch or "", recipe, profile, dataset, variant)
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


def variant_objective(settings: dict) -> Objective:
    """The ``Objective`` that resolved recipe settings train with: PGD from a random start, seeded
    afresh for every batch, with step ``adv_alpha``·ε (None: 2.5·ε/steps), where ``adv_norm`` is
    set, on the ``mix`` of clean and adversarial images; the ``penalty`` (``PENALTIES``) and
    ``logit_pairing`` λ terms where set (averaged over the logits, or summed where
    ``logit_pairing_reduce`` is ``"sum"``) — in that order."""
    adversary, mix, terms = None, "clean", []
    if settings.get("adv_norm"):
        eps, a = settings["adv_eps"], settings.get("adv_alpha")
        adversary = PGD(eps, steps=settings["adv_steps"], norm=settings["adv_norm"],
                        alpha=None if a is None else a * eps, seed=None)
        mix = settings.get("mix", "adv")
    if settings.get("penalty"):
        check_choice("penalty", settings["penalty"], tuple(PENALTIES))
        top_k = settings.get("penalty_top_k")
        terms.append(PENALTIES[settings["penalty"]](**({} if top_k is None else {"top_k": top_k})))
    if settings.get("logit_pairing"):
        terms.append(LogitPairing(settings["logit_pairing"],
                                  reduce=settings.get("logit_pairing_reduce", LogitPairing.reduce)))
    return Objective(adversary=adversary, mix=mix, terms=terms)
