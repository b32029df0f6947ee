"""The plan of chapter 4 (Karnine et al. 2024, dominant filters), for ``nrbook.budget``."""
from __future__ import annotations

import itertools

from .. import cost
from ..cost import Net, Work, default_of, notebook_sizes, training

NOTEBOOK = "04_dominant_filters"
MNIST_TEST = 10_000                 # MNIST's test images: what n_test and n_strong are capped at
SLIDER_EPS = 10                     # the ε panel's grid, 0 to 0.5 by 0.05: ten ε > 0 (ε = 0 is no attack)


def _run_key(arch, a, mix, pct, ctrl=None):
    """The notebook's ``run_key``: the name of one fine-tuning run (what ``RE`` selects on)."""
    kind = {None: "split_ft" if pct else "full_at", "twin": "split_ft" if pct else "full_at",
            "random": "split_rand", "head": "head_only"}[ctrl]
    data_ = f"benign_only/{a}" if ctrl == "twin" else mix.replace("adv", a)
    return f"{kind}/{arch}/{data_}" + (f"/top={pct}" if pct else "")


def plan(profile: str) -> list[Work]:
    """Chapter 4 (Karnine et al. 2024): the shallow, base and dense MNIST CNNs trained (recipe
    ``karnine``, batch 32, at its most epochs); every attack is FGSM or PGD run in chunks of 4,096
    (``attacks``), every accuracy a forward pass in chunks of 8,192 (``metrics.predict``). §3's
    untargeted sweep attacks and scores each model per attack and ε, the targeted attacks make 9
    pairs per image; §3.4's dominant filters are one forward pass of each clean and attacked image
    (``dominant.filter_differences``, for the attacks, the sign-noise control and a PGD on an
    untrained copy); the neuron ranking re-attacks with PGD and compares the pairs. §6 makes the
    static adversarial sets once per fine-tuned model and attack, then fine-tunes every setting ×
    seed with ``fitting.fit`` (batches of 128; the split model's step costs a whole step, the
    dense-only control a forward pass), scoring the validation set each epoch and the clean and
    adversarial test images once; online PGD adversarial training attacks every batch; the
    white-box re-attack and the ε panel's cache are attacks and a scoring pass."""
    from nrlib import attacks, dominant as dom, fitting, metrics, neurons

    sz = notebook_sizes(NOTEBOOK, profile)
    S, P = sz["SIZES"], sz["params"]
    models, pcts, top = P["MODELS"], P["pcts"], P["dominant_pct"]
    EPS = sorted(set(P["eps_list"]) | {P["eps_attack"]})
    atk_steps = {"fgsm": 1, "pgd": S["steps"]}                # the chapter's two attacks, ATK
    net = {a: Net.of(a, "karnine", profile) for a in models}
    base = net["base"]
    B_ATK = attacks.FGSM(0.1).batch_size                      # an attack's chunk
    B_EVAL = default_of(metrics.predict, "batch_size")          # predict / accuracy / hits
    B_FIT = default_of(fitting.fit, "batch_size")               # fine-tuning's batches (FT sets none)
    B_DIFF = 2 * default_of(dom.filter_differences, "batch_size")   # clean + attacked of each pair
    B_RANK = 2 * default_of(neurons.rank, "batch_size")
    out: list[Work] = []

    def attack(stage, n, images, steps, what, restarts=1, batch=B_ATK):
        """An attack's steps (``cost.attack``); the chapter scores its results in ``fwd``."""
        out.extend(cost.attack(stage, n, images, steps, restarts=restarts, batch=batch, score=False,
                               what=what))

    def fwd(stage, n, images, what, batch=B_EVAL):
        out.append(Work(stage, n, "forward", float(images), batch, what))

    # train: the three zoo models (cached at cpu; counted as trained from scratch)
    for a in models:
        out += training(a, "karnine", profile, stage="train")

    # untargeted: every model × attack × ε on the evaluation set, then its accuracy
    n_eval = S["n_eval"] // 10 * 10
    for a, (k, st) in itertools.product(models, atk_steps.items()):
        for e in EPS:
            attack("untargeted", net[a], n_eval, st, f"{k.upper()} ε={e}")
            fwd("untargeted", net[a], n_eval, "adversarial accuracy")

    # targeted: each of per_class × 10 images toward its 9 other classes, on base
    n_pairs = 9 * 10 * S["per_class"]
    for k, st in atk_steps.items():
        attack("targeted", base, n_pairs, st, f"targeted {k.upper()}")

    # dominant: §3.4's frequencies per attack; the controls (sign noise: no pass; PGD on an
    # untrained base) and their per-pair tops; the bootstrap is CPU work, not counted
    for k in atk_steps:
        fwd("dominant", base, 2 * n_pairs, f"filter differences ({k})", B_DIFF)
    attack("dominant", base, n_pairs, S["steps"], "targeted PGD, untrained copy")
    for k in (*atk_steps, "noise", "untrained"):
        fwd("dominant", base, 2 * n_pairs, f"pair tops ({k})", B_DIFF)
    # at full the other fine-tuned models get their own targeted attacks and frequencies
    for a, (k, st) in itertools.product([m for m in S["ft_models"] if m != "base"], atk_steps.items()):
        attack("dominant", net[a], n_pairs, st, f"targeted {k.upper()} ({a})")
        fwd("dominant", net[a], 2 * n_pairs, f"filter differences ({a}, {k})", B_DIFF)

    # neurons: per conv layer of base, neurons.rank("dominant") runs an untargeted PGD on the
    # per_class × 10 images and compares each pair (weight_l1 makes no pass)
    n_sel = 10 * S["per_class"]
    for _ in dom.compared_layers(_model(base)):
        attack("neurons", base, n_sel, S["steps"], "PGD (rank dominant)")
        fwd("neurons", base, 2 * n_sel, "filter differences (rank dominant)", B_RANK)

    # adv_sets: per fine-tuned model × attack, the training, validation and test sets attacked
    n_ft, n_val = S["n_ft"], S["n_ft_val"]
    n_test = MNIST_TEST if S["n_test"] >= MNIST_TEST else S["n_test"] // 10 * 10
    for a, (k, st) in itertools.product(S["ft_models"], atk_steps.items()):
        attack("adv_sets", net[a], n_ft + n_val + n_test, st, f"{k.upper()} train/val/test sets")

    # finetune: the notebook's PLAN (Tables 6-9, Tables 10-11, the controls) × seeds
    PLAN = [(a, k, mix, p, None) for a in S["ft_models"] for k in atk_steps
            for mix in ("adv", "benign+adv") for p in (top, None)]
    MIXES = ("adv", "benign+adv") if profile == "full" else ("benign+adv",)
    PLAN += [("base", k, mix, p, None) for k in atk_steps for mix in MIXES for p in pcts
             if ("base", k, mix, p, None) not in PLAN]
    PLAN += [("base", k, "benign+adv", p, c) for k in atk_steps for c, p in (("random", top),
             ("head", None))] + [("base", k, "benign", p, "twin") for k in atk_steps
                                 for p in (top, None)]
    seeds, epochs = S["seeds"], S["ft_epochs"]              # early stopping: its most epochs
    for a, k, mix, p, ctrl in PLAN:
        n_tr = {"adv": n_ft, "benign+adv": 2 * n_ft, "benign": n_ft}[mix]
        n_va = {"adv": n_val, "benign+adv": 2 * n_val, "benign": n_val}[mix]
        name = _run_key(a, k, mix, p, ctrl)
        # the dense-only control freezes every conv: its step is the forward pass (and the
        # dense layers' small backward); every other run, split or whole, a whole training step
        kind = "forward" if ctrl == "head" else "train"
        out.append(Work("finetune", net[a], kind, float(seeds * epochs * n_tr), B_FIT, f"fine-tune {name}"))
        fwd("finetune", net[a], seeds * epochs * n_va, f"validation {name}")
        fwd("finetune", net[a], seeds * 2 * n_test, f"test clean + adv {name}")

    # wall_time: dom.epoch_seconds, 2 split + 2 whole epochs per round on benign + PGD images
    out.append(Work("wall_time", base, "train", float(4 * S["time_rounds"] * 2 * n_ft), B_FIT,
                    "epochs, split and whole"))

    # online_at: PGD-at_steps remade on every batch of 128, the step on the batch and its copy;
    # no early stopping (patience None); validation on the clean validation images
    at = S["at_steps"]
    out.append(Work("online_at", base, "attack", float(epochs * n_ft * at), B_FIT, f"PGD-{at} per batch"))
    out.append(Work("online_at", base, "train", float(epochs * 2 * n_ft), 2 * B_FIT, "train benign + adv"))
    fwd("online_at", base, epochs * n_val, "validation")
    fwd("online_at", base, 2 * n_test, "test clean + adv")

    # reattack: the first seed's whole-model, online and split-at-dominant_pct base models, each
    # under white-box FGSM, PGD and the strong PGD with restarts, then scored
    keys = [_run_key(*r) for r in PLAN] + [P["ON"]]
    RE = [k for k in dict.fromkeys(keys) if k.startswith(("full_at/base/", "online_at/")) or
          (k.startswith("split_ft/base/") and k.endswith(f"/top={top}"))]
    n7 = min(S["n_strong"], n_test) // 10 * 10
    for _ in RE:
        attack("reattack", base, n7, 1, "white-box FGSM")
        attack("reattack", base, n7, S["steps"], "white-box PGD")
        attack("reattack", base, n7, S["strong_steps"], "strong PGD", restarts=S["restarts"])
        fwd("reattack", base, 3 * n7, "robust hits")

    # slider_cache: base's accuracy at every ε of the panel's grid, both attacks
    n_sl = min(S["n_slider"], n_eval)
    for k, st in atk_steps.items():
        attack("slider_cache", base, SLIDER_EPS * n_sl, st, f"{k.upper()} per ε")
        fwd("slider_cache", base, (SLIDER_EPS + 1) * n_sl, "accuracy per ε")
    return out


def _model(net: Net):
    from nrlib import models

    return models.build(net.arch, net.dataset, **dict(net.kwargs))
