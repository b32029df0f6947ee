"""nrlib.neurons: one interface over the papers' neuron rankings, the baselines and the oracle —
every registered method on a VGG and a ResNet, each score against a hand computation or a public
reference (Torch-Pruning's magnitude importance, Captum's layer feature ablation), the vectorised
ablation against a loop, and bad input."""
import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from nrlib import attacks, hooks, models, neurons, stats
from nrlib import plot as nrplot


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    m = models.build("vgg16", "cifar10", width=4).eval()
    for mod in m.modules():          # a non-trivial batch norm: running statistics and scales vary
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
            mod.weight.data.uniform_(0.2, 1.5)
            mod.bias.data.uniform_(-0.3, 0.3)
    return m


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(1)
    return models.build("resnet18", "cifar10", width=4).eval()


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    return torch.rand(24, 3, 32, 32, generator=g), torch.randint(0, 10, (24,), generator=g)


FAST = dict(attack=attacks.PGD(8 / 255, steps=2))


@pytest.mark.parametrize("method", sorted(neurons.METHODS))
def test_every_method_scores_every_channel_and_is_reproducible(vgg, data, method):
    x, y = data
    s = neurons.rank(method, vgg, "conv3", x, y, **FAST)
    c = vgg.conv3.out_channels
    assert s.scores.shape == (c,) and s.scores.dtype == torch.float64 and len(s) == c
    assert not torch.isnan(s.scores).any()
    assert s.method == method and s.layer == "conv3" and s.n_images == 24 and s.seconds >= 0
    assert sorted(s.order.tolist()) == list(range(c))
    assert s.top(2) == s.order[:2].tolist() and s.bottom(1) == [s.order[-1].item()]
    assert (s.attack is not None) == neurons.METHODS[method].needs_attack
    again = neurons.rank(method, vgg, "conv3", x, y, **FAST)
    assert torch.allclose(again.scores, s.scores, equal_nan=True)


@pytest.mark.parametrize("method", ["sigma", "dominant", "toggle", "weight_l1", "bn_gamma", "taylor", "loo_clean"])
def test_methods_run_on_a_resnet_block_conv(resnet, data, method):
    x, y = data
    name = [n for n in resnet.layers() if n.startswith("l1") and n.endswith("c2")][0]
    s = neurons.rank(method, resnet, name, x, y, **FAST)
    assert s.scores.shape == (hooks.get_layer(resnet, name).out_channels,)


def test_sites_follow_the_forward_pass(vgg, resnet, data):
    x, _ = data
    assert neurons.sites(vgg, "conv5", x) == {"conv": "conv5", "bn": "bn5", "act": "relu5"}
    c2 = [n for n in resnet.layers() if n.endswith("c2")][0]
    st = neurons.sites(resnet, c2, x)
    assert st["bn"].endswith("b2") and st["act"] == st["bn"]        # the shortcut is added first
    st1 = neurons.sites(resnet, "conv1", x)
    assert st1 == {"conv": "conv1", "bn": "bn1", "act": "relu1"}
    cnn = models.build("base", "mnist").eval()      # no batch norm: the ReLU reads the conv itself
    assert neurons.sites(cnn, "conv2", torch.rand(2, 1, 28, 28)) == {"conv": "conv2", "bn": "conv2",
                                                                    "act": "relu2"}


def test_direction_and_controls(vgg, data):
    x, y = data
    a = neurons.rank("random", vgg, "conv2", x, y, seed=0).scores
    assert torch.equal(a, neurons.rank("random", vgg, "conv2", x, y, seed=0).scores)
    assert not torch.equal(a, neurons.rank("random", vgg, "conv2", x, y, seed=1).scores)
    # a channel whose batch norm scale is 0 outputs a constant: no attack moves it, removing it after
    # batch norm changes nothing the bias does not, and every magnitude score ranks it last
    m = models.build("vgg16", "cifar10", width=4).eval()
    m.load_state_dict(vgg.state_dict())
    m.bn2.weight.data[1] = 0.0
    m.bn2.bias.data[1] = -1.0                      # after the ReLU: always 0, a dead channel
    for method in ("sigma", "bn_gamma", "mean_activation", "apoz", "taylor"):
        s = neurons.rank(method, m, "conv2", x, y, **FAST)
        assert s.scores[1] == 0 == s.scores.min(), method
    assert neurons.rank("loo_clean", m, "conv2", x, y).scores[1] == 0     # removing it changes nothing


def test_weight_l1_matches_torch_pruning(vgg):
    import torch_pruning as tp
    imp = tp.importance.MagnitudeImportance(p=1, group_reduction="first", normalizer=None, bias=False)
    dg = tp.DependencyGraph().build_dependency(vgg, example_inputs=torch.rand(1, 3, 32, 32))
    group = dg.get_pruning_group(vgg.conv4, tp.prune_conv_out_channels, idxs=list(range(vgg.conv4.out_channels)))
    ref = imp(group)
    ours = neurons.rank("weight_l1", vgg, "conv4", torch.rand(2, 3, 32, 32), torch.zeros(2, dtype=torch.long))
    assert torch.allclose(ours.scores.float(), ref.float(), rtol=1e-5)


def test_single_channel_ablation_matches_captum(vgg, data):
    from captum.attr import LayerFeatureAblation
    x, y = data
    c = vgg.conv3.out_channels
    abl = LayerFeatureAblation(vgg, vgg.bn3)
    mask = torch.arange(c).view(1, c, 1, 1)
    attr = abl.attribute(x, target=y, layer_mask=mask, layer_baselines=0.0)    # [N, C, H, W]
    ref = attr[:, :, 0, 0]                                # the logit of y lost with channel c zeroed
    net = neurons._Ablated(vgg, "bn3", torch.eye(c, dtype=torch.bool))
    with torch.no_grad():
        base = vgg(x).gather(1, y[:, None])[:, 0]
        ablated = net(x.repeat(c, 1, 1, 1)).view(c, len(x), -1).gather(2, y.repeat(c, 1)[:, :, None])[..., 0]
    assert torch.allclose(base[None] - ablated, ref.T, atol=1e-4)


def test_vectorised_ablation_equals_a_loop_under_a_fresh_attack(vgg, data):
    x, y = data
    atk = attacks.PGD(8 / 255, steps=3, random_start=False)
    sets = [[0], [2], [1, 3]]
    base, acc = neurons.ablation_accuracy(vgg, x, y, "bn2", sets, attack=atk, chunk=2, per_image=True)
    for s, hits in zip(sets, acc):
        with hooks.zero_channels(vgg, "bn2", s):
            xa = atk(vgg, x, y)
            ref = vgg(xa).argmax(1) == y
        assert torch.equal(hits, ref)
    assert torch.equal(base, vgg(atk(vgg, x, y)).argmax(1) == y)
    # loo is the robust accuracy lost, against the intact model's
    s = neurons.rank("loo", vgg, "conv2", x, y, attack=atk)
    b, a = neurons.ablation_accuracy(vgg, x, y, "bn2", attack=atk)
    assert torch.allclose(s.scores, b - a)


def test_taylor_by_hand(vgg, data):
    x, y = data
    with hooks.capture(vgg, ["bn3"], detach=False) as st:
        loss = F.cross_entropy(vgg(x), y, reduction="sum")
    a = st["bn3"][0]
    g, = torch.autograd.grad(loss, a)
    ref = (a * g).mean((2, 3)).abs().mean(0).detach().double()
    s = neurons.rank("taylor", vgg, "conv3", x, y, batch_size=7)           # four batches
    assert torch.allclose(s.scores, ref, rtol=1e-4, atol=1e-9)


class _LinearHead(models.NRModel):
    """conv1 → bn1 → global average pool → logits: the logits are linear in bn1's output."""

    def __init__(self):
        super().__init__()
        self.normalize = models.Normalize([0.5] * 3, [0.25] * 3)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 10)

    def forward(self, x):
        return self.fc(self.bn1(self.conv1(self.normalize(x))).mean((2, 3)))


def test_delta_carried_over_is_exact_where_the_head_is_linear(data):
    torch.manual_seed(3)
    m = _LinearHead().eval()
    x, y = data
    with torch.no_grad():
        a = m.bn1(m.conv1(m.normalize(x)))
        z = a.mean((2, 3))
        logits = m.fc(z)
    p = logits.argmax(1)
    w = m.fc.weight.detach()
    # a uniform shift s of channel c moves z_c by s: the prediction changes at min_j gap_j / |w_pc − w_jc|
    gap = logits.gather(1, p[:, None]) - logits                            # [N, classes]
    slope = (w[p][:, None, :] - w[None, :, :]).abs()                       # [N, classes, C]
    d = gap[:, :, None] / slope
    d[torch.arange(len(x)), p] = math.inf
    ref = -d.min(1).values.double().mean(0)
    s = neurons.rank("delta", m, "conv1", x, y)
    assert torch.allclose(s.scores, ref, rtol=1e-4)
    # and the shift flips the prediction
    i, c = 0, int(s.order[0])
    dd = d[i, :, c].min()
    shift = torch.zeros(1, 6, 1, 1)
    shift[0, c] = 1.001 * dd * torch.sign(w[p[i], c] - w[d[i, :, c].argmin(), c]).neg()
    with torch.no_grad():
        assert m.fc((a[i:i + 1] + shift).mean((2, 3))).argmax(1) != p[i]


def test_bad_input_names_the_parameter(vgg, data):
    x, y = data
    with pytest.raises(ValueError, match="method"):
        neurons.rank("shapley", vgg, "conv1", x, y)
    with pytest.raises(ValueError, match="layer='relu3'"):
        neurons.rank("weight_l1", vgg, "relu3", x, y)
    with pytest.raises(ValueError, match="attack"):
        neurons.rank("sigma", vgg, "conv1", x, y, attack="pgd")
    with pytest.raises(ValueError, match="k"):
        neurons.rank("random", vgg, "conv1", x, y).top(99)
    with pytest.raises(ValueError, match="apoz"):
        neurons.rank("apoz", _LinearHead(), "conv1", x, y)


def test_rbo_by_hand_and_its_bounds():
    assert neurons.rbo([0, 1, 2, 3], [0, 1, 2, 3], p=0.9) == pytest.approx(1.0)
    # S = a b c, T = b a c, p = 0.5: X = 0, 2, 3 -> (1 - p)/p * (0 + 1·0.25 + 1·0.125) + 1·0.125 = 0.5
    assert neurons.rbo([0, 1, 2], [1, 0, 2], p=0.5) == pytest.approx(0.5)
    rev = neurons.rbo(list(range(20)), list(range(19, -1, -1)), p=0.9)
    assert 0 < rev < neurons.rbo(list(range(20)), [1, 0, *range(2, 20)], p=0.9) < 1
    with pytest.raises(ValueError, match="same items"):
        neurons.rbo([0, 1], [0, 2])
    with pytest.raises(ValueError, match="p="):
        neurons.rbo([0, 1], [1, 0], p=1.0)


def test_topk_overlap_against_chance_and_agreement(vgg, data):
    t = neurons.topk_overlap(list(range(10)), [1, 0, 5, 7, 2, 3, 4, 6, 8, 9], 3)
    assert t["overlap"] == 2 and t["jaccard"] == pytest.approx(2 / 4) and t["expected"] == pytest.approx(0.9)
    # P(two random 3-subsets of 10 share >= 2) = [C(3,2)·C(7,1) + C(3,3)] / C(10,3) = 22/120
    assert t["p"] == pytest.approx(22 / 120)
    x, y = data
    a = neurons.rank("weight_l1", vgg, "conv5", x, y)
    same = neurons.agreement(a, a)
    assert same["spearman"] == pytest.approx(1) and same["kendall_b"] == pytest.approx(1)
    assert same["rbo"] == pytest.approx(1) and same["top_jaccard"] == 1
    r = neurons.agreement(a, neurons.rank("random", vgg, "conv5", x, y, seed=3), k=4)
    assert -1 <= r["spearman"] <= 1 and r["k"] == 4 and 0 <= r["top_p"] <= 1
    with pytest.raises(ValueError, match="same layer"):
        neurons.agreement(a, neurons.rank("random", vgg, "conv4", x, y))
    # a ranking made elsewhere, as plain scores: the flipped scores reverse the order exactly
    given = neurons.agreement(a, (-a.scores).numpy(), k=4)
    assert given["spearman"] == pytest.approx(-1) and given["top_overlap"] == 0
    assert neurons.agreement(a, a.scores.tolist())["spearman"] == pytest.approx(1)
    with pytest.raises(ValueError, match="one score per channel of 'conv5'"):
        neurons.agreement(a, [1.0, 2.0])


def test_agreement_interval_table_and_magnitude_sentence(vgg, data):
    """agreement's ρ carries the Fisher-z interval that stats.spearman gives (without its test);
    the table shows it, and magnitude_text reads its side of 0 into words, per label."""
    x, y = data
    a = neurons.rank("weight_l1", vgg, "conv5", x, y)
    r = neurons.agreement(a, neurons.rank("random", vgg, "conv5", x, y, seed=3), k=4)
    ref = stats.spearman(a.scores.numpy(), neurons.rank("random", vgg, "conv5", x, y, seed=3).scores.numpy())
    assert (r["spearman_ci"].low, r["spearman_ci"].high) == pytest.approx((ref.low, ref.high))
    assert r["spearman_ci"].n == len(a)
    table = nrplot.agreement_table({"vs random": r, "vs itself": neurons.agreement(a, a)})
    assert list(table.columns[:2]) == ["Spearman ρ", "ρ 95% interval"]
    rev = neurons.agreement(a, (-a.scores).numpy())
    text = nrplot.magnitude_text({"conv5 same": neurons.agreement(a, a), "conv5 reversed": rev}, "x")
    assert "Above 0 at conv5 same:" in text and "Below 0 at conv5 reversed:" in text
    assert "Across 0" not in text and text.startswith("`x` against the kernels' L1 norms: conv5 same ρ = ")
    with pytest.raises(ValueError, match="rows must be"):
        nrplot.magnitude_text({}, "x")


def test_mean_ablation_and_beta(vgg, data):
    """β = 1 leaves the model as it is; mean-ablation with a channel's own constant mean equals
    zero-ablation after shifting; a channel that is 0 everywhere is the same removed or mean-filled."""
    x, y = data
    base, acc = neurons.ablation_accuracy(vgg, x, y, "bn2", [[0, 1], [2]], beta=1.0)
    assert torch.allclose(acc, torch.full_like(acc, base))
    means = neurons.channel_means(vgg, x, "bn2")
    out = {}
    h = vgg.bn2.register_forward_hook(lambda m, a, o: out.setdefault("o", o.detach()))
    vgg(x)
    h.remove()
    assert torch.allclose(means, out["o"].mean((0, 2, 3)), atol=1e-5)
    zeros = torch.zeros_like(means)
    _, z = neurons.ablation_accuracy(vgg, x, y, "bn2", [[0, 3]], how="zero", per_image=True)
    _, m0 = neurons.ablation_accuracy(vgg, x, y, "bn2", [[0, 3]], how="mean", means=zeros, per_image=True)
    assert torch.equal(z, m0)
    _, mm = neurons.ablation_accuracy(vgg, x, y, "bn2", [[0, 3]], how="mean", per_image=True)
    assert mm.shape == z.shape
    with pytest.raises(ValueError, match="how="):
        neurons.ablation_accuracy(vgg, x, y, "bn2", [[0]], how="noise")
    with pytest.raises(ValueError, match="beta="):
        neurons.ablation_accuracy(vgg, x, y, "bn2", [[0]], beta=1.5)
    with pytest.raises(ValueError, match=r"sets\[0\]"):
        neurons.ablation_accuracy(vgg, x, y, "bn2", [[999]])


def test_a_ranking_of_ties_says_so(vgg, data):
    x, y = data
    v = copy.deepcopy(vgg)
    v.bn2.weight.data.fill_(1.0)
    s = neurons.rank("bn_gamma", v, "conv2", x, y)
    assert "every channel scores the same" in s.note
    assert "every channel" not in neurons.rank("random", vgg, "conv2", x, y).note


def test_ablated_module_equals_the_vectorised_ablation(vgg, data):
    x, y = data
    _, h = neurons.ablation_accuracy(vgg, x, y, "bn3", [[1, 2]], per_image=True)
    net = neurons.ablated(vgg, "bn3", [1, 2])
    from nrlib import metrics
    assert torch.equal(metrics.hits(net, x, y, amp=False), h[0])
    assert torch.equal(metrics.hits(neurons.ablated(vgg, "bn3", [1, 2], beta=1.0), x, y, amp=False),
                       metrics.hits(vgg, x, y, amp=False))
    with pytest.raises(ValueError, match=r"channels=\[10000\] are outside \[0, "):
        neurons.ablated(vgg, "bn3", [10_000])
    with pytest.raises(ValueError, match="path="):
        neurons.ablated(vgg, "relu3", [0])


def test_a_shared_relu_is_not_a_site(data):
    """torchvision's BasicBlock calls one ReLU module twice: reading "act" there would mix two
    layers, so the site falls back to the batch norm and the score says so."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(num_classes=10).eval()
    x, y = data
    st = neurons.sites(tv, "layer2.0.conv1", x)
    assert st == {"conv": "layer2.0.conv1", "bn": "layer2.0.bn1", "act": "layer2.0.bn1"}
    s = neurons.rank("sigma", tv, "layer2.0.conv1", x[:8], y[:8], attack=attacks.PGD(8 / 255, steps=1))
    assert "read at layer2.0.bn1" in s.note and len(s) == 128


def test_loo_loss_is_the_adversarial_loss_gained_and_zero_for_a_dead_channel(vgg, data):
    x, y = data
    atk = attacks.PGD(8 / 255, steps=2, random_start=False)
    base, loss = neurons.ablation_accuracy(vgg, x, y, "bn2", [[0], [2]], attack=atk, measure="loss",
                                           per_image=True)
    for s, row in zip([[0], [2]], loss):
        with hooks.zero_channels(vgg, "bn2", s):
            ref = F.cross_entropy(vgg(atk(vgg, x, y)).double(), y, reduction="none")
        assert torch.allclose(row, ref, atol=1e-5)
    m = copy.deepcopy(vgg)
    m.bn2.weight.data[1], m.bn2.bias.data[1] = 0.0, -1.0          # dead after its ReLU
    s = neurons.rank("loo_loss", m, "conv2", x, y, attack=atk)
    assert abs(s.scores[1]) < 1e-9 and s.scores.abs().max() > 0
    with pytest.raises(ValueError, match="measure="):
        neurons.ablation_accuracy(vgg, x, y, "bn2", [[0]], measure="margin")


def test_dominant_is_chapter_4s_pooled_count_at_the_relu():
    """``dominant`` reads each filter where Karnine et al. (and chapter 4) compare it — the ReLU after
    the conv — and pools chapter 4's per-class counts over the classes."""
    from nrlib import dominant as dom
    torch.manual_seed(3)
    cnn = models.build("base", "mnist").eval()
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(40, 1, 28, 28, generator=g), torch.randint(0, 10, (40,), generator=g)
    fgsm = attacks.FGSM(0.1)                       # deterministic: both see the same x̃
    s = neurons.rank("dominant", cnn, "conv2", x, y, attack=fgsm)
    want = dom.dominant_frequencies(cnn, x, fgsm(cnn, x, y), y, frac=0.1)["conv2"].sum(0)
    assert s.site == "act" and s.meta["sites"]["act"] == "relu2"
    assert torch.equal(s.scores, want.double())


def test_combine_weights_the_parts_by_their_images(vgg, data):
    x, y = data
    a = neurons.rank("mean_activation", vgg, "conv3", x[:8], y[:8])
    b = neurons.rank("mean_activation", vgg, "conv3", x[8:], y[8:])
    whole = neurons.rank("mean_activation", vgg, "conv3", x, y)
    c = neurons.combine([a, b])              # a mean over images: the parts' weighted mean is it
    assert c.n_images == 24 and torch.allclose(c.scores, whole.scores, atol=1e-6)
    assert c.seconds == pytest.approx(a.seconds + b.seconds)
    with pytest.raises(ValueError, match="same layer by the same method"):
        neurons.combine([a, neurons.rank("weight_l1", vgg, "conv3", x, y)])
    with pytest.raises(ValueError, match="non-empty list"):
        neurons.combine([])


def test_pruned_copy_keeps_its_cut_through_training(vgg, data):
    """The pruned copy equals zero-ablation, stays pruned after a training step and a deep copy,
    and leaves the original model as it was."""
    x, y = data
    before = vgg(x).detach()
    m = neurons.pruned(vgg, "bn4", [0, 2])
    _, acc = neurons.ablation_accuracy(vgg, x, y, "bn4", [[0, 2]])
    assert torch.allclose(vgg(x), before)                     # the original is untouched
    got = (m(x).argmax(1) == y).double().mean().item() * 100
    assert got == pytest.approx(acc[0].item())
    m.train()
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    F.cross_entropy(m(x), y).backward()
    opt.step()
    m2 = copy.deepcopy(m).eval()
    out = {}
    h = m2.relu4.register_forward_hook(lambda mod, a, o: out.__setitem__("o", o))
    m2(x)
    h.remove()
    assert out["o"][:, [0, 2]].abs().sum() == 0 and out["o"][:, 1].abs().sum() > 0
    with pytest.raises(ValueError, match="channels"):
        neurons.pruned(vgg, "bn4", [999])
