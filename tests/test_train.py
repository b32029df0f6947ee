"""nrlib.train: fit, early stopping, checkpoints and the model zoo."""
from __future__ import annotations

import copy
import json
import math
import time

import pytest
import torch

import nrlib.data as nrdata
from nrlib import results as nrresults
from nrlib import fitting, models, train
from nrlib.attacks import fgsm
from nrlib.models import build
from nrlib.train import CorruptCheckpointError, fit, load_checkpoint, save_checkpoint


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def tiny(mnist_train_small):
    """256 training images: enough for a few optimiser steps."""
    x, y = mnist_train_small
    return x[:256], y[:256]


@pytest.fixture(scope="module")
def init_shallow():
    torch.manual_seed(0)
    return build("shallow", "mnist")


# ---------------------------------------------------------------------------
# fit
# ---------------------------------------------------------------------------
def test_fit_learns_far_above_chance(trained_shallow_fit, mnist_test_small, trained_shallow):
    hist, test_acc = trained_shallow_fit
    # one epoch on 4,000 images: a real MNIST classifier, not a lucky guess
    assert test_acc > 90.0, f"test accuracy {test_acc:.1f}% after one epoch"
    assert hist["epoch"] == [1]
    assert hist["train_acc"][0] > 60.0 and hist["loss"][0] < 1.5
    assert len(hist["seconds"]) == 1 and hist["total_seconds"] >= hist["seconds"][0] > 0
    assert not trained_shallow.training  # fit leaves the model in eval mode


def _fit_copy(init, x, y, **kw):
    m = copy.deepcopy(init)
    torch.manual_seed(1)  # dropout masks: the same in every run below
    hist = fit(m, x, y, progress=False, seed=0, **kw)
    return m, hist


def test_early_stopping_stops_and_restores_best_weights(init_shallow, tiny):
    x, y = tiny
    # a validation set on which accuracy cannot change: one image repeated, labels
    # balanced over the ten classes, so whatever the model predicts it scores 10%
    x_val = torch.zeros(100, 1, 28, 28)
    y_val = torch.arange(100) % 10
    kw = dict(x_val=x_val, y_val=y_val, optimizer="adam", lr=1e-3, batch_size=64)
    m_es, h = _fit_copy(init_shallow, x, y, max_epochs=10, patience=1, **kw)
    assert h["epoch"] == [1, 2], "patience=1 and no improvement: stop after epoch 2"
    assert h["val_acc"][0] == h["val_acc"][1] == pytest.approx(10.0)
    assert h["best_val_acc"] == h["val_acc"][0]
    m1, _ = _fit_copy(init_shallow, x, y, max_epochs=1, patience=None, **kw)
    m2, h2 = _fit_copy(init_shallow, x, y, max_epochs=2, patience=None, **kw)
    assert h2["epoch"] == [1, 2]
    assert not _equal(_state(m1), _state(m2)), "epoch 2 changed the weights"
    assert _equal(_state(m_es), _state(m1)), "early stopping restores the epoch-1 (best) weights"
    _, h3 = _fit_copy(init_shallow, x, y, max_epochs=10, patience=2, **kw)
    assert h3["epoch"] == [1, 2, 3]


def test_select_keeps_the_best_scoring_epoch_without_stopping(init_shallow, tiny):
    x, y = tiny
    scores, states = iter([1.0, 5.0, 2.0]), {}
    kw = dict(optimizer="adam", lr=1e-3, batch_size=64, max_epochs=3, patience=None)
    m, h = _fit_copy(init_shallow, x, y, select=lambda _: next(scores),
                     on_epoch=lambda e, mod: states.__setitem__(e, _state(mod)), **kw)
    assert h["epoch"] == [1, 2, 3] and h["select"] == [1.0, 5.0, 2.0]
    assert h["selected_epoch"] == 2 and h["best_select"] == 5.0
    assert not _equal(states[2], states[3])
    assert _equal(_state(m), states[2]), "the epoch-2 (best-scoring) weights are kept"
    with pytest.raises(ValueError, match="finite score"):
        _fit_copy(init_shallow, x, y, select=lambda _: float("nan"), **kw)
    with pytest.raises(ValueError, match="select and early stopping"):
        _fit_copy(init_shallow, x, y, select=lambda _: 0.0, x_val=x[:8], y_val=y[:8],
                  **{**kw, "patience": 2})


def test_fit_is_reproducible(init_shallow, tiny):
    x, y = tiny
    a, ha = _fit_copy(init_shallow, x, y, max_epochs=1, patience=None)
    b, hb = _fit_copy(init_shallow, x, y, max_epochs=1, patience=None)
    assert _equal(_state(a), _state(b)) and ha["loss"] == hb["loss"]


def test_fit_changes_only_trainable_parameters(init_shallow, tiny):
    x, y = tiny
    m = copy.deepcopy(init_shallow)
    for p in m.conv1.parameters():
        p.requires_grad_(False)
    before = _state(m)
    fit(m, x, y, max_epochs=1, patience=None, progress=False)
    after = _state(m)
    assert torch.equal(before["conv1.weight"], after["conv1.weight"])
    assert torch.equal(before["conv1.bias"], after["conv1.bias"])
    for k in ("conv2.weight", "conv2.bias", "fc1.weight", "fc2.weight"):
        assert not torch.equal(before[k], after[k]), f"{k} should have trained"
    assert not m.conv1.weight.requires_grad and m.conv2.weight.requires_grad


def test_adversarial_training_calls_the_adversary_per_batch(init_shallow, tiny):
    x, y = tiny
    calls = []

    def adversary(model, xb, yb):
        calls.append(len(yb))
        return fgsm(model, xb, yb, 0.1)

    m = copy.deepcopy(init_shallow)
    before = _state(m)
    h = fit(m, x, y, objective=train.Objective(adversary=adversary, mix="benign+adv"), batch_size=100,
            max_epochs=1, patience=None, progress=False)
    assert calls == [100, 100, 56]
    assert not _equal(before, _state(m)) and h["epoch"] == [1]


@pytest.mark.parametrize("kw,param", [
    (dict(max_epochs=0), "max_epochs"),
    (dict(batch_size=0), "batch_size"),
    (dict(patience=0), "patience"),
    (dict(optimizer="lbfgs"), "optimizer"),
    (dict(lr=0.0), "lr"),
])
def test_fit_rejects_bad_arguments(init_shallow, tiny, kw, param):
    x, y = tiny
    with pytest.raises(ValueError, match=rf"^{param}="):
        fit(copy.deepcopy(init_shallow), x, y, progress=False, **kw)


def test_fit_needs_trainable_parameters(init_shallow, tiny):
    m = copy.deepcopy(init_shallow)
    for p in m.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="requires_grad"):
        fit(m, *tiny, progress=False)


# ---------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------
META = {"arch": "shallow", "history": {"val_acc": [97.5, 98.25], "epoch": [1, 2]}, "seed": 0,
        "note": None, "cached": False}


def test_checkpoint_round_trip(tmp_path, trained_shallow, monkeypatch):
    path = tmp_path / "sub" / "m.pt"
    assert save_checkpoint(path, trained_shallow, META) == path and path.is_file()
    assert not [p for p in path.parent.iterdir() if p.name != "m.pt"], "no temp files are left"

    real_load = torch.load
    seen = []

    def spy(*a, **kw):
        seen.append(kw.get("weights_only"))
        return real_load(*a, **kw)

    monkeypatch.setattr(torch, "load", spy)
    state, meta = load_checkpoint(path)
    assert seen == [True], "checkpoints must be loaded with weights_only=True"
    assert meta == META
    ref = trained_shallow.state_dict()
    assert state.keys() == ref.keys()
    assert all(torch.equal(state[k], ref[k].cpu()) and state[k].dtype == ref[k].dtype for k in ref)
    # and into a fresh model
    fresh = build("shallow", "mnist")
    load_checkpoint(path, fresh)
    assert _equal(_state(fresh), _state(trained_shallow))


def test_truncated_checkpoint_is_named(tmp_path, trained_shallow):
    path = tmp_path / "m.pt"
    save_checkpoint(path, trained_shallow, META)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CorruptCheckpointError, match=str(path)):
        load_checkpoint(path)


def test_altered_tensor_fails_the_checksum(tmp_path, trained_shallow):
    path = tmp_path / "m.pt"
    save_checkpoint(path, trained_shallow, META)
    obj = torch.load(path, weights_only=True)
    w = obj["state_dict"]["conv1.weight"]
    w.view(torch.uint8).view(-1)[0] ^= 0x01  # one flipped bit, the old sha256 kept
    torch.save(obj, path)
    assert torch.load(path, weights_only=True)["sha256"] == obj["sha256"]
    with pytest.raises(CorruptCheckpointError, match=str(path)) as e:
        load_checkpoint(path)
    assert "SHA-256" in str(e.value)
    assert issubclass(CorruptCheckpointError, ValueError)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")


# ---------------------------------------------------------------------------
# the zoo
# ---------------------------------------------------------------------------
def test_zoo_trains_once_then_loads_from_cache(tmp_path, monkeypatch):
    real_mnist = (nrdata.data_root() / "MNIST").resolve()
    (tmp_path / "MNIST").symlink_to(real_mnist, target_is_directory=True)
    monkeypatch.setenv("NRLIB_DATA", str(tmp_path))
    assert train.checkpoint_dir() == tmp_path / "checkpoints"

    m1, meta1 = train.zoo_get("shallow", "mnist", "karnine", "smoke", device="cpu", progress=False)
    key = train.zoo_key("shallow", "mnist", "karnine", "smoke", 0)
    assert key.startswith("mnist/shallow/karnine") and key.endswith("smoke-seed0")
    path = tmp_path / "checkpoints" / f"{key}.pt"
    assert meta1["cached"] is False and meta1["path"] == str(path) and path.is_file()
    assert meta1["key"] == key and meta1["profile"] == "smoke" and meta1["torch"] == torch.__version__
    assert meta1["history"]["epoch"] == [1]
    assert meta1["history"]["val_acc"][0] > 30.0  # 2,000 images, one epoch: well above chance
    assert not m1.training

    # the zoo table now describes this checkpoint (a chapter that trains a model updates it)
    rec = json.loads((tmp_path / "results" / "zoo" / "smoke.json").read_text())
    assert rec["metrics"]["test_acc/shallow"] == meta1["test_acc"] and rec["params"]["shallow"]["key"] == key
    _, meta3 = train.zoo_get("shallow", "mnist", "karnine", "smoke", seed=1, device="cpu", progress=False)
    rec = json.loads((tmp_path / "results" / "zoo" / "smoke.json").read_text())
    assert rec["params"]["shallow"]["key"] == key, "only seed 0 models are the zoo table's"

    m2, meta2 = train.zoo_get("shallow", "mnist", "karnine", "smoke", device="cpu", progress=False)
    assert meta2["cached"] is True and meta2["path"] == str(path)
    assert meta2["history"] == meta1["history"]
    assert _equal(_state(m1), _state(m2))
    assert not m2.training
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(m1(x), m2(x))


@pytest.mark.parametrize("kw,param", [(dict(dataset="cifar10"), "dataset"), (dict(profile="huge"), "profile"),
                                      (dict(arch="lenet"), "arch"), (dict(recipe="madry"), "recipe")])
def test_zoo_rejects_bad_arguments(kw, param):
    args = dict(arch="shallow", dataset="mnist", recipe="karnine", profile="smoke") | kw
    with pytest.raises(ValueError, match=rf"^{param}="):
        train.zoo_get(**args)


def test_zoo_key_covers_the_recipe_settings(monkeypatch):
    k0 = train.zoo_key("base", "mnist", "karnine", "cpu", 0)
    assert k0 == train.zoo_key("base", "mnist", "karnine", "cpu", 0)
    assert k0 != train.zoo_key("base", "mnist", "karnine", "cpu", 1)
    assert k0 != train.zoo_key("base", "mnist", "karnine", "full", 0)
    monkeypatch.setitem(train.RECIPES["karnine"], "lr", 2e-3)
    assert train.zoo_key("base", "mnist", "karnine", "cpu", 0) != k0


def test_zoo_key_ignores_other_profiles(monkeypatch):
    k0 = train.zoo_key("resnet18", "cifar10", "cifar", "cpu", 0)
    monkeypatch.setitem(train.RECIPES["cifar"]["profiles"], "full", {"changed": True})
    assert train.zoo_key("resnet18", "cifar10", "cifar", "cpu", 0) == k0
    monkeypatch.setitem(train.RECIPES["cifar"]["profiles"], "cpu", {"changed": True})
    assert train.zoo_key("resnet18", "cifar10", "cifar", "cpu", 0) != k0


# ---------------------------------------------------------------------------
# the CIFAR-10 recipe
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_crop_flip_is_a_shifted_possibly_mirrored_window(dtype):
    torch.manual_seed(0)
    x = (torch.rand(16, 3, 8, 8) * 255).to(dtype)
    out = train.crop_flip(x, pad=2)
    assert out.shape == x.shape and out.dtype == dtype
    xp = torch.nn.functional.pad(x, (2, 2, 2, 2))
    flips = 0
    for i in range(len(x)):
        windows = [(dy, dx, f) for dy in range(5) for dx in range(5) for f in (False, True)
                   if torch.equal(out[i], (lambda w: w.flip(-1) if f else w)(xp[i, :, dy:dy + 8, dx:dx + 8]))]
        assert windows, f"image {i} is not a window of the padded input"
        flips += windows[0][2]
    assert 0 < flips < len(x)      # both flipped and unflipped images occur


def test_cifar_zoo_learns_and_keeps_snapshots(tmp_path, monkeypatch):
    """The fast CIFAR recipe at the smoke profile: a width-8 ResNet-18 on 2,000
    images for 3 epochs rises above chance (10%) on 500 test images, and the
    snapshots at 10% and 50% of training load back as the model of that epoch."""
    (tmp_path / "cifar-10-batches-py").symlink_to((nrdata.data_root() / "cifar-10-batches-py").resolve(),
                                                 target_is_directory=True)
    monkeypatch.setenv("NRLIB_DATA", str(tmp_path))
    m, meta = train.zoo_get("resnet18", "cifar10", "cifar", "smoke", device="cpu", progress=False)
    assert meta["cached"] is False and meta["model_kwargs"] == {"width": 8}
    assert m.conv1.out_channels == 8 and meta["n_train"] == 2000 and meta["n_test"] == 500
    assert meta["test_acc"] > 18.0, meta["test_acc"]          # chance is 10% (measured ~30%)
    assert meta["history"]["train_acc"][-1] > meta["history"]["train_acc"][0]
    # the checkpoint says which code trained it and how
    assert meta["git_commit"] == nrresults.git_commit() and meta["git_commit"] != ""
    assert meta["settings"] == train.recipe_settings("resnet18", "cifar", "smoke")
    key = train.zoo_key("resnet18", "cifar10", "cifar", "smoke", 0)
    snaps = sorted(p.name for p in (tmp_path / "checkpoints" / "cifar10" / "resnet18").glob("*@*.pt"))
    assert snaps == [f"{key.split('/')[-1]}@0.10.pt", f"{key.split('/')[-1]}@0.50.pt"]
    half, hmeta = train.zoo_get("resnet18", "cifar10", "cifar", "smoke", snapshot=0.5, device="cpu")
    assert hmeta["cached"] is True and hmeta["snapshot"] == 0.5 and hmeta["epoch"] == 2
    assert 0.0 <= hmeta["test_acc"] <= 100.0
    assert not _equal(_state(half), _state(m))                  # an earlier model, not the final one
    again, ameta = train.zoo_get("resnet18", "cifar10", "cifar", "smoke", snapshot=1.0, device="cpu")
    assert ameta["cached"] is True and _equal(_state(again), _state(m))
    with pytest.raises(ValueError, match=r"^snapshot="):
        train.zoo_get("resnet18", "cifar10", "cifar", "smoke", snapshot=0.3)


def test_zoo_command_records_test_accuracy(tmp_path, monkeypatch, capsys):
    (tmp_path / "MNIST").symlink_to((nrdata.data_root() / "MNIST").resolve(), target_is_directory=True)
    monkeypatch.setenv("NRLIB_DATA", str(tmp_path))
    assert train.main(["--recipe", "karnine", "--profile", "smoke", "--archs", "shallow"]) == 0
    rec = json.loads((tmp_path / "results" / "zoo" / "smoke.json").read_text())
    assert rec["profile"] == "smoke" and rec["params"]["shallow"]["recipe"] == "karnine"
    assert rec["params"]["shallow"]["key"] == train.zoo_key("shallow", "mnist", "karnine", "smoke", 0)
    assert 30.0 < rec["metrics"]["test_acc/shallow"] <= 100.0 and rec["metrics"]["train_s/shallow"] > 0
    assert "shallow" in capsys.readouterr().out
    # another seed trains and caches, and leaves seed 0's record as it was
    assert train.main(["--recipe", "karnine", "--profile", "smoke", "--archs", "shallow", "--seed", "1"]) == 0
    assert json.loads((tmp_path / "results" / "zoo" / "smoke.json").read_text()) == rec
    assert (nrdata.data_root() / "checkpoints" / f"{train.zoo_key('shallow', 'mnist', 'karnine', 'smoke', 1)}.pt").is_file()
    with pytest.raises(ValueError, match="archs"):
        train.main(["--recipe", "karnine", "--profile", "smoke", "--archs", "resnet18"])


def test_multi_dataset_recipe_entries_are_named_by_dataset():
    """The zoo's results name a model of a recipe with several datasets ``<dataset>/<arch>``, so that
    chapter 1's ResNet-18s never overwrite the CIFAR recipe's ``resnet18``; settings resolve per dataset."""
    assert train.zoo_entry("resnet18", "cifar10", "cifar") == "resnet18"
    assert train.zoo_entry("resnet18", "mnist", "pravin") == "mnist/resnet18"
    assert train.recipe_datasets("pravin") == ["mnist", "cifar10"]
    assert train.zoo_key("resnet18", "mnist", "pravin", "cpu", 0) != train.zoo_key("resnet18", "cifar10", "pravin",
                                                                                    "cpu", 0)
    assert train.recipe_settings("resnet50", "pravin", "cpu", "mnist")["augment"] is None
    assert train.model_kwargs("resnet50", "pravin", "cpu", "mnist") == {"width": 8, "stem": 16}
    with pytest.raises(ValueError, match="dataset=None"):
        train.recipe_settings("resnet18", "pravin", "cpu")
    with pytest.raises(ValueError, match="both fall on epoch"):
        train.snapshot_epochs(2, [0.1, 0.5])


def _step_lrs(monkeypatch, schedule):
    """The learning rate of every optimiser step of a 2-epoch fit with ``schedule``."""
    made = []
    real = train.make_optimizer

    def spy(*a, **k):
        opt = real(*a, **k)
        opt.register_step_pre_hook(lambda o, args, kwargs: made.append(o.param_groups[0]["lr"]))
        return opt
    monkeypatch.setattr(fitting, "make_optimizer", spy)
    torch.manual_seed(0)
    x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
    train.fit(models.build("shallow", "mnist"), x, y, optimizer="sgd", lr=0.1, schedule=schedule, max_epochs=2,
              batch_size=8, patience=None, progress=False)
    return made


def test_cosine_schedule_starts_at_the_peak_without_warm_up(monkeypatch):
    """Chapter 1's snapshots at 10% of training need a model trained at its peak rate from step one."""
    lrs = _step_lrs(monkeypatch, "cosine")
    assert len(lrs) == 16 and lrs[0] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[-1] < 0.01
    assert lrs[8] == pytest.approx(0.1 * (1 + math.cos(math.pi * 8 / 16)) / 2)
    warm = _step_lrs(monkeypatch, "onecycle")
    assert warm[0] == pytest.approx(0.1 / 25) and max(warm) > warm[0]       # one-cycle warms up


# ---------------------------------------------------------------------------
# recipe variants (adversarial training, the sensitivity regulariser)
# ---------------------------------------------------------------------------
def test_standard_variant_is_the_recipe_itself():
    assert train.recipe_variants("cifar")[0] == "standard"
    assert train.recipe_variants("karnine") == ["standard"]
    for p in ("smoke", "cpu", "full"):
        k = train.zoo_key("vgg19", "cifar10", "cifar", p, 0)
        assert train.zoo_key("vgg19", "cifar10", "cifar", p, 0, "standard") == k
        assert train.recipe_settings("vgg19", "cifar", p, variant="standard") == train.recipe_settings(
            "vgg19", "cifar", p)
    assert train.zoo_entry("vgg19", "cifar10", "cifar", "standard") == "vgg19"


def test_variants_have_their_own_keys_settings_and_entries():
    keys = {v: train.zoo_key("vgg19", "cifar10", "cifar", "cpu", 0, v) for v in train.recipe_variants("cifar")}
    assert len(set(keys.values())) == len(keys)
    assert keys["linf_at"].startswith("cifar10/vgg19/cifar+linf_at-")
    st = train.recipe_settings("vgg19", "cifar", "cpu", variant="l2_at")
    assert st["variant"] == "l2_at" and st["adv_norm"] == "l2" and st["adv_eps"] == 0.5 and st["mix"] == "adv"
    # the variant's per-profile settings apply at their profile only
    assert train.recipe_settings("vgg19", "cifar", "full", variant="linf_at")["adv_steps"] > st["adv_steps"]
    sens = train.recipe_settings("vgg19", "cifar", "full", variant="sensitivity")
    assert sens["lr"] == 0.01 and sens["batch_size"] == 128 and sens["penalty"] == "sensitivity"
    assert train.zoo_entry("vgg19", "cifar10", "cifar", "linf_at") == "vgg19+linf_at"
    with pytest.raises(ValueError, match=r"^variant='madry'"):
        train.zoo_key("vgg19", "cifar10", "cifar", "cpu", 0, "madry")
    with pytest.raises(ValueError, match=r"^variant="):
        train.recipe_settings("base", "karnine", "cpu", variant="linf_at")


def test_variant_objective_builds_the_adversary_and_the_terms():
    from nrlib.attacks import PGD
    kw = train.variant_objective(train.recipe_settings("vgg19", "cifar", "cpu", variant="linf_at"))
    adv = kw.adversary
    assert isinstance(adv, PGD) and adv.norm == "linf" and adv.eps == 8 / 255 and kw.mix == "adv"
    assert adv.seed is None and adv.random_start          # a fresh random start for every batch
    assert adv.steps == 3 and adv.step_size == pytest.approx(2.5 * 8 / 255 / 3)     # PGD-3 at cpu
    smoke = train.variant_objective(train.recipe_settings("vgg19", "cifar", "smoke", variant="linf_at"))
    assert smoke.adversary.step_size == pytest.approx(1.25 * 8 / 255)     # one fast step at smoke
    full = train.variant_objective(train.recipe_settings("vgg19", "cifar", "full", variant="l2_at")).adversary
    assert full.norm == "l2" and full.step_size == pytest.approx(2.5 * 0.5 / full.steps)
    pen = train.variant_objective(train.recipe_settings("vgg19", "cifar", "cpu", variant="sensitivity"))
    assert pen.adversary is None and pen.mix == "clean" and len(pen.terms) == 1
    for profile in ("smoke", "cpu", "full"):      # the code's top-16 of 512 features, scaled with width
        st = train.recipe_settings("vgg19", "cifar", profile, variant="sensitivity")
        n_feat = build("vgg19", "cifar10", **train.model_kwargs("vgg19", "cifar", profile)).fc1.in_features
        top_k = train.variant_objective(st).terms[0].top_k
        assert top_k == round(16 * n_feat / 512), (profile, n_feat, top_k)
    alp = train.variant_objective(train.recipe_settings("vgg16", "cifar", "cpu", variant="alp"))
    assert alp.mix == "benign+adv" and alp.terms == (train.LogitPairing(0.5),)
    assert train.variant_objective(train.recipe_settings("vgg19", "cifar", "cpu")) == train.Objective()


def test_adversarially_trained_variant_resists_its_adversary(tmp_path, monkeypatch):
    """Smoke-sized L∞ adversarial training on 2,000 images: the checkpoint names its variant, and the model
    resists PGD better than the standard model trained the same way on the same images."""
    from nrlib import attacks, metrics
    (tmp_path / "cifar-10-batches-py").symlink_to((nrdata.data_root() / "cifar-10-batches-py").resolve(),
                                                 target_is_directory=True)
    monkeypatch.setenv("NRLIB_DATA", str(tmp_path))
    std, _ = train.zoo_get("vgg16", "cifar10", "cifar", "smoke", device="cpu", progress=False)
    adv, meta = train.zoo_get("vgg16", "cifar10", "cifar", "smoke", variant="linf_at", device="cpu",
                              progress=False)
    assert meta["variant"] == "linf_at" and "+linf_at-" in meta["key"] and meta["test_acc"] > 15.0
    x, y = nrdata.load("cifar10", "test", n=300, seed=1)
    atk = attacks.PGD(8 / 255, steps=5)
    assert metrics.robust_accuracy(adv, x, y, atk) > metrics.robust_accuracy(std, x, y, atk) + 3.0


def _hold_training_lock(path, flag, seconds):
    from nrlib import zoo
    with zoo._training_lock(path):
        flag.touch()
        time.sleep(seconds)
        path.write_text("trained")


def test_a_model_in_training_makes_the_others_wait(tmp_path):
    """zoo._training_lock: a second process asking for a model another one is training waits for
    it (and then finds its checkpoint) instead of training it again (nrbook.sweep's runs)."""
    import multiprocessing as mp

    from nrlib import zoo

    path, flag = tmp_path / "m.pt", tmp_path / "started"
    proc = mp.get_context("spawn").Process(target=_hold_training_lock, args=(path, flag, 1.5))
    proc.start()
    deadline = time.time() + 60
    while not flag.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert flag.exists(), "the other process never took the lock"
    with zoo._training_lock(path):
        assert path.read_text() == "trained"          # it waited for the other one to finish
    proc.join(10)
    assert proc.exitcode == 0
