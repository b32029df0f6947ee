"""Neuron sensitivity of any layer, sensitive and important neurons, and the sequence
similarities of Zhang et al. 2021: nrlib.sensitivity (eqs. 1-5, 11), nrlib.metrics (eqs. 7-10),
adversarial logit pairing in nrlib.train.fit and the Gaussian-noise corruption."""
import itertools
import math
import random

import pytest
import torch

from nrlib import attacks, hooks, metrics, models, sensitivity as sens, train


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    return models.build("vgg16", "cifar10", width=4).eval()


# ----------------------------------------------------------------------------
# σ (eq. 1), the ratio (eq. 11), Ω (eq. 2)
# ----------------------------------------------------------------------------
def test_sigma_of_identical_inputs_is_zero():
    a = torch.randn(5, 3, 4, 4)
    assert torch.equal(sens.neuron_sensitivity(a, a.clone()), torch.zeros(3))


def test_sigma_equals_a_hand_computed_value():
    a = torch.zeros(2, 2, 1, 2)
    b = a.clone()
    b[0, 0, 0] = torch.tensor([1.0, -3.0])    # image 0, channel 0: |d|_1 = 4 over dim 2 -> 2
    b[1, 0, 0, 1] = 2.0                        # image 1, channel 0: 2 / 2 = 1
    b[1, 1, 0, 0] = -0.5                       # image 1, channel 1: 0.5 / 2 = 0.25
    sigma = sens.neuron_sensitivity(a, b)
    assert torch.allclose(sigma, torch.tensor([(2 + 1) / 2, 0.25 / 2]))
    # a vector layer: dim = 1
    assert torch.allclose(sens.neuron_sensitivity(torch.zeros(2, 3), torch.tensor([[1.0, 0, 2], [3, 0, 0]])),
                          torch.tensor([2.0, 0.0, 1.0]))


def test_sensitivity_ratio_is_scale_free_and_hand_computed():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(6, 4, 3, 3, generator=g), torch.randn(6, 4, 3, 3, generator=g)
    r = sens.sensitivity_ratio(a, b)
    assert torch.allclose(sens.sensitivity_ratio(7.5 * a, 7.5 * b), r, rtol=1e-5)
    manual = torch.stack([torch.stack([(a[i, c] - b[i, c]).abs().sum() / a[i, c].abs().sum()
                                       for c in range(4)]) for i in range(6)]).mean(0)
    assert torch.allclose(r, manual, rtol=1e-5)
    # a channel that is 0 on every clean image has no ratio; one 0 image is left out of the mean
    a[:, 0] = 0
    a[0, 1] = 0
    r2 = sens.sensitivity_ratio(a, b)
    assert math.isnan(r2[0])
    keep = torch.stack([(a[i, 1] - b[i, 1]).abs().sum() / a[i, 1].abs().sum() for i in range(1, 6)]).mean()
    assert torch.allclose(r2[1], keep, rtol=1e-5)


def test_sensitive_neurons_are_the_top_k_in_order():
    sigma = torch.tensor([0.1, 0.5, 0.3, 0.5, float("nan"), 0.0])
    assert sens.sensitive_neurons(sigma, 3).tolist() == [1, 3, 2]       # ties: lower index first
    assert sens.sensitive_neurons(sigma, share=0.5).tolist() == [1, 3, 2]
    assert sens.sensitive_neurons(sigma, share=0.01).tolist() == [1]     # at least one
    for kw, param in ((dict(k=7), "k"), (dict(k=0), "k"), (dict(share=1.5), "share"), ({}, "exactly one")):
        with pytest.raises(ValueError, match=param):
            sens.sensitive_neurons(sigma, **kw)


def test_layer_sensitivity_matches_captured_outputs_and_removes_its_hooks(vgg):
    g = torch.Generator().manual_seed(2)
    x = torch.rand(10, 3, 32, 32, generator=g)
    xa = (x + 0.03 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    layers = ["conv1", "relu4", "pool5"]
    out = sens.layer_sensitivity(vgg, x, xa, layers, batch_size=4)     # three batches
    with hooks.capture(vgg, layers) as st, torch.no_grad():
        vgg(x), vgg(xa)
    for n in layers:
        a, b = st[n]
        assert torch.allclose(out[n]["sigma"], sens.neuron_sensitivity(a, b), rtol=1e-4, atol=1e-7)
        r = sens.sensitivity_ratio(a, b)
        assert torch.allclose(out[n]["ratio"].nan_to_num(-1), r.nan_to_num(-1), rtol=1e-4, atol=1e-7)
        # each pair's deviation over the layer's channels; their mean is the layer's mean σ
        one = torch.stack([sens.neuron_sensitivity(a[i:i + 1], b[i:i + 1]).mean() for i in range(10)])
        assert out[n]["pair_mean"].shape == (10,) and torch.allclose(out[n]["pair_mean"], one, rtol=1e-4)
        assert torch.allclose(out[n]["pair_mean"].mean(), out[n]["sigma"].mean(), rtol=1e-4)
    assert all(not m._forward_hooks for m in vgg.modules())
    with pytest.raises(ValueError, match="x_adv"):
        sens.layer_sensitivity(vgg, x, xa[:5], layers)
    with pytest.raises(ValueError, match="conv99"):
        sens.layer_sensitivity(vgg, x, xa, ["conv99"])


def test_per_image_values_rebuild_sigma_and_the_ratio(vgg):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(12, 3, 32, 32, generator=g)
    xa = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    out = sens.layer_sensitivity(vgg, x, xa, ["conv2", "relu5"], batch_size=5, per_image=["relu5"])
    assert "dev" not in out["conv2"] and out["relu5"]["dev"].shape == (12, out["relu5"]["sigma"].numel())
    d, rp = out["relu5"]["dev"], out["relu5"]["ratio_pairs"]
    assert torch.allclose(d.mean(0), out["relu5"]["sigma"], rtol=1e-4, atol=1e-7)
    assert torch.allclose(rp.nanmean(0).nan_to_num(-1), out["relu5"]["ratio"].nan_to_num(-1), rtol=1e-4)
    top = sens.sensitive_neurons(out["relu5"]["sigma"], share=0.25)
    assert sens.mean_ratio(rp, top) == pytest.approx(out["relu5"]["ratio"][top].nanmean().item(), rel=1e-4)
    with pytest.raises(ValueError, match="per_image"):
        sens.layer_sensitivity(vgg, x, xa, ["conv2"], per_image=["relu5"])


def test_mean_ratio_by_hand_and_its_bootstrap_pairs_the_images():
    r = torch.tensor([[1.0, 2.0, float("nan")], [3.0, float("nan"), 5.0], [2.0, 4.0, 1.0]])
    # neuron 0: (1+3+2)/3 = 2; neuron 1: (2+4)/2 = 3 (the all-0 pair left out); their mean: 2.5
    assert sens.mean_ratio(r, [0, 1]) == pytest.approx(2.5)
    # weights: pair 0 twice, pair 1 never -> neuron 0: (2+2)/3, neuron 1: (4+4)/3
    w = torch.tensor([[2.0, 0.0, 1.0]])
    assert sens.mean_ratio(r, [0, 1], w)[0] == pytest.approx((4 / 3 + 8 / 3) / 2)
    g = torch.Generator().manual_seed(0)
    a, dev = torch.rand(200, 8, generator=g), torch.rand(200, 8, generator=g)
    dev[:, :2] += 5                                   # neurons 0 and 1: the top quarter by σ, always
    e = sens.ratio_bootstrap({"dev": dev, "ratio_pairs": a}, share=0.25, n_resamples=500)
    assert e.low < float(e) < e.high and float(e) == pytest.approx(a[:, :2].mean().item())
    # b = a shifted by a constant on the same pairs: the paired difference has no spread at all
    d = sens.ratio_bootstrap({"dev": dev, "ratio_pairs": a + 1}, {"dev": dev, "ratio_pairs": a}, share=0.25,
                             n_resamples=500)
    assert float(d) == pytest.approx(1.0) and d.high - d.low < 1e-6
    # a neuron whose σ is near the cut enters the top set on some resamples only: the interval widens
    dev2 = dev.clone()
    dev2[:, 2] = dev2[:, 1] + 0.3 * torch.randn(200, generator=g)
    a2 = a.clone()
    a2[:, 2] += 3
    wide = sens.ratio_bootstrap({"dev": dev2, "ratio_pairs": a2}, share=0.25, n_resamples=500)
    assert wide.high - wide.low > 3 * (e.high - e.low)
    with pytest.raises(ValueError, match="same images"):
        sens.ratio_bootstrap({"dev": dev, "ratio_pairs": a}, {"dev": dev[:50], "ratio_pairs": a[:50]})
    with pytest.raises(ValueError, match="per_image"):
        sens.ratio_bootstrap((a, [0]))


def test_sharing_bootstrap_finds_a_shared_neuron_and_pairs_two_layers():
    g = torch.Generator().manual_seed(0)
    devs = [torch.rand(30, 10, generator=g) for _ in range(4)]
    for d in devs:           # neuron 3 leads every class's σ by far: the classes share it
        d[:, 3] += 5
    e = sens.sharing_bootstrap(devs, share=0.1, measure=metrics.jaccard_total, n_resamples=200)
    assert float(e) == 1.0 and e.low == 1.0
    noise = [torch.rand(30, 10, generator=g) for _ in range(4)]
    e2 = sens.sharing_bootstrap(devs, noise, share=0.1, measure=metrics.avg_pair_levenshtein,
                                n_resamples=200)
    assert float(e2) > 0 and e2.low > 0             # shared beats noise on the same resamples
    with pytest.raises(ValueError, match="dev_b"):
        sens.sharing_bootstrap(devs, noise[:3], share=0.1, measure=metrics.jaccard_total)


# ----------------------------------------------------------------------------
# importance and voting (eqs. 3-5)
# ----------------------------------------------------------------------------
def test_importance_and_important_neurons():
    f = torch.tensor([[1.0, 2.0, 0.0], [0.5, 0.0, 4.0]])
    w = torch.tensor([[1.0, -1.0, 3.0], [2.0, 1.0, -1.0]])
    phi = sens.importance(f, w, 1)
    assert torch.equal(phi, torch.tensor([[2.0, 2.0, 0.0], [1.0, 0.0, -4.0]]))
    assert torch.equal(sens.importance(f, w, torch.tensor([0, 1])), torch.tensor([[1.0, -2.0, 0.0], [1.0, 0, -4.0]]))
    assert sens.important_neurons(phi, 2).tolist() == [[0, 1], [0, 1]]
    with pytest.raises(ValueError, match="k"):
        sens.important_neurons(phi, 4)


def test_voting_gives_k_to_1_votes():
    seqs = torch.tensor([[3, 1, 0], [1, 3, 2], [1, 0, 4]])
    votes = sens.vote_counts(seqs, 5)
    assert votes.tolist() == [1 + 2, 2 + 3 + 3, 1, 3 + 2, 1]      # neuron 1: 2 + 3 + 3 = 8
    assert sens.vote(seqs, 5).tolist() == [1, 3, 0]
    assert sens.vote(seqs, 5, k=5).tolist() == [1, 3, 0, 2, 4]     # ties: lower index first
    with pytest.raises(ValueError, match="outside"):
        sens.vote(seqs, 4)


# ----------------------------------------------------------------------------
# Levenshtein similarity and total Jaccard (eqs. 7-10)
# ----------------------------------------------------------------------------
def dp_levenshtein(a, b):
    d = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, j in itertools.product(range(len(a) + 1), range(len(b) + 1)):
        if min(i, j) == 0:
            d[i][j] = max(i, j)
        else:
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    return d[len(a)][len(b)]


def test_levenshtein_matches_a_full_table_and_rapidfuzz():
    from rapidfuzz.distance import Levenshtein
    rng = random.Random(0)
    for _ in range(200):
        a = [rng.randrange(6) for _ in range(rng.randrange(0, 12))]
        b = [rng.randrange(6) for _ in range(rng.randrange(0, 12))]
        d = metrics.levenshtein(a, b)
        assert d == dp_levenshtein(a, b) == Levenshtein.distance(a, b)
        s = metrics.levenshtein_similarity(torch.tensor(a, dtype=torch.long), b)
        assert 0.0 <= s <= 1.0 and (not (a or b) or s == pytest.approx(1 - d / (len(a) + len(b))))
    assert metrics.levenshtein_similarity([4, 2, 9], [4, 2, 9]) == 1.0
    assert metrics.levenshtein_similarity([1, 2], [3, 4]) == 0.5       # two substitutions over 4
    assert metrics.levenshtein_similarity([], [1]) == 0.0
    with pytest.raises(ValueError, match="sequence"):
        metrics.levenshtein({1, 2}, [1])


def test_average_pair_levenshtein_and_total_jaccard():
    seqs = [[1, 2, 3], [1, 2, 3], [3, 2, 1]]
    pairs = [1.0, metrics.levenshtein_similarity([1, 2, 3], [3, 2, 1])] * 1
    assert metrics.avg_pair_levenshtein(seqs) == pytest.approx((1.0 + 2 * pairs[1]) / 3)
    assert metrics.jaccard_total(seqs) == 1.0
    assert metrics.jaccard_total([[1, 2, 3], [2, 3, 4], [3, 4, 5]]) == pytest.approx(1 / 5)
    assert metrics.jaccard_total([[1], [2]]) == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        metrics.avg_pair_levenshtein([[1]])
    with pytest.raises(ValueError, match="non-empty"):
        metrics.jaccard_total([])


# ----------------------------------------------------------------------------
# β-suppression, logit pairing, Gaussian noise
# ----------------------------------------------------------------------------
def test_beta_one_changes_nothing_and_beta_zero_zeroes_the_channels(vgg):
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = vgg(x)
        with hooks.scale_channels(vgg, "relu13", [0, 2], 1.0):
            assert torch.equal(vgg(x), ref)
        with hooks.scale_channels(vgg, "relu13", [0, 2], 0.0), hooks.capture(vgg, "relu13") as st:
            vgg(x)
        out = st["relu13"][0]
        assert out[:, [0, 2]].abs().sum() == 0 and out[:, 1].abs().sum() > 0
        assert torch.equal(vgg(x), ref)                 # hooks removed: the model as it was
    assert all(not m._forward_hooks for m in vgg.modules())


def test_scale_many_scales_every_named_layer_and_cleans_up(vgg):
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    chans = {"relu1": [0, 1], "relu7": [3]}
    with torch.no_grad(), hooks.scale_many(vgg, chans, 0.5), hooks.capture(vgg, list(chans)) as st:
        vgg(x)
    with torch.no_grad(), hooks.capture(vgg, "relu1") as ref:
        vgg(x)
    with torch.no_grad(), hooks.scale_channels(vgg, "relu1", [0, 1], 0.5), hooks.capture(vgg, "relu7") as r7:
        vgg(x)                              # relu7 as it is downstream of the scaled relu1 alone
    a, r = st["relu1"][0], ref["relu1"][0]
    assert torch.allclose(a[:, :2], 0.5 * r[:, :2]) and torch.equal(a[:, 2:], r[:, 2:])
    b, r = st["relu7"][0], r7["relu7"][0]
    assert torch.allclose(b[:, 3], 0.5 * r[:, 3]) and torch.equal(b[:, :3], r[:, :3])
    assert all(not m._forward_hooks for m in vgg.modules())
    with pytest.raises(ValueError, match="channels"):
        with hooks.scale_many(vgg, [0, 1], 0.5):
            pass


def test_logit_pairing_pulls_clean_and_adversarial_logits_together():
    """The 'adversary' inverts the images, so clean and paired logits differ a lot unless the
    pairing term pulls them together (measured as fit sees them: one batch, BN in training mode)."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(64, 3, 32, 32, generator=g), torch.arange(64) % 10
    invert = lambda m, xb, yb: 1.0 - xb      # noqa: E731
    gap = {}
    for lam in (0.0, 10.0):          # 10 × the mean over the 10 logits: the squared L2 distance
        torch.manual_seed(0)
        m = models.build("vgg16", "cifar10", width=4)
        train.fit(m, x, y, optimizer="sgd", lr=0.01, batch_size=32, max_epochs=3, patience=None,
                  objective=train.Objective(adversary=invert, mix="benign+adv", terms=[train.LogitPairing(lam)]),
                  progress=False)
        m.train()
        with torch.no_grad():
            z = m(torch.cat([x, 1.0 - x]))
        gap[lam] = (z[:64] - z[64:]).pow(2).sum(1).mean().item()
    assert gap[10.0] < 0.1 * gap[0.0], gap         # measured: 0.011 vs 2.15
    with pytest.raises(ValueError, match="LogitPairing pairs"):
        train.Objective(adversary=invert, mix="adv", terms=[train.LogitPairing(0.5)])


def test_gaussian_noise_has_its_severity_and_stays_in_the_box():
    x = torch.full((8, 3, 32, 32), 0.5)
    m = models.build("vgg16", "cifar10", width=4)
    for s, c in enumerate(attacks.GAUSS_SEVERITY, 1):
        xn = attacks.GaussianNoise.severity(s)(m, x, torch.zeros(8, dtype=torch.long))
        assert (xn - x).std().item() == pytest.approx(c, rel=0.05)
        assert xn.min() >= 0 and xn.max() <= 1
    a = attacks.GaussianNoise(0.1)
    assert torch.equal(a(m, x, torch.zeros(8, dtype=torch.long)), a(m, x, torch.zeros(8, dtype=torch.long)))
    with pytest.raises(ValueError, match="severity"):
        attacks.GaussianNoise.severity(6)
