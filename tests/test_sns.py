"""The Sensitive Neuron Stabilizing term (Zhang et al. 2021, eqs. 12-13): nrlib.regularizers.sns_loss
and the SNSPenalty term of an objective, with locked layers."""
import pytest
import torch

from nrlib import hooks, models, regularizers as R, train
from nrlib.objectives import Forward, Objective, SNSPenalty


def test_sns_loss_is_zero_for_identical_activations_and_hand_computed():
    a = {"conv8": torch.randn(3, 4, 2, 2)}
    assert R.sns_loss(a, {"conv8": a["conv8"].clone()}).item() == 0.0
    c = {"l": torch.zeros(2, 3, 1, 2)}
    d = {"l": torch.zeros(2, 3, 1, 2)}
    d["l"][0, 0, 0] = torch.tensor([2.0, -2.0])    # image 0, channel 0: 4 / 2 = 2
    d["l"][1, 2, 0, 0] = 1.0                       # image 1, channel 2: 1 / 2 = 0.5
    assert R.sns_loss(c, d).item() == pytest.approx((2.0 + 0.5) / 2)          # all neurons
    assert R.sns_loss(c, d, {"l": [0]}).item() == pytest.approx(2.0 / 2)      # Ω = {0}
    assert R.sns_loss(c, d, {"l": [1]}).item() == 0.0
    with pytest.raises(ValueError, match="outside"):
        R.sns_loss(c, d, {"l": [3]})


def test_sns_all_equals_the_unmasked_sum_and_has_finite_gradients():
    g = torch.Generator().manual_seed(0)
    a = {n: torch.randn(4, 5, 3, 3, generator=g, requires_grad=True) for n in ("conv8", "conv9")}
    b = {n: torch.randn(4, 5, 3, 3, generator=g) for n in a}
    every = {n: list(range(5)) for n in a}
    full = R.sns_loss(a, b)
    assert torch.allclose(full, R.sns_loss(a, b, every))
    manual = sum(((a[n] - b[n]).abs().mean((2, 3)).sum(1)).mean() for n in a)
    assert torch.allclose(full, manual)
    out = Forward(logits=None, y=None, half=4, acts={n: torch.cat([a[n], b[n]]) for n in a})
    (SNSPenalty(("conv8", "conv9"), weight=5.0)(out)).backward()
    assert all(torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0 for t in a.values())


def test_fit_with_the_sns_penalty_stabilises_the_chosen_layer_and_keeps_locked_layers():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(64, 3, 32, 32, generator=g), torch.arange(64) % 10
    invert = lambda m, xb, yb: 1.0 - xb          # noqa: E731  (a big, fixed 'perturbation')
    dev = {}
    for lam in (0.0, 5.0):
        torch.manual_seed(0)
        m = models.build("vgg16", "cifar10", width=4)
        locked = {n: p.detach().clone() for n, p in m.named_parameters() if n.startswith(("conv1.", "bn1."))}
        for n, p in m.named_parameters():
            p.requires_grad_(not n.startswith(("conv1.", "bn1.")))
        obj = Objective(adversary=invert, mix="benign+adv", terms=[SNSPenalty(("conv12",), weight=lam)])
        train.fit(m, x, y, optimizer="sgd", lr=0.01, batch_size=32, max_epochs=3, patience=None,
                  objective=obj, progress=False)
        assert all(torch.equal(p, locked[n]) for n, p in m.named_parameters() if n in locked)
        m.train()
        with torch.no_grad(), hooks.capture(m, "conv12") as st:
            m(torch.cat([x, 1.0 - x]))
        a = st["conv12"][0]
        dev[lam] = R.sns_loss({"c": a[:64]}, {"c": a[64:]}).item()
    assert dev[5.0] < 0.1 * dev[0.0], dev      # measured: 0.09 vs 5.39
    with pytest.raises(ValueError, match="SNSPenalty pairs"):
        Objective(adversary=invert, mix="adv", terms=[SNSPenalty(("conv12",))])


def test_select_sensitive_takes_the_top_share_by_sigma():
    from nrlib import sensitivity as sens
    torch.manual_seed(0)
    m = models.build("vgg16", "cifar10", width=4).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(8, 3, 32, 32, generator=g)
    xa = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    sel = sens.select_sensitive(m, x, xa, ["conv8", "conv13"], share=0.25)
    sig = sens.layer_sensitivity(m, x, xa, ["conv8", "conv13"])
    for n, idx in sel.items():
        c = len(sig[n]["sigma"])
        assert len(idx) == max(1, round(0.25 * c))
        assert sig[n]["sigma"][idx].min() >= sig[n]["sigma"].sort(descending=True).values[len(idx) - 1]


@pytest.mark.parametrize("hook", ["conv", "relu"])
@pytest.mark.parametrize("mode", ["sen", "dyn", "all", "rand"])
def test_sns_finetune_trains_only_the_named_layers_with_its_mode(mode, hook):
    from nrlib import attacks
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(48, 3, 32, 32, generator=g), torch.arange(48) % 10
    torch.manual_seed(0)
    m = models.build("vgg16", "cifar10", width=4)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    top = [f"{hook}{i}" for i in (12, 13)]
    out = train.sns_finetune(m, x, y, layers=top, trainable=["conv12", "conv13", "bn12", "bn13", "fc1"],
                             adversary=attacks.PGD(8 / 255, steps=1), mode=mode, share=0.25,
                             select_n=16, optimizer="sgd", lr=0.01, batch_size=16, max_epochs=2,
                             patience=None, progress=False)
    changed = {n for n, p in m.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.split(".")[0] in {"conv12", "conv13", "bn12", "bn13", "fc1"} for n in changed)
    assert all(p.requires_grad for p in m.parameters())            # flags restored
    if mode == "all":
        assert out["sensitive"] is None and out["selections"] == []
    else:
        assert set(out["sensitive"]) == set(top)
        assert all(len(v) == max(1, round(0.25 * m.get_submodule("conv" + n[4:]).out_channels))
                   for n, v in out["sensitive"].items())
        assert len(out["selections"]) == (1 + 2 if mode == "dyn" else 1)
    with pytest.raises(ValueError, match="mode"):
        train.sns_finetune(m, x, y, layers=top, trainable=top, adversary=attacks.FGSM(0.1), mode="fixed")


def test_sns_trainable_names_the_blocks_and_the_logits_layer():
    m = models.build("vgg16", "cifar10", width=4)
    assert train.sns_trainable(m, ["relu12", "conv13"]) == ["conv12", "bn12", "conv13", "bn13", "fc1"]
    assert train.sns_trainable(m, ["bn12", "bn13"]) == ["conv12", "bn12", "conv13", "bn13", "fc1"]   # after BN
    with pytest.raises(ValueError, match="conv14"):
        train.sns_trainable(m, ["conv14"])


def test_sns_finetune_keeps_the_locked_batch_norm_statistics():
    """The bottom batch norms stay in eval mode: their running statistics do not move, while
    those of the fine-tuned blocks do (a locked layer that drifted would not be locked)."""
    from nrlib import attacks
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(32, 3, 32, 32, generator=g), torch.arange(32) % 10
    torch.manual_seed(0)
    m = models.build("vgg16", "cifar10", width=4)
    stats = {n: b.clone() for n, b in m.named_buffers() if "running" in n}
    for hook in ("relu13", "bn13"):      # the penalty after the ReLU, or after batch norm before it
        train.sns_finetune(m, x, y, layers=[hook], trainable=train.sns_trainable(m, [hook]),
                           adversary=attacks.FGSM(8 / 255), mode="all", optimizer="sgd", lr=0.01,
                           batch_size=16, max_epochs=1, patience=None, progress=False)
        moved = {n.split(".")[0] for n, b in m.named_buffers() if n in stats and not torch.equal(b, stats[n])}
        assert moved == {"bn13"}, (hook, moved)


def test_sns_variants_settings_overrides_and_keys():
    st = train.recipe_settings("vgg16", "cifar", "full", variant="sns_sen")
    assert st["init"] == "standard" and st["sns_weight"] == 5.0 and st["sns_share"] == 0.1
    pat = train.recipe_settings("vgg16", "cifar", "full", variant="pat")      # SNS trains with PAT's loss
    assert st["sns_layers"] == [f"relu{i}" for i in range(8, 14)]
    assert (st["adv_steps"], st["adv_alpha"], st["mix"]) == (pat["adv_steps"], pat["adv_alpha"], pat["mix"])
    assert st["sns_reselect_n"] == 200 and st["sns_mode"] == "sen"
    base = train.zoo_key("vgg16", "cifar10", "cifar", "cpu", 0, "sns_sen")
    lam = train.zoo_key("vgg16", "cifar10", "cifar", "cpu", 0, "sns_sen", {"sns_weight": 1.0})
    assert lam != base and lam.startswith("cifar10/vgg16/cifar+sns_sen-")
    assert train.recipe_settings("vgg16", "cifar", "cpu", variant="sns_sen",
                                 overrides={"sns_weight": 1.0})["sns_weight"] == 1.0
    with pytest.raises(ValueError, match=r"overrides \['sns_wieght'\]"):
        train.zoo_key("vgg16", "cifar10", "cifar", "cpu", 0, "sns_sen", {"sns_wieght": 1.0})


def _zoo_variant_and_vanilla(tmp_path, monkeypatch, variant):
    """A smoke VGG-16 variant trained into an empty data folder (CIFAR-10 linked in), then the
    vanilla model it started from (cached by then): ``(model, meta, vanilla, vanilla_meta)``."""
    from nrlib import data as nrdata
    (tmp_path / "cifar-10-batches-py").symlink_to((nrdata.data_root() / "cifar-10-batches-py").resolve(),
                                                 target_is_directory=True)
    monkeypatch.setenv("NRLIB_DATA", str(tmp_path))
    m, meta = train.zoo_get("vgg16", "cifar10", "cifar", "smoke", variant=variant, device="cpu",
                            progress=False)
    vanilla, vmeta = train.zoo_get("vgg16", "cifar10", "cifar", "smoke", device="cpu", progress=False)
    return m, meta, vanilla, vmeta


def test_zoo_sns_variant_finetunes_the_cached_vanilla_model(tmp_path, monkeypatch):
    m, meta, vanilla, vmeta = _zoo_variant_and_vanilla(tmp_path, monkeypatch, "sns_sen")
    assert vmeta["cached"] and meta["init_key"] == vmeta["key"] and not meta["cached"]
    assert set(meta["sensitive"]) == {f"relu{i}" for i in range(8, 14)}
    same = {n for n, p in m.state_dict().items() if torch.equal(p, vanilla.state_dict()[n])}
    assert {n.split(".")[0] for n in same} >= {f"conv{i}" for i in range(1, 8)}      # locked
    assert not torch.equal(m.fc1.weight, vanilla.fc1.weight)
    again, ameta = train.zoo_get("vgg16", "cifar10", "cifar", "smoke", variant="sns_sen", device="cpu")
    assert ameta["cached"] and torch.equal(again.fc1.weight, m.fc1.weight)
    # the zoo table describes the recipe's own model: a fine-tune with other settings leaves it alone
    from nrlib import results as nrresults
    entry = nrresults.read("zoo", "smoke")["params"]["vgg16+sns_sen"]
    assert entry["key"] == meta["key"]
    other, ometa = train.zoo_get("vgg16", "cifar10", "cifar", "smoke", variant="sns_sen", device="cpu",
                                 overrides={"sns_weight": 1.0}, progress=False)
    assert not ometa["cached"] and ometa["key"] != meta["key"]
    assert nrresults.read("zoo", "smoke")["params"]["vgg16+sns_sen"]["key"] == meta["key"]


def test_zoo_clean_ft_is_pat_fts_clean_twin(tmp_path, monkeypatch):
    """Chapter 6's clean twin: the vanilla model fine-tuned on clean images with pat_ft's budget
    (epochs, lr, schedule, optimizer, batch, images) at every profile, every layer trained."""
    same = ("epochs", "lr", "schedule", "optimizer", "batch_size", "n_train", "init")
    for p in ("smoke", "cpu", "full"):
        c, a = (train.recipe_settings("vgg16", "cifar", p, variant=v) for v in ("clean_ft", "pat_ft"))
        assert {k: c.get(k) for k in same} == {k: a.get(k) for k in same}, p
        assert train.variant_objective(c).adversary is None and train.variant_objective(a).adversary
    m, meta, vanilla, vmeta = _zoo_variant_and_vanilla(tmp_path, monkeypatch, "clean_ft")
    assert meta["init_key"] == vmeta["key"] and "sensitive" not in meta
    moved = {n.split(".")[0] for n, p in m.state_dict().items()
             if p.is_floating_point() and not torch.equal(p, vanilla.state_dict()[n])}
    assert moved >= {f"conv{i}" for i in range(1, 14)} | {"fc1"}
