"""nrlib.objectives: one objective for fit — cross-entropy on clean and/or adversarial images plus
terms that declare what they need — and the proof that the refactor into it changed no number:
every zoo key is the one recorded before it, and fit with an objective trains bit for bit as the
loss written out by hand."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nrlib import attacks, hooks, models, profiles, regularizers, train
from nrlib.objectives import Forward, LogitPairing, Objective, SensitivityPenalty, SNSPenalty, Term

KEYS = Path(__file__).parent / "data" / "zoo_keys.json"


def test_every_zoo_key_is_unchanged():
    """The cache key of every model the recipes can train (recipe × dataset × architecture × variant
    × profile, seeds 0 and 1): a refactor that changed one would retrain that model."""
    want = json.loads(KEYS.read_text())["keys"]
    got = {f"{r}|{d}|{a}|{v}|{p}|{s}": train.zoo_key(a, d, r, p, s, v)
           for r in train.RECIPES for d in train.recipe_datasets(r) for a in train.RECIPES[r]["archs"]
           for v in train.recipe_variants(r) for p in profiles.PROFILES for s in (0, 1)}
    assert sorted(got) == sorted(want), "recipes, variants or architectures changed: update tests/data/zoo_keys.json"
    changed = {k: (want[k], got[k]) for k in want if got[k] != want[k]}
    assert not changed, f"zoo keys changed (these models would retrain): {changed}"


def _by_hand(m, x, y, kind, mix, adv, *, lr=0.01, batch_size=32, epochs=2, seed=0):
    """fit's loop with each objective's loss written out (the form it had as fit's keyword hooks)."""
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=lr, momentum=0.9, nesterov=True)
    gen = torch.Generator().manual_seed(seed)
    m.to(memory_format=torch.channels_last)
    head = hooks.logits_layer(m)[1]
    for _ in range(epochs):
        m.train()
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), batch_size):
            xb, yb = x[perm[i:i + batch_size]], y[perm[i:i + batch_size]]
            if mix != "clean":
                xa = adv(m, xb, yb)
                xb, yb = (xa, yb) if mix == "adv" else (torch.cat([xb, xa]), torch.cat([yb, yb]))
            with hooks.features_of(m) as f, hooks.capture(m, ["relu12"], detach=False) as acts:
                z = m(xb)
            loss = F.cross_entropy(z.float(), yb)
            h = len(yb) // 2
            if kind == "penalty":
                loss = loss + regularizers.sensitivity_loss(f["z"].float().flatten(1), head.weight.float(), yb)
            if kind == "sns":
                a = acts["relu12"][0]
                loss = loss + 5.0 * regularizers.sns_loss({"relu12": a[:h]}, {"relu12": a[h:]})
            if kind == "alp":
                loss = loss + 0.5 * (z[:h] - z[h:]).pow(2).mean(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return m


@pytest.mark.parametrize("kind", ["clean", "adv", "benign+adv", "penalty", "alp", "sns"])
def test_fit_with_an_objective_trains_bit_for_bit_as_the_loss_written_out(kind):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(64, 3, 32, 32, generator=g), torch.arange(64) % 10
    adv = attacks.FGSM(8 / 255)
    mix = {"clean": "clean", "adv": "adv", "penalty": "clean"}.get(kind, "benign+adv")
    terms = {"penalty": [SensitivityPenalty()], "alp": [LogitPairing(0.5)],
             "sns": [SNSPenalty(("relu12",), weight=5.0)]}.get(kind, [])
    obj = Objective(adversary=None if mix == "clean" else adv, mix=mix, terms=terms)
    torch.manual_seed(0)
    m = models.build("vgg16", "cifar10", width=4)
    ref = _by_hand(copy.deepcopy(m), x, y, kind, mix, adv)
    train.fit(m, x, y, objective=obj, optimizer="sgd", lr=0.01, batch_size=32, max_epochs=2, patience=None,
              progress=False)
    for (k, a), b in zip(m.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a, b), f"{kind}: {k} differs"


def test_a_readers_own_term_gets_what_it_declares():
    """The docstring's example: a term sees the logits, and the features and layers it asked for,
    captured once per batch; the paired halves of a benign+adv batch are the clean and attacked images."""
    seen = []

    class Probe(Term):
        needs_features, layers, paired = True, ("relu12",), True

        def __call__(self, out: Forward):
            clean, adv = out.pair(out.logits)
            seen.append((out.features.shape, out.acts["relu12"].shape[0], clean.shape[0], adv.shape[0]))
            return 1e-3 * out.logits.pow(2).sum(1).mean()

    x, y = torch.rand(40, 3, 32, 32), torch.arange(40) % 10
    m = models.build("vgg16", "cifar10", width=4)
    train.fit(m, x, y, objective=Objective(adversary=attacks.FGSM(0.03), mix="benign+adv", terms=[Probe()]),
              optimizer="sgd", lr=0.01, batch_size=16, max_epochs=1, patience=None, progress=False)
    assert [s[1:] for s in seen] == [(32, 16, 16), (32, 16, 16), (16, 8, 8)]
    assert seen[0][0] == (32, hooks.logits_layer(m)[1].in_features)
    assert Objective(adversary=attacks.FGSM(0.03), mix="benign+adv", terms=[Probe()]).describe() == \
        "CE on clean + adversarial (FGSM ε=0.03) + Probe"


def test_logit_pairing_against_a_hand_computation():
    clean, adv = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]]), torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    out = Forward(logits=torch.cat([clean, adv]), y=torch.zeros(4, dtype=torch.long), half=2)
    # squared differences per image: (1 + 4 + 0) and (1 + 1 + 9)
    assert LogitPairing(0.5)(out).item() == pytest.approx(0.5 * (5 / 3 + 11 / 3) / 2)      # Kannan et al.
    assert LogitPairing(0.5, reduce="sum")(out).item() == pytest.approx(0.5 * (5 + 11) / 2)
    with pytest.raises(ValueError, match="reduce"):
        LogitPairing(0.5, reduce="max")
