"""The gradient-free attacks of nrlib.attacks (SPSA, Uesato et al. 2018; NAttack, Li et al. 2019):
they lower the accuracy of a trained model, stay in their ε-ball, never ask for a gradient, and
are reproducible. Their call-shape contract is in test_attack_contract.py."""
import dataclasses

import pytest
import torch
import torch.nn as nn

from nrlib import attacks, metrics


class NoGrad(nn.Module):
    """The model behind a query interface: fails if a forward pass could build a graph."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x):
        assert not torch.is_grad_enabled() and not x.requires_grad, "the attack asked for a gradient"
        self.calls += 1
        return self.inner(x)


@pytest.mark.parametrize("atk", [attacks.SPSA(0.2, steps=20, samples=64, lr=0.02),
                                 attacks.NAttack(0.2, steps=20, population=64, lr=0.05)],
                         ids=["spsa", "nattack"])
def test_black_box_attack_lowers_accuracy_without_gradients(trained_shallow, batch, atk):
    x, y = batch
    x, y = x[:32], y[:32]
    wrapped = NoGrad(trained_shallow).eval()
    clean = metrics.accuracy(trained_shallow, x, y)
    out = atk(wrapped, x, y)
    assert wrapped.calls >= atk.steps                      # it queried the model, once a step at least
    assert (out - x).abs().amax() <= atk.eps + 1e-6 and out.min() >= 0 and out.max() <= 1
    robust = metrics.accuracy(trained_shallow, out, y)
    # measured: 93.8% -> 40.6% (SPSA), 68.8% (NAttack, whose tanh-space noise cannot move MNIST's
    # saturated 0/1 pixels)
    assert robust < clean - 10, (clean, robust)
    short = dataclasses.replace(atk, steps=2)               # seeded: the same call, the same images
    assert torch.equal(short(trained_shallow, x, y), short(trained_shallow, x, y))


def test_margin_loss_signs():
    z = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    y = torch.tensor([0, 0])
    assert attacks.margin_loss(z, y).tolist() == [2.0, -2.0]           # < 0: misclassified
    assert attacks.margin_loss(z, torch.tensor([1, 1]), targeted=True).tolist() == [2.0, -1.0]


@pytest.mark.parametrize("cls,kw,param", [(attacks.SPSA, dict(samples=3), "samples"),
                                          (attacks.SPSA, dict(lr=0), "lr"),
                                          (attacks.NAttack, dict(population=1), "population"),
                                          (attacks.NAttack, dict(sigma=-1), "sigma")])
def test_bad_settings_name_the_parameter(cls, kw, param):
    with pytest.raises(ValueError, match=param):
        cls(8 / 255, **kw)


def test_cw_finds_small_successful_perturbations(trained_shallow, batch):
    """C&W-L2 on the trained MNIST CNN: almost every image is fooled, each returned x′ that differs
    from x is misclassified and inside the box, and a tight L2 bound keeps only the small ones."""
    x, y = batch
    x, y = x[:16], y[:16]
    atk = attacks.CW(10.0, c=1.0, steps=60, binary_steps=2, lr=0.05)
    out = atk(trained_shallow, x, y)
    moved = (out - x).flatten(1).norm(dim=1) > 0
    with torch.no_grad():
        pred = trained_shallow(out).argmax(1)
    assert bool((pred[moved] != y[moved]).all()) and out.min() >= 0 and out.max() <= 1
    assert metrics.accuracy(trained_shallow, out, y) <= 20.0
    l2 = (out - x).flatten(1).norm(dim=1)
    tight = atk.replace(eps=float(l2[moved].median()))(trained_shallow, x, y)
    assert float((tight - x).flatten(1).norm(dim=1).max()) <= float(l2[moved].median()) + 1e-5
    assert torch.equal(atk.replace(eps=0.0)(trained_shallow, x, y), x)
    with pytest.raises(ValueError, match="norm"):
        attacks.CW(1.0, norm="linf")
