"""nrlib.fragile: the vectorised kernel-dropout sweep (Pravin et al. 2021, §3.3)
against the plain loop over nrlib.hooks.zero_channels, on a tiny random ResNet-18."""
from __future__ import annotations

import copy

import pytest
import torch

from nrlib import fragile, metrics, models


@pytest.fixture(scope="module")
def tiny():
    """ResNet-18 at width 4 with random weights and batch-norm statistics taken
    from 64 random images (so that dropping a kernel changes some predictions:
    with fresh running statistics every image lands in one class); labels are
    the model's own predictions, with every 4th one shifted, so the clean
    accuracy is 75 % and dropping kernels moves it both ways."""
    torch.manual_seed(0)
    model = models.build("resnet18", "cifar10", width=4)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # running stats = the plain average over the calibration pass
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.normal_(m.bias, 0.0, 0.2)
    x = torch.rand(64, 3, 32, 32)
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()
    y = metrics.predict(model, x)
    y[::4] = (y[::4] + 1) % 10
    return model, x, y


def _snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [p.requires_grad for p in model.parameters()], model.training)


@pytest.mark.parametrize("layer, kw", [
    ("conv1", {}),                                    # 4 kernels, all in one pass
    ("l2b1c1", {"batch_size": 24, "chunk": 3}),       # inside a residual block; ragged chunks and batches
])
def test_vectorised_matches_naive(tiny, layer, kw):
    model, x, y = tiny
    fast = fragile.kernel_dropout_accuracy(model, x, y, layer, **kw)
    ref = fragile.kernel_dropout_accuracy_naive(model, x, y, layer)
    n_kernels = models.build("resnet18", "cifar10", width=4).layers()[layer].out_channels
    assert fast.shape == ref.shape == (n_kernels,)
    assert fast.dtype == torch.float64
    assert torch.equal(fast, ref)
    assert len(set(fast.tolist())) > 1, "every kernel gives the same accuracy: the test model is degenerate"


def test_kernel_subset_keeps_the_order_asked_for(tiny):
    model, x, y = tiny
    ks = [5, 0, 7]
    fast = fragile.kernel_dropout_accuracy(model, x, y, "l2b1c1", ks, chunk=2)
    assert torch.equal(fast, fragile.kernel_dropout_accuracy_naive(model, x, y, "l2b1c1", ks))
    assert torch.equal(fast, fragile.kernel_dropout_accuracy(model, x, y, "l2b1c1")[ks])


def test_model_is_left_as_it_was(tiny):
    model, x, y = tiny
    model.train()
    before = _snapshot(model)
    try:
        fragile.kernel_dropout_accuracy(model, x, y, "l2b1c1", batch_size=16)
        fragile.kernel_dropout_accuracy_naive(model, x, y, "conv1", [1])
        after = _snapshot(model)
    finally:
        model.eval()
    assert after[1] == before[1] and after[2] is True
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    assert not model.conv1._forward_hooks and not model.stages[1][0]._forward_pre_hooks


def test_hook_equals_zeroing_the_kernel_weights(tiny):
    """conv1 has no bias, so zeroing its output channel k is zeroing kernel k."""
    model, x, y = tiny
    assert model.conv1.bias is None
    k = 2
    edited = copy.deepcopy(model)
    with torch.no_grad():
        edited.conv1.weight[k] = 0
    expected = metrics.accuracy(edited, x, y)
    assert fragile.kernel_dropout_accuracy(model, x, y, "conv1", [k]).item() == expected
    assert fragile.kernel_dropout_accuracy_naive(model, x, y, "conv1", [k]).item() == expected


@pytest.mark.parametrize("kw, param", [
    ({"layer": "conv99"}, "layer="),
    ({"kernels": [0, 4]}, "kernels="),
    ({"kernels": [-1]}, "kernels="),
    ({"kernels": 2}, "kernels="),
    ({"chunk": 0}, "chunk="),
    ({"batch_size": 0}, "batch_size="),
])
def test_bad_arguments_name_the_parameter(tiny, kw, param):
    model, x, y = tiny
    with pytest.raises(ValueError, match=param):
        fragile.kernel_dropout_accuracy(model, x, y, **kw)
    if "chunk" not in kw:
        with pytest.raises(ValueError, match=param):
            fragile.kernel_dropout_accuracy_naive(model, x, y, **kw)
