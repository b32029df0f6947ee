"""nrlib.stats: each interval and test against scipy's definition or a hand computation, the
coverage of the paired interval by simulation, and Estimate's round trips (pickle, results JSON)."""
from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from scipy import stats as st

from nrlib import results, stats
from nrlib.stats import Estimate


def test_estimate_is_a_float_with_its_evidence():
    e = Estimate(16.0, 11.4, 21.8, n=200, method="wilson")
    assert e == 16.0 and e + 1 == 17.0 and f"{e:.1f}" == "16.0" and isinstance(e * 2, float)
    assert e.has_interval and e.half_width == pytest.approx(5.2) and e.n == 200
    assert pickle.loads(pickle.dumps(e)).evidence() == e.evidence()
    assert Estimate.from_evidence(3.0, None) == 3.0 and not isinstance(Estimate.from_evidence(3.0, None), Estimate)
    assert Estimate(5.0).has_interval is False


@pytest.mark.parametrize("kw, match", [
    (dict(value=1.0, low=2.0, high=3.0), "does not contain"),
    (dict(value=1.0, low=0.0), "both bounds"),
    (dict(value=float("nan")), "value=nan must be finite"),
    (dict(value=1.0, n=-1), "n=-1"),
    (dict(value=1.0, p=1.5), "p=1.5"),
])
def test_estimate_refuses_bad_evidence(kw, match):
    with pytest.raises(ValueError, match=match):
        Estimate(kw.pop("value"), kw.pop("low", None), kw.pop("high", None), **kw)


def _wilson_by_hand(k, n, z=1.959963984540054):
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return c - h, c + h


@pytest.mark.parametrize("k, n", [(32, 200), (0, 50), (50, 50), (7, 10), (500, 1000)])
def test_proportion_wilson_and_clopper_pearson(k, n):
    w = stats.proportion(k, n)
    lo, hi = _wilson_by_hand(k, n)
    assert w == pytest.approx(100 * k / n) and w.n == n
    assert (w.low, w.high) == pytest.approx((100 * max(lo, 0), 100 * min(hi, 1)), abs=1e-9)
    cp = stats.proportion(k, n, method="clopper-pearson", scale=1)
    # Clopper-Pearson by its definition: beta quantiles
    lo = 0.0 if k == 0 else st.beta.ppf(0.025, k, n - k + 1)
    hi = 1.0 if k == n else st.beta.ppf(0.975, k + 1, n - k)
    assert (cp.low, cp.high) == pytest.approx((lo, hi), abs=1e-9)


def test_proportion_from_outcomes_equals_from_counts():
    outcomes = np.array([1, 0, 1, 1, 0, 0, 0, 1, 1, 1])
    assert stats.proportion(outcomes).evidence() == stats.proportion(6, 10).evidence()


@pytest.mark.parametrize("args, match", [((5, 3), "k=5"), ((1, 0), "n=0"), ((np.array([0, 2]),), "0/1"),
                                         ((np.zeros((2, 2)),), "1-D"), ((np.array([]),), "empty")])
def test_proportion_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        stats.proportion(*args)


def test_cluster_proportion_singletons_agree_with_wilson():
    rng = np.random.default_rng(2)
    k = rng.random(600) < 0.3
    c, w = stats.cluster_proportion(k, np.arange(600)), stats.proportion(k)
    assert c == pytest.approx(float(w)) and c.n == 600
    assert c.low == pytest.approx(w.low, abs=1.0) and c.high == pytest.approx(w.high, abs=1.0)


def test_cluster_proportion_widens_with_correlated_clusters():
    """Nine outcomes per image that all agree carry one image's information, not nine: the
    interval is about √9 = 3 times the naive one, and n counts the images."""
    rng = np.random.default_rng(3)
    per_image = rng.random(500) < 0.4
    k, g = np.repeat(per_image, 9), np.repeat(np.arange(500), 9)
    c, naive = stats.cluster_proportion(k, g), stats.proportion(k)
    assert c == pytest.approx(float(naive)) and c.n == 500
    assert 2.4 < c.half_width / naive.half_width < 3.6
    # independent outcomes within clusters: no widening
    ind = stats.cluster_proportion(rng.random(4500) < 0.4, g)
    assert 0.8 < ind.half_width / naive.half_width < 1.25


def test_cluster_proportion_covers_the_truth():
    rng = np.random.default_rng(4)
    hits, sims = 0, 200
    for _ in range(sims):
        p_img = rng.beta(2, 3, 120)                    # each image its own difficulty
        k = rng.random((120, 9)) < p_img[:, None]
        c = stats.cluster_proportion(k.ravel(), np.repeat(np.arange(120), 9), scale=1, n_resamples=500)
        hits += c.low <= 0.4 <= c.high
    assert 0.89 <= hits / sims <= 0.99


@pytest.mark.parametrize("groups, match", [(np.arange(5), "groups must give"), (np.zeros(6), "at least 2")])
def test_cluster_proportion_bad_input(groups, match):
    with pytest.raises(ValueError, match=match):
        stats.cluster_proportion(np.ones(6, bool), groups)


def _mcnemar_by_hand(b, c):
    m = b + c
    tail = sum(math.comb(m, i) for i in range(min(b, c) + 1)) / 2 ** m
    return min(1.0, 2 * tail)


def test_paired_difference_value_and_mcnemar():
    a = np.array([1] * 60 + [1] * 25 + [0] * 5 + [0] * 10, dtype=bool)
    b = np.array([1] * 60 + [0] * 25 + [1] * 5 + [0] * 10, dtype=bool)
    d = stats.paired_difference(a, b)
    assert d == pytest.approx(20.0) and d.n == 100
    assert d.p == pytest.approx(_mcnemar_by_hand(25, 5))
    assert d.low > 0 and d.high < 100 and d.low < 20 < d.high
    same = stats.paired_difference(a, a)
    assert same == 0 and same.p == 1.0 and same.low <= 0 <= same.high


def test_paired_difference_covers_the_truth():
    """Newcombe's interval covers the true paired difference about 95% of the time (simulated)."""
    rng = np.random.default_rng(0)
    n, sims, hits = 150, 400, 0
    # correlated outcomes (the same images are hard for both): a = u < 0.55, b = u + noise < 0.45
    truth = 0.55 - np.mean(rng.random(2_000_000) + rng.normal(0, 0.15, 2_000_000) < 0.45)
    for _ in range(sims):
        u = rng.random(n)
        a, b = u < 0.55, (u + rng.normal(0, 0.15, n)) < 0.45
        d = stats.paired_difference(a, b, scale=1)
        hits += d.low <= truth <= d.high
    assert 0.91 <= hits / sims <= 0.99


def test_paired_difference_needs_the_same_images():
    with pytest.raises(ValueError, match="same images"):
        stats.paired_difference(np.ones(5, bool), np.ones(6, bool))


def test_paired_bootstrap_contains_the_difference_and_agrees_with_newcombe():
    rng = np.random.default_rng(1)
    a, b = rng.random(400) < 0.6, rng.random(400) < 0.5
    boot = stats.paired_bootstrap(a.astype(float), b.astype(float), scale=100)
    newc = stats.paired_difference(a, b)
    assert boot == pytest.approx(float(newc)) and boot.low < float(boot) < boot.high
    assert boot.low == pytest.approx(newc.low, abs=1.5) and boot.high == pytest.approx(newc.high, abs=1.5)


def test_spearman_against_scipy():
    rng = np.random.default_rng(2)
    x = rng.normal(size=60)
    y = x + rng.normal(scale=1.5, size=60)
    r = stats.spearman(x, y)
    ref = st.spearmanr(x, y)
    assert r == pytest.approx(ref.statistic) and r.low < float(r) < r.high and r.n == 60
    assert r.p == pytest.approx(ref.pvalue, abs=0.02)      # the permutation p agrees with the t approximation
    noise = stats.spearman(x, rng.normal(size=60))
    assert noise.p > 0.05 and noise.low < 0 < noise.high
    with pytest.raises(ValueError, match="constant"):
        stats.spearman(x, np.ones(60))


def test_seeds_t_interval_by_hand():
    s = stats.seeds([10.0, 12.0, 14.0])
    half = 4.302652729911275 * 2.0 / math.sqrt(3)          # t(0.975, df=2) from the table, sd = 2
    assert s == 12.0 and (s.low, s.high) == pytest.approx((12 - half, 12 + half)) and s.n == 3
    one = stats.seeds([5.0])
    assert one == 5.0 and not one.has_interval
    assert stats.seeds([1.0, 2.0], what="draws").method == "mean of 2 draws, t-interval"
    with pytest.raises(ValueError, match="values"):
        stats.seeds([])


def test_difference_of_independent_estimates():
    a, b = Estimate(10.0, 7.0, 13.0, n=100), Estimate(4.0, 0.0, 8.0, n=80)
    d = stats.difference(a, b)
    assert d == 6.0 and d.low == pytest.approx(6 - 5.0) and d.high == pytest.approx(6 + 5.0) and d.n == 80
    assert stats.difference(10.0, b) == 6.0 and not isinstance(stats.difference(10.0, b), Estimate)


def test_n_to_settle_shrinks_the_interval_past_the_threshold():
    e = stats.proportion(32, 200)                # 16.0% [11.6, 21.7]: straddles 14%
    n = stats.n_to_settle(e, 14.0)
    assert n > 200
    bigger = stats.proportion(round(0.16 * n * 1.2), round(n * 1.2))   # "about": a Wilson interval is skewed
    assert bigger.low > 14.0
    assert stats.n_to_settle(e, 16.0) is None and stats.n_to_settle(16.0, 14.0) is None
    # an interval that ends on the threshold: more of the same cannot be sized by the rule
    assert stats.n_to_settle(Estimate(0.08, 0.0, 0.08, n=500), 0.0) is None
    # on the threshold up to rounding (a difference of 2 points computed as 2.0000000000000018)
    assert stats.n_to_settle(Estimate(2.0000000000000018, -1.7, 5.7, n=300), 2.0) is None


def test_results_store_the_evidence_beside_the_value(tmp_path, monkeypatch):
    monkeypatch.setenv("NRLIB_DATA", str(tmp_path))
    m = {"acc": stats.proportion(32, 200), "plain": 3.0, "missing": None}
    results.write("99_stats", "smoke", m)
    rec = results.read("99_stats", "smoke")
    assert rec["metrics"] == {"acc": 16.0, "plain": 3.0, "missing": None}
    assert set(rec["evidence"]) == {"acc"} and rec["evidence"]["acc"]["n"] == 200
    back = results.estimates(rec)
    assert isinstance(back["acc"], Estimate) and back["acc"].evidence() == m["acc"].evidence()
    assert back["plain"] == 3.0 and back["missing"] is None
    del rec["evidence"]                                   # an old record still loads
    assert results.estimates(rec)["acc"] == 16.0


def test_against_moves_the_interval_with_the_reference():
    est = stats.proportion(30, 100)
    d = stats.against(est, 25.0)
    assert float(d) == pytest.approx(5.0) and d.n == 100
    assert (d.low, d.high) == pytest.approx((est.low - 25.0, est.high - 25.0))
    with pytest.raises(ValueError, match="est="):
        stats.against(0.3, 0.25)
    with pytest.raises(ValueError, match="value"):
        stats.against(est, float("nan"))


def test_bootstrap_mean_brackets_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small, big = stats.bootstrap_mean(rng.normal(5, 1, 50)), stats.bootstrap_mean(rng.normal(5, 1, 2000))
    for e in (small, big):
        assert e.low < float(e) < e.high and 4.5 < float(e) < 5.5
    assert big.high - big.low < (small.high - small.low) / 3
    c = stats.bootstrap_mean([2.0] * 10)
    assert float(c) == c.low == c.high == 2.0
    with pytest.raises(ValueError, match="1-D sample"):
        stats.bootstrap_mean([1.0])


def test_spearman_difference_against_scipy_and_its_interval():
    """ρ(x, y) − ρ(x, z) is scipy's two correlations apart; y a noisy copy of x and z unrelated to it
    give an interval above 0, y = z gives exactly 0, and swapping y and z flips the sign."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=64)
    y, z = x + 0.3 * rng.normal(size=64), rng.normal(size=64)
    d = stats.spearman_difference(x, y, z, seed=1)
    assert d.value == pytest.approx(st.spearmanr(x, y).statistic - st.spearmanr(x, z).statistic)
    assert 0 < d.low <= d.value <= d.high
    assert stats.spearman_difference(x, z, y, seed=1).value == pytest.approx(-d.value)
    same = stats.spearman_difference(x, y, y)
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="z is constant"):
        stats.spearman_difference(x, y, np.ones(64))
    with pytest.raises(ValueError, match="same length"):
        stats.spearman_difference(x, y, z[:10])


def test_simultaneous_widens_by_the_bonferroni_quantile():
    """One test leaves the interval as it is; 39 stretch each side by z(1 − 0.025/39)/z(0.975)
    about the point, so an interval that excluded 0 alone can cross it in the family."""
    e = Estimate(-3.0, -5.0, -0.5, n=320)
    assert (stats.simultaneous(e, 1).low, stats.simultaneous(e, 1).high) == pytest.approx((-5.0, -0.5))
    w = stats.simultaneous(e, 39)
    k = st.norm.ppf(1 - 0.025 / 39) / st.norm.ppf(0.975)
    assert (w.value, w.low, w.high) == pytest.approx((-3.0, -3.0 - 2.0 * k, -3.0 + 2.5 * k))
    assert w.high > 0 > e.high and w.n == 320 and "Bonferroni over 39" in w.method
    with pytest.raises(ValueError, match="m=0"):
        stats.simultaneous(e, 0)
    with pytest.raises(ValueError, match="interval"):
        stats.simultaneous(Estimate(1.0), 3)


def test_side_reads_the_interval_not_the_point():
    """A point below 0 whose interval reaches above it is "across"; an interval touching 0 is
    "across" too (the rule is strict); None is "—", a bare number is an error."""
    assert stats.side(Estimate(-3.0, -5.0, -0.5)) == "below"
    assert stats.side(Estimate(2.0, 0.1, 4.0)) == "above"
    assert stats.side(Estimate(-3.0, -5.0, 0.5)) == "across"
    assert stats.side(Estimate(1.0, 0.0, 2.0)) == "across"
    assert stats.side(stats.simultaneous(Estimate(-3.0, -5.0, -0.5), 39)) == "across"
    assert stats.side(None) == "—"
    with pytest.raises(ValueError, match="interval"):
        stats.side(Estimate(1.0))
    with pytest.raises(ValueError, match="interval"):
        stats.side(0.5)


def test_n_to_settle_says_nothing_for_random_set_intervals():
    """A two-way interval over images and random draws keeps its draw-to-draw spread however many
    images are added, so it gets no "n would settle it"; the same numbers over images alone do."""
    rng = np.random.default_rng(0)
    e = stats.against_random_sets(rng.random(200) < 0.4, rng.random((20, 200)) < 0.42, seed=0)
    inside = (e.value + e.high) / 2                      # a bound the interval straddles
    assert e.has_interval and stats.n_to_settle(e, inside) is None
    assert stats.n_to_settle(Estimate(e.value, e.low, e.high, n=200), inside) == 800


def test_partial_spearman_is_the_correlation_of_rank_residuals():
    rng = np.random.default_rng(2)
    size = rng.normal(size=300)
    x = size + 0.5 * rng.normal(size=300)          # both follow size, and nothing else in common
    y = size + 0.5 * rng.normal(size=300)
    ranks = [np.argsort(np.argsort(v)).astype(float) for v in (x, y, size)]
    res = [r - np.polyval(np.polyfit(ranks[2], r, 1), ranks[2]) for r in ranks[:2]]
    ref = np.corrcoef(*res)[0, 1]
    assert stats.partial_spearman(x, y, size) == pytest.approx(ref, abs=1e-9)
    assert abs(stats.partial_spearman(x, y, size)) < 0.15 < 0.6 < stats.spearman(x, y)
    z = x + 0.3 * rng.normal(size=300)             # y' shares something with x beyond size
    assert stats.partial_spearman(x, z, size) > 0.5
    with pytest.raises(ValueError, match="same length"):
        stats.partial_spearman(x, y[:10], size)


def test_bootstrap_weights_equals_the_mean_bootstrap_and_resamples_groups_apart():
    rng = np.random.default_rng(1)
    a = rng.normal(3, 2, 400)
    e = stats.bootstrap_weights(lambda w: (w @ a) / w.sum(1), a.size)
    ref = stats.bootstrap_mean(a)          # the same resamples: the same interval
    assert (float(e), e.low, e.high) == pytest.approx((float(ref), ref.low, ref.high))
    # a ratio of sums over two groups resampled on their own
    num, den = rng.random(300) + 1, rng.random(300) + 1
    b = rng.normal(0, 1, 60)
    r = stats.bootstrap_weights(lambda w, v: (w @ num) / (w @ den) - (v @ b) / v.sum(1), 300, 60)
    assert float(r) == pytest.approx(num.sum() / den.sum() - b.mean()) and r.low < float(r) < r.high
    assert r.n == 360
    # only group 2 varies: the interval is that of b's mean alone
    only_b = stats.bootstrap_weights(lambda w, v: (v @ b) / v.sum(1), 300, 60)
    assert only_b.high - only_b.low == pytest.approx(1.96 * 2 * b.std() / np.sqrt(60), rel=0.3)
    with pytest.raises(ValueError, match="sizes"):
        stats.bootstrap_weights(lambda w: w.sum(1), 1)


def test_against_random_sets_value_spread_and_rank():
    rng = np.random.default_rng(0)
    n, R = 2000, 20
    random = rng.random((R, n)) < np.linspace(0.5, 0.9, R)[:, None]       # draws differ a lot
    chosen = rng.random(n) < 0.4                                           # worse than every draw
    e = stats.against_random_sets(chosen, random)
    assert e == pytest.approx(100 * (chosen.mean() - random.mean()))
    assert e.high < 0 and e.p == pytest.approx(1 / (R + 1)) and e.n == n
    # the spread between draws widens the interval beyond the images-only bootstrap of the means
    images_only = stats.paired_bootstrap(chosen, random.mean(0), scale=100)
    assert (e.high - e.low) > 2 * (images_only.high - images_only.low)
    # the same draws, all alike: the interval shrinks to about the images-only one
    alike = rng.random((R, n)) < 0.7
    e2 = stats.against_random_sets(chosen, alike)
    assert (e2.high - e2.low) < 1.5 * (stats.paired_bootstrap(chosen, alike.mean(0), scale=100).high
                                       - stats.paired_bootstrap(chosen, alike.mean(0), scale=100).low)
    # a chosen set like the random ones: p near the middle, interval across 0
    same = stats.against_random_sets(alike[0], alike[1:])
    assert same.low < 0 < same.high and 0.05 < same.p
    assert stats.against_random_sets(chosen, random, worse="greater").p == 1.0


@pytest.mark.parametrize("chosen, random, kw, match", [
    (np.ones(5), np.ones((3, 4)), {}, r"random must be \(draws ≥ 2\) × 5"),
    (np.ones(5), np.ones((1, 5)), {}, "random must be"),
    (np.ones((2, 5)), np.ones((3, 5)), {}, "chosen must be 1-D"),
    (np.ones(5), np.ones((3, 5)), {"worse": "lower"}, "worse"),
])
def test_against_random_sets_bad_input(chosen, random, kw, match):
    with pytest.raises(ValueError, match=match):
        stats.against_random_sets(chosen, random, **kw)


def test_holm_by_hand():
    # m = 4: sorted 0.01, 0.02, 0.03, 0.5 -> 0.04, 0.06, 0.06 (made monotone), 0.5
    adj = stats.holm([0.03, 0.5, 0.01, 0.02])
    assert adj == pytest.approx([0.06, 0.5, 0.04, 0.06])
    assert stats.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError, match="pvalues"):
        stats.holm([0.1, 1.5])


def test_p_from_interval_is_the_normal_tail_and_can_pass_holm():
    from scipy.stats import norm
    est = stats.Estimate(-1.96, -3.92, 0.0)                 # se = 1 at the 95% level
    assert stats.p_from_interval(est) == pytest.approx(norm.cdf(-1.96), rel=1e-3)
    assert stats.p_from_interval(est, "greater") == pytest.approx(1 - norm.cdf(-1.96), rel=1e-3)
    far = stats.Estimate(-10.0, -12.0, -8.0)
    assert stats.holm([stats.p_from_interval(far)] * 40).max() < 0.05   # a rank p among 100 draws never could
    assert stats.p_from_interval(stats.Estimate(2.0, 2.0, 2.0)) == 1.0
    with pytest.raises(ValueError, match="side="):
        stats.p_from_interval(est, "two")
    with pytest.raises(ValueError, match="est must"):
        stats.p_from_interval(3.0)
