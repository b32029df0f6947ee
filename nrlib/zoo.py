"""The model zoo: ``zoo_get`` loads a cached checkpoint or trains the model with its recipe
(``nrlib.recipes``) and saves it atomically; the cache key (``zoo_key``) covers architecture,
dataset, recipe settings, profile and seed. Recipes with ``snapshots`` also keep the model at
fractions of training (Pravin et al. 2021 study epochs 10/50/100 of one run):
``zoo_get(..., snapshot=0.1)``. ``record_zoo`` keeps ``data/results/zoo/<profile>.json``, the
README's zoo table; ``python -m nrlib.train`` (``main``) trains a recipe's models from the shell.
"""
from __future__ import annotations

import hashlib
import json
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from . import data as nrdata
from . import models as nrmodels
from . import results as nrresults
from .checkpoints import load_checkpoint, save_checkpoint
from .attacks import PGD
from .fitting import fit, pixels
from .metrics import accuracy, robust_accuracy
from .profiles import PROFILES, resolve as resolve_profile
from .recipes import (AUGMENTS, RECIPES, STANDARD, _check_recipe_dataset, _check_variant, model_kwargs,
                      recipe_datasets, recipe_settings, recipe_variants, snapshot_epochs, train_val_data,
                      variant_objective)
from .sns import sns_finetune, sns_trainable
from .utils import check_choice, check_int, get_device, seed_everything


def checkpoint_dir() -> Path:
    return nrdata.data_root() / "checkpoints"


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
        return _cached(arch, dataset, kw, want, dev)
    with _training_lock(path):   # another process training it (a sweep's runs): wait, then load it
        if want.is_file() and not retrain:
            return _cached(arch, dataset, kw, want, dev)
        return _zoo_train(arch, dataset, recipe, profile, seed, variant, overrides, snapshot, dev, progress,
                          key, path, kw, want)


def _cached(arch, dataset, kw, want: Path, dev):
    model = nrmodels.build(arch, dataset, **kw).to(dev)
    _, meta = load_checkpoint(want, model, map_location=dev)
    model.to(memory_format=torch.channels_last).eval()
    return model, {**meta, "cached": True, "path": str(want)}


@contextmanager
def _training_lock(path: Path):
    """An exclusive lock on ``<checkpoint>.lock`` while a model trains, so that processes sharing
    the checkpoint cache (``python -m nrbook.sweep``'s runs) train it once: the others wait, then
    find its checkpoint. Where ``fcntl`` does not exist (Windows) there is no lock."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _zoo_train(arch, dataset, recipe, profile, seed, variant, overrides, snapshot, dev, progress, key, path,
               kw, want):
    """``zoo_get``'s training of a model not in the cache (under its lock)."""
    st = recipe_settings(arch, recipe, profile, dataset, variant, overrides)
    if st.get("init"):
        return _zoo_finetune(arch, dataset, recipe, profile, seed, variant, st, key, path, dev, progress,
                             overrides)
    seed_everything(seed)
    model = nrmodels.build(arch, dataset, **kw).to(dev)
    base = {"key": key, "arch": arch, "dataset": dataset, "recipe": recipe, "variant": variant,
            "profile": profile, "seed": seed,
            "settings": st, "git_commit": nrresults.git_commit(),
            # str(): torch.__version__ is a TorchVersion, which weights_only=True refuses to unpickle
            "device": str(dev), "device_name": nrresults.device_name(dev), "torch": str(torch.__version__),
            "model_kwargs": kw}
    # uint8 on the device: 150 MB for all of CIFAR-10 instead of 600 MB of float32
    xtr, ytr, xva, yva = train_val_data(dataset, recipe, profile, seed, device=dev, arch=arch, variant=variant)
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
               select=_selector(st, xva, yva), objective=variant_objective(st), seed=seed, progress=progress,
               desc=arch if variant == STANDARD else f"{arch}+{variant}")
    meta = {**base, "history": hist, "train_seconds": hist["total_seconds"], "snapshot": 1.0,
            "epoch": hist.get("selected_epoch", len(hist["epoch"])), "n_train": int(len(ytr)), "n_test": int(len(yte)),
            "test_acc": accuracy(model, xte, yte)}
    save_checkpoint(path, model, meta)
    model.eval()
    _record_if_zoo(model, meta, seed, overrides, dev)
    if want != path:   # the snapshot was written during this run
        return zoo_get(arch, dataset, recipe, profile, seed, variant=variant, snapshot=snapshot, device=dev)
    return model, {**meta, "cached": False, "path": str(path)}


def _selector(st: dict, xva, yva):
    """The checkpoint selection a recipe's ``select`` setting asks for: accuracy under PGD (its
    ``norm``, ``eps``, ``steps``; seeded random start) on the held-out training images, scored
    after each epoch by ``fit``, the best epoch kept (Suri & Evans 2020's code selects on L2 PGD
    accuracy). None without the setting."""
    sel = st.get("select")
    if not sel:
        return None
    if xva is None:
        raise ValueError("the recipe's select setting needs held-out training images: set n_val_split and n_val")
    atk = PGD(sel["eps"], norm=sel["norm"], steps=sel["steps"], seed=0)
    x = pixels(xva)
    return lambda m: robust_accuracy(m, x, yva, atk)


# What a variant with ``init`` does to its starting model: ``"sns"`` — ``sns_finetune`` with the
# ``sns_*`` settings; ``"plain"`` — ``fit`` with the variant's objective (clean cross-entropy when it
# sets no ``adv_norm``), every parameter trainable: chapter 6's clean twin of ``pat_ft``.
FINETUNES = ("sns", "plain")


def _zoo_finetune(arch, dataset, recipe, profile, seed, variant, st, key, path, dev, progress, overrides):
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
    xtr, ytr, _, _ = train_val_data(dataset, recipe, profile, seed, device=dev, arch=arch, variant=variant)
    xte, yte = nrdata.load(dataset, "test", n=st["n_test"] if st["n_test"] < 10000 else None,
                           seed=seed, device=dev)
    fit_kw = dict(optimizer=st["optimizer"], lr=st["lr"], batch_size=st["batch_size"],
                  max_epochs=st["epochs"], patience=None, weight_decay=st.get("weight_decay", 0.0),
                  schedule=st.get("schedule", "constant"), augment=AUGMENTS.get(st.get("augment")),
                  seed=seed, progress=progress, desc=f"{arch}+{variant}")
    t0 = time.perf_counter()
    if st["finetune"] == "sns":
        layers = list(st["sns_layers"])
        out = sns_finetune(model, xtr, ytr, layers=layers, trainable=sns_trainable(model, layers),
                           adversary=variant_objective(st).adversary, mode=st["sns_mode"],
                           share=st["sns_share"], weight=st["sns_weight"], select_n=st["sns_select_n"],
                           reselect_n=st["sns_reselect_n"], pick_seed=st["sns_pick_seed"], **fit_kw)
        hist, extra = out["history"], {"sensitive": out["sensitive"], "selections": out["selections"]}
    else:
        hist, extra = fit(model, xtr, ytr, objective=variant_objective(st), **fit_kw), {}
    meta = {**base, "history": hist, "train_seconds": time.perf_counter() - t0, "snapshot": 1.0,
            "epoch": len(hist["epoch"]), "n_train": int(len(ytr)), "n_test": int(len(yte)),
            **extra, "test_acc": accuracy(model, xte, yte)}
    save_checkpoint(path, model, meta)
    model.eval()
    _record_if_zoo(model, meta, seed, overrides, dev)
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
    record = args.seed == 0     # the zoo table records seed 0's models; other seeds are trained and cached only
    # drop the earlier entries of models whose settings have changed since (another cache key)
    current = {zoo_entry(a, d, r, v) for r in RECIPES for d in recipe_datasets(r) for a in RECIPES[r]["archs"]
               for v in recipe_variants(r)
               if (old.get("params", {}).get(zoo_entry(a, d, r, v)) or {}).get("key")
               == zoo_key(a, d, r, profile, args.seed, v)}
    if old and record:
        nrresults.write("zoo", profile, {k: v for k, v in old.get("metrics", {}).items()
                                         if k.split("/", 1)[-1] in current},
                        seconds={k: v for k, v in old.get("seconds", {}).items() if k in current},
                        params={k: v for k, v in old.get("params", {}).items() if k in current}, device=dev)
    print(f"zoo: recipe={args.recipe} profile={profile} device={nrresults.device_name(dev)}"
          + ("" if record else f" seed={args.seed}: training/caching only (data/results/zoo records seed 0)"))
    for dataset, arch, variant in ((d, a, v) for d in datasets for a in archs for v in variants):
        model, meta = zoo_get(arch, dataset, args.recipe, profile, args.seed, variant=variant, device=dev)
        acc, entry = meta["test_acc"], zoo_entry(arch, dataset, args.recipe, variant)
        path = record_zoo(model, meta, device=dev) if record else None
        print(f"  {entry:18s} test {acc:6.2f}%  {nrmodels.count_params(model):>11,} params  trained "
              f"{meta['train_seconds']:7.1f} s on {meta.get('device_name', meta['device'])}"
              f"{'  (cached)' if meta['cached'] else ''}")
    if record:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
