"""The contract every attack of nrlib.attacks keeps, one parametrised test per clause.

An attack is configured once (``attacks.PGD(eps, steps=...)``) and called as
``atk(model, x, y)``. For every configured attack: ε = 0 returns x; the output
stays in the ε-ball and the [0, 1] box; a batch equals its samples attacked one
by one (for the deterministic ones); a targeted attack lowers the loss toward
its targets; a bad ε raises; and it works inside ``torch.no_grad()``.
The model is a small CNN in float64, so batch/sample differences are rounding
at 1e-16 rather than fp32's 1e-7 (which could flip the sign of a tiny gradient).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nrlib import attacks, metrics, models, precision, train

EPS = 0.1
ATTACKS = {
    "fgsm": attacks.FGSM(EPS),
    "pgd": attacks.PGD(EPS, steps=5),
    "pgd-no-start": attacks.PGD(EPS, steps=5, random_start=False),
    "pgd-l2": attacks.PGD(1.0, steps=5, norm="l2"),
    "pgd-l2-no-start": attacks.PGD(1.0, steps=5, norm="l2", random_start=False),
    "pgd-restarts": attacks.PGD(EPS, steps=3, restarts=2),
    # gradient-free, with larger steps than their defaults so that 5 iterations move the image
    "spsa": attacks.SPSA(EPS, steps=5, samples=32, lr=0.05),
    "nattack": attacks.NAttack(EPS, steps=5, population=32, lr=0.5),
}
DETERMINISTIC = ["fgsm", "pgd-no-start", "pgd-l2-no-start"]


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return models.build("shallow", "mnist").double().eval()


@pytest.fixture(scope="module")
def xy():
    g = torch.Generator().manual_seed(1)
    return torch.rand(6, 1, 28, 28, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 4, 5])


def _dist(atk, a, b):
    d = (a - b).flatten(1)
    return d.norm(dim=1) if atk.norm == "l2" else d.abs().amax(1)


@pytest.mark.parametrize("name", ATTACKS)
def test_eps_zero_returns_x(net, xy, name):
    x, y = xy
    out = ATTACKS[name].replace(eps=0.0)(net, x, y)
    assert torch.equal(out, x)


@pytest.mark.parametrize("name", ATTACKS)
def test_output_in_ball_and_box(net, xy, name):
    atk, (x, y) = ATTACKS[name], xy
    out = atk(net, x, y)
    assert out.shape == x.shape and out.dtype == x.dtype
    d = _dist(atk, out, x)
    assert float(d.max()) <= atk.eps + 1e-9
    assert float(d.max()) > 0.5 * atk.eps          # it moved: the bound is not met trivially
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_batch_equals_samples_one_by_one(net, xy, name):
    atk, (x, y) = ATTACKS[name], xy
    whole = atk(net, x, y)
    singles = torch.cat([atk(net, x[i:i + 1], y[i:i + 1]) for i in range(len(y))])
    assert torch.allclose(whole, singles, atol=1e-12)
    chunked = atk.replace(batch_size=4)(net, x, y)      # chunking is invisible too
    assert torch.allclose(whole, chunked, atol=1e-12)


@pytest.mark.parametrize("name", ATTACKS)
def test_targeted_lowers_the_target_loss(net, xy, name):
    x, y = xy
    target = (y + 1) % 10
    out = ATTACKS[name].replace(targeted=True)(net, x, target)
    with torch.no_grad():
        before = F.cross_entropy(net(x), target)
        after = F.cross_entropy(net(out), target)
    assert float(after) < float(before)


@pytest.mark.parametrize("name", ATTACKS)
@pytest.mark.parametrize("eps", [-0.1, float("nan"), "big"])
def test_bad_eps_raises(name, eps):
    with pytest.raises(ValueError, match="eps"):
        ATTACKS[name].replace(eps=eps)


def test_linf_eps_above_one_raises_l2_does_not():
    with pytest.raises(ValueError, match=r"eps=1\.5.*<= 1"):
        attacks.PGD(1.5)
    assert attacks.PGD(1.5, norm="l2").eps == 1.5


@pytest.mark.parametrize("name", ATTACKS)
def test_works_inside_no_grad(net, xy, name):
    """Fix c: an attack called inside ``torch.no_grad()`` used to crash (no graph)."""
    atk, (x, y) = ATTACKS[name], xy
    expected = atk(net, x, y)
    with torch.no_grad():
        got = atk(net, x, y)
    assert torch.equal(got, expected)


def test_replace_makes_a_validated_variant():
    atk = attacks.PGD(8 / 255, steps=10)
    assert atk.step_size == pytest.approx(2.5 * (8 / 255) / 10)
    t = atk.replace(targeted=True, steps=20)
    assert (t.targeted, t.steps, atk.targeted, atk.steps) == (True, 20, False, 10)
    with pytest.raises(ValueError, match="bogus"):
        atk.replace(bogus=1)
    with pytest.raises(ValueError, match="steps"):
        atk.replace(steps=0)


def test_l2_random_start_radius_is_uniform_not_uniform_in_ball():
    """Fix e: the docstring says the L2 start draws its radius uniformly in
    [0, ε] (as torchattacks does), so the mean radius is ε/2 — uniform in the
    784-dimensional ball would put almost every start at the surface."""
    g = torch.Generator().manual_seed(0)
    d = attacks._random_start(torch.zeros(4000, 1, 28, 28), 2.0, "l2", g)
    r = d.flatten(1).norm(dim=1)
    assert float(r.max()) <= 2.0 + 1e-6
    assert abs(float(r.mean()) - 1.0) < 0.05


def test_restarts_keep_a_successful_restart_of_highest_loss(monkeypatch, net, xy):
    """Fix e: with restarts, a sample keeps a successful restart if any and,
    among those, the one of highest loss. Three fake restarts per sample: a
    failed one of very high loss, a successful one of low loss and a
    successful one of higher loss; the last must win."""
    x, y = xy
    with torch.no_grad():
        pred = net(x).argmax(1)
    picks = iter([0, 1, 2])
    candidates = {}

    def fake_once(model, xb, yb, *a, **k):
        i = next(picks)
        candidates[i] = torch.full_like(xb, [0.0, 0.5, 1.0][i])
        return candidates[i]

    scores = {0: (False, 9.0), 1: (True, 1.0), 2: (True, 2.0)}

    def fake_ce(logits, yb, reduction="none"):
        i = int(round(float(logits[0, 0])))
        return torch.full((len(yb),), scores[i][1], dtype=torch.float64)

    class Probe(torch.nn.Module):
        def forward(self, xa):
            i = int(round(float(xa[0, 0, 0, 0]) * 2))
            out = torch.zeros(len(xa), 10, dtype=torch.float64)
            out[:, 0] = i
            wrong = (pred + 1) % 10
            out[torch.arange(len(xa)), (wrong if scores[i][0] else pred)] += 100
            return out

    monkeypatch.setattr(attacks, "_pgd_once", fake_once)
    monkeypatch.setattr(attacks.F, "cross_entropy", fake_ce)
    out = attacks.pgd(Probe(), x, pred, 0.1, alpha=0.01, steps=1, restarts=3)
    assert torch.equal(out, candidates[2])


def test_robust_accuracy_evaluates_in_fp32_by_default(monkeypatch, net, xy):
    """Fix d: a robust accuracy does not depend on bf16 — the attack inside
    ``metrics.robust_accuracy`` runs with amp=False unless asked otherwise, and
    every results file records the precision of each kind of computation."""
    x, y = xy
    seen = []
    real = attacks.pgd

    def spy(*a, **k):
        seen.append(k["amp"])
        return real(*a, **k)

    monkeypatch.setattr(attacks, "pgd", spy)
    metrics.robust_accuracy(net, x, y, attacks.PGD(EPS, steps=2))
    metrics.robust_accuracy(net, x, y, attacks.PGD(EPS, steps=2), amp=True)
    metrics.robust_accuracy(net, x, y, attacks.PGD(EPS, steps=2, amp=True))
    assert seen == [False, True, True]
    assert precision.EVAL_AMP is False
    assert precision.describe("cpu")["robust_accuracy"] == "fp32"


def test_no_recipe_uses_label_smoothing():
    """Fix h: label smoothing masks gradients and flatters robustness, and
    every chapter measures its zoo models under attack."""
    for recipe, rc in train.RECIPES.items():
        for arch in rc["archs"]:
            for profile in rc["profiles"]:
                for dataset in train.recipe_datasets(recipe):
                    st = train.recipe_settings(arch, recipe, profile, dataset)
                    assert st.get("label_smoothing", 0.0) == 0.0, (recipe, arch, profile, dataset)


def test_fit_takes_an_attack_object_as_adversary(xy):
    torch.manual_seed(0)
    m = models.build("shallow", "mnist")
    x, y = (t.float() if t.is_floating_point() else t for t in xy)
    hist = train.fit(m, x, y, objective=train.Objective(adversary=attacks.FGSM(0.1), mix="benign+adv"),
                     max_epochs=1, batch_size=3, patience=None, progress=False)
    assert len(hist["epoch"]) == 1 and hist["train_acc"][0] >= 0
