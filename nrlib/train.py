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
* ``zoo_get`` — load a cached checkpoint or train and save it; the cache key
  covers architecture, dataset, recipe, profile and seed.
"""
from __future__ import annotations

import hashlib
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
from . import models as nrmodels
from .attacks import autocast
from .metrics import accuracy
from .utils import atomic_torch_save, check_choice, check_int, check_number, get_device, seed_everything

OPTIMIZERS = ("rmsprop", "adam", "sgd")
MIXES = ("clean", "adv", "benign+adv")
PROFILES = ("smoke", "cpu", "full")


class CorruptCheckpointError(ValueError):
    """A checkpoint file that cannot be read or whose tensors fail their checksum."""


def make_optimizer(params, name: str, lr: float):
    """RMSprop with Keras's defaults (ρ=0.9, ε=1e-7) — the optimiser of Karnine
    et al. 2024 §3.1 — Adam, or SGD with Nesterov momentum 0.9."""
    check_choice("optimizer", name, OPTIMIZERS)
    lr = check_number("lr", lr, low=0.0, low_open=True)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=0.9, eps=1e-7)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True)


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
        x_val: torch.Tensor | None = None, y_val: torch.Tensor | None = None,
        optimizer: str = "rmsprop", lr: float = 1e-3, batch_size: int = 128,
        max_epochs: int = 10, patience: int | None = 2,
        adversary: Callable | None = None, mix: str = "clean",
        seed: int = 0, progress: bool = True, desc: str = "train") -> dict:
    """Train ``model`` on ``(x, y)`` (pixels in [0, 1], on the model's device).

    Early stopping (Karnine et al. 2024 §3.1: "monitoring the accuracy … over
    a patience of 2 epochs"): stop when validation accuracy has not improved
    for ``patience`` epochs and restore the best weights. Returns a history
    dict with per-epoch loss, train and validation accuracy and seconds.
    """
    max_epochs = check_int("max_epochs", max_epochs, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    check_choice("mix", mix, MIXES)
    if (mix == "clean") != (adversary is None):
        raise ValueError(f"mix={mix!r} needs adversary={'None' if mix == 'clean' else 'a callable'}")
    if patience is not None:
        patience = check_int("patience", patience, low=1)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters (all requires_grad=False)")
    dev = x.device
    # channels_last (NHWC): what cuDNN's tensor-core kernels and oneDNN on the CPU
    # want; measured 1.37x faster forward passes of the base MNIST CNN on 2 CPU cores
    model.to(memory_format=torch.channels_last)
    opt = make_optimizer(params, optimizer, lr)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    n = x.shape[0]
    hist = {"epoch": [], "loss": [], "train_acc": [], "val_acc": [], "seconds": []}
    best_acc, best_state, since_best = -math.inf, None, 0
    bar = tqdm(range(1, max_epochs + 1), desc=desc, disable=not progress, leave=False)
    t_start = time.perf_counter()
    for epoch in bar:
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n, generator=gen).to(dev)
        tot_loss = tot_correct = tot_seen = 0.0
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            xb, yb = x[idx], y[idx]
            if adversary is not None:
                xa = adversary(model, xb, yb)
                xb, yb = (xa, yb) if mix == "adv" else (torch.cat([xb, xa]), torch.cat([yb, yb]))
            with autocast(dev):
                logits = model(xb)
            loss = F.cross_entropy(logits.float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
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


# ----------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------
def _digest(state: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_checkpoint(path: str | Path, model_or_state, meta: dict | None = None) -> Path:
    """Write weights + ``meta`` (plain Python values) atomically, with a checksum."""
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    return atomic_torch_save({"state_dict": state, "meta": dict(meta or {}), "sha256": _digest(state)}, path)


def load_checkpoint(path: str | Path, model: nn.Module | None = None, *, map_location="cpu") -> tuple[dict, dict]:
    """Load with ``weights_only=True``; verify the checksum; optionally load into
    ``model``. Returns ``(state_dict, meta)``. Raises ``CorruptCheckpointError``."""
    path = Path(path)
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
        model.load_state_dict(state)
    return state, meta


# ----------------------------------------------------------------------------
# the zoo
# ----------------------------------------------------------------------------
# Recipes: how a model is trained, and the sizes each profile uses.
RECIPES = {
    # Karnine et al. 2024 §3.1: RMSprop, lr 1e-3, early stopping on validation
    # accuracy with patience 2. 42,000 training images as in §4 ("we take
    # 42,000 benign images"), the other 18,000 for validation.
    "karnine": {
        "dataset": "mnist", "optimizer": "rmsprop", "lr": 1e-3, "batch_size": 32, "patience": 2,
        "n_val_split": 18000,
        "profiles": {
            "smoke": {"n_train": 2000, "n_val": 500, "max_epochs": 1},
            "cpu": {"n_train": 42000, "n_val": 18000, "max_epochs": 10},
            "full": {"n_train": 42000, "n_val": 18000, "max_epochs": 30},
        },
    },
}


def checkpoint_dir() -> Path:
    return nrdata.data_root() / "checkpoints"


def zoo_key(arch: str, dataset: str, recipe: str, profile: str, seed: int) -> str:
    """The cache key: architecture, dataset, recipe, profile, seed, and a short
    hash of the recipe's settings, so that changing a recipe retrains."""
    h = hashlib.sha256(json.dumps(RECIPES[recipe], sort_keys=True).encode()).hexdigest()[:8]
    return f"{dataset}/{arch}/{recipe}-{h}-{profile}-seed{seed}"


def train_val_data(dataset: str, recipe: str, profile: str, seed: int = 0, device=None):
    """The training and validation tensors a recipe uses at a profile."""
    rc = RECIPES[recipe]
    sizes = rc["profiles"][profile]
    x, y = nrdata.load(dataset, "train", device=device)
    tr, va = nrdata.train_val_split(len(y), rc["n_val_split"], seed)
    rng = np.random.default_rng(seed)
    tr = np.sort(rng.permutation(tr)[: sizes["n_train"]])
    va = np.sort(rng.permutation(va)[: sizes["n_val"]])
    tr_t, va_t = torch.from_numpy(tr).to(x.device), torch.from_numpy(va).to(x.device)
    return x[tr_t], y[tr_t], x[va_t], y[va_t]


def zoo_get(arch: str, dataset: str = "mnist", recipe: str = "karnine", profile: str = "cpu",
            seed: int = 0, *, device=None, progress: bool = True, retrain: bool = False):
    """The model ``arch`` trained on ``dataset`` with ``recipe`` at ``profile``:
    loaded from ``data/checkpoints/<key>.pt`` if present, else trained and saved
    atomically. Returns ``(model, meta)``; ``meta`` holds the training history,
    the seconds it took and whether it came from the cache."""
    check_choice("arch", arch, nrmodels.ARCHS)
    check_choice("recipe", recipe, tuple(RECIPES))
    check_choice("profile", profile, PROFILES)
    rc = RECIPES[recipe]
    if dataset != rc["dataset"]:
        raise ValueError(f"dataset={dataset!r} does not match recipe {recipe!r}, which trains on {rc['dataset']!r}")
    dev = get_device(device)
    key = zoo_key(arch, dataset, recipe, profile, seed)
    path = checkpoint_dir() / f"{key}.pt"
    if path.is_file() and not retrain:
        model = nrmodels.build(arch, dataset).to(dev)
        _, meta = load_checkpoint(path, model, map_location=dev)
        model.to(memory_format=torch.channels_last).eval()
        return model, {**meta, "cached": True, "path": str(path)}
    seed_everything(seed)
    model = nrmodels.build(arch, dataset).to(dev)
    xtr, ytr, xva, yva = train_val_data(dataset, recipe, profile, seed, device=dev)
    sizes = rc["profiles"][profile]
    hist = fit(model, xtr, ytr, x_val=xva, y_val=yva, optimizer=rc["optimizer"], lr=rc["lr"],
               batch_size=rc["batch_size"], max_epochs=sizes["max_epochs"], patience=rc["patience"],
               seed=seed, progress=progress, desc=f"{arch}")
    meta = {"key": key, "arch": arch, "dataset": dataset, "recipe": recipe, "profile": profile, "seed": seed,
            # str(): torch.__version__ is a TorchVersion, which weights_only=True refuses to unpickle
            "device": str(dev), "torch": str(torch.__version__), "history": hist,
            "train_seconds": hist["total_seconds"]}
    save_checkpoint(path, model, meta)
    model.eval()
    return model, {**meta, "cached": False, "path": str(path)}
