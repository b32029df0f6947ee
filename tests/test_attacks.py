"""nrlib.attacks: FGSM and PGD (L∞ and L2) on the trained shallow MNIST CNN."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nrlib import attacks, metrics
from nrlib.attacks import fgsm, pgd

EPS = 0.1


def _linf(a, b):
    return (a - b).abs().flatten(1).max(1).values


def _l2(a, b):
    return (a - b).flatten(1).norm(dim=1)


# ---------------------------------------------------------------------------
# ε = 0, the ε-ball and the [0, 1] box
# ---------------------------------------------------------------------------
def test_eps_zero_returns_x_exactly(trained_shallow, batch):
    x, y = batch
    for out in (fgsm(trained_shallow, x, y, 0.0),
                pgd(trained_shallow, x, y, 0.0, alpha=0.01, steps=3),
                pgd(trained_shallow, x, y, 0.0, alpha=0.01, steps=3, norm="l2")):
        assert out.shape == x.shape and out.dtype == x.dtype
        assert torch.equal(out, x)


def test_fgsm_linf_bound_and_box(trained_shallow, batch):
    x, y = batch
    x_adv = fgsm(trained_shallow, x, y, EPS)
    d = _linf(x_adv, x)
    assert float(d.max()) <= EPS + 1e-6
    # the attack really moves every image (to the full ε somewhere)
    assert float(d.min()) >= EPS - 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0


@pytest.mark.parametrize("random_start", [True, False])
def test_pgd_linf_bound_and_box(trained_shallow, batch, random_start):
    x, y = batch
    x_adv = pgd(trained_shallow, x, y, EPS, alpha=0.02, steps=10, random_start=random_start)
    d = _linf(x_adv, x)
    assert float(d.max()) <= EPS + 1e-6
    assert float(d.max()) >= EPS - 1e-6  # the bound is active, not trivially met
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0


@pytest.mark.parametrize("random_start", [True, False])
def test_pgd_l2_bound_per_sample_and_box(trained_shallow, batch, random_start):
    x, y = batch
    eps = 1.5
    x_adv = pgd(trained_shallow, x, y, eps, alpha=0.5, steps=10, norm="l2", random_start=random_start)
    n = _l2(x_adv, x)
    assert torch.all(n <= eps + 1e-4), f"L2 norms exceed eps: max {float(n.max()):.6f}"
    assert float(n.max()) >= 0.9 * eps  # the projection is active
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    # an L2 attack is not an L∞ one: single pixels move by more than ε/√d
    assert float(_linf(x_adv, x).max()) > eps / 28


def test_outputs_stay_in_box_for_large_eps(trained_shallow, batch):
    x, y = batch
    for out in (fgsm(trained_shallow, x, y, 0.6),
                pgd(trained_shallow, x, y, 0.6, alpha=0.2, steps=3),
                pgd(trained_shallow, x, y, 5.0, alpha=2.0, steps=3, norm="l2")):
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        # without the clamp, x ± 0.6 would leave the box on these MNIST images
        assert float(out.min()) == 0.0 or float(out.max()) == 1.0


# ---------------------------------------------------------------------------
# batching and seeds
# ---------------------------------------------------------------------------
def _share_differing(a, b, tol=1e-5):
    """Share of pixels where ``a`` and ``b`` differ by more than ``tol``.

    Each sample's gradient does not depend on its batch (the loss is summed), so
    in exact arithmetic a batched attack equals the per-sample attacks. In floats
    the batched and single convolutions differ in the last bits (about 1e-7 here),
    and the sign of an input-gradient entry within that of zero (the smallest are
    about 1e-8 of the largest) may flip: allow such pixels, not more (on this CPU
    there are none). A batch-dependent attack (batch-norm statistics, a loss mixed
    across samples) changes a large share of pixels.
    """
    return float(((a - b).abs() > tol).float().mean())


def test_fgsm_batch_equals_per_sample(trained_shallow, batch):
    x, y = batch
    x, y = x[:8], y[:8]
    whole = fgsm(trained_shallow, x, y, EPS)
    single = torch.cat([fgsm(trained_shallow, x[i:i + 1], y[i:i + 1], EPS) for i in range(len(y))])
    assert _share_differing(whole, single) < 1e-3
    # and the chunked path (batch_size smaller than the batch) agrees too
    assert _share_differing(whole, fgsm(trained_shallow, x, y, EPS, batch_size=3)) < 1e-3
    assert not torch.equal(whole, x)


@pytest.mark.parametrize("norm,eps,alpha", [("linf", EPS, 0.02), ("l2", 1.5, 0.3)])
def test_pgd_batch_equals_per_sample_without_random_start(trained_shallow, batch, norm, eps, alpha):
    x, y = batch
    x, y = x[:6], y[:6]
    kw = dict(alpha=alpha, steps=5, norm=norm, random_start=False)
    whole = pgd(trained_shallow, x, y, eps, **kw)
    single = torch.cat([pgd(trained_shallow, x[i:i + 1], y[i:i + 1], eps, **kw) for i in range(len(y))])
    assert _share_differing(whole, single) < 1e-3
    assert not torch.equal(whole, x)


def test_pgd_random_start_is_seeded(trained_shallow, batch):
    x, y = batch
    kw = dict(alpha=0.02, steps=3, random_start=True)
    a = pgd(trained_shallow, x, y, EPS, seed=7, **kw)
    b = pgd(trained_shallow, x, y, EPS, seed=7, **kw)
    c = pgd(trained_shallow, x, y, EPS, seed=8, **kw)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)  # the seed really drives the start


def test_pgd_restarts_are_at_least_as_strong(trained_shallow, batch):
    x, y = batch
    kw = dict(alpha=0.01, steps=3, seed=0)
    one = pgd(trained_shallow, x, y, 0.08, restarts=1, **kw)
    three = pgd(trained_shallow, x, y, 0.08, restarts=3, **kw)
    assert float(_linf(three, x).max()) <= 0.08 + 1e-6
    # the first restart is one of the candidates, so success can only grow
    with torch.no_grad():
        fooled_one = trained_shallow(one).argmax(1) != y
        fooled_three = trained_shallow(three).argmax(1) != y
    assert torch.all(fooled_three | ~fooled_one)


# ---------------------------------------------------------------------------
# strength
# ---------------------------------------------------------------------------
def test_targeted_attacks_raise_target_probability(trained_shallow, batch):
    x, y = batch
    target = (y + 1) % 10

    def p_target(z):
        with torch.no_grad():
            return F.softmax(trained_shallow(z), 1).gather(1, target[:, None]).mean().item()

    clean = p_target(x)
    x_f = fgsm(trained_shallow, x, target, EPS, targeted=True)
    x_p = pgd(trained_shallow, x, target, EPS, alpha=0.02, steps=10, targeted=True)
    assert p_target(x_f) > clean
    assert p_target(x_p) > clean
    assert p_target(x_p) > p_target(x_f)  # iterating helps
    # the untargeted direction is the opposite one
    x_u = fgsm(trained_shallow, x, target, EPS, targeted=False)
    assert p_target(x_u) < clean


def test_attacks_lower_accuracy_pgd_at_least_as_much_as_fgsm(trained_shallow, mnist_test_small):
    x, y = mnist_test_small
    x, y = x[:200], y[:200]
    clean = metrics.accuracy(trained_shallow, x, y)
    acc_fgsm = metrics.robust_accuracy(trained_shallow, x, y, attacks.FGSM(0.3))
    acc_pgd = metrics.robust_accuracy(trained_shallow, x, y, attacks.PGD(0.3, alpha=0.03, steps=20))
    assert clean > 85.0
    assert acc_fgsm < clean - 30.0
    assert acc_pgd <= acc_fgsm
    assert acc_pgd < 10.0  # an undefended MNIST CNN at ε = 0.3


# ---------------------------------------------------------------------------
# the model is left as it was found
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_attack_leaves_model_untouched(trained_shallow, batch, attack):
    m = trained_shallow
    x, y = batch
    before = {k: v.detach().clone() for k, v in m.state_dict().items()}
    for p in m.parameters():  # a mixed pattern of flags must survive
        p.requires_grad_(True)
    m.conv1.weight.requires_grad_(False)
    flags = {n: p.requires_grad for n, p in m.named_parameters()}
    m.train()
    seen_training = []
    h = m.drop1.register_forward_hook(lambda mod, i, o: seen_training.append(mod.training))
    try:
        if attack == "fgsm":
            x_adv = fgsm(m, x, y, EPS)
        else:
            x_adv = pgd(m, x, y, EPS, alpha=0.02, steps=3)
    finally:
        h.remove()
    assert seen_training and not any(seen_training), "the attack must run the model in eval mode"
    assert not torch.equal(x_adv, x)
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in m.parameters())
    assert {n: p.requires_grad for n, p in m.named_parameters()} == flags
    assert m.training and all(mod.training for mod in m.modules())
    assert not x.requires_grad and not x_adv.requires_grad


def test_attacks_are_deterministic_in_eval_despite_dropout(trained_shallow, batch):
    x, y = batch
    trained_shallow.train()  # dropout would randomise the gradient if left on
    a = fgsm(trained_shallow, x, y, EPS)
    b = fgsm(trained_shallow, x, y, EPS)
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("call,param", [
    (lambda m, x, y: fgsm(m, x, y, -0.1), "eps"),
    (lambda m, x, y: pgd(m, x, y, -0.1, alpha=0.01, steps=2), "eps"),
    (lambda m, x, y: fgsm(m, x, y, 1.5), "eps"),
    (lambda m, x, y: pgd(m, x, y, 1.5, alpha=0.01, steps=2), "eps"),
    (lambda m, x, y: pgd(m, x, y, 0.1, alpha=0.01, steps=2, norm="l1"), "norm"),
    (lambda m, x, y: pgd(m, x, y, 0.1, alpha=0.01, steps=0), "steps"),
    (lambda m, x, y: pgd(m, x, y, 0.1, alpha=0.0, steps=2), "alpha"),
    (lambda m, x, y: pgd(m, x, y, 0.1, alpha=0.01, steps=2, restarts=0), "restarts"),
    (lambda m, x, y: fgsm(m, x * 2.0, y, 0.1), "x"),
    (lambda m, x, y: fgsm(m, x - 0.5, y, 0.1), "x"),
    (lambda m, x, y: pgd(m, x + 0.01, y, 0.1, alpha=0.01, steps=2), "x"),
    (lambda m, x, y: fgsm(m, x, y[:-1], 0.1), "y"),
    (lambda m, x, y: pgd(m, x, y[:-1], 0.1, alpha=0.01, steps=2), "y"),
], ids=["fgsm-neg-eps", "pgd-neg-eps", "fgsm-eps>1", "pgd-linf-eps>1", "norm", "steps0", "alpha0",
        "restarts0", "fgsm-x>1", "fgsm-x<0", "pgd-x>1", "fgsm-labels", "pgd-labels"])
def test_invalid_arguments_raise_value_error_naming_parameter(trained_shallow, batch, call, param):
    x, y = batch
    x, y = x[:4], y[:4]
    with pytest.raises(ValueError, match=rf"(^|\W){param}\W"):
        call(trained_shallow, x, y)


def test_l2_eps_may_exceed_one(trained_shallow, batch):
    x, y = batch
    out = pgd(trained_shallow, x[:4], y[:4], 2.0, alpha=0.5, steps=2, norm="l2")
    assert torch.all(_l2(out, x[:4]) <= 2.0 + 1e-4)


def test_default_alpha_and_registry():
    assert attacks.pgd_default_alpha(0.3, 30) == pytest.approx(0.025)
    assert attacks.ATTACKS["fgsm"] is attacks.FGSM and attacks.ATTACKS["pgd"] is attacks.PGD


def test_eps_text_writes_eps_as_the_papers_do():
    from nrlib.attacks import FGSM, PGD, eps_text

    assert eps_text(8 / 255) == "8/255" and eps_text(0.3) == "0.3" and eps_text(0.5, "l2") == "0.5"
    assert eps_text(0.2) == "51/255"                       # a whole number of 1/255, judged by value
    assert eps_text(0.2, dataset="mnist") == "0.2"         # MNIST's papers write decimals
    assert eps_text(8 / 255, dataset="cifar10") == "8/255"
    assert PGD(0.2, steps=5).describe("mnist") == "PGD-5 ε=0.2" and FGSM(2 / 255).describe() == "FGSM ε=2/255"
    with pytest.raises(ValueError, match="dataset"):
        eps_text(0.1, dataset="imagenet")
