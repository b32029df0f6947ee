"""nrlib.fragile: the vectorised kernel-dropout sweep (Pravin et al. 2021, §3.3)
against the plain loop over nrlib.hooks.zero_channels, on a tiny random ResNet-18."""
from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch

from nrlib import attacks, fragile, metrics, models


@pytest.fixture(scope="module")
def tiny():
    """ResNet-18 at width 4 with random weights and batch-norm statistics taken
    from 64 random images (so that dropping a kernel changes some predictions:
    with fresh running statistics every image lands in one class); labels are
    the model's own predictions, with every 4th one shifted, so the clean
    accuracy is 75 % and dropping kernels moves it both ways."""
    torch.manual_seed(0)
    model = models.build("resnet18", "cifar10", width=4)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # running stats = the plain average over the calibration pass
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.normal_(m.bias, 0.0, 0.2)
    x = torch.rand(64, 3, 32, 32)
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()
    y = metrics.predict(model, x)
    y[::4] = (y[::4] + 1) % 10
    return model, x, y


def _snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [p.requires_grad for p in model.parameters()], model.training)


@pytest.mark.parametrize("layer, kw", [
    ("conv1", {}),                                    # 4 kernels, all in one pass
    ("l2b1c1", {"batch_size": 24, "chunk": 3}),       # inside a residual block; ragged chunks and batches
])
def test_vectorised_matches_naive(tiny, layer, kw):
    model, x, y = tiny
    fast = fragile.kernel_dropout_accuracy(model, x, y, layer, **kw)
    ref = fragile.kernel_dropout_accuracy_naive(model, x, y, layer)
    n_kernels = models.build("resnet18", "cifar10", width=4).layers()[layer].out_channels
    assert fast.shape == ref.shape == (n_kernels,)
    assert fast.dtype == torch.float64
    assert torch.equal(fast, ref)
    assert len(set(fast.tolist())) > 1, "every kernel gives the same accuracy: the test model is degenerate"


def test_kernel_subset_keeps_the_order_asked_for(tiny):
    model, x, y = tiny
    ks = [5, 0, 7]
    fast = fragile.kernel_dropout_accuracy(model, x, y, "l2b1c1", ks, chunk=2)
    assert torch.equal(fast, fragile.kernel_dropout_accuracy_naive(model, x, y, "l2b1c1", ks))
    assert torch.equal(fast, fragile.kernel_dropout_accuracy(model, x, y, "l2b1c1")[ks])


def test_model_is_left_as_it_was(tiny):
    model, x, y = tiny
    model.train()
    before = _snapshot(model)
    try:
        fragile.kernel_dropout_accuracy(model, x, y, "l2b1c1", batch_size=16)
        fragile.kernel_dropout_accuracy_naive(model, x, y, "conv1", [1])
        after = _snapshot(model)
    finally:
        model.eval()
    assert after[1] == before[1] and after[2] is True
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    assert not model.conv1._forward_hooks and not model.stages[1][0]._forward_pre_hooks


def test_hook_equals_zeroing_the_kernel_weights(tiny):
    """conv1 has no bias, so zeroing its output channel k is zeroing kernel k."""
    model, x, y = tiny
    assert model.conv1.bias is None
    k = 2
    edited = copy.deepcopy(model)
    with torch.no_grad():
        edited.conv1.weight[k] = 0
    expected = metrics.accuracy(edited, x, y)
    assert fragile.kernel_dropout_accuracy(model, x, y, "conv1", [k]).item() == expected
    assert fragile.kernel_dropout_accuracy_naive(model, x, y, "conv1", [k]).item() == expected


@pytest.mark.parametrize("kw, param", [
    ({"layer": "conv99"}, "layer="),
    ({"kernels": [0, 4]}, "kernels="),
    ({"kernels": [-1]}, "kernels="),
    ({"kernels": 2}, "kernels="),
    ({"chunk": 0}, "chunk="),
    ({"batch_size": 0}, "batch_size="),
])
def test_bad_arguments_name_the_parameter(tiny, kw, param):
    model, x, y = tiny
    with pytest.raises(ValueError, match=param):
        fragile.kernel_dropout_accuracy(model, x, y, **kw)
    if "chunk" not in kw:
        with pytest.raises(ValueError, match=param):
            fragile.kernel_dropout_accuracy_naive(model, x, y, **kw)


# ----------------------------------------------------------------------------
# §3.3: the fragile / null split
# ----------------------------------------------------------------------------
def test_split_by_the_mean_line():
    acc = [90.0, 80.0, 85.0, 70.0, 95.0]                       # mean 84
    assert fragile.split_kernels(acc) == ([1, 3], [0, 2, 4])
    assert fragile.split_kernels(torch.tensor([1.0, 2.0, 3.0])) == ([0], [1, 2])   # on the mean: null
    assert fragile.split_kernels(acc, n_fragile=3) == ([1, 2, 3], [0, 4])           # the 3 lowest
    assert fragile.split_kernels([5.0, 5.0, 5.0, 1.0], n_fragile=2) == ([0, 3], [1, 2])   # ties: lower index
    with pytest.raises(ValueError, match="n_fragile="):
        fragile.split_kernels(acc, n_fragile=5)
    with pytest.raises(ValueError, match="acc"):
        fragile.split_kernels([1.0])


# ----------------------------------------------------------------------------
# §4.3, Algorithm 1 on a hand-built layer
# ----------------------------------------------------------------------------
class _TwoKernels(torch.nn.Module):
    """conv1 with kernel 0 = all ones and kernel 1 = all 0.1 (3×3, no bias), then a linear head."""

    def __init__(self, strong: int = 0):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 2, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv1.weight.fill_(0.1)
            self.conv1.weight[strong] = 1.0
        self.head = torch.nn.Linear(2 * 8 * 8, 3)

    def forward(self, x):
        return self.head(torch.relu(self.conv1(x)).flatten(1))


def test_kernel_differences_and_decision_on_a_known_layer():
    x = torch.zeros(2, 1, 8, 8)
    x_adv = x.clone()
    x_adv[0, 0, 3:5, 3:5] = 0.5                                 # image 0: a 2×2 bump
    x_adv[1] = 0.25                                             # image 1: a uniform shift
    d = fragile.kernel_differences(_TwoKernels(0), x, x_adv)
    # by hand: |conv(δ)| averaged over the 8×8 positions; kernel 0 is 10× kernel 1
    bump = 0.5 * torch.nn.functional.conv2d(torch.zeros(1, 1, 8, 8).index_put_(
        (torch.tensor([0]), torch.tensor([0]), torch.tensor([3, 3, 4, 4]), torch.tensor([3, 4, 3, 4])),
        torch.ones(4)), torch.ones(1, 1, 3, 3), padding=1).abs().mean()
    assert torch.allclose(d[0], torch.stack([bump, 0.1 * bump]), rtol=1e-5)
    assert torch.allclose(d[1, 1], 0.1 * d[1, 0], rtol=1e-5)
    assert fragile.attacks_fragile(d, [0], [1]).tolist() == [True, True]
    assert fragile.attacks_fragile(d, [1], [0]).tolist() == [False, False]
    # the strong kernel in the null set: no example attacks the fragile one
    d2 = fragile.kernel_differences(_TwoKernels(1), x, x_adv)
    assert fragile.attacks_fragile(d2, [0], [1]).tolist() == [False, False]
    # no fragile kernel (all drops cost the same): no example attacks one
    assert fragile.split_kernels([70.0, 70.0]) == ([], [0, 1])
    assert fragile.attacks_fragile(d, [], [0, 1]).tolist() == [False, False]


def test_adversarial_targeting_shares(tiny):
    model, x, y = tiny
    acc = fragile.kernel_dropout_accuracy(model, x, y)
    fr, nu = fragile.split_kernels(acc)
    t = fragile.adversarial_targeting(model, x, y, fr, nu, [0.0, 0.01, 0.05])
    assert t.share[0] == 0.0 and t.fragile_diff[0] == 0.0       # ε = 0: no difference, no example counts
    assert all(0.0 <= s <= 100.0 for s in t.share)
    assert t.accuracy[0] == metrics.accuracy(model, x, y)
    assert t.accuracy[2] < t.accuracy[0]                        # FGSM lowers accuracy
    assert t.share_for(fr, nu) == t.share                       # the cached differences give the same answer
    flipped = t.share_for(nu, fr)
    assert all(a + b <= 100.0 + 1e-9 for a, b in zip(t.share[1:], flipped[1:]))
    assert t.kernel_means(0.05).shape == (4,)
    with pytest.raises(ValueError, match="both fragile and null"):
        fragile.adversarial_targeting(model, x, y, [0, 1], [1, 2], [0.1])
    with pytest.raises(ValueError, match=r"eps\[0\]"):
        fragile.adversarial_targeting(model, x, y, fr, nu, [-0.1])


# ----------------------------------------------------------------------------
# §4.1: Gavish–Donoho
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("beta", [0.05, 0.25, 0.5, 0.75, 1.0])
def test_gd_lambda_is_the_closed_form(beta):
    w = (beta + 1) + (beta ** 2 + 14 * beta + 1) ** 0.5
    assert fragile.gd_lambda(beta) == pytest.approx((2 * (beta + 1) + 8 * beta / w) ** 0.5, rel=1e-12)


def test_gd_constants_at_known_points():
    assert fragile.gd_lambda(1.0) == pytest.approx(4 / 3 ** 0.5, rel=1e-12)   # Gavish & Donoho: 4/√3
    assert fragile.gd_omega(1.0) == pytest.approx(2.86, abs=0.01)              # ≈ 2.858 in their Table
    for bad in (0.0, 1.5, -1.0):
        with pytest.raises(ValueError, match="beta="):
            fragile.gd_lambda(bad)


def _low_rank_plus_noise(m=120, n=300, rank=4, sigma=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(m, rank, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, rank, generator=g, dtype=torch.float64))
    s = torch.tensor([60.0, 45.0, 35.0, 28.0], dtype=torch.float64)[:rank]
    return (u * s) @ v.T + sigma * torch.randn(m, n, generator=g, dtype=torch.float64)


def test_known_sigma_threshold_keeps_the_true_rank():
    x = _low_rank_plus_noise()
    s = torch.linalg.svdvals(x)
    tau = fragile.gd_threshold(s, x.shape, sigma=0.5)
    assert tau == pytest.approx(fragile.gd_lambda(120 / 300) * 300 ** 0.5 * 0.5)
    assert fragile.svd_filter(x, tau).rank == 4
    assert fragile.gd_threshold(s, x.T.shape, sigma=0.5) == tau       # orientation does not matter


def test_unknown_sigma_threshold_is_close_to_the_known_one():
    x = _low_rank_plus_noise()
    s = torch.linalg.svdvals(x)
    known, unknown = fragile.gd_threshold(s, x.shape, sigma=0.5), fragile.gd_threshold(s, x.shape)
    assert unknown == pytest.approx(known, rel=0.05)
    assert fragile.svd_filter(x, unknown).rank == 4


def test_both_clamp_modes():
    x = _low_rank_plus_noise(m=30, n=40, rank=4, sigma=1.0)
    s = torch.linalg.svdvals(x).numpy()
    tau = float((s[3] + s[4]) / 2)
    hard, cap = fragile.svd_filter(x, tau, "hard"), fragile.svd_filter(x, tau, "cap")
    assert hard.rank == hard.kept == 4 and cap.kept == 4 and cap.rank == 30
    assert list(hard.s_filtered[:4]) == pytest.approx(list(s[:4])) and not hard.s_filtered[4:].any()
    assert list(cap.s_filtered) == pytest.approx([min(v, tau) for v in s])
    u, sv, vh = torch.linalg.svd(x, full_matrices=False)
    assert torch.allclose(hard.matrix, (u[:, :4] * sv[:4]) @ vh[:4])        # the rank-4 truncation
    assert torch.linalg.svdvals(cap.matrix).max().item() == pytest.approx(tau)
    with pytest.raises(ValueError, match="clamp="):
        fragile.svd_filter(x, tau, "soft")


@pytest.mark.parametrize("rule", ["ratio", "energy", "none"])
def test_amplification_restores_the_stated_energy(tiny, rule):
    model, _, _ = tiny
    w = model.conv1.weight.detach().double()
    fr, nu = [0], [1, 2, 3]
    s = torch.linalg.svdvals(w[nu].reshape(3, -1))
    new, info = fragile.filter_kernels(model, fr, nu, tau=float(s[1]) * 1.001, amplify=rule)
    w2 = new.conv1.weight.detach().double()
    n0, n1 = w[nu].norm().item(), w2[nu].norm().item()
    assert n1 < n0 and info["rank"] == 1                       # the null kernels lost energy
    alpha = {"ratio": n0 / n1, "energy": None, "none": 1.0}[rule]
    if rule == "energy":
        assert w2.norm().item() == pytest.approx(w.norm().item(), rel=1e-6)   # the layer's energy kept
    else:
        assert info["alpha"] == pytest.approx(alpha)
        assert w2[fr].norm().item() == pytest.approx(alpha * w[fr].norm().item(), rel=1e-6)
    assert torch.allclose(w2[fr], w[fr] * info["alpha"], rtol=1e-6)


def test_filtering_leaves_the_original_model_unchanged(tiny):
    model, x, y = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    s = torch.linalg.svdvals(fragile.null_matrix(model, [2, 3]))
    new, info = fragile.filter_kernels(model, [0, 1], [2, 3], tau=float(s[0]) * 0.99)
    assert info["rank"] == 1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert new is not model and not torch.equal(new.conv1.weight, model.conv1.weight)
    assert {k for k in before} == set(new.state_dict())
    assert all(torch.equal(before[k], v) for k, v in new.state_dict().items() if k != "conv1.weight")
    with pytest.raises(ValueError, match="not both"):
        fragile.filter_kernels(model, [0], [1, 2], sigma=0.1, tau=1.0)


def test_sigma_search_picks_by_its_stated_objective(tiny):
    from nrlib import attacks
    model, x, y = tiny
    fr, nu = [0, 1], [2, 3]
    grid = fragile.sigma_grid(fragile.null_matrix(model, nu), points=5)
    assert len(grid) == 5 and grid == sorted(grid)
    r = fragile.sigma_search(model, x, y, fr, nu, grid, attack=attacks.FGSM(0.02), max_clean_drop=100.0)
    assert [row["sigma"] for row in r["rows"]] == grid
    assert r["rows"][-1]["rank"] == 0                           # the largest σ removes every direction
    assert r["best"]["attacked_acc"] == max(row["attacked_acc"] for row in r["rows"])
    strict = fragile.sigma_search(model, x, y, fr, nu, grid, attack=attacks.FGSM(0.02), max_clean_drop=0.0)
    c0 = strict["original"]["clean_acc"]
    allowed = [row for row in strict["rows"] if row["clean_acc"] >= c0] or strict["rows"][:1]
    assert strict["best"] in allowed


def test_sigma_search_states_eps_as_the_datasets_papers_write_it(tiny):
    """0.2 = 51/255 exactly: on MNIST the objective says ε=0.2, as the chapter's text does."""
    from nrlib import attacks
    model, x, y = tiny
    fr, nu = [0, 1], [2, 3]
    r = fragile.sigma_search(model, x, y, fr, nu, [0.1], attack=attacks.FGSM(0.2), dataset="mnist")
    assert "FGSM ε=0.2 on" in r["objective"] and "/255" not in r["objective"]
    r = fragile.sigma_search(model, x, y, fr, nu, [0.1], attack=attacks.FGSM(8 / 255), dataset="cifar10")
    assert "FGSM ε=8/255 on" in r["objective"]
    with pytest.raises(ValueError, match="dataset.*'svhn'"):
        fragile.sigma_search(model, x, y, fr, nu, [0.1], attack=attacks.FGSM(0.2), dataset="svhn")


def test_pravin_recipe_snapshots_differ_and_load_back(isolated_data_root):
    from nrlib import train
    m, meta = train.zoo_get("resnet18", "mnist", "pravin", "smoke", progress=False)
    assert meta["model_kwargs"] == {"width": 8} and m.conv1.out_channels == 8
    assert meta["settings"]["schedule"] == "cosine" and meta["settings"]["augment"] is None
    snaps = {s: train.zoo_get("resnet18", "mnist", "pravin", "smoke", snapshot=s)[0] for s in (0.1, 0.5, 1.0)}
    w = {s: mm.conv1.weight.detach().clone() for s, mm in snaps.items()}
    assert not torch.equal(w[0.1], w[0.5]) and not torch.equal(w[0.5], w[1.0])
    assert torch.equal(w[1.0], m.conv1.weight)
    again = train.zoo_get("resnet18", "mnist", "pravin", "smoke", snapshot=0.1)[0]
    assert torch.equal(again.conv1.weight, w[0.1])
    with pytest.raises(ValueError, match="dataset="):
        train.zoo_get("resnet18", "svhn", "pravin", "smoke")
    assert train.recipe_settings("resnet18", "pravin", "cpu", "cifar10")["augment"] == "crop_flip"


def test_persistent_kernels_and_the_mean_line():
    accs = {0.1: [50.0, 60.0, 40.0, 70.0], 0.5: [80.0, 70.0, 60.0, 90.0], 1.0: [80.0, 95.0, 70.0, 95.0]}
    # fragile (below the mean): {0, 2}, {1, 2}, {0, 2}  -> persistent {2}
    assert fragile.persistent_fragile(accs) == [2]
    inf = fragile.training_influence(accs)
    assert inf["fragile"] == {0.1: [0, 2], 0.5: [1, 2], 1.0: [0, 2]} and inf["persistent"] == [2]
    assert inf["mean"] == {0.1: 55.0, 0.5: 75.0, 1.0: 85.0} and inf["peak"] == 1.0
    assert inf["early_rise"] == 20.0 and inf["late_rise"] == 10.0
    falls = fragile.training_influence({0.1: [1.0, 3.0], 0.5: [5.0, 7.0], 1.0: [4.0, 4.0]})
    assert falls["peak"] == 0.5 and falls["late_rise"] == -2.0
    with pytest.raises(ValueError, match="different lengths"):
        fragile.persistent_fragile([[1.0, 2.0], [1.0, 2.0, 3.0]])


# ----------------------------------------------------------------------------
# Algorithm 1 after batch norm and ReLU, the argmax reading, persistence against chance
# ----------------------------------------------------------------------------
class _BNReLU(torch.nn.Module):
    """conv1 (kernel 0: all ones, kernel 1: all 0.1; 3×3, no bias) → bn1 → relu1 → a linear head.
    bn1 holds kernel 0 at −2 below zero on a flat image of 0.5 (so it stays off until ε pushes it
    over) and kernel 1 far above zero (so it passes every change through)."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 2, 3, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(2)
        self.relu1 = torch.nn.ReLU()
        with torch.no_grad():
            self.conv1.weight[0] = 1.0
            self.conv1.weight[1] = 0.1
            self.bn1.bias.copy_(torch.tensor([-6.5, 10.0]))     # interior: 4.5 − 6.5 = −2; 0.45 + 10
        self.head = torch.nn.Linear(2 * 8 * 8, 3)
        self.eval()

    def forward(self, x):
        return self.head(self.relu1(self.bn1(self.conv1(x))).flatten(1))


def test_the_share_after_bn_and_relu_depends_on_eps_where_before_it_cannot():
    model, x = _BNReLU(), torch.full((1, 1, 8, 8), 0.5)
    share = {}
    for layer in ("conv1", "relu1"):
        for eps in (0.1, 0.4):                              # a uniform shift of ε, no pixel clipped
            d = fragile.kernel_differences(model, x, x + eps, layer)
            share[layer, eps] = fragile.attacks_fragile(d, [0], [1]).item()
    # before the batch norm the difference is ε·(w_k ∗ 1): kernel 0 wins at every ε
    assert share["conv1", 0.1] and share["conv1", 0.4]
    # after it, kernel 0 stays below zero at ε = 0.1 (no change passes the ReLU; kernel 1 moves
    # by 0.09) and crosses zero at ε = 0.4 (interior 1.6 against 0.36)
    assert not share["relu1", 0.1] and share["relu1", 0.4]


def test_several_layers_read_from_one_attack_equal_one_layer_at_a_time():
    """adversarial_targeting_layers reads conv1 and relu1 from the same FGSM examples: each layer's
    result equals the one-layer call's, the adversarial examples are built once per ε, and layers
    of different widths, a repeated layer or no layer are clear errors."""
    torch.manual_seed(0)
    model = _BNReLU()
    x, y = torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    built = []

    class Counting(attacks.FGSM):
        def __call__(self, *a, **k):
            built.append(self.eps)
            return super().__call__(*a, **k)

    both = fragile.adversarial_targeting_layers(model, x, y, [0], [1], [0.1, 0.3], attack=Counting(0.1),
                                                layers=("conv1", "relu1"))
    assert built == [0.1, 0.3]                                   # one attack per ε for both layers
    for layer in ("conv1", "relu1"):
        one = fragile.adversarial_targeting(model, x, y, [0], [1], [0.1, 0.3], layer=layer)
        assert both[layer].share == one.share and both[layer].accuracy == one.accuracy
        assert all(torch.equal(both[layer].diff[e], one.diff[e]) for e in (0.1, 0.3))
    assert not torch.equal(both["conv1"].diff[0.3], both["relu1"].diff[0.3])
    assert (both["conv1"].correct[0.3] == both["relu1"].correct[0.3]).all()
    for layers, match in ((("conv1", "head"), "channels"), (("conv1", "conv1"), "each once"),
                          ((), "at least one"), (("conv1", "nope"), "nope")):
        with pytest.raises(ValueError, match=match):
            fragile.adversarial_targeting_layers(model, x, y, [0], [1], [0.1], layers=layers)


def test_argmax_reading_and_per_example_outcomes(tiny):
    model, x, y = tiny
    d = torch.tensor([[0.1, 0.5, 0.2], [0.9, 0.1, 0.3], [0.2, 0.2, 0.8]])
    assert fragile.top_kernel_fragile(d, [1]).tolist() == [True, False, False]
    assert fragile.top_kernel_fragile(d, [0, 2]).tolist() == [False, True, True]
    with pytest.raises(ValueError, match="fragile"):
        fragile.top_kernel_fragile(d, [3])
    fr, nu = fragile.split_kernels(fragile.kernel_dropout_accuracy(model, x, y))
    t = fragile.adversarial_targeting(model, x, y, fr, nu, [0.02])
    assert 100.0 * t.hits(0.02).mean() == pytest.approx(t.share[0])
    assert t.correct[0.02].dtype == bool and 100.0 * t.correct[0.02].mean() == pytest.approx(t.accuracy[0])
    top = t.top_hits(0.02)
    assert top.shape == (len(y),) and top.tolist() == fragile.top_kernel_fragile(t.diff[0.02], fr).tolist()


def test_persistence_chance_equals_a_brute_force_count_over_random_sets():
    import itertools
    import numpy as np
    k, sizes = 6, (2, 3, 4)
    counts = np.zeros(k + 1)
    for sets in itertools.product(*(itertools.combinations(range(k), s) for s in sizes)):
        counts[len(set(sets[0]).intersection(*sets[1:]))] += 1
    brute = counts / counts.sum()
    assert fragile.persistence_chance(sizes, k) == pytest.approx(brute, abs=1e-12)
    res = fragile.persistence_test(1, sizes, k)
    assert res["expected"] == pytest.approx(float((np.arange(k + 1) * brute).sum()))
    assert res["expected"] == pytest.approx(k * (2 / k) * (3 / k) * (4 / k))
    assert res["p"] == pytest.approx(brute[1:].sum()) and res["excess"] == pytest.approx(1 - res["expected"])
    inf = fragile.training_influence({0.1: [50.0, 60.0, 40.0, 70.0], 0.5: [80.0, 70.0, 60.0, 90.0],
                                      1.0: [80.0, 95.0, 70.0, 95.0]})
    assert inf["chance"]["observed"] == 1 and inf["chance"]["expected"] == pytest.approx(4 * 0.5 ** 3)
    assert inf["peak"] == 1.0
    with pytest.raises(ValueError, match="n_kernels"):
        fragile.persistence_chance([2, 3], 0)
    with pytest.raises(ValueError, match=r"sizes\[1\]"):
        fragile.persistence_chance([2, 7], 6)


def test_pravin_cpu_mnist_snapshots_fall_on_trained_epochs_and_constant_lr_is_a_variant():
    from nrlib import recipes
    st = recipes.recipe_settings("resnet50", "pravin", "cpu", "mnist")
    assert (st["n_train"], st["epochs"]) == (20000, 3)
    assert recipes.snapshot_epochs(st["epochs"], st["snapshots"]) == {1: 0.1, 2: 0.5}
    assert recipes.recipe_settings("resnet50", "pravin", "cpu", "cifar10")["n_train"] == 2000
    const = recipes.recipe_settings("resnet50", "pravin", "cpu", "mnist", "constant_lr")
    assert const["schedule"] == "constant" and {**const, "schedule": "cosine", "variant": None} == \
        {**st, "variant": None}


def test_per_image_shares_average_to_the_mean_line(tiny):
    model, x, y = tiny
    acc, share = fragile.kernel_dropout_accuracy(model, x, y, per_image=True, batch_size=24, chunk=3)
    assert torch.equal(acc, fragile.kernel_dropout_accuracy(model, x, y))
    assert share.shape == (len(y),) and float(share.min()) >= 0.0 and float(share.max()) <= 1.0
    assert 100.0 * float(share.mean()) == pytest.approx(float(acc.mean()), abs=1e-9)
    # by hand for one image: the share of kernels whose drop leaves it correct
    from nrlib.hooks import zero_channels
    for n in (0, 5):
        kept = []
        for k in range(4):
            with zero_channels(model, "conv1", [k]):
                kept.append(bool(metrics.predict(model, x[n:n + 1], amp=False)[0] == y[n]))
        assert float(share[n]) == pytest.approx(sum(kept) / 4)
    with pytest.raises(ValueError, match="per_image"):
        fragile.kernel_dropout_accuracy(model, x, y, per_image=1)


def test_random_share_is_the_mean_over_random_sets_of_the_same_size():
    # every example ranks the kernels 1 < 2 < 3 < 4: of the six 2-sets only {3, 4} and {2, 4} have
    # the larger mean ({1, 4} and {2, 3} tie, which does not count), so chance is 2/6
    d = torch.tensor([[1.0, 2.0, 3.0, 4.0]]).repeat(5, 1)
    t = fragile.Targeting(eps=[0.1], fragile=[2, 3], null=[0, 1], share=[100.0], accuracy=[0.0],
                          fragile_diff=[0.0], null_diff=[0.0], diff={0.1: d})
    assert t.random_share(0.1, draws=3000) == pytest.approx(100 / 3, abs=2.5)
    assert t.random_share(0.1, draws=50, seed=1) == t.random_share(0.1, draws=50, seed=1)
    with pytest.raises(ValueError, match="draws"):
        t.random_share(0.1, draws=0)


def test_random_p_counts_the_sets_of_the_same_size_that_do_as_well():
    # the same layer: {3, 4} is the best 2-set (share 100%), and so is {2, 4}: 2 of the 6 sets
    d = torch.tensor([[1.0, 2.0, 3.0, 4.0]]).repeat(5, 1)
    kw = dict(eps=[0.1, 0.2], share=[100.0, 100.0], accuracy=[0.0, 0.0], fragile_diff=[0.0, 0.0],
              null_diff=[0.0, 0.0], diff={0.1: d, 0.2: d})
    assert fragile.Targeting(fragile=[2, 3], null=[0, 1], **kw).random_p(0.1) == pytest.approx(200 / 6)
    assert fragile.Targeting(fragile=[0, 1], null=[2, 3], **kw).random_p([0.1, 0.2]) == 100.0


@pytest.mark.parametrize("seed", [0, 1])
def test_random_p_matches_a_brute_force_count_and_sampling(seed):
    g = torch.Generator().manual_seed(seed)
    d = {e: torch.rand(40, 9, generator=g) for e in (0.1, 0.3)}
    fr = [0, 4, 7]
    t = fragile.Targeting(eps=list(d), fragile=fr, null=[k for k in range(9) if k not in fr],
                          share=[0.0, 0.0], accuracy=[0.0, 0.0], fragile_diff=[0.0, 0.0],
                          null_diff=[0.0, 0.0], diff=d)
    def grid_share(s):
        rest = [k for k in range(9) if k not in s]
        return np.mean([100 * fragile.attacks_fragile(d[e], list(s), rest).float().mean().item() for e in d])
    own = grid_share(fr)
    brute = [grid_share(s) >= own - 1e-9 for s in itertools.combinations(range(9), 3)]
    assert t.random_p([0.1, 0.3]) == pytest.approx(100 * np.mean(brute))            # all 84 sets
    assert t.random_p([0.1, 0.3], draws=20, seed=3) == pytest.approx(100 * np.mean(brute), abs=30)
