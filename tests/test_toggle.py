"""Toggle activity and neural ranking (Prattico 2022) — nrlib.toggle."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from nrlib import models, toggle


def _bimodal(rng, n=1000):
    return np.concatenate([rng.normal(-2.0, 0.5, int(0.6 * n)), rng.normal(3.0, 1.0, n - int(0.6 * n))])


def test_kde_threshold_bimodal_lies_in_the_valley():
    v = _bimodal(np.random.default_rng(0))
    thr, det = toggle.kde_threshold(v, return_details=True)
    assert not det["fallback"] and len(det["peaks"]) == 2
    peaks = det["grid"][det["peaks"]]
    assert peaks[0] < -1.0 and peaks[1] > 2.0          # the two modes
    assert -0.5 < thr < 1.5                             # the valley between N(-2, .5) and N(3, 1)
    # the density at the threshold is the lowest between the peaks
    i = int(np.argmin(np.abs(det["grid"] - thr)))
    assert det["density"][i] <= det["density"][det["peaks"]].min()


@pytest.mark.parametrize("kind", ["normal", "constant", "uniform"])
def test_kde_threshold_unimodal_takes_the_midpoint_fallback(kind):
    rng = np.random.default_rng(1)
    v = {"normal": rng.normal(1.0, 2.0, 800), "constant": np.full(50, 3.0),
         "uniform": rng.uniform(0, 1, 2000)}[kind]
    thr, det = toggle.kde_threshold(v, return_details=True)
    assert det["fallback"]
    assert thr == pytest.approx(0.5 * (v.min() + v.max()))


def test_kde_threshold_rejects_bad_input():
    with pytest.raises(ValueError, match="values"):
        toggle.kde_threshold([1.0])
    with pytest.raises(ValueError, match="NaN"):
        toggle.kde_threshold([1.0, float("nan"), 2.0])


def test_vectorised_thresholds_match_scipy():
    rng = np.random.default_rng(2)
    cols = [_bimodal(rng), rng.normal(0, 1, 1000), np.concatenate([rng.normal(0, .3, 800), rng.normal(2, .3, 200)]),
            np.full(1000, 0.5)]
    V = np.stack(cols, 1)
    thr, bim = toggle.kde_thresholds(torch.tensor(V, dtype=torch.float32))
    ref = [toggle.kde_threshold(V[:, j], return_details=True) for j in range(V.shape[1])]
    assert bim.tolist() == [not d["fallback"] for _, d in ref] == [True, False, True, False]
    for j, (t, _) in enumerate(ref):
        span = V[:, j].max() - V[:, j].min() or 1.0
        assert abs(float(thr[j]) - t) < 0.03 * span    # within about two grid steps of 128


def _thresholds(binary, low, high, name="a"):
    t = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    return toggle.Thresholds([name], {name: t(binary)}, {name: t(low)}, {name: t(high)},
                             {name: torch.ones(len(binary), dtype=torch.bool)})


def test_toggle_activity_on_a_hand_made_table():
    # 4 samples × 5 neurons
    table = torch.tensor([[0.0, 1.0, 5.0, -1.0, 2.0],
                          [2.0, 1.0, 6.0, -2.0, 2.0],
                          [1.0, 1.0, 7.0, 3.0, 2.0],
                          [0.5, 1.0, 8.0, 0.0, 2.0]])
    thr = [1.0, 1.0, 4.0, 0.0, 2.0]     # neuron 0: 0 ≤ 1 and 2 > 1 → toggles; 1: never > 1; 2: never ≤ 4;
    low = [0.2, 0.0, 5.0, -1.5, 1.0]    # 3: -2 ≤ 0 and 3 > 0 → toggles; 4: constant at its threshold
    high = [1.5, 2.0, 7.5, 2.5, 3.0]
    ext = {"a": (table.min(0).values, table.max(0).values)}
    th = _thresholds(thr, low, high)
    assert toggle.toggled(*ext["a"], th.binary["a"]).tolist() == [True, False, False, True, False]
    assert toggle.toggled(*ext["a"], th.low["a"], th.high["a"]).tolist() == [True, False, True, True, False]
    b = toggle.toggle_activity(ext, th, "binary")
    t = toggle.toggle_activity(ext, th, "ternary")
    assert b["a"] == pytest.approx(40.0) and b["total"] == pytest.approx(40.0)
    assert t["a"] == pytest.approx(60.0)
    with pytest.raises(ValueError, match="kind"):
        toggle.toggle_activity(ext, th, "quaternary")


def test_total_toggle_weights_layers_by_their_neuron_count():
    th = toggle.Thresholds(["a", "b"], {"a": torch.zeros(1), "b": torch.zeros(3)},
                           {"a": torch.zeros(1), "b": torch.zeros(3)}, {"a": torch.zeros(1), "b": torch.zeros(3)},
                           {"a": torch.ones(1, dtype=torch.bool), "b": torch.ones(3, dtype=torch.bool)})
    ext = {"a": (torch.tensor([-1.0]), torch.tensor([1.0])),                   # toggles
           "b": (torch.tensor([-1.0, 1.0, 1.0]), torch.tensor([1.0, 2.0, 2.0]))}  # 1 of 3 toggles
    r = toggle.toggle_activity(ext, th)
    assert r["a"] == 100.0 and r["b"] == pytest.approx(100 / 3) and r["total"] == pytest.approx(50.0)


@pytest.fixture(scope="module")
def tiny_cifar_net():
    torch.manual_seed(0)
    return models.build("resnet18", "cifar10", width=4).eval()


@pytest.fixture(scope="module")
def tiny_images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(40, 3, 32, 32, generator=g), torch.randint(0, 10, (40,), generator=g)


def test_extrema_of_prefixes_and_merge(tiny_cifar_net, tiny_images):
    net, (x, _) = tiny_cifar_net, tiny_images
    layers = ["conv1", "l4b2c2"]
    ext = toggle.extrema(net, x, layers, sizes=[5, 17, 40], batch_size=8)
    from nrlib.hooks import capture
    with torch.no_grad(), capture(net, layers) as st:
        net(x)
    for n in (5, 17, 40):
        for name in layers:
            a = st[name][0][:n]
            assert torch.allclose(ext[n][name][0], a.amin(0), atol=1e-5)
            assert torch.allclose(ext[n][name][1], a.amax(0), atol=1e-5)
    m = toggle.merge(toggle.extrema(net, x[:10], layers), toggle.extrema(net, x[10:], layers))
    for name in layers:
        assert torch.allclose(m[name][0], ext[40][name][0], atol=1e-5)
        assert torch.allclose(m[name][1], ext[40][name][1], atol=1e-5)
    # a dataset's toggle activity can only grow when images are added
    th = toggle.profile(net, x, layers, bins=64, progress=False)
    assert toggle.toggle_activity(ext[5], th)["total"] <= toggle.toggle_activity(ext[40], th)["total"]


def test_profile_thresholds_lie_in_the_historical_range(tiny_cifar_net, tiny_images):
    net, (x, _) = tiny_cifar_net, tiny_images
    th = toggle.profile(net, x, bins=64, progress=False, batch_size=16)
    assert th.layers == list(net.conv_layers()) and len(th.layers) == 17
    ext = toggle.extrema(net, x)
    for name in th.layers:
        mn, mx = ext[name]
        assert th.binary[name].shape == mn.shape
        assert (th.binary[name] >= mn - 1e-4).all() and (th.binary[name] <= mx + 1e-4).all()
        assert (th.low[name] <= th.high[name]).all()
        assert torch.allclose(th.low[name], mn + 0.25 * (mx - mn), atol=1e-5)
    with pytest.raises(ValueError, match="layer"):
        toggle.profile(net, x, ["no_such_layer"], progress=False)


def test_ranking_matches_activation_times_gradient(tiny_cifar_net, tiny_images):
    net, (x, _) = tiny_cifar_net, tiny_images
    before = copy.deepcopy(net.state_dict())
    flags = [p.requires_grad for p in net.parameters()]
    layers = ["conv1", "l3b1c2"]
    rk = toggle.rank_neurons(net, x[:6], layers, batch_size=4)
    # brute force for one neuron of each layer, image by image
    from nrlib.hooks import capture
    for name in layers:
        best, best_cls = -np.inf, None
        for i in range(6):
            with capture(net, name, detach=False) as st:
                logits = net(x[i:i + 1])
            p = int(logits.argmax(1))
            a = st[name][0]
            g, = torch.autograd.grad(logits[0, p], a)
            v = float((a * g).detach()[0, 1, 2, 3])
            if v > best:
                best, best_cls = v, p
        assert float(rk.score[name][1, 2, 3]) == pytest.approx(best, rel=1e-4, abs=1e-6)
        assert int(rk.cls[name][1, 2, 3]) == best_cls
    top = rk.top(7)
    assert [r["rank"] for r in top] == list(range(7))
    assert all(a["score"] >= b["score"] for a, b in zip(top, top[1:]))
    r0 = top[0]
    assert float(rk.score[r0["layer"]][r0["c"], r0["h"], r0["w"]]) == pytest.approx(r0["score"])
    assert sum(rk.layer_counts(20).values()) == 20
    # weights untouched, flags restored
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert [p.requires_grad for p in net.parameters()] == flags
