"""Toggle activity and neural ranking (Prattico 2022) — nrlib.toggle."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from nrlib import attacks, metrics, models, toggle


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


@pytest.mark.parametrize("kind", ["normal", "constant", "uniform", "zeros"])
def test_kde_threshold_unimodal_takes_the_fallback(kind):
    rng = np.random.default_rng(1)
    v = {"normal": rng.normal(1.0, 2.0, 800), "constant": np.full(50, 3.0),
         "uniform": rng.uniform(0, 1, 2000), "zeros": np.zeros(30)}[kind]
    thr, det = toggle.kde_threshold(v, return_details=True)           # the report's rule is the default
    assert det["fallback"] and thr == 0.0
    thr, det = toggle.kde_threshold(v, fallback="midpoint", return_details=True)
    assert det["fallback"]
    assert thr == pytest.approx(0.5 * (v.min() + v.max()))


def test_kde_threshold_bimodal_is_the_valley_under_either_fallback():
    v = _bimodal(np.random.default_rng(3))
    assert toggle.kde_threshold(v, fallback="zero") == toggle.kde_threshold(v, fallback="midpoint")
    with pytest.raises(ValueError, match="fallback"):
        toggle.kde_threshold(v, fallback="mean")


def test_kde_threshold_rejects_bad_input():
    with pytest.raises(ValueError, match="values"):
        toggle.kde_threshold([1.0])
    with pytest.raises(ValueError, match="NaN"):
        toggle.kde_threshold([1.0, float("nan"), 2.0])


@pytest.mark.parametrize("fallback", ["zero", "midpoint"])
def test_vectorised_thresholds_match_scipy(fallback):
    rng = np.random.default_rng(2)
    cols = [_bimodal(rng), rng.normal(3, 1, 1000), np.concatenate([rng.normal(0, .3, 800), rng.normal(2, .3, 200)]),
            np.full(1000, 0.5), rng.normal(-3, 0.5, 1000)]
    V = np.stack(cols, 1)
    thr, bim = toggle.kde_thresholds(torch.tensor(V, dtype=torch.float32), fallback=fallback)
    ref = [toggle.kde_threshold(V[:, j], fallback=fallback, return_details=True) for j in range(V.shape[1])]
    assert bim.tolist() == [not d["fallback"] for _, d in ref] == [True, False, True, False, False]
    for j, (t, _) in enumerate(ref):
        span = V[:, j].max() - V[:, j].min() or 1.0
        assert abs(float(thr[j]) - t) < 0.03 * span    # within about two grid steps of 128
    if fallback == "zero":
        assert thr[[1, 3, 4]].tolist() == [0.0, 0.0, 0.0]


def test_ternary_rules():
    mn, mx = torch.tensor([0.0, -3.0, 2.0]), torch.tensor([10.0, 1.0, 4.0])
    lo, hi = toggle.ternary_thresholds(mn, mx)                     # ours: fractions of the range
    assert lo.tolist() == [2.5, -2.0, 2.5] and hi.tolist() == [7.5, 0.0, 3.5]
    lo, hi = toggle.ternary_thresholds(mn, mx, rule="report")      # the report's code: f·(max + min)
    assert lo.tolist() == pytest.approx([1.0, -0.2, 0.6]) and hi.tolist() == pytest.approx([9.0, -1.8, 5.4])
    lo, hi = toggle.ternary_thresholds(mn, mx, (0.5, 0.5))
    assert torch.equal(lo, hi)
    with pytest.raises(ValueError, match="ternary_rule"):
        toggle.ternary_thresholds(mn, mx, rule="max")
    with pytest.raises(ValueError, match="ternary"):
        toggle.ternary_thresholds(mn, mx, (0.8, 0.2))


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
    m = toggle.merge_extrema(toggle.extrema(net, x[:10], layers), toggle.extrema(net, x[10:], layers))
    for name in layers:
        assert torch.allclose(m[name][0], ext[40][name][0], atol=1e-5)
        assert torch.allclose(m[name][1], ext[40][name][1], atol=1e-5)
    # a dataset's toggle activity can only grow when images are added
    th = toggle.fit_thresholds(net, x, layers, bins=64, progress=False)
    assert toggle.toggle_activity(ext[5], th)["total"] <= toggle.toggle_activity(ext[40], th)["total"]


def test_fit_thresholds_valleys_in_range_and_fallbacks(tiny_cifar_net, tiny_images):
    net, (x, _) = tiny_cifar_net, tiny_images
    th = toggle.fit_thresholds(net, x, bins=64, progress=False, batch_size=16)
    assert th.layers == list(net.conv_layers()) and len(th.layers) == 17
    assert th.fallback == "zero" and th.ternary_rule == "range" and th.ternary == (0.25, 0.75)
    ext = toggle.extrema(net, x)
    mid = th.with_rules(fallback="midpoint")
    for name in th.layers:
        mn, mx = ext[name]
        bim = th.bimodal[name]
        assert th.binary[name].shape == mn.shape
        assert torch.allclose(th.min[name], mn, atol=1e-5) and torch.allclose(th.max[name], mx, atol=1e-5)
        # a valley lies in the historical range; a neuron without one takes 0 (the report's rule)
        assert (th.binary[name][bim] >= mn[bim] - 1e-4).all() and (th.binary[name][bim] <= mx[bim] + 1e-4).all()
        assert (th.binary[name][~bim] == 0).all()
        assert torch.equal(mid.binary[name][bim], th.binary[name][bim])
        assert torch.allclose(mid.binary[name][~bim], (0.5 * (mn + mx))[~bim], atol=1e-5)
        assert (th.low[name] <= th.high[name]).all()
        assert torch.allclose(th.low[name], mn + 0.25 * (mx - mn), atol=1e-5)
    share = th.bimodal_share()
    assert set(share) == set(th.layers) | {"total"} and 0 <= share["total"] <= 100
    # fitting with the midpoint rule gives what with_rules gives
    th_mid = toggle.fit_thresholds(net, x, th.layers[:3], bins=64, progress=False, fallback="midpoint")
    for name in th.layers[:3]:
        assert torch.allclose(th_mid.binary[name], mid.binary[name], atol=1e-5)
    with pytest.raises(ValueError, match="layer"):
        toggle.fit_thresholds(net, x, ["no_such_layer"], progress=False)
    with pytest.raises(ValueError, match="fallback"):
        toggle.fit_thresholds(net, x, progress=False, fallback="median")


def test_with_rules_switches_the_ternary_rule(tiny_cifar_net, tiny_images):
    net, (x, _) = tiny_cifar_net, tiny_images
    th = toggle.fit_thresholds(net, x, ["conv1"], bins=64, progress=False)
    rep = th.with_rules(ternary_rule="report")
    assert rep.ternary == (0.10, 0.90) and rep.ternary_rule == "report" and th.ternary_rule == "range"
    mn, mx = th.min["conv1"], th.max["conv1"]
    assert torch.allclose(rep.low["conv1"], 0.1 * (mx + mn)) and torch.allclose(rep.high["conv1"], 0.9 * (mx + mn))
    assert torch.equal(rep.binary["conv1"], th.binary["conv1"])
    own = th.with_rules(ternary=(0.4, 0.6))
    assert torch.allclose(own.low["conv1"], mn + 0.4 * (mx - mn))
    hand = _thresholds([0.0], [0.0], [0.0])
    with pytest.raises(ValueError, match="min/max"):
        hand.with_rules(fallback="midpoint")


def test_neuron_values_and_the_scipy_check(tiny_cifar_net, tiny_images):
    net, (x, _) = tiny_cifar_net, tiny_images
    v = toggle.neuron_values(net, x, "l1b1c1", batch_size=16)
    ext = toggle.extrema(net, x, ["l1b1c1"])
    assert v.shape == (40, ext["l1b1c1"][0].numel())
    assert torch.allclose(v.min(0).values, ext["l1b1c1"][0].flatten(), atol=1e-5)
    th = toggle.fit_thresholds(net, x, ["l1b1c1"], progress=False)
    chk = toggle.compare_with_reference(v, th, "l1b1c1", n=12, seed=0)
    assert chk["neurons"] == 12 and 0 <= chk["bimodal"] <= 12 and chk["agree"] >= 9
    assert chk["median_diff_pct"] < 3


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


# ----------------------------------------------------------------------------
# the report's experiments
# ----------------------------------------------------------------------------
def _same(a, b):
    return all(torch.allclose(a[k][0], b[k][0], atol=1e-5) and torch.allclose(a[k][1], b[k][1], atol=1e-5) for k in a)


def test_size_sweep_nests_clean_and_attacked_datasets(tiny_cifar_net, tiny_images):
    net, (x, y) = tiny_cifar_net, tiny_images
    atk, layers = attacks.FGSM(8 / 255), ["conv1", "l4b2c2"]
    ds = toggle.size_sweep(net, x, y, atk, [30, 5], layers=layers, batch_size=8)
    assert list(ds.ext) == [("clean", 5), ("clean+fgsm", 5), ("clean", 30), ("clean+fgsm", 30)]
    xa = atk(net, x[:30], y[:30])
    assert torch.allclose(ds.x_adv, xa)
    for n in (5, 30):
        assert _same(ds.ext[("clean", n)], toggle.extrema(net, x[:n], layers))
        both = toggle.merge_extrema(toggle.extrema(net, x[:n], layers), toggle.extrema(net, xa[:n], layers))
        assert _same(ds.ext[("clean+fgsm", n)], both)
        assert ds.acc[("clean+fgsm", n)] == pytest.approx(metrics.accuracy(net, xa[:n], y[:n]))
    th = toggle.fit_thresholds(net, x, layers, bins=64, progress=False)
    tot = ds.totals(th, "ternary")
    assert tot[("clean+fgsm", 30)] >= tot[("clean", 30)] >= tot[("clean", 5)]   # more images never toggle less
    assert ds.activity(th)[("clean", 5)]["total"] == pytest.approx(ds.totals(th)[("clean", 5)])
    with pytest.raises(ValueError, match="sizes"):
        toggle.size_sweep(net, x, y, atk, [41], layers=layers)


def test_equal_size_keeps_the_size_and_averages_over_draws(tiny_cifar_net, tiny_images):
    net, (x, y) = tiny_cifar_net, tiny_images
    atk, layers = attacks.FGSM(8 / 255), ["l2b1c1"]
    ds = toggle.equal_size(net, x, y, atk, 10, 3, seed=5, layers=layers)
    assert list(ds.ext) == [(a, d) for d in range(3) for a in ("clean", "half+fgsm")]
    idx = torch.from_numpy(np.random.default_rng(5).choice(40, 10, replace=False))   # the first draw
    xc, yc = x[idx], y[idx]
    assert _same(ds.ext[("clean", 0)], toggle.extrema(net, xc, layers))
    half = toggle.merge_extrema(toggle.extrema(net, xc[:5], layers), toggle.extrema(net, atk(net, xc[:5], yc[:5]), layers))
    assert _same(ds.ext[("half+fgsm", 0)], half)
    th = toggle.fit_thresholds(net, x, layers, bins=64, progress=False)
    ms = ds.mean_std(th)
    per_draw = [ds.totals(th)[("clean", d)] for d in range(3)]
    assert ms["clean"][0]["total"] == pytest.approx(np.mean(per_draw))
    assert ms["clean"][1]["total"] == pytest.approx(np.std(per_draw))
    assert set(ms["half+fgsm"][0]) == {"l2b1c1", "total"}


def test_eps_sweep_at_eps_zero_adds_nothing(tiny_cifar_net, tiny_images):
    net, (x, y) = tiny_cifar_net, tiny_images
    ds = toggle.eps_sweep(net, x[:12], y[:12], attacks.FGSM(8 / 255), [0.0, 1.0], layers=["conv1"])
    assert list(ds.ext) == [("clean", 0.0), ("clean+fgsm", 0.0), ("clean+fgsm", 1.0)]
    assert _same(ds.ext[("clean+fgsm", 0.0)], ds.ext[("clean", 0.0)])
    assert ds.acc[("clean+fgsm", 0.0)] == pytest.approx(metrics.accuracy(net, x[:12], y[:12]))
    with pytest.raises(ValueError, match="replace"):
        toggle.eps_sweep(net, x[:4], y[:4], lambda m, a, b: a, [0.1], layers=["conv1"])


def test_resnet20_layers_are_numbered_from_0_as_in_the_report():
    torch.manual_seed(0)
    net = models.build("resnet20", "cifar10").eval()
    tab = toggle.layer_table(net)
    assert [r["layer_no"] for r in tab] == list(range(19))
    assert tab[0]["layer"] == "conv1" and tab[-1]["layer"] == "l3b3c2"
    no = {r["layer"]: r["layer_no"] for r in tab}
    assert no["l2b1c1"] == 7 and no["l3b3c1"] == 17
    assert all((r["h"], r["w"]) == (8, 8) and r["c"] == 64 for r in tab if r["layer"].startswith("l3"))
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    rk = toggle.rank_neurons(net, x)
    assert rk.layers == [r["layer"] for r in tab]
    # the report's Table 2, rank 1: neuron (21, 4, 6) of layer 17 — make it the top neuron
    rk.score["l3b3c1"][21, 4, 6] = 1e6
    top = rk.top(1)[0]
    assert (top["layer_no"], top["layer"], top["c"], top["h"], top["w"]) == (17, "l3b3c1", 21, 4, 6)
    rows = rk.top(50)
    assert all(0 <= r["layer_no"] <= 18 and rk.layers[r["layer_no"]] == r["layer"] for r in rows)
    assert all(r["h"] < 8 and r["w"] < 8 for r in rows if r["layer"].startswith("l3"))
    assert rk.mean_layer(50) == pytest.approx(np.mean([r["layer_no"] for r in rows]))
    assert rk.top_set(5) == {(r["layer"], r["c"], r["h"], r["w"]) for r in rows[:5]}


def test_relu_layers_are_the_reports_relu_profile():
    torch.manual_seed(0)
    net = models.build("resnet20", "cifar10").eval()
    names = toggle.relu_layers(net)
    assert len(names) == 19 and names[0] == "relu1" and names[-1] == "l3b3r2"
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ext = toggle.extrema(net, x, names)
    assert all(float(mn.min()) >= 0.0 for mn, _ in ext.values())   # after a ReLU nothing is < 0
    some = names[:2] + names[-1:]          # the first two and the last: a full fit is 19 layers of KDEs
    th = toggle.fit_thresholds(net, x, some, valley="report", ternary_rule="report", progress=False)
    for n in some:      # the report's pair, 0.1·(max + min): ≥ 0, and 0.1·max where the neuron hits 0
        mn, mx = (t.view_as(th.low[n]) for t in ext[n])
        assert torch.allclose(th.low[n], 0.1 * (mx + mn), atol=1e-6) and float(th.low[n].min()) >= 0
        dead = mn == 0
        assert torch.allclose(th.high[n][dead], 0.9 * mx[dead], atol=1e-6)
    with pytest.raises(ValueError, match="model"):
        toggle.relu_layers(torch.nn.Linear(3, 2))


def test_attack_names_make_the_arm_names():
    assert toggle._attack_name(attacks.FGSM(0.1)) == "fgsm"
    assert toggle._attack_name(attacks.PGD(0.1, steps=2)) == "pgd"
    def noise(m, x, y):
        return x
    assert toggle._attack_name(noise) == "noise" and toggle._attack_name(lambda m, x, y: x) == "adv"


def test_activity_of_chosen_datasets_only(tiny_cifar_net, tiny_images):
    net, (x, y) = tiny_cifar_net, tiny_images
    ds = toggle.eps_sweep(net, x[:12], y[:12], attacks.FGSM(8 / 255), [0.0, 1.0], layers=["conv1"])
    th = toggle.fit_thresholds(net, x, layers=["conv1"], bins=32)
    keys = [("clean+fgsm", 1.0), ("clean", 0.0)]
    some = ds.activity(th, "binary", keys=keys)
    assert list(some) == keys and some == {k: v for k, v in ds.activity(th, "binary").items() if k in keys}
    with pytest.raises(KeyError, match="0.5"):
        ds.activity(th, "binary", keys=[("clean+fgsm", 0.5)])


# ----------------------------------------------------------------------------
# the report's valley rule (get_kde_threshold) and the ranking's aggregations
# ----------------------------------------------------------------------------
def _report_rule_by_hand(v):
    """The report's get_kde_threshold, literally: KDEpy's FFTKDE(bw='silverman') on 100 points,
    Savitzky-Golay 7/3, every local maximum a peak, the lowest strict local minimum strictly
    between the two most prominent peaks; 0 where any step fails."""
    import warnings
    from KDEpy import FFTKDE
    from scipy.signal import argrelextrema, find_peaks, peak_prominences, savgol_filter
    if np.count_nonzero(v) == 0:
        return 0.0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x, y = FFTKDE(kernel="gaussian", bw="silverman").fit(np.array(v)).evaluate(100)
        y = savgol_filter(y, window_length=7, polyorder=3)
        mi, peaks = argrelextrema(y, np.less)[0], find_peaks(y)[0]
        if not len(y[mi]):
            return 0.0
        top = np.sort(peaks[np.argpartition(peak_prominences(y, peaks)[0], -2)[-2:]])
        between = mi[(x[mi] > x[top[0]]) & (x[mi] < x[top[1]])]
        return float(x[between[np.argmin(y[between])]])
    except ValueError:
        return 0.0


def test_the_reports_valley_rule_for_one_neuron_is_its_code():
    rng = np.random.default_rng(5)
    for v in (_bimodal(rng), rng.normal(0, 1, 500), np.concatenate([rng.normal(0, .3, 700), rng.normal(1, .3, 300)]),
              np.abs(rng.normal(0, 1, 400)) * (rng.random(400) < 0.6)):      # a ReLU-like neuron
        assert toggle.kde_threshold(v, valley="report") == pytest.approx(_report_rule_by_hand(v), abs=1e-9)


def test_the_reports_rule_keeps_the_small_peaks_the_books_drops():
    """A second mode of 1% of the images: the book's 5% prominence cut ignores it (no valley, the
    fallback), the report's rule (no cut) puts the threshold in the valley before it."""
    rng = np.random.default_rng(6)
    v = np.concatenate([rng.normal(0, 1, 990), rng.normal(8, 0.3, 10)])
    book, det = toggle.kde_threshold(v, return_details=True)
    assert det["fallback"] and book == 0.0
    report, rdet = toggle.kde_threshold(v, valley="report", return_details=True)
    assert not rdet["fallback"] and 2.5 < report < 7.5
    assert report == pytest.approx(_report_rule_by_hand(v))


def test_vectorised_report_rule_matches_the_scalar_one():
    rng = np.random.default_rng(7)
    cols = [_bimodal(rng), rng.normal(3, 1, 1000), np.concatenate([rng.normal(0, .3, 800), rng.normal(2, .3, 200)]),
            np.full(1000, 0.5), np.concatenate([rng.normal(0, 1, 970), rng.normal(8, 0.3, 30)])]
    relu = [np.maximum(rng.normal(m, 1, 1000), 0) for m in (-1.0, -0.3, 0.5)]     # a spike at 0: IQR-rule h
    cols += relu + [np.where(rng.random(1000) < 0.85, 0.0, rng.gamma(2, 1, 1000))]   # σ from the 1–99% spread
    V = np.stack(cols, 1)
    thr, bim = toggle.kde_thresholds(torch.tensor(V, dtype=torch.float32), valley="report")
    ref = [toggle.kde_threshold(V[:, j], valley="report", return_details=True) for j in range(V.shape[1])]
    assert bim.tolist() == [not d["fallback"] for _, d in ref]
    for j, (t, _) in enumerate(ref):
        span = np.ptp(V[:, j]) or 1.0
        assert abs(float(thr[j]) - t) < 0.015 * span    # the same grid: within a grid step of 100
        assert t == pytest.approx(_report_rule_by_hand(V[:, j]), abs=1e-9)
    with pytest.raises(ValueError, match="valley"):
        toggle.kde_thresholds(torch.tensor(V, dtype=torch.float32), valley="lowest")


def test_fit_thresholds_with_the_reports_rules(tiny_cifar_net, tiny_images):
    net, (x, _) = tiny_cifar_net, tiny_images
    th = toggle.fit_thresholds(net, x, ["l1b1c1"], valley="report", ternary_rule="report", progress=False)
    assert th.valley == "report" and th.ternary_rule == "report"
    v = toggle.neuron_values(net, x, "l1b1c1")
    chk = toggle.compare_with_reference(v, th, "l1b1c1", n=12, seed=0)
    assert chk["agree"] >= 9


@pytest.mark.parametrize("aggregate", ["mean", "abs_max"])
def test_ranking_aggregations(tiny_cifar_net, tiny_images, aggregate):
    net, (x, _) = tiny_cifar_net, tiny_images
    rk = toggle.rank_neurons(net, x[:6], ["l3b1c2"], aggregate=aggregate, batch_size=4)
    from nrlib.hooks import capture
    vals = []
    for i in range(6):
        with capture(net, "l3b1c2", detach=False) as st:
            logits = net(x[i:i + 1])
        a = st["l3b1c2"][0]
        g, = torch.autograd.grad(logits[0, int(logits.argmax(1))], a)
        vals.append(float((a * g).detach()[0, 1, 2, 3]))
    want = np.mean(vals) if aggregate == "mean" else max(abs(v) for v in vals)
    assert float(rk.score["l3b1c2"][1, 2, 3]) == pytest.approx(want, rel=1e-4, abs=1e-6)
    with pytest.raises(ValueError, match="aggregate"):
        toggle.rank_neurons(net, x[:2], ["l3b1c2"], aggregate="sum")
