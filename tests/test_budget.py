"""nrbook.cost, nrbook.plans and nrbook.budget: the FLOPs against an independent count, the sizes
against what the runs recorded, the plans against the seconds the cpu runs measured, and every
chapter's full profile against one loan of a GPU machine."""
from __future__ import annotations

import json

import pytest
import torch

from nrbook import budget, cost, plans
from nrlib import models

NETS = [cost.Net("vgg16", "cifar10", (("width", 16),)), cost.Net("resnet18", "cifar10", (("width", 8),)),
        cost.Net("resnet20", "cifar10", (("width", 16),)), cost.Net("base", "mnist")]


def _macs(net: cost.Net) -> int:
    """Multiply-adds of one image's forward pass, counted by hooks on every convolution and linear
    layer from their output sizes: a count that shares nothing with torch's FLOP counter."""
    model = models.build(net.arch, net.dataset, **dict(net.kwargs)).eval()
    total = []

    def hook(m, inp, out):
        if isinstance(m, torch.nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
            total.append(out[0].numel() * k)
        elif isinstance(m, torch.nn.Linear):
            total.append(m.in_features * m.out_features)
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.rand(1, *models.SHAPES[net.dataset]))
    return sum(total)


@pytest.mark.parametrize("net", NETS, ids=lambda n: n.label)
def test_flops_are_twice_the_multiply_adds_and_the_passes_scale(net):
    fwd = cost.flops_per_image(net, "forward")
    assert fwd == pytest.approx(2 * _macs(net), rel=1e-6)
    # the input-side backward costs one forward; training adds the weight gradients (not the first
    # layer's input gradient, which nothing needs)
    assert cost.flops_per_image(net, "attack") == pytest.approx(2 * fwd, rel=0.02)
    assert 2.8 * fwd <= cost.flops_per_image(net, "train") <= 3.0 * fwd * 1.001


def test_training_counts_epochs_images_and_attack_steps():
    from nrlib import recipes

    st = recipes.recipe_settings("vgg16", "cifar", "cpu", variant="pat")
    work = {w.kind: w for w in cost.training("vgg16", "cifar", "cpu", variant="pat", seeds=2)}
    n = st["epochs"] * st["n_train"] * 2
    assert work["train"].images == 2 * n                   # the clean and the adversarial copy
    assert work["attack"].images == n * st["adv_steps"]
    assert work["train"].batch == st["batch_size"]
    plain = {w.kind for w in cost.training("vgg16", "cifar", "cpu")}
    assert plain == {"train", "forward"}                    # no attack in standard training


def test_work_rejects_bad_input():
    with pytest.raises(ValueError, match="kind='backward'"):
        cost.Work("s", NETS[0], "backward", 10)
    with pytest.raises(ValueError, match="images=-1"):
        cost.Work("s", NETS[0], "forward", -1)
    with pytest.raises(ValueError, match="kind"):
        cost.flops_per_image(NETS[0], "both")


def test_notebook_sizes_are_what_the_runs_recorded():
    """Each chapter's sizes as the budget reads them from its notebook equal the sizes its cpu run
    wrote into its results (``params``): the estimate counts what the chapter runs."""
    compared = 0
    for nb in budget.chapters():
        rec = budget._results(nb)
        sizes = cost.notebook_sizes(nb, "cpu")["SIZES"]
        if rec is None:
            continue
        for k, v in sizes.items():
            if k in rec["params"]:
                assert json.loads(json.dumps(v)) == rec["params"][k], (nb, k)
                compared += 1
    assert compared >= 20


def test_notebook_sizes_errors_name_the_value():
    with pytest.raises(ValueError, match="notebook='07_nothing'.*chapters"):
        cost.notebook_sizes("07_nothing", "cpu")
    with pytest.raises(ValueError, match="profile='gpu'"):
        cost.notebook_sizes("05_toggle_activity", "gpu")


def test_device_seconds_take_the_compute_or_the_launch_floor():
    dev = budget.Device("d", 1e12, 1e12, 0.5, 1e-5)
    big = cost.Work("s", NETS[0], "train", 1e6, 512)
    assert dev.seconds(big) == pytest.approx(big.flops / 0.5e12)
    small = cost.Work("s", NETS[3], "forward", 1e4, 1)     # 10,000 batches of one image
    assert dev.seconds(small) == pytest.approx(1e4 * cost.layers(NETS[3]) * 1e-5)


def test_staging_calls_and_datasets():
    # a small tree: four parts of ≤ 45 MB, the last with the run; MNIST and the wheels ride along
    assert budget.staging_calls({"cifar10"}, tree=1_000_000) == 3
    assert budget.staging_calls({"mnist"}, tree=1_000_000) == 0
    assert budget.staging_calls({"mnist", "cifar10"}, tree=1_000_000) == 3
    # a tree of 33 MB leaves ~32 MB a call: six parts, and no room left for MNIST beside the wheels
    assert budget.part_bytes(33_000_000) == budget.CALL_BYTES - 33_000_000 - budget.CALL_SLACK
    assert budget.staging_calls({"cifar10"}, tree=33_000_000) == 5
    assert budget.staging_calls({"mnist", "cifar10"}, tree=33_000_000) == 6
    with pytest.raises(ValueError, match="slim the tree"):
        budget.part_bytes(66_000_000)
    with pytest.raises(ValueError, match="svhn"):
        budget.staging_calls({"svhn"})
    assert budget.datasets("05_toggle_activity") == ["cifar10"]


def test_every_chapter_has_a_plan():
    assert set(plans.PLANS) == set(budget.chapters())


@pytest.mark.parametrize("nb", sorted(plans.PLANS))
def test_plans_explain_the_cpu_runs(nb):
    """The plan at cpu against the chapter's cpu run: no stage counts much more work than its run
    took time for (a plan that counts passes that never happen), and the counted passes explain a
    fair share of the measured seconds (a plan that misses where the time goes). The CPU's rate is
    each net's, fitted on its training at one batch size; other batch sizes run up to ~1.6× faster
    (chapter 4's fine-tuning at 128 against its zoo training at 32), hence the bound of 2."""
    if budget._results(nb) is None:
        pytest.skip(f"no cpu run of {nb}")
    rows = budget.check(nb)
    timed = {s: r for s, r in rows.items() if not r["cached"] and r["measured_s"] >= 20}
    assert timed
    for s, r in timed.items():
        assert r["ratio"] <= 2.0, (s, r)
    counted = sum(r["model_s"] for r in timed.values())
    measured = sum(r["measured_s"] for r in timed.values())
    assert counted >= 0.3 * measured, (counted, measured)


@pytest.mark.parametrize("nb", sorted(plans.PLANS))
def test_every_chapter_full_profile_fits_one_loan(nb):
    est = budget.estimate(nb, "full", "h100")
    assert est["compute_s"] <= budget.COMPUTE_LIMIT_S, budget._table(est)
    assert est["fits"], budget._table(est)


def test_next_chapter_is_the_first_missing_then_the_oldest(monkeypatch):
    runs = {"01_a": {"date": "2026-12-01"}, "02_b": None, "03_c": None}
    monkeypatch.setattr(budget, "full_runs", lambda: runs)
    assert budget.next_chapter() == "02_b"
    runs.update({"02_b": {"date": "2026-11-30"}, "03_c": {"date": "2026-12-02"}})
    assert budget.next_chapter() == "02_b"


@pytest.mark.parametrize("name, message", [("9", "'9' is not a chapter"), ("0", "'0' is not one chapter")])
def test_cli_names_a_bad_chapter(capsys, name, message):
    with pytest.raises(SystemExit):
        budget.main(["--notebooks", name])
    assert message in capsys.readouterr().err
