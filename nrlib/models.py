"""The book's models, built by name: ``build(arch, dataset)``.

Every model takes pixels in [0, 1] and normalises inside (a ``Normalize``
first layer), so every ε in the book is in pixel units. ``model.layers()``
returns the conv / ReLU / dense layers under the names the papers use:

* Karnine et al. 2024, Table 1 and §3.3 — the MNIST CNNs ``shallow`` (16/32
  filters), ``base`` (32/64) and ``dense`` (32/64/128): conv 5×5 'same', then
  conv 3×3 'same', each followed by ReLU, 2×2 max-pool and dropout; flatten,
  dense 32 + ReLU, dense 10. Layer names ``conv1``, ``relu1``, …, ``fc1``,
  ``fc2``. The base model has Table 1's parameter count (the tests check it
  against ``nrlib/papers/karnine2024.json``).
* CIFAR-style ResNet-18/50/101 (3×3 stem, no max-pool; the ImageNet ResNets
  of He et al. 2016 adapted to 32×32 inputs): ``conv1``, ``l1b1c1`` (stage 1,
  block 1, conv 1), …, ``fc``; ReLUs ``relu1``, ``l1b1r1``, …
* ResNet-20 — the CIFAR-10 ResNet of He et al. 2016, §4.2 (three stages of
  three basic blocks, 16/32/64 channels, identity shortcuts that subsample and
  zero-pad the channels: "option A"; 269,722 parameters, ≈ 0.27 M as in their
  Table 6). Same layer names (``conv1``, ``l1b1c1`` … ``l3b3c2``, ``fc``); it
  has no shortcut convs, so its 19 convs are its whole main path.
* VGG-16/19 with batch norm (Simonyan & Zisserman 2015): ``conv1`` …
  ``conv13`` (``conv16``), ``relu1`` …, ``fc1``.

MNIST inputs (1×28×28) work for every architecture: the stem takes one
channel, ResNets end in adaptive pooling and VGG pools with ``ceil_mode``.
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from .utils import check_bool, check_choice, check_fraction, check_int, check_model

STATS = {  # per-channel mean / std of the training sets
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
MNIST_CNNS = {"shallow": (16, 32), "base": (32, 64), "dense": (32, 64, 128)}
ARCHS = tuple(MNIST_CNNS) + ("resnet20", "resnet18", "resnet50", "resnet101", "vgg16", "vgg19")
WIDTH_ARCHS = ("resnet20", "resnet18", "resnet50", "resnet101", "vgg16", "vgg19")  # take ``width=``
BUILD_OPTIONS = {"mnist_cnn": ("dropout", "hidden", "num_classes"), "width": ("width", "num_classes"),
                 "resnet": ("width", "stem", "num_classes")}


def _check_data(dataset, num_classes) -> tuple[str, int]:
    """The dataset a model is built for and its number of classes (≥ 2)."""
    return check_choice("dataset", dataset, tuple(STATS)), check_int("num_classes", num_classes, low=2)


class Normalize(nn.Module):
    """(x − mean) / std per channel, so the model's input is pixels in [0, 1]."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class NRModel(nn.Module):
    """Base class: a ``normalize`` first layer and ``layers()`` by paper name."""

    arch: str = ""
    dataset: str = ""

    def layers(self) -> "OrderedDict[str, nn.Module]":
        """Conv, ReLU and dense layers by the names the papers use, in forward order."""
        return OrderedDict((n, m) for n, m in self.named_modules()
                           if n and "." not in n and isinstance(m, (nn.Conv2d, nn.ReLU, nn.Linear)))

    def conv_layers(self) -> "OrderedDict[str, nn.Conv2d]":
        return OrderedDict((n, m) for n, m in self.layers().items() if isinstance(m, nn.Conv2d))

    @property
    def input_shape(self) -> tuple:
        """C×H×W of the images the model takes (None: any size), for input checks."""
        return (self.normalize.mean.shape[1], None, None)


# ----------------------------------------------------------------------------
# Karnine et al. 2024: the MNIST CNNs
# ----------------------------------------------------------------------------
class MnistCNN(NRModel):
    """Karnine et al. 2024, Table 1 / §3.3. Conv 5×5 then 3×3 ('same'), ReLU,
    max-pool 2, dropout; dense 32 + ReLU; dense 10 (logits)."""

    def __init__(self, filters=(32, 64), dataset="mnist", dropout=0.25, hidden=32, num_classes=10):
        super().__init__()
        dataset, num_classes = _check_data(dataset, num_classes)
        if not isinstance(filters, (list, tuple)) or not filters:
            raise ValueError(f"filters={filters!r} must be a non-empty list of filter counts, e.g. (32, 64)")
        filters = [check_int(f"filters[{i}]", f, low=1) for i, f in enumerate(filters)]
        dropout = check_fraction("dropout", dropout, high_open=True)
        hidden = check_int("hidden", hidden, low=1)
        c, h, w = SHAPES[dataset]
        self.image_size = (h, w)    # the dense layer fixes the input size
        self.normalize = Normalize(*STATS[dataset])
        self.filters = tuple(filters)
        for i, f in enumerate(self.filters, start=1):
            k = 5 if i == 1 else 3
            setattr(self, f"conv{i}", nn.Conv2d(c, f, k, padding=k // 2))
            setattr(self, f"relu{i}", nn.ReLU())
            setattr(self, f"pool{i}", nn.MaxPool2d(2))
            setattr(self, f"drop{i}", nn.Dropout(dropout))
            c, h, w = f, h // 2, w // 2
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(c * h * w, hidden)
        self.relu_fc1 = nn.ReLU()
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x):
        x = self.normalize(x)
        for i in range(1, len(self.filters) + 1):
            x = getattr(self, f"conv{i}")(x)
            x = getattr(self, f"relu{i}")(x)
            x = getattr(self, f"pool{i}")(x)
            x = getattr(self, f"drop{i}")(x)
        return self.fc2(self.relu_fc1(self.fc1(self.flatten(x))))

    @property
    def input_shape(self) -> tuple:
        return (self.normalize.mean.shape[1], *self.image_size)


# ----------------------------------------------------------------------------
# CIFAR-style ResNets (3×3 stem, no max-pool)
# ----------------------------------------------------------------------------
class _Block(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride, shortcut="B"):
        super().__init__()
        self.c1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(planes)
        self.r1 = nn.ReLU()
        self.c2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(planes)
        self.r2 = nn.ReLU()
        self.shortcut = _shortcut(cin, planes, stride) if shortcut == "B" else _PadShortcut(cin, planes, stride)

    def forward(self, x):
        out = self.r1(self.b1(self.c1(x)))
        return self.r2(self.b2(self.c2(out)) + self.shortcut(x))


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride, shortcut="B"):
        super().__init__()
        self.c1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.b1 = nn.BatchNorm2d(planes)
        self.r1 = nn.ReLU()
        self.c2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.b2 = nn.BatchNorm2d(planes)
        self.r2 = nn.ReLU()
        self.c3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.b3 = nn.BatchNorm2d(planes * 4)
        self.r3 = nn.ReLU()
        self.shortcut = _shortcut(cin, planes * 4, stride)

    def forward(self, x):
        out = self.r1(self.b1(self.c1(x)))
        out = self.r2(self.b2(self.c2(out)))
        return self.r3(self.b3(self.c3(out)) + self.shortcut(x))


def _shortcut(cin, cout, stride):
    """He et al. 2016 "option B": a 1×1 conv + BN where the shape changes."""
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class _PadShortcut(nn.Module):
    """He et al. 2016 "option A" (their CIFAR-10 ResNets): the identity,
    subsampled by ``stride`` and zero-padded to ``cout`` channels; no weights."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.stride, self.pad = stride, cout - cin

    def forward(self, x):
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x


class ResNet(NRModel):
    """CIFAR-style ResNet (He et al. 2016): 3×3 stem, four stages, global pool, fc.

    ``width`` is the first stage's channels (64 for ResNet-18/50/101, 16 for
    ResNet-20); ``stem`` the kernels of ``conv1`` (default: ``width``, as in
    He et al.). A stem wider than a reduced ``width`` keeps more first-layer
    kernels to study (Pravin et al. 2021 study ``conv1``) in a cheaper body;
    the first block's shortcut then projects stem → stage-1 channels."""

    # block, blocks per stage, shortcut option, default width
    CONFIGS = {"resnet20": (_Block, (3, 3, 3), "A", 16), "resnet18": (_Block, (2, 2, 2, 2), "B", 64),
               "resnet50": (_Bottleneck, (3, 4, 6, 3), "B", 64),
               "resnet101": (_Bottleneck, (3, 4, 23, 3), "B", 64)}

    def __init__(self, arch="resnet18", dataset="cifar10", width=None, stem=None, num_classes=10):
        super().__init__()
        check_choice("arch", arch, tuple(self.CONFIGS))
        dataset, num_classes = _check_data(dataset, num_classes)
        block, counts, option, default_width = self.CONFIGS[arch]
        width = default_width if width is None else check_int("width", width, low=1)
        stem = width if stem is None else check_int("stem", stem, low=1)
        if option == "A" and stem != width:
            raise ValueError(f"stem={stem} must equal width={width} for {arch}, whose parameter-free shortcuts "
                             "cannot change the number of channels")
        c = SHAPES[dataset][0]
        self.normalize = Normalize(*STATS[dataset])
        self.conv1 = nn.Conv2d(c, stem, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu1 = nn.ReLU()
        cin, stages = stem, []
        for s, n in enumerate(counts):
            planes = width * 2 ** s
            blocks = []
            for b in range(n):
                blocks.append(block(cin, planes, 2 if (b == 0 and s > 0) else 1, option))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.relu1(self.bn1(self.conv1(self.normalize(x))))
        for stage in self.stages:
            x = stage(x)
        return self.fc(torch.flatten(self.pool(x), 1))

    def layers(self):
        out = OrderedDict([("conv1", self.conv1), ("relu1", self.relu1)])
        for s, stage in enumerate(self.stages, start=1):
            for b, blk in enumerate(stage, start=1):
                for name, m in blk.named_children():
                    if name[0] in "cr" and name[1:].isdigit():
                        out[f"l{s}b{b}{name}"] = m
        out["fc"] = self.fc
        return out


# ----------------------------------------------------------------------------
# VGG with batch norm
# ----------------------------------------------------------------------------
VGG_CFG = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


class VGG(NRModel):
    """VGG-16/19 with BN for 32×32 inputs (one 512→10 classifier, as in the
    CIFAR literature); layers ``conv1…convN``, ``relu1…reluN``, ``fc1``."""

    def __init__(self, arch="vgg16", dataset="cifar10", width=64, num_classes=10):
        super().__init__()
        check_choice("arch", arch, tuple(VGG_CFG))
        dataset, num_classes = _check_data(dataset, num_classes)
        width = check_int("width", width, low=1)
        c = SHAPES[dataset][0]
        self.normalize = Normalize(*STATS[dataset])
        i, p = 0, 0
        scale = width / 64
        for v in VGG_CFG[arch]:
            if v == "M":
                p += 1
                setattr(self, f"pool{p}", nn.MaxPool2d(2, ceil_mode=True))
                continue
            i += 1
            v = max(1, int(round(v * scale)))
            setattr(self, f"conv{i}", nn.Conv2d(c, v, 3, padding=1, bias=False))
            setattr(self, f"bn{i}", nn.BatchNorm2d(v))
            setattr(self, f"relu{i}", nn.ReLU())
            c = v
        self.n_conv = i
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(c, num_classes)
        self._order = [n for n, _ in self.named_children() if n not in ("normalize", "gap", "fc1")]

    def forward(self, x):
        x = self.normalize(x)
        for n in self._order:
            x = getattr(self, n)(x)
        return self.fc1(torch.flatten(self.gap(x), 1))


def build(arch: str, dataset: str = "mnist", **kw) -> NRModel:
    """Build ``arch`` for ``dataset``; see the module docstring for the names."""
    check_choice("arch", arch, ARCHS)
    check_choice("dataset", dataset, tuple(STATS))
    allowed = BUILD_OPTIONS["mnist_cnn" if arch in MNIST_CNNS else "resnet" if arch.startswith("resnet")
                            else "width"]
    unknown = sorted(set(kw) - set(allowed))
    if unknown:
        raise ValueError(f"build({arch!r}) got unknown keyword argument(s) {unknown}; "
                         f"{arch} takes {list(allowed)}")
    if arch in MNIST_CNNS:
        m = MnistCNN(MNIST_CNNS[arch], dataset=dataset, **kw)
    elif arch.startswith("resnet"):
        m = ResNet(arch, dataset=dataset, **kw)
    else:
        m = VGG(arch, dataset=dataset, **kw)
    m.arch, m.dataset = arch, dataset
    return m


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    check_model(model)
    check_bool("trainable_only", trainable_only)
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def param_table(model: NRModel) -> list[tuple[str, tuple, int]]:
    """(layer, weight shape, #params) per conv/dense layer, as in Table 1 of Karnine et al."""
    if not hasattr(check_model(model), "layers"):
        raise ValueError(f"model must be a model of nrlib.models (with .layers()), got {type(model).__name__}")
    rows = []
    for name, m in model.layers().items():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            rows.append((name, tuple(m.weight.shape), sum(p.numel() for p in m.parameters())))
    return rows


@contextlib.contextmanager
def frozen(model: nn.Module):
    """Eval mode and no parameter gradients inside the block (the state attacks
    and analyses run in); each module's mode (a model in training with some modules
    kept in eval mode stays so) and the ``requires_grad`` flags are restored on exit."""
    modes = [(m, m.training) for m in check_model(model).modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, f in flags:
            p.requires_grad_(f)
        for m, t in modes:
            m.training = t
