"""nrlib.models: architectures, parameter counts, layer names, normalisation."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from nrlib import models, papers
from nrlib.models import ARCHS, build, count_params, frozen


def _table1_base() -> int:
    """Table 1's parameter count of the base CNN, from the paper's data file."""
    return next(c["paper"] for c in papers.load("karnine2024")["claims"] if c["key"] == "params/base")


# shallow and dense are the paper's variants (§3.3); only the base model's count is printed (Table 1)
@pytest.mark.parametrize("arch,n", [("shallow", 55_594), ("base", None), ("dense", 130_410)])
def test_mnist_cnn_parameter_counts_match_karnine_table1(arch, n):
    n = _table1_base() if n is None else n
    m = build(arch, "mnist")
    assert count_params(m) == n
    assert sum(r[2] for r in models.param_table(m)) == n  # every parameter sits in a conv/dense layer


def test_base_param_table_rows():
    rows = models.param_table(build("base", "mnist"))
    assert rows == [("conv1", (32, 1, 5, 5), 832), ("conv2", (64, 32, 3, 3), 18_496),
                    ("fc1", (32, 3136), 100_384), ("fc2", (10, 32), 330)]


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_maps_a_batch_to_ten_logits(arch, dataset):
    torch.manual_seed(0)
    m = build(arch, dataset).eval()
    assert m.arch == arch and m.dataset == dataset
    c, h, w = models.SHAPES[dataset]
    x = torch.rand(2, c, h, w)
    with torch.no_grad():
        out = m(x)
    assert out.shape == (2, 10) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    # the output depends on the input (in train mode: a freshly initialised deep
    # VGG in eval mode maps every input to nearly the same logits)
    with torch.no_grad():
        out_t = m.train()(x)
    assert out_t.shape == (2, 10) and not torch.allclose(out_t[0], out_t[1])
    assert isinstance(m.normalize, models.Normalize)
    assert m.normalize.mean.shape == (1, c, 1, 1)


def _is_subsequence(sub, seq):
    it = iter(seq)
    return all(s in it for s in sub)


def test_layer_names_mnist_cnns():
    base = build("base", "mnist")
    names = list(base.layers())
    assert _is_subsequence(["conv1", "relu1", "conv2", "relu2", "fc1", "fc2"], names)
    assert all(isinstance(mod, (nn.Conv2d, nn.ReLU, nn.Linear)) for mod in base.layers().values())
    assert base.layers()["conv1"].kernel_size == (5, 5) and base.layers()["conv1"].out_channels == 32
    assert base.layers()["conv2"].kernel_size == (3, 3) and base.layers()["conv2"].out_channels == 64
    assert list(base.conv_layers()) == ["conv1", "conv2"]
    assert list(build("dense", "mnist").conv_layers()) == ["conv1", "conv2", "conv3"]
    assert [m.out_channels for m in build("shallow", "mnist").conv_layers().values()] == [16, 32]


def test_layer_names_resnet18():
    layers = build("resnet18", "cifar10").layers()
    names = list(layers)
    assert names[0] == "conv1" and names[-1] == "fc"
    assert _is_subsequence(["conv1", "relu1", "l1b1c1", "l1b1r1", "l1b1c2", "l4b2c2", "fc"], names)
    assert isinstance(layers["l1b1c1"], nn.Conv2d) and isinstance(layers["l4b2c2"], nn.Conv2d)
    assert layers["l4b2c2"].out_channels == 512 and isinstance(layers["fc"], nn.Linear)
    assert "l4b3c1" not in layers  # two blocks per stage
    # the names point at the modules the forward pass uses
    m = build("resnet18", "cifar10")
    assert m.layers()["l2b1c1"] is m.stages[1][0].c1


@pytest.mark.parametrize("arch,n_conv", [("vgg16", 13), ("vgg19", 16)])
def test_layer_names_vgg(arch, n_conv):
    m = build(arch, "cifar10")
    convs = list(m.conv_layers())
    assert convs == [f"conv{i}" for i in range(1, n_conv + 1)]
    names = list(m.layers())
    assert names[-1] == "fc1" and f"relu{n_conv}" in names and f"conv{n_conv + 1}" not in names
    assert m.layers()["conv1"].out_channels == 64 and m.layers()[f"conv{n_conv}"].out_channels == 512


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_normalisation_is_inside_the_model(dataset):
    m = build("base" if dataset == "mnist" else "resnet18", dataset).eval()
    mean, std = models.STATS[dataset]
    c = len(mean)
    mean_img = torch.tensor(mean).view(1, c, 1, 1).expand(1, c, 8, 8)
    assert torch.allclose(m.normalize(mean_img), torch.zeros(1, c, 8, 8), atol=1e-6)
    one_sd = torch.tensor(mean).view(1, c, 1, 1) + torch.tensor(std).view(1, c, 1, 1)
    assert torch.allclose(m.normalize(one_sd), torch.ones(1, c, 1, 1), atol=1e-5)
    # the first conv sees the normalised pixels, not the raw ones
    seen = []
    h = m.conv1.register_forward_pre_hook(lambda mod, args: seen.append(args[0].clone()))
    x = torch.rand(2, *models.SHAPES[dataset])
    with torch.no_grad():
        m(x)
    h.remove()
    expected = (x - torch.tensor(mean).view(1, c, 1, 1)) / torch.tensor(std).view(1, c, 1, 1)
    assert torch.allclose(seen[0], expected, atol=1e-6)


def test_normalize_buffers_move_with_the_model():
    m = build("shallow", "mnist")
    assert {n for n, _ in m.named_buffers()} >= {"normalize.mean", "normalize.std"}
    assert "normalize.mean" in m.state_dict()


@pytest.mark.parametrize("kw,param", [(dict(arch="alexnet", dataset="mnist"), "arch"),
                                      (dict(arch="base", dataset="svhn"), "dataset")])
def test_unknown_arch_or_dataset(kw, param):
    with pytest.raises(ValueError, match=rf"^{param}="):
        build(**kw)


def test_frozen_restores_flags_and_mode():
    m = build("shallow", "mnist")
    m.fc2.weight.requires_grad_(False)
    flags = {n: p.requires_grad for n, p in m.named_parameters()}
    m.train()
    with frozen(m) as inner:
        assert inner is m
        assert not m.training and not any(mod.training for mod in m.modules())
        assert not any(p.requires_grad for p in m.parameters())
    assert m.training and all(mod.training for mod in m.modules())
    assert {n: p.requires_grad for n, p in m.named_parameters()} == flags
    # also when the block raises, and from eval mode
    m.eval()
    with pytest.raises(RuntimeError):
        with frozen(m):
            raise RuntimeError("inside")
    assert not m.training
    assert {n: p.requires_grad for n, p in m.named_parameters()} == flags


def test_resnet20_is_he_et_al_cifar_network():
    """He et al. 2016 §4.2: 3 stages × 3 basic blocks, 16/32/64 channels,
    parameter-free option-A shortcuts (so all 19 convs are on the main path),
    0.27 M parameters, 8×8 maps in the last stage (Prattico's Table 2 fits it)."""
    m = build("resnet20", "cifar10").eval()
    assert count_params(m) == 269_722
    convs = m.conv_layers()
    assert len(convs) == 19 and len([x for x in m.modules() if isinstance(x, nn.Conv2d)]) == 19
    assert [c.out_channels for c in convs.values()] == [16] * 7 + [32] * 6 + [64] * 6
    from nrlib.hooks import capture
    with torch.no_grad(), capture(m, ["l1b3c2", "l3b1c1", "l3b3c2"]) as out:
        m(torch.rand(2, 3, 32, 32))
    assert [tuple(out[k][0].shape[1:]) for k in ("l1b3c2", "l3b1c1", "l3b3c2")] == [(16, 32, 32), (64, 8, 8), (64, 8, 8)]
    # option A: the shortcut subsamples and zero-pads; it has no weights
    blk = m.stages[1][0]
    x = torch.rand(1, 16, 32, 32)
    s = blk.shortcut(x)
    assert s.shape == (1, 32, 16, 16) and torch.equal(s[:, 8:24], x[:, :, ::2, ::2])
    assert float(s[:, :8].abs().sum()) == 0.0 and float(s[:, 24:].abs().sum()) == 0.0
    assert count_params(build("resnet20", "cifar10", width=4)) < count_params(m)


def test_resnet_stem_sets_the_first_layer_apart():
    """``stem``: conv1's kernels (Pravin et al. study them) apart from the body's width."""
    m = models.build("resnet50", "mnist", width=8, stem=16)
    assert m.conv1.weight.shape == (16, 1, 3, 3) and m.bn1.num_features == 16
    assert m(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert models.build("resnet18", "cifar10", width=8).conv1.out_channels == 8      # default: the width
    with pytest.raises(ValueError, match="stem="):
        models.build("resnet20", "cifar10", stem=32)
    with pytest.raises(ValueError, match="stem"):
        models.build("vgg16", "cifar10", stem=32)
