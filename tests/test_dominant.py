"""nrlib.dominant: dominant filters and the split model (Karnine et al. 2024)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from nrlib import papers, attacks, metrics
from nrlib import dominant as dom
from nrlib.attacks import fgsm
from nrlib.metrics import accuracy
from nrlib.models import build, count_params

# dominant filters used in the split-model tests (conv1: 16 filters, conv2: 32)
DOMINANT = {"conv1": torch.tensor([0, 5]), "conv2": torch.tensor([1, 2, 3, 30])}


def _steps(model, x, y, n=3, lr=0.05):
    """A few plain SGD steps on whatever requires grad."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr)
    model.train()
    for _ in range(n):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


# ---------------------------------------------------------------------------
# n_top and the hand-made helpers
# ---------------------------------------------------------------------------
def test_n_top():
    assert [dom.n_top(c, 0.1) for c in (10, 16, 32, 64, 128)] == [1, 2, 4, 7, 13]
    assert dom.n_top(10, 0.3) == 3  # 0.3·10 is 3.0000000000000004 in floats: not 4
    assert dom.n_top(5, 0.01) == 1 and dom.n_top(5, 1.0) == 5
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="frac"):
            dom.n_top(10, bad)


def test_top_filters_hand_made():
    diff = torch.tensor([[0.1, 0.9, 0.2, 0.0, 0.3, 0.1, 0.0, 0.0, 0.0, 0.0],
                         [0.5, 0.1, 0.2, 0.0, 0.3, 0.1, 0.0, 0.0, 0.0, 0.7],
                         [0.0, 0.0, 0.2, 0.8, 0.3, 0.1, 0.0, 0.0, 0.0, 0.0]])
    top = dom.top_filters(diff, 0.1)
    assert top.shape == (3, 1) and top.flatten().tolist() == [1, 9, 3]
    top2 = dom.top_filters(diff, 0.2)
    assert top2.shape == (3, 2)
    assert [set(r) for r in top2.tolist()] == [{1, 4}, {9, 0}, {3, 4}]


def test_frequency_hand_made():
    top = torch.tensor([[0, 1], [1, 2], [1, 0]])
    assert dom.frequency(top, 5).tolist() == [2, 3, 1, 0, 0]


def test_dominant_filters_hand_made():
    freq = torch.tensor([5, 1, 7, 3, 0, 7, 2, 0, 0, 1])
    assert dom.dominant_filters(freq, 0.2).tolist() == [2, 5]
    assert dom.dominant_filters(freq, 0.3).tolist() == [0, 2, 5]
    # ties break toward the lower index, and the result is sorted
    assert dom.dominant_filters(torch.tensor([4, 9, 9, 9, 0, 0, 0, 0, 0, 0]), 0.2).tolist() == [1, 2]
    assert dom.dominant_filters(torch.zeros(10, dtype=torch.long), 0.1).tolist() == [0]


def test_targeted_pairs():
    x = torch.rand(3, 1, 4, 4)
    y = torch.tensor([0, 7, 9])
    xr, src, tgt = dom.targeted_pairs(x, y)
    assert xr.shape == (27, 1, 4, 4) and src.shape == tgt.shape == (27,)
    assert torch.equal(xr[9:18], x[1:2].expand(9, -1, -1, -1))
    assert not torch.any(src == tgt)
    for i, c in enumerate(y.tolist()):
        assert sorted(tgt[src == c].tolist()) == [k for k in range(10) if k != c]
        assert torch.all(src[9 * i:9 * i + 9] == c)


# ---------------------------------------------------------------------------
# filter differences (§3.4)
# ---------------------------------------------------------------------------
def test_filter_differences_of_identical_pairs_are_zero(trained_shallow, batch):
    x, _ = batch
    d = dom.filter_differences(trained_shallow, ["conv1", "conv2"], x, x.clone())
    assert list(d) == ["conv1", "conv2"]
    assert d["conv1"].shape == (64, 16) and d["conv2"].shape == (64, 32)
    assert all(torch.all(v == 0) for v in d.values())


def test_filter_differences_match_the_definition(trained_shallow, batch):
    m = trained_shallow
    x, y = batch
    x_adv = fgsm(m, x, y, 0.1)
    d = dom.filter_differences(m, ["conv1"], x, x_adv, batch_size=10)  # chunked
    assert d["conv1"].shape == (64, 16)
    assert torch.all(d["conv1"] >= 0) and d["conv1"].sum() > 0
    with torch.no_grad():
        a, b = m.conv1(m.normalize(x)), m.conv1(m.normalize(x_adv))
    ref = (a - b).abs().mean(dim=(2, 3))
    assert torch.allclose(d["conv1"], ref, atol=1e-5)


def test_filter_differences_checks_shapes(trained_shallow, batch):
    x, _ = batch
    with pytest.raises(ValueError, match="x_adv"):
        dom.filter_differences(trained_shallow, ["conv1"], x, x[:10])


# ---------------------------------------------------------------------------
# the split model (§3.5)
# ---------------------------------------------------------------------------
def test_split_model_matches_original(trained_shallow, batch):
    m = trained_shallow.eval()
    x, _ = batch
    split = dom.split_model(m, DOMINANT).eval()
    assert isinstance(split.conv1, dom.SplitConv2d) and isinstance(m.conv1, nn.Conv2d)
    with torch.no_grad():
        assert torch.allclose(split(x), m(x), atol=1e-5)
    merged = dom.merge_split(split).eval()
    assert isinstance(merged.conv1, nn.Conv2d)
    for k, v in m.state_dict().items():
        assert torch.equal(merged.state_dict()[k], v), k
    with torch.no_grad():
        assert torch.allclose(merged(x), m(x), atol=1e-5)


def test_split_model_flags(trained_shallow):
    split = dom.split_model(trained_shallow, DOMINANT)
    trainable = {n for n, p in split.named_parameters() if p.requires_grad}
    assert trainable == {"conv1.w_train", "conv1.b_train", "conv2.w_train", "conv2.b_train",
                         "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    assert split.conv1.w_train.shape == (2, 1, 5, 5) and split.conv2.w_frozen.shape == (28, 16, 3, 3)
    no_dense = dom.split_model(trained_shallow, DOMINANT, train_dense=False)
    assert {n for n, p in no_dense.named_parameters() if p.requires_grad} == {
        "conv1.w_train", "conv1.b_train", "conv2.w_train", "conv2.b_train"}
    # the original model is a separate copy and keeps its flags
    assert all(p.requires_grad for p in trained_shallow.parameters())


@pytest.mark.parametrize("train_dense", [True, False])
def test_only_dominant_filters_change(trained_shallow, batch, train_dense):
    m = trained_shallow
    x, y = batch
    original = {k: v.clone() for k, v in m.state_dict().items()}
    split = _steps(dom.split_model(m, DOMINANT, train_dense=train_dense), x, y)
    merged = dom.merge_split(split).state_dict()
    assert all(torch.equal(m.state_dict()[k], original[k]) for k in original), "the original is untouched"
    for layer, idx in DOMINANT.items():
        C = original[f"{layer}.weight"].shape[0]
        rest = [c for c in range(C) if c not in idx.tolist()]
        for kind in ("weight", "bias"):
            new, old = merged[f"{layer}.{kind}"], original[f"{layer}.{kind}"]
            assert torch.equal(new[rest], old[rest]), f"a frozen filter of {layer} changed"
            for c in idx.tolist():
                assert not torch.equal(new[c], old[c]), f"dominant filter {c} of {layer}.{kind} did not train"
    for k in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"):
        assert torch.equal(merged[k], original[k]) is (not train_dense), k
    assert torch.equal(merged["normalize.mean"], original["normalize.mean"])


def test_split_layers_not_named_stay_frozen(trained_shallow, batch):
    x, y = batch
    split = _steps(dom.split_model(trained_shallow, {"conv1": [3]}), x, y)
    merged = dom.merge_split(split).state_dict()
    ref = trained_shallow.state_dict()
    assert torch.equal(merged["conv2.weight"], ref["conv2.weight"])
    assert not torch.equal(merged["conv1.weight"][3], ref["conv1.weight"][3])
    assert torch.equal(merged["conv1.weight"][:3], ref["conv1.weight"][:3])


def test_split_model_rejects_bad_layers_and_filters(trained_shallow):
    with pytest.raises(ValueError, match="fc1"):
        dom.split_model(trained_shallow, {"fc1": [0]})
    with pytest.raises(ValueError, match="16"):
        dom.split_model(trained_shallow, {"conv1": [16]})


def _paper(key):
    """A published number of Karnine et al. 2024, from its paper file (typed nowhere else)."""
    return next(c["paper"] for c in papers.load("karnine2024")["claims"] if c["key"] == key)


@pytest.mark.parametrize("arch", ["shallow", "base", "dense"])
def test_trainable_share_reproduces_karnine_table12(arch):
    frozen_pct = _paper(f"frozen_params_pct/{arch}/top=10")
    m = build(arch, "mnist")
    plain = dom.trainable_share(m)
    assert plain == {"trainable": count_params(m), "total": count_params(m), "frozen_pct": 0.0}
    dominant = {n: torch.arange(dom.n_top(c.out_channels, 0.1)) for n, c in m.conv_layers().items()}
    share = dom.trainable_share(dom.split_model(m, dominant))
    assert share["total"] == count_params(m)
    assert round(share["frozen_pct"], 2) == frozen_pct
    # the split does not depend on which filters are dominant, only on how many
    other = {n: idx + 1 for n, idx in dominant.items()}
    assert dom.trainable_share(dom.split_model(m, other)) == share


def test_finetune_with_static_adversarial_set(trained_shallow, batch):
    m = trained_shallow
    x, y = batch
    x_adv = fgsm(m, x, y, 0.2)
    ref = {k: v.clone() for k, v in m.state_dict().items()}
    tuned, hist = dom.finetune(m, x, y, x_adv, dominant=DOMINANT, mix="benign+adv", optimizer="sgd",
                               lr=0.01, batch_size=32, max_epochs=1, patience=None, progress=False)
    assert isinstance(tuned.conv1, nn.Conv2d) and not tuned.training  # the plain model again
    assert hist["share"]["total"] == count_params(m) and 0 < hist["share"]["frozen_pct"] < 100
    new = tuned.state_dict()
    rest = [c for c in range(16) if c not in DOMINANT["conv1"].tolist()]
    assert torch.equal(new["conv1.weight"][rest], ref["conv1.weight"][rest])
    assert not torch.equal(new["conv1.weight"], ref["conv1.weight"])
    assert not torch.equal(new["fc1.weight"], ref["fc1.weight"])
    assert all(torch.equal(m.state_dict()[k], ref[k]) for k in ref), "the input model is untouched"


def test_finetune_argument_checks(trained_shallow, batch):
    x, y = batch
    with pytest.raises(ValueError, match="x_adv"):
        dom.finetune(trained_shallow, x, y)  # neither a static set nor an adversary
    with pytest.raises(ValueError, match="x_adv"):
        dom.finetune(trained_shallow, x, y, x, adversary=lambda m, a, b: a)
    with pytest.raises(ValueError, match=r"^mix="):
        dom.finetune(trained_shallow, x, y, x, mix="clean")
    with pytest.raises(ValueError, match="clean images alone"):
        dom.finetune(trained_shallow, x, y, x, mix="benign")     # a benign twin takes no adversarial set


def test_benign_twin_trains_on_the_clean_images_only(trained_shallow, batch, monkeypatch):
    """mix='benign' (the λ = 0 twin): the same fine-tuning, on exactly the clean images."""
    import nrlib.fitting as fitting
    seen = {}
    real_fit = fitting.fit

    def spy(model, x, y, **kw):
        seen["x"], seen["y"], seen["kw"] = x, y, kw
        return real_fit(model, x, y, **kw)
    monkeypatch.setattr(fitting, "fit", spy)
    x, y = batch
    tuned, hist = dom.finetune(trained_shallow, x, y, dominant=DOMINANT, mix="benign", optimizer="sgd",
                               lr=0.01, batch_size=32, max_epochs=1, patience=None, progress=False)
    assert torch.equal(seen["x"], x) and torch.equal(seen["y"], y)
    assert "objective" not in seen["kw"] and 0 < hist["share"]["frozen_pct"] < 100
    assert not torch.equal(tuned.state_dict()["fc1.weight"], trained_shallow.state_dict()["fc1.weight"])


# ---------------------------------------------------------------------------
# fix a: one convolution with gathered weights
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
def test_split_conv_is_one_convolution_equal_to_the_original(monkeypatch, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 10, 3, stride=2, padding=1, bias=bias).to(memory_format=torch.channels_last)
    x = torch.rand(5, 6, 9, 9).to(memory_format=torch.channels_last)
    chosen = [0, 4, 9]
    split = dom.SplitConv2d(conv, chosen)
    calls = []
    real = F.conv2d
    monkeypatch.setattr(F, "conv2d", lambda *a, **k: calls.append(1) or real(*a, **k))
    out = split(x)
    assert len(calls) == 1, "the split layer must run one convolution, not one per part"
    # a channels_last input stays channels_last: no concatenation / re-indexing of outputs
    assert out.is_contiguous(memory_format=torch.channels_last)
    ref = conv(x)
    assert torch.allclose(out, ref, atol=1e-6)
    g = torch.randn_like(ref)
    (out * g).sum().backward()
    (ref * g).sum().backward()
    assert torch.allclose(split.w_train.grad, conv.weight.grad[chosen], atol=1e-5)
    if bias:
        assert torch.allclose(split.b_train.grad, conv.bias.grad[chosen], atol=1e-5)
    assert [n for n, p in split.named_parameters()] == (["w_train", "b_train"] if bias else ["w_train"])
    assert split.w_frozen.grad is None and not split.w_frozen.requires_grad
    w, b = split.merged()
    assert torch.equal(w, conv.weight) and (b is None if not bias else torch.equal(b, conv.bias))


def test_split_conv_with_no_or_all_filters_trainable():
    conv = nn.Conv2d(2, 4, 3, padding=1)
    x = torch.rand(3, 2, 6, 6)
    for chosen in ([], [0, 1, 2, 3]):
        split = dom.SplitConv2d(conv, chosen)
        assert split.w_train.shape[0] == len(chosen)
        assert torch.allclose(split(x), conv(x), atol=1e-6)
    with pytest.raises(ValueError, match="trainable"):
        dom.SplitConv2d(conv, [4])


# ---------------------------------------------------------------------------
# fix b: nested conv layers (a ResNet) are split and merged at their paths
# ---------------------------------------------------------------------------
NESTED = {"conv1": [0, 3], "l1b1c1": [1], "l3b2c2": [5, 7, 30]}
NESTED_PATHS = {"conv1": "conv1", "l1b1c1": "stages.0.0.c1", "l3b2c2": "stages.2.1.c2"}


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return build("resnet18", "cifar10", width=8).eval()


def test_conv_paths_map_paper_names_to_module_paths(resnet, trained_shallow):
    paths = dom.conv_paths(resnet)
    assert {k: paths[k] for k in NESTED} == NESTED_PATHS
    assert len(paths) == 17 and paths["l4b2c2"] == "stages.3.1.c2"
    assert dom.conv_paths(trained_shallow) == {"conv1": "conv1", "conv2": "conv2"}


def test_split_model_replaces_nested_convs_at_their_path(resnet):
    x = torch.rand(4, 3, 32, 32)
    split = dom.split_model(resnet, NESTED).eval()
    for name, path in NESTED_PATHS.items():
        assert isinstance(split.get_submodule(path), dom.SplitConv2d), name
    assert not hasattr(split, "l1b1c1") and not hasattr(split, "l3b2c2"), "no stray top-level module"
    with torch.no_grad():
        assert torch.allclose(split(x), resnet(x), atol=1e-5)
    # gradients reach exactly the chosen filters of the conv layers, and the dense layer
    F.cross_entropy(split(x), torch.tensor([0, 1, 2, 3])).backward()
    got = {n for n, p in split.named_parameters() if p.grad is not None}
    assert got == {f"{p}.w_train" for p in NESTED_PATHS.values()} | {"fc.weight", "fc.bias"}
    for name, path in NESTED_PATHS.items():
        mod = split.get_submodule(path)
        assert mod.trainable_idx.tolist() == NESTED[name]
        assert all(mod.w_train.grad[i].abs().sum() > 0 for i in range(len(NESTED[name]))), name
    for n, m in split.named_modules():
        if isinstance(m, nn.Conv2d):   # every conv not split (shortcuts included) is frozen
            assert not m.weight.requires_grad and m.weight.grad is None, n


def test_merge_split_puts_nested_convs_back(resnet):
    split = dom.split_model(resnet, NESTED)
    opt = torch.optim.SGD([p for p in split.parameters() if p.requires_grad], lr=0.1)
    split.eval()   # eval: batch-norm statistics stay as they were
    x = torch.rand(4, 3, 32, 32)
    F.cross_entropy(split(x), torch.tensor([0, 1, 2, 3])).backward()
    opt.step()
    merged = dom.merge_split(split)
    new, old = merged.state_dict(), resnet.state_dict()
    assert list(new) == list(old)
    assert all(isinstance(merged.get_submodule(p), nn.Conv2d) for p in NESTED_PATHS.values())
    changed = {k for k in old if not torch.equal(new[k], old[k])}
    assert changed == {f"{p}.weight" for p in NESTED_PATHS.values()} | {"fc.weight", "fc.bias"}
    for name, path in NESTED_PATHS.items():
        k = f"{path}.weight"
        rows = [c for c in range(old[k].shape[0]) if not torch.equal(new[k][c], old[k][c])]
        assert rows == NESTED[name], name


# ---------------------------------------------------------------------------
# §3.4 procedures
# ---------------------------------------------------------------------------
def test_compared_layers(trained_shallow, resnet):
    assert dom.compared_layers(trained_shallow) == {"conv1": "relu1", "conv2": "relu2"}
    assert dom.compared_layers(resnet, ["conv1", "l1b1c1", "l2b2c2"]) == {
        "conv1": "relu1", "l1b1c1": "l1b1r1", "l2b2c2": "l2b2r2"}
    with pytest.raises(ValueError, match="fc1"):
        dom.compared_layers(trained_shallow, ["fc1"])


def test_class_frequencies_hand_made():
    diff = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.8, 0.1], [0.7, 0.0, 0.2], [0.0, 0.1, 0.9]])
    src = torch.tensor([0, 0, 1, 2])
    f = dom.class_frequencies(diff, src, frac=0.3, num_classes=3)
    assert f.tolist() == [[1, 1, 0], [1, 0, 0], [0, 0, 1]]
    with pytest.raises(ValueError, match="source"):
        dom.class_frequencies(diff, src[:3])


def test_dominant_frequencies_match_the_steps(trained_shallow, batch):
    m = trained_shallow
    x, y = batch
    xs, src, tgt = dom.targeted_pairs(x[:20], y[:20])
    xa = fgsm(m, xs, tgt, 0.3, targeted=True)
    freq = dom.dominant_frequencies(m, xs, xa, src, frac=0.1)
    assert list(freq) == ["conv1", "conv2"] and freq["conv1"].shape == (10, 16) and freq["conv2"].shape == (10, 32)
    diffs = dom.filter_differences(m, ["relu1", "relu2"], xs, xa)
    for c, r in (("conv1", "relu1"), ("conv2", "relu2")):
        for k in range(10):
            ref = dom.frequency(dom.top_filters(diffs[r][src == k], 0.1), diffs[r].shape[1])
            assert torch.equal(freq[c][k], ref.cpu())
        assert freq[c].sum(1).tolist() == [9 * int((y[:20] == k).sum()) * dom.n_top(freq[c].shape[1], 0.1)
                                           for k in range(10)]
    pooled = dom.dominant_sets(freq, 0.1)
    assert pooled["conv1"].tolist() == dom.dominant_filters(freq["conv1"].sum(0), 0.1).tolist()
    assert len(pooled["conv2"]) == 4


def test_class_stability_and_its_random_baseline():
    same = torch.tensor([[5, 0, 3, 0, 0, 0, 0, 0, 0, 1]] * 4)
    assert dom.class_stability(same, 0.2) == 1.0
    disjoint = torch.eye(10, dtype=torch.long)[:5] * 3
    assert dom.class_stability(disjoint, 0.1) == 0.0
    r = dom.random_stability(32, 4, trials=50, seed=1)
    assert 0 < r < 0.3 and r == dom.random_stability(32, 4, trials=50, seed=1)
    assert dom.random_stability(8, 8, trials=3) == 1.0
    with pytest.raises(ValueError, match="k="):
        dom.random_stability(8, 9)
    with pytest.raises(ValueError, match="freq"):
        dom.class_stability(torch.ones(10), 0.1)


# ---------------------------------------------------------------------------
# §4 procedures
# ---------------------------------------------------------------------------
def test_finetune_and_evaluate(trained_shallow, batch):
    m = trained_shallow
    x, y = batch
    x_adv = fgsm(m, x, y, 0.2)
    tuned, rec, hist = dom.finetune_and_evaluate(
        m, x, y, x_adv, dominant=DOMINANT, mix="benign+adv", x_test=x[:32], y_test=y[:32], x_test_adv=x_adv[:32],
        optimizer="sgd", lr=0.01, batch_size=32, max_epochs=2, patience=None, progress=False)
    assert set(rec) == {"clean", "adv", "seconds", "epochs", "s_per_epoch", "trainable_pct", "hits"}
    assert rec["epochs"] == 2 == len(hist["epoch"]) and 0 <= rec["clean"] <= 100 and 0 <= rec["adv"] <= 100
    assert rec["clean"] == pytest.approx(accuracy(tuned, x[:32], y[:32]))
    # each score carries its interval over the 32 test images, from the per-image outcomes it keeps
    assert rec["clean"].n == 32 and rec["clean"].low <= rec["clean"] <= rec["clean"].high
    assert rec["adv"] == pytest.approx(100 * rec["hits"]["adv"].float().mean().item())
    assert rec["trainable_pct"] == pytest.approx(100 - hist["share"]["frozen_pct"])
    assert 0 < rec["s_per_epoch"] <= rec["seconds"]
    assert isinstance(tuned.conv1, nn.Conv2d)


def test_finetune_online_with_an_attack_object(trained_shallow, batch):
    m = trained_shallow
    x, y = batch
    seen = []

    class Spy:
        def __init__(self):
            self.atk = attacks.PGD(0.2, steps=2)

        def __call__(self, model, xb, yb):
            seen.append(model)
            return self.atk(model, xb, yb)

    tuned, hist = dom.finetune(m, x, y, adversary=Spy(), mix="benign+adv", optimizer="sgd", lr=0.01,
                               batch_size=32, max_epochs=1, patience=None, progress=False)
    assert len(seen) == 2 and all(s is tuned for s in seen), "examples are made against the model in training"
    assert hist["share"]["frozen_pct"] == 0.0
    assert not torch.equal(tuned.conv1.weight, m.conv1.weight)


def test_epoch_seconds(trained_shallow, batch):
    x, y = batch
    ref = {k: v.clone() for k, v in trained_shallow.state_dict().items()}
    t = dom.epoch_seconds(trained_shallow, x, y, DOMINANT, rounds=1, batch_size=32)
    assert set(t) == {"split", "full"} and len(t["split"]) == len(t["full"]) == 2
    assert all(s > 0 for v in t.values() for s in v)
    assert all(torch.equal(trained_shallow.state_dict()[k], ref[k]) for k in ref)


# ---------------------------------------------------------------------------
# the controls of chapter 4: noise, random filters, bootstrap, ideal cost
# ---------------------------------------------------------------------------
def test_sign_noise_sits_on_the_corners_of_the_eps_ball(trained_shallow, batch):
    x, y = batch
    x = x.clamp(0.2, 0.8)                          # away from the box: no clipping
    xn = attacks.SignNoise(0.1, seed=3)(trained_shallow, x, y)
    assert torch.allclose((xn - x).abs(), torch.full_like(x, 0.1), atol=1e-6)
    assert torch.equal(xn, attacks.SignNoise(0.1, seed=3)(trained_shallow, x, y))       # seeded
    assert 0.4 < ((xn - x) > 0).float().mean().item() < 0.6                               # random signs


def test_pair_tops_and_stability_bootstrap(trained_shallow, batch):
    m = trained_shallow
    x, y = batch
    xs, src, tgt = dom.targeted_pairs(x[:20], y[:20])
    xa = fgsm(m, xs, tgt, 0.3, targeted=True)
    tops = dom.pair_tops(m, xs, xa, frac=0.1)
    freq = dom.dominant_frequencies(m, xs, xa, src, frac=0.1)
    img = torch.arange(20).repeat_interleave(9)
    for c in ("conv1", "conv2"):
        C = freq[c].shape[1]
        assert tops[c].shape == (180, dom.n_top(C, 0.1))
        shuffled = tops[c][torch.randperm(180, generator=torch.Generator().manual_seed(0))]
        b = dom.stability_bootstrap({"attack": tops[c], "same": tops[c].clone(), "shuffled": shuffled}, src, C,
                                    0.1, groups=img, pairs=[("attack", "same")], n_resamples=200, seed=1)
        # the point estimate is class_stability of the class frequencies: the §3.4 number
        assert float(b["attack"]) == pytest.approx(dom.class_stability(freq[c], 0.1))
        assert b["attack"].low <= b["attack"] <= b["attack"].high and b["attack"].n == 20
        # identical conditions on the same resamples differ by exactly 0
        d = b[("attack", "same")]
        assert float(d) == 0.0 and d.low == 0.0 == d.high
    with pytest.raises(ValueError, match="same pairs"):
        dom.stability_bootstrap({"a": tops["conv1"], "b": tops["conv1"][:9]}, src, 16, 0.1)
    with pytest.raises(ValueError, match="pairs names"):
        dom.stability_bootstrap({"a": tops["conv1"]}, src, 16, 0.1, pairs=[("a", "b")])
    with pytest.raises(ValueError, match="tops\\['a'\\]"):
        dom.stability_bootstrap({"a": tops["conv1"]}, src, 32, 0.1)


def test_bootstrap_tells_stable_sets_from_scattered_ones():
    src = torch.arange(10).repeat_interleave(30)
    g = torch.Generator().manual_seed(0)
    stable = torch.stack([torch.tensor([1, 7])] * 300)
    scattered = torch.stack([torch.randperm(20, generator=g)[:2] for _ in range(300)])
    b = dom.stability_bootstrap({"stable": stable, "scattered": scattered}, src, 20, 0.1,
                                pairs=[("stable", "scattered")], n_resamples=200)
    assert float(b["stable"]) == 1.0 and b[("stable", "scattered")].low > 0.3


def test_random_dominant_picks_as_many_filters_as_the_dominant_sets(trained_shallow):
    r = dom.random_dominant(trained_shallow, 0.1, seed=0)
    assert {c: len(v) for c, v in r.items()} == {"conv1": 2, "conv2": 4}
    assert r["conv2"].tolist() == sorted(set(r["conv2"].tolist()))
    assert all(torch.equal(a, b) for a, b in zip(r.values(), dom.random_dominant(trained_shallow, 0.1).values()))
    assert any(not torch.equal(a, b) for a, b in zip(r.values(), dom.random_dominant(trained_shallow, 0.1,
                                                                                      seed=1).values()))


def test_training_macs_by_hand():
    m = build("base", "mnist").eval()
    conv1, conv2, fc1, fc2 = 28 * 28 * 32 * 25, 14 * 14 * 64 * 32 * 9, 7 * 7 * 64 * 32, 32 * 10
    full = dom.training_macs(m)
    fwd = conv1 + conv2 + fc1 + fc2
    assert full == {"forward": fwd, "input_grad": fwd - conv1, "weight_grad": fwd, "total": 3 * fwd - conv1}
    split = dom.training_macs(m, {"conv1": [0, 1, 2, 3], "conv2": list(range(7))})
    assert split["weight_grad"] == conv1 * 4 // 32 + conv2 * 7 // 64 + fc1 + fc2
    assert 0.65 < split["total"] / full["total"] < 0.75              # "≈ 30% fewer" on the base CNN
    head = dom.training_macs(m, {})                                  # dense layers only
    assert head["input_grad"] == fc2 and head["weight_grad"] == fc1 + fc2
    with pytest.raises(ValueError, match="not conv layers"):
        dom.training_macs(m, {"fc1": [0]})


def test_robust_hits_are_robust_accuracys_outcomes(trained_shallow, batch):
    x, y = batch
    atk = attacks.FGSM(0.2)
    hits = metrics.robust_hits(trained_shallow, x, y, atk)
    assert hits.dtype == torch.bool and hits.shape == y.shape
    assert 100 * hits.float().mean().item() == pytest.approx(metrics.robust_accuracy(trained_shallow, x, y, atk))
    clean = metrics.hits(trained_shallow, x, y)                  # the same outcomes without an attack
    assert clean.dtype == torch.bool and 100 * clean.float().mean().item() == pytest.approx(
        accuracy(trained_shallow, x, y))
