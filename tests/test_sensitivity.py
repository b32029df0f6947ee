"""Neuron sensitivity Δ, the single-neuron attack and the sensitivity regulariser
(Suri & Evans 2020): nrlib.sensitivity and nrlib.regularizers."""
import copy
import math

import pytest
import torch

from nrlib import hooks, models, regularizers, sensitivity, train


def brute_delta(f, w, b):
    """Eq. 2 with the predicted class, one image, feature and class at a time."""
    n, nf = f.shape
    out = torch.full((n, nf), math.inf, dtype=torch.float64)
    for k in range(n):
        z = w @ f[k] + b
        p = int(z.argmax())
        for i in range(nf):
            best = None
            for j in range(w.shape[0]):
                if j == p or w[j, i] == w[p, i]:
                    continue
                d = float((z[p] - z[j]) / (w[j, i] - w[p, i]))
                if f[k, i] + d >= 0 and (best is None or abs(d) < abs(best)):
                    best = d
            if best is not None:
                out[k, i] = best
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delta_matches_a_brute_force_loop(seed):
    g = torch.Generator().manual_seed(seed)
    f = torch.rand(12, 7, generator=g, dtype=torch.float64) * 2
    f[:, 0] = 0.0                                   # a dead ReLU feature: only Δ ≥ 0 allowed
    f[0, 1] = 1e-6                                  # a feature near 0
    w = torch.randn(5, 7, generator=g, dtype=torch.float64)
    w[:, 2] = 0.7                                   # equal weights for every class: never flips
    b = torch.randn(5, generator=g, dtype=torch.float64)
    got = sensitivity.delta(f, w, b, batch_size=5)  # chunks that do not divide the images
    want = brute_delta(f, w, b)
    assert torch.isinf(got[:, 2]).all() and (got[:, 2] > 0).all()
    assert ((got[:, 0] >= 0) | torch.isinf(got[:, 0])).all()
    fin = torch.isfinite(want)
    assert torch.equal(fin, torch.isfinite(got))
    assert torch.allclose(got[fin].double(), want[fin], rtol=1e-5, atol=1e-6)


def test_delta_applied_to_a_feature_flips_the_prediction_and_just_less_does_not():
    g = torch.Generator().manual_seed(3)
    f, w, b = torch.rand(40, 16, generator=g) * 3, torch.randn(10, 16, generator=g), torch.randn(10, generator=g)
    d = sensitivity.delta(f, w, b)
    pred = (f @ w.T + b).argmax(1)
    n, i = torch.nonzero(torch.isfinite(d), as_tuple=True)
    assert len(n) > 100
    for scale, flips in ((1.001, True), (0.999, False)):
        f2 = f[n].clone()
        f2[torch.arange(len(n)), i] += scale * d[n, i]
        changed = (f2 @ w.T + b).argmax(1) != pred[n]
        assert changed.all() if flips else not changed.any()


def test_delta_checks_its_inputs():
    f, w = torch.rand(3, 4), torch.randn(10, 4)
    with pytest.raises(ValueError, match="weight"):
        sensitivity.delta(f, torch.randn(10, 5))
    with pytest.raises(ValueError, match="features"):
        sensitivity.delta(f[0], w)
    with pytest.raises(ValueError, match="bias"):
        sensitivity.delta(f, w, torch.zeros(3))


def test_scaled_delta_and_mean_sensitivity():
    d = torch.tensor([[1.0, math.inf, -2.0], [3.0, math.inf, 4.0]])
    mean, std = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([2.0, 1.0, 0.0])
    s = sensitivity.scaled_delta(d, mean, std)
    assert s[0, 0] == 0 and s[1, 0] == 1 and torch.isinf(s[:, 1]).all() and torch.isinf(s[:, 2]).all()
    assert sensitivity.neuron_order(s)[0].tolist() == [0, 1, 2]
    m = sensitivity.mean_sensitivity(d)
    assert m[0] == 2 and math.isinf(m[1]) and m[2] == 3


@pytest.fixture(scope="module")
def tiny_vgg():
    torch.manual_seed(0)
    m = models.build("vgg19", "cifar10", width=4).eval()
    return m


def test_features_are_the_logits_layer_inputs(tiny_vgg):
    x = torch.rand(6, 3, 32, 32)
    z, logits = sensitivity.features(tiny_vgg, x, batch_size=4)
    name, fc = sensitivity.logits_layer(tiny_vgg)
    assert name == "fc1" and z.shape == (6, fc.in_features)
    assert torch.allclose(z @ fc.weight.T + fc.bias, logits, atol=1e-5)
    assert (z >= 0).all()


def test_pruning_masks_remove_exactly_the_chosen_features(tiny_vgg):
    x = torch.rand(5, 3, 32, 32)
    z, _ = sensitivity.features(tiny_vgg, x)
    drop = [1, 3, 6]
    with hooks.zero_channels(tiny_vgg, "gap", drop):
        zp, _ = sensitivity.features(tiny_vgg, x)
    keep = [i for i in range(z.shape[1]) if i not in drop]
    assert (zp[:, drop] == 0).all() and torch.equal(zp[:, keep], z[:, keep])



def test_pruned_hits_equal_zeroing_the_channels_in_the_model(tiny_vgg):
    from nrlib import metrics
    torch.manual_seed(0)
    x = torch.rand(40, 3, 32, 32)
    z, logits = sensitivity.features(tiny_vgg, x)
    y = torch.randint(0, logits.shape[1], (40,), generator=torch.Generator().manual_seed(2))
    fc = sensitivity.logits_layer(tiny_vgg)[1]
    g = torch.Generator().manual_seed(1)
    n = z.shape[1]
    sets = [[], *(torch.randperm(n, generator=g)[:k].tolist() for k in (2, 8, n - 1)), list(range(n))]
    got = sensitivity.pruned_hits(z, fc.weight.detach(), fc.bias.detach(), y, sets)
    assert got.shape == (len(sets), 40) and torch.equal(got[0], logits.argmax(1) == y)
    for s, row in zip(sets, got):
        with hooks.zero_channels(tiny_vgg, "gap", s):
            assert torch.equal(row, metrics.hits(tiny_vgg, x, y))
    assert torch.equal(got[-1], y == fc.bias.argmax())       # every feature gone: the bias decides
    with pytest.raises(ValueError, match=r"sets\[1\]"):
        sensitivity.pruned_hits(z, fc.weight.detach(), fc.bias.detach(), y, [[0], [z.shape[1]]])
    with pytest.raises(ValueError, match="sets must be a non-empty list"):
        sensitivity.pruned_hits(z, fc.weight.detach(), fc.bias.detach(), y, [])
    with pytest.raises(ValueError, match="labels"):
        sensitivity.pruned_hits(z, fc.weight.detach(), fc.bias.detach(), y[:3], [[0]])

@pytest.mark.parametrize("norm,eps", [("l2", 0.5), ("linf", 8 / 255)])
def test_single_neuron_attack_moves_the_feature_toward_its_target(tiny_vgg, norm, eps):
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    z, logits = sensitivity.features(tiny_vgg, x)
    fc = sensitivity.logits_layer(tiny_vgg)[1]
    d = sensitivity.delta(z, fc.weight, fc.bias)
    live = torch.isfinite(d) & (z > 0)              # an active feature (a dead one has no gradient)
    assert live.any(1).all()
    neurons = torch.where(live, d.abs(), torch.full_like(d, math.inf)).argmin(1)   # the most sensitive
    t = sensitivity.neuron_targets(z, d, neurons)
    before = (z - t).gather(1, neurons[:, None]).abs()
    xa = sensitivity.neuron_attack(tiny_vgg, x, neurons, d, eps=eps, norm=norm, steps=20)
    za, _ = sensitivity.features(tiny_vgg, xa)
    after = (za - t).gather(1, neurons[:, None]).abs()
    assert (after < before).float().mean() >= 0.8
    dist = (xa - x).flatten(1).norm(dim=1) if norm == "l2" else (xa - x).flatten(1).abs().amax(1)
    assert (dist <= eps + 1e-5).all() and xa.min() >= 0 and xa.max() <= 1
    assert not any(p.grad is not None for p in tiny_vgg.parameters())


def test_ns_success_shape_and_bad_ranks(tiny_vgg):
    x = torch.rand(3, 3, 32, 32)
    z, _ = sensitivity.features(tiny_vgg, x)
    fc = sensitivity.logits_layer(tiny_vgg)[1]
    d = sensitivity.delta(z, fc.weight, fc.bias)
    order = sensitivity.neuron_order(d)
    ok = sensitivity.ns_success(tiny_vgg, x, d, order, ranks=[0, 1], eps=0.5, steps=2)
    assert ok.shape == (3, 2) and ok.dtype == torch.bool
    with pytest.raises(ValueError, match="ranks"):
        sensitivity.ns_success(tiny_vgg, x, d, order, ranks=[order.shape[1]], eps=0.5, steps=2)


def test_sensitivity_regulariser_on_a_hand_computed_case():
    w = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 2.0], [3.0, 0.0, 0.0]], requires_grad=True)
    f = torch.tensor([[1.0, 1.0, 2.0]], requires_grad=True)
    y = torch.tensor([0])
    r1, r2 = regularizers.sensitivity_terms(f, w, y, top_k=2)
    # pairs: |W0-W1| = (1,1,0) -> top2 mean 1; |W0-W2| = (2,0,2) -> 2; |W1-W2| = (3,1,2) -> 2.5
    assert r1.item() == pytest.approx(2.5)
    # Σf = 4; class 0: 0; class 1: |f·(1,-1,0)|/4 = (.25,.25,0) -> .25; class 2: |f·(-2,0,2)|/4 = (.5,0,1) -> .75
    assert r2.item() == pytest.approx((0 + 0.25 + 0.75) / 3)
    loss = regularizers.sensitivity_loss(f, w, y, top_k=2, delta1=10, delta2=100)
    assert loss.item() == pytest.approx(10 * 2.5 + 100 / 3)
    loss.backward()
    assert torch.isfinite(w.grad).all() and torch.isfinite(f.grad).all() and w.grad.abs().sum() > 0


def test_regulariser_checks_its_inputs():
    w, f = torch.randn(10, 8), torch.rand(4, 8)
    with pytest.raises(ValueError, match="top_k"):
        regularizers.sensitivity_terms(f, w, torch.zeros(4, dtype=torch.long), top_k=9)
    with pytest.raises(ValueError, match="y"):
        regularizers.sensitivity_terms(f, w, torch.full((4,), 10))
    with pytest.raises(ValueError, match="features"):
        regularizers.sensitivity_terms(torch.rand(4, 7), w, torch.zeros(4, dtype=torch.long))


class Shrink(train.Term):
    """A reader's own term: 10·‖W‖² of the logits layer's weight (declares it needs the features)."""
    needs_features = True

    def __call__(self, out):
        assert out.features.shape == (len(out.y), out.weight.shape[1])       # the logits layer's inputs
        return 10 * out.weight.pow(2).sum()


def test_fit_adds_a_term_to_the_loss():
    """A term that pulls the logits layer's weights to 0 shrinks them; without it they do not."""
    x, y = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.arange(64) % 10
    norms = {}
    for name, terms in (("none", []), ("shrink", [Shrink()])):
        torch.manual_seed(0)
        m = models.build("vgg16", "cifar10", width=4)
        train.fit(m, x, y, optimizer="sgd", lr=0.01, batch_size=32, max_epochs=2, patience=None,
                  objective=train.Objective(terms=terms), progress=False)
        norms[name] = sensitivity.logits_layer(m)[1].weight.norm().item()
    assert norms["shrink"] < 0.5 * norms["none"]


def test_training_with_the_sensitivity_penalty_lowers_its_weight_term():
    """R1 (the class pairs' largest weight differences) ends lower with the penalty than without."""
    x, y = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.arange(64) % 10
    r1 = {}
    for name, terms in (("none", []), ("sensitivity", [train.SensitivityPenalty(top_k=4)])):
        torch.manual_seed(0)
        m = models.build("vgg16", "cifar10", width=4)
        hist = train.fit(m, x, y, optimizer="sgd", lr=0.01, batch_size=16, max_epochs=2, patience=None,
                         objective=train.Objective(terms=terms), progress=False)
        assert all(math.isfinite(v) for v in hist["loss"])
        z, _ = sensitivity.features(m, x)
        r1[name] = regularizers.sensitivity_terms(z, sensitivity.logits_layer(m)[1].weight, y, top_k=4)[0].item()
    assert r1["sensitivity"] < r1["none"]


@pytest.mark.parametrize("c", [0.25, 3.0, 10.0])
def test_rescaled_features_keep_the_logits_and_divide_both_terms_by_c(tiny_vgg, c):
    """Eq. 5 as coded can be driven to 0 without changing the function: the last batch norm ×c
    makes the features ×c (ReLU and pooling are positively homogeneous), fc1's weight ×1/c keeps
    the logits; R1 and R2 fall as 1/c and Δ grows as c."""
    g = torch.Generator().manual_seed(1)
    m = copy.deepcopy(tiny_vgg)
    bn = getattr(m, f"bn{m.n_conv}")
    with torch.no_grad():          # a last batch norm whose ReLU cuts some channels, not the identity
        bn.weight.copy_(0.5 + torch.rand(bn.weight.shape, generator=g))
        bn.bias.copy_(0.5 * torch.randn(bn.bias.shape, generator=g))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x, y = torch.rand(8, 3, 32, 32, generator=g), torch.arange(8) % 10
    m2 = regularizers.rescale_features(m, c)
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items()), "a copy, the model untouched"
    (z, logits), (z2, logits2) = sensitivity.features(m, x), sensitivity.features(m2, x)
    assert (z == 0).any() and (z > 0).any()
    torch.testing.assert_close(logits2, logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(z2, c * z, rtol=1e-4, atol=1e-6)
    (w, b), (w2, b2) = ((fc.weight.detach(), fc.bias.detach())
                        for fc in (sensitivity.logits_layer(n)[1] for n in (m, m2)))
    for t, t2 in zip(regularizers.sensitivity_terms(z, w, y, top_k=2),
                     regularizers.sensitivity_terms(z2, w2, y, top_k=2)):
        assert t.item() > 0 and t2.item() == pytest.approx(t.item() / c, rel=1e-3)
    d, d2 = sensitivity.delta(z, w, b), sensitivity.delta(z2, w2, b2)
    fin = torch.isfinite(d)
    assert fin.any() and torch.equal(fin, torch.isfinite(d2))
    torch.testing.assert_close(d2[fin], c * d[fin], rtol=1e-3, atol=1e-4)


def test_rescale_features_checks_its_inputs(tiny_vgg):
    with pytest.raises(ValueError, match="c="):
        regularizers.rescale_features(tiny_vgg, 0.0)
    with pytest.raises(ValueError, match="must be an nrlib.models.VGG"):
        regularizers.rescale_features(models.build("resnet18", "cifar10", width=4), 2.0)
