"""The plan of chapter 3 (Zhang et al. 2021, neuron sensitivity and SNS training), for
``nrbook.budget``."""
from __future__ import annotations

from dataclasses import replace

from nrlib import attacks, metrics, neurons, sensitivity

from ..cost import Net, Work, attack, default_of, forward, notebook_sizes, training

NOTEBOOK = "03_neuron_sensitivity"

ATTACK_BATCH = default_of(attacks.pgd, "batch_size")  # images (queries for SPSA, NAttack) a pass
PREDICT_BATCH = default_of(metrics.predict, "batch_size")              # hits / predict / accuracy
SENS_BATCH = default_of(sensitivity.layer_sensitivity, "batch_size")
RANK_BATCH = default_of(neurons.rank, "batch_size")


def _b(n: int, cap: int) -> int:
    """The batch a call on ``n`` images runs in, when it chunks by ``cap``."""
    return max(1, min(int(n), cap))


def _pgd(stage, net, n, steps, what, score=True):
    """PGD of ``steps`` steps (one restart: no scoring pass inside) on ``n`` images, with the
    forward pass that scores its result (robust_hits' or the caller's predict) where ``score``."""
    return attack(stage, net, n, steps, batch=_b(n, ATTACK_BATCH), score=score, what=what)


def _sens(stage, net, n, what="layer_sensitivity", batch=SENS_BATCH):
    """``sensitivity.layer_sensitivity``: one forward pass of the clean and one of the perturbed
    batch, every layer hooked at once."""
    return forward(stage, net, 2 * n, batch=_b(n, batch), what=what)


def _trainings(profile: str, wants: list[tuple]) -> list[Work]:
    """Each model ``zoo_get`` would train, once per cache key (``zoo.zoo_key``: the resolved
    settings, so an override equal to the recipe's own value is the same model), in the stage that
    first asks for it; a fine-tuned variant's ``init`` model is asked for first. SNS fine-tuning
    (``sns.sns_finetune``) adds its selection of the sensitive neurons: PGD on every training image
    and ``layer_sensitivity``'s two passes ("sen", "dyn"), and for "dyn" a re-selection on 200
    images after every epoch. A fine-tune is counted at the full training step, though SNS locks
    conv1-conv7's weights (an upper bound: their weight gradients are not computed)."""
    from nrlib import recipes
    from nrlib.zoo import zoo_key

    seen, out = set(), []

    def need(stage, arch, variant, seed, overrides):
        key = zoo_key(arch, "cifar10", "cifar", profile, seed, variant, overrides)
        if key in seen:
            return
        st = recipes.recipe_settings(arch, "cifar", profile, None, variant, overrides)
        if st.get("init"):
            need(stage, arch, st["init"], seed, None)
        seen.add(key)
        out.extend(training(arch, "cifar", profile, variant=variant, overrides=overrides, stage=stage))
        if st.get("finetune") == "sns" and st["sns_mode"] in ("sen", "dyn"):
            net = Net.of(arch, "cifar", profile)
            n, k = st["n_train"] if st["sns_select_n"] is None else st["sns_select_n"], st["adv_steps"]
            sel = _pgd(stage, net, n, k, f"train {variant}: select Ω", False)
            sel += _sens(stage, net, n, f"train {variant}: select Ω")
            if st["sns_mode"] == "dyn":
                r = st["sns_reselect_n"] * st["epochs"]
                sel += _pgd(stage, net, r, k, f"train {variant}: re-select Ω", False)
                sel += _sens(stage, net, r, f"train {variant}: re-select Ω")
            out.extend(replace(w, zoo=True) for w in sel)   # part of the zoo model's training

    for w in wants:
        need(*w)
    return out


def plan(profile: str) -> list[Work]:
    """Chapter 3 (Zhang et al. 2021): VGG-16 trained vanilla, with PAT and ALP, the SNS variants
    fine-tuned from them (λ, layer-range and seed controls), and a ResNet-18. σ and the sensitivity
    ratio are one clean and one perturbed forward pass per image (``sensitivity.layer_sensitivity``)
    of PGD examples (ε/√k steps, one restart) or Gaussian noise (no pass); β-suppression rescores the
    vanilla model under clean, PGD L∞/L2, FGSM and noise; Table III runs C&W (binary steps × steps
    input-side passes), PGD, FGSM and the black-box SPSA and NAttack, whose queries are forward
    passes (samples or population × steps per image; NAttack counted without its early stop);
    Figs. 15-17 are PGD curves and σ of the SNS models."""
    nb = NOTEBOOK
    sizes = notebook_sizes(nb, profile)
    S, S2, P = sizes["SIZES"], sizes["S2"], sizes["params"]
    models, variant, seed = P["MODELS"], P["VARIANT"], P["seed"]
    vgg, rn = Net.of("vgg16", "cifar", profile), Net.of("resnet18", "cifar", profile)
    ks, steps, ns = P["KS"], S["steps"], S["n_sens"]
    seeds = [seed + i for i in range(S2["seeds"])]
    rng = lambda i: [f"relu{j}" for j in range(i, 14)]                 # noqa: E731 (conv<i>–conv13)
    # the notebook's EPS_SL is (2, 8) at smoke, else the grid notebook_sizes reads at cpu
    eps_sl = (2, 8) if profile == "smoke" else P["EPS_SL"]
    ks15, es15 = 10, 12                     # Fig. 15's grids: range(1, 11) steps, range(1, 13) ε

    # ---- every model the chapter needs, trained from scratch (cached at cpu: those stages time ~0)
    sns = [m for m in P["SNS"] if m != "sns_rand"]
    wants = [("train", "vgg16", variant[m], seed, None) for m in models]
    wants += [("train_resnet18", "resnet18", "standard", seed, None)]           # cell 48, untimed
    wants += [("train_sns", "vgg16", m, seed, None) for m in sns]
    wants += [("train_sns", "vgg16", "sns_rand", seed, {"sns_pick_seed": r})
              for r in range(S2["n_rand_sns"])]
    wants += [("train_sns", "vgg16", "sns_sen", seed, ov) for ov in (
        {"init": "pat"}, {"sns_weight": 0.0}, {"init": "pat", "sns_weight": 0.0},
        {"sns_layers": [f"bn{j}" for j in range(8, 14)]},
        {"sns_layers": [f"conv{j}" for j in range(8, 14)]})]
    wants += [("train_sns", "vgg16", variant.get(m, m), s, None)
              for m in ("vanilla", "pat", "sns_sen") for s in seeds]
    wants += [("train_fig16", "vgg16", "sns_sen", seed, {"sns_layers": rng(i)}) for i in S2["starts"]]
    wants += [("train_fig16", "vgg16", "sns_sen", seed, {"sns_weight": lam}) for lam in S2["lams"]]
    wants += [("train_fig16", "vgg16", "sns_sen", seed, {"sns_weight": 0.0, "sns_layers": rng(i)})
              for i in S2["twin_starts"]]
    out = _trainings(profile, wants)

    # ---- §1 σ: PGD at ε = k/255 on the σ pairs (scored later, untimed), then layer_sensitivity
    for m in models:
        for k in ks:
            out += _pgd("pgd_sweep", vgg, ns, steps, f"PGD {m} ε={k}", False)
            out += _sens("pgd_sweep", vgg, ns)
    # Table I (untimed): clean and noisy test images, the PGD pairs' x′ rescored
    nt = S["n_test"]
    for m in models:
        out += forward("untimed", vgg, (1 + 5) * nt, batch=_b(nt, PREDICT_BATCH), what="Table I clean, noise")
        out += forward("untimed", vgg, 4 * ns, batch=_b(ns, PREDICT_BATCH), what="Table I PGD")

    # ---- neurons.rank "sigma" at three convs: its own PGD, then σ after the ReLU
    for _ in ("conv1", "conv7", "conv13"):
        out += _pgd("neurons", vgg, ns, steps, "neurons.rank sigma: PGD", False)
        out += _sens("neurons", vgg, ns, "neurons.rank sigma", batch=RANK_BATCH)

    # ---- targeted PGD toward each class, kept where it lands (counted as all kept), and σ
    nt_ = S["n_target"]
    for _ in range(10):
        out += _pgd("targeted", vgg, nt_, steps, "targeted PGD + predict")
        out += _sens("targeted", vgg, nt_)
    out += forward("untimed", vgg, 10 * nt_, batch=_b(nt_, 4096), what="sens.features of x′")

    # ---- Fig. 8's intervals: bootstraps of the targeted pairs' σ, no network pass
    out += forward("fig8_ci", vgg, 0, what="bootstrap only")

    # ---- β-suppression: per β, the sensitive set and n_rand random sets, five evaluations each
    nbeta = S["n_beta"]
    for _ in range(len(S["betas"]) * (1 + S["n_rand"])):
        out += forward("beta", vgg, 2 * nbeta, batch=_b(nbeta, PREDICT_BATCH), what="clean, noise")
        out += _pgd("beta", vgg, nbeta, steps, "PGD L∞")
        out += _pgd("beta", vgg, nbeta, steps, "PGD L2")
        out += _pgd("beta", vgg, nbeta, 1, "FGSM")

    # ---- σ under Gaussian noise (no pass to make it), per model and severity
    for _ in range(len(models) * 5):
        out += _sens("gauss_ratio", vgg, ns)
    # ---- Table II's per-pair ratios: vanilla and PAT at three ε, pairs already made
    for _ in range(2 * 3):
        out += _sens("ratio_ci", vgg, ns)
    out += _sens("untimed", vgg, ns, "Fig. 13 (b) vanilla under noise")

    # ---- ResNet-18: PGD and σ
    out += _pgd("resnet18", rn, ns, steps, "PGD ResNet-18", False)
    out += _sens("resnet18", rn, ns)

    # ---- Table III: every row (the zoo2 models and the SNS_rand draws) under every attack
    ne, ncw, nbb = S2["n_eval"], S2["n_cw"], S2["n_bb"]
    cw, sp, na = S2["cw"], S2["spsa"], S2["nattack"]

    def row(stage, only=None):
        w = forward(stage, vgg, nt, batch=_b(nt, PREDICT_BATCH), what="clean")
        w += _pgd(stage, vgg, ne, steps, "PGD L∞")
        if only:
            return w
        w += attack(stage, vgg, ncw, cw["steps"] * cw["binary_steps"], batch=_b(ncw, ATTACK_BATCH),
                    what="C&W")
        w += _pgd(stage, vgg, ne, steps, "PGD L2")
        w += _pgd(stage, vgg, ne, 1, "FGSM")
        w += forward(stage, vgg, nbb, batch=_b(nbb, PREDICT_BATCH), what="clean (black-box images)")
        for q, k in ((sp, sp["samples"]), (na, na["population"])):     # queries: forward passes
            w += forward(stage, vgg, nbb * q["steps"] * k,
                         batch=_b(nbb * k, ATTACK_BATCH // k * k), what="SPSA / NAttack queries")
            w += forward(stage, vgg, nbb, batch=_b(nbb, PREDICT_BATCH), what="score")
        return w
    n_rows = len(models) + len(sns) + 5 + S2["n_rand_sns"]     # zoo2 (11 at cpu) + SNS_rand draws
    for _ in range(n_rows):
        out += row("table3")
    # ---- the other seeds of vanilla, PAT and SNS_sen: clean and PGD L∞ only
    for _ in range(3 * (len(seeds) - 1)):
        out += row("seeds", only=True)

    # ---- Fig. 15: PAT, ALP, SNS_sen under PGD with k = 1…10 steps, and at ε = 1…12 with k steps
    nc = S2["n_curve"]
    for _ in P["F15"]:
        for k in range(1, ks15 + 1):
            out += _pgd("fig15", vgg, nc, k, f"PGD-{k}")
        for _ in range(es15):
            out += _pgd("fig15", vgg, nc, steps, "PGD per ε")

    # ---- Fig. 16: one curve per distinct model (TOPK, LAM, TWIN share keys; + vanilla, PAT)
    from nrlib.zoo import zoo_key
    keys = {zoo_key("vgg16", "cifar10", "cifar", profile, seed, "sns_sen", ov) for ov in
            [{"sns_layers": rng(i)} for i in S2["starts"]] + [{"sns_weight": lam} for lam in S2["lams"]]
            + [{"sns_weight": 0.0, "sns_layers": rng(i)} for i in S2["twin_starts"]]}
    for _ in range(len(keys) + 2):
        out += forward("fig16", vgg, nc, batch=_b(nc, PREDICT_BATCH), what="clean")
        for _ in eps_sl:
            out += _pgd("fig16", vgg, nc, steps, "PGD per ε")

    # ---- Fig. 17: SNS_sen and its λ = 0 twin, PGD and σ; then the activations of two models
    for _ in ("sns_sen", "sns_lam0"):
        out += _pgd("fig17", vgg, ns, steps, "PGD", False)
        out += _sens("fig17", vgg, ns)
    out += forward("untimed", vgg, 2 * ns, batch=_b(ns, PREDICT_BATCH), what="Fig. 17 activations")
    return out
