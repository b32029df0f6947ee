"""Bad input gets a clear error, everywhere in nrlib.

Each case calls one public function of nrlib with one bad argument and checks
that nrlib itself (not torch, not Python's argument binding) raises a
``ValueError`` (or ``FileNotFoundError``, or an nrlib subclass of them) whose
message names the parameter — and, where useful, the value and what is
allowed. The model is the small ``shallow`` MNIST CNN, untrained (its weights
do not matter to validation), and the tensors are a few real-shaped images,
so the whole file runs in seconds on one core.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nrlib import attacks, data, fragile, hooks, metrics, models, results, train, utils, widgets
from nrlib.attacks import FGSM, PGD, fgsm, pgd

NRLIB = Path(models.__file__).resolve().parent


@pytest.fixture(scope="module")
def c():
    """The shared inputs: the shallow CNN (conv1: 16 filters, conv2: 32; 10
    classes), 4 images in [0, 1] and their labels."""
    torch.manual_seed(0)
    m = models.build("shallow", "mnist").eval()
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    return SimpleNamespace(m=m, x=x, y=torch.tensor([0, 1, 2, 3]))


@pytest.fixture(autouse=True)
def data_in_tmp(tmp_path, monkeypatch):
    """Results and checkpoints of this file go to a temporary data root; the
    datasets stay readable through links."""
    root = data.data_root()
    for name in ("MNIST", "cifar-10-batches-py"):
        if (root / name).exists():
            (tmp_path / name).symlink_to((root / name).resolve(), target_is_directory=True)
    monkeypatch.setenv("NRLIB_DATA", str(tmp_path))
    return tmp_path


def with_nan(x, value=float("nan")):
    x = x.clone()
    x[0, 0, 0, 0] = value
    return x


def enter(cm):
    """Enter and leave a context manager (validation runs on entry)."""
    with cm:
        pass


def case(id_, fn, match, exc=ValueError):
    return pytest.param(fn, match, exc, id=id_)


def scaled_through_relu(c):
    """relu1 does not declare its width: its channels are checked on its output."""
    with hooks.zero_channels(c.m, "relu1", [99]):
        c.m(c.x)


def write_file(tmp, rel, text):
    p = tmp / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def shallow_ckpt(c, tmp):
    p = tmp / "shallow.pt"
    train.save_checkpoint(p, c.m, {"arch": "shallow", "dataset": "mnist"})
    return p


_render = lambda **kw: None  # noqa: E731 - a panel's render function


CASES = [
    # --- devices (utils.get_device and every device= parameter) ---------------
    case("device-gpu", lambda c, t: utils.get_device("gpu"), r"device='gpu'.*'cpu', 'cuda'"),
    case("device-int", lambda c, t: utils.get_device(3.5), r"device=3\.5"),
    case("results-device-tpu", lambda c, t: results.device_name("tpu"), r"device='tpu'"),
    case("write-device-gpu", lambda c, t: results.write("nb", "smoke", {"a": 1.0}, device="gpu"), r"device='gpu'"),
    case("load-ckpt-map-gpu", lambda c, t: train.load_checkpoint(shallow_ckpt(c, t), c.m, map_location="gpu"),
         r"device='gpu'"),
    # --- the small helpers themselves ----------------------------------------
    case("check-int-bool", lambda c, t: utils.check_int("k", True, low=1), r"^k=True must be an integer"),
    case("check-number-str", lambda c, t: utils.check_number("eps", "0.3"), r"^eps='0.3' must be a number"),
    case("indices-not-int", lambda c, t: utils.check_indices("kernels", [1, "2"], 4), r"^kernels must hold integer"),
    case("batches-size-0", lambda c, t: list(utils.batches(c.x, batch_size=0)), r"^batch_size=0"),
    case("seed-negative", lambda c, t: utils.seed_everything(-1), r"^seed=-1"),
    # --- attacks: pixels -----------------------------------------------------
    case("fgsm-x-nan", lambda c, t: fgsm(c.m, with_nan(c.x), c.y, 0.1), r"^x holds NaN or inf"),
    case("fgsm-x-inf", lambda c, t: fgsm(c.m, with_nan(c.x, float("inf")), c.y, 0.1), r"^x holds NaN or inf"),
    case("fgsm-x-above-1", lambda c, t: fgsm(c.m, c.x + 1.0, c.y, 0.1), r"^x must hold pixels in \[0, 1\]"),
    case("fgsm-x-below-0", lambda c, t: fgsm(c.m, c.x - 1.0, c.y, 0.1), r"^x must hold pixels in \[0, 1\]"),
    case("fgsm-x-rank3", lambda c, t: fgsm(c.m, c.x[0], c.y, 0.1), r"^x must be a batch shaped N×C×H×W"),
    case("fgsm-x-uint8", lambda c, t: fgsm(c.m, (c.x * 255).to(torch.uint8), c.y, 0.1), r"^x must be a floating"),
    case("fgsm-x-int64", lambda c, t: fgsm(c.m, c.x.long(), c.y, 0.1), r"^x must be a floating.*int64"),
    case("fgsm-x-empty", lambda c, t: fgsm(c.m, c.x[:0], c.y[:0], 0.1), r"^x is an empty batch"),
    case("fgsm-x-numpy", lambda c, t: fgsm(c.m, c.x.numpy(), c.y, 0.1), r"^x must be a torch.Tensor"),
    case("fgsm-x-3-channels", lambda c, t: fgsm(c.m, c.x.expand(4, 3, 28, 28), c.y, 0.1), r"^x holds images shaped 3×28×28"),
    case("fgsm-x-32px", lambda c, t: fgsm(c.m, torch.rand(4, 1, 32, 32), c.y, 0.1), r"^x holds images.*1×28×28"),
    case("fgsm-model-str", lambda c, t: fgsm("shallow", c.x, c.y, 0.1), r"^model must be a torch.nn.Module"),
    # --- attacks: labels and targets ---------------------------------------------
    case("fgsm-y-too-large", lambda c, t: fgsm(c.m, c.x, c.y + 7, 0.1), r"^y holds classes in \[7, 10\].*\[0, 9\]"),
    case("fgsm-y-negative", lambda c, t: fgsm(c.m, c.x, c.y - 1, 0.1), r"^y holds classes in \[-1, 2\]"),
    case("fgsm-y-float", lambda c, t: fgsm(c.m, c.x, c.y.float(), 0.1), r"^y must be a 1-D integer tensor"),
    case("fgsm-y-2d", lambda c, t: fgsm(c.m, c.x, c.y[:, None], 0.1), r"^y must be a 1-D integer tensor"),
    case("fgsm-y-length", lambda c, t: fgsm(c.m, c.x, c.y[:3], 0.1), r"^y has 3 labels but the batch has 4"),
    case("fgsm-target-range", lambda c, t: fgsm(c.m, c.x, c.y + 10, 0.1, targeted=True), r"^target holds classes"),
    case("pgd-target-range", lambda c, t: pgd(c.m, c.x, c.y - 5, 0.1, alpha=0.01, steps=1, targeted=True),
         r"^target holds classes"),
    # --- attacks: settings of the functions -------------------------------------
    case("fgsm-eps-negative", lambda c, t: fgsm(c.m, c.x, c.y, -0.1), r"^eps=-0.1 is out of range.*>= 0"),
    case("fgsm-eps-above-1", lambda c, t: fgsm(c.m, c.x, c.y, 8), r"^eps=8 is out of range.*<= 1"),
    case("fgsm-eps-nan", lambda c, t: fgsm(c.m, c.x, c.y, float("nan")), r"^eps=nan must be finite"),
    case("fgsm-eps-bool", lambda c, t: fgsm(c.m, c.x, c.y, True), r"^eps=True must be a number"),
    case("fgsm-eps-str", lambda c, t: fgsm(c.m, c.x, c.y, "0.1"), r"^eps='0.1' must be a number"),
    case("fgsm-targeted-str", lambda c, t: fgsm(c.m, c.x, c.y, 0.1, targeted="yes"), r"^targeted='yes' must be True"),
    case("fgsm-batch-size-0", lambda c, t: fgsm(c.m, c.x, c.y, 0.1, batch_size=0), r"^batch_size=0 is out of range"),
    case("fgsm-batch-size-bool", lambda c, t: fgsm(c.m, c.x, c.y, 0.1, batch_size=True), r"^batch_size=True must be an integer"),
    case("fgsm-amp-str", lambda c, t: fgsm(c.m, c.x, c.y, 0.1, amp="bf16"), r"^amp='bf16' must be True or False or None"),
    case("pgd-steps-0", lambda c, t: pgd(c.m, c.x, c.y, 0.1, alpha=0.01, steps=0), r"^steps=0 is out of range.*>= 1"),
    case("pgd-steps-float", lambda c, t: pgd(c.m, c.x, c.y, 0.1, alpha=0.01, steps=2.5), r"^steps=2.5 must be an integer"),
    case("pgd-alpha-0", lambda c, t: pgd(c.m, c.x, c.y, 0.1, alpha=0.0, steps=1), r"^alpha=0.0 is out of range.*> 0"),
    case("pgd-alpha-none", lambda c, t: pgd(c.m, c.x, c.y, 0.1, alpha=None, steps=1), r"^alpha=None"),
    case("pgd-restarts-0", lambda c, t: pgd(c.m, c.x, c.y, 0.1, alpha=0.01, steps=1, restarts=0), r"^restarts=0"),
    case("pgd-norm-l3", lambda c, t: pgd(c.m, c.x, c.y, 0.1, alpha=0.01, steps=1, norm="l3"), r"^norm='l3'.*'linf', 'l2'"),
    case("pgd-seed-negative", lambda c, t: pgd(c.m, c.x, c.y, 0.1, alpha=0.01, steps=1, seed=-1), r"^seed=-1"),
    case("pgd-random-start-int", lambda c, t: pgd(c.m, c.x, c.y, 0.1, alpha=0.01, steps=1, random_start=1),
         r"^random_start=1 must be True or False"),
    case("pgd-l2-eps-negative", lambda c, t: pgd(c.m, c.x, c.y, -1.0, alpha=0.01, steps=1, norm="l2"), r"^eps=-1.0"),
    case("default-alpha-steps-0", lambda c, t: attacks.pgd_default_alpha(0.3, 0), r"^steps=0"),
    # --- attacks: the configured classes (validated in __post_init__) -----------
    case("FGSM-eps-negative", lambda c, t: FGSM(-0.1), r"^eps=-0.1 is out of range"),
    case("FGSM-eps-255", lambda c, t: FGSM(8), r"^eps=8 is out of range.*<= 1"),
    case("FGSM-batch-size-0", lambda c, t: FGSM(0.1, batch_size=0), r"^batch_size=0"),
    case("FGSM-targeted-int", lambda c, t: FGSM(0.1, targeted=1), r"^targeted=1 must be True or False"),
    case("PGD-steps-0", lambda c, t: PGD(0.1, steps=0), r"^steps=0"),
    case("PGD-norm-l1", lambda c, t: PGD(0.1, norm="l1"), r"^norm='l1'"),
    case("PGD-alpha-negative", lambda c, t: PGD(0.1, alpha=-1.0), r"^alpha=-1.0 is out of range"),
    case("PGD-restarts-0", lambda c, t: PGD(0.1, restarts=0), r"^restarts=0"),
    case("PGD-random-start-str", lambda c, t: PGD(0.1, random_start="no"), r"^random_start='no'"),
    case("PGD-seed-float", lambda c, t: PGD(0.1, seed=1.5), r"^seed=1.5 must be an integer"),
    case("replace-bogus", lambda c, t: FGSM(0.1).replace(bogus=1), r"FGSM has no setting\(s\) \['bogus'\]"),
    case("replace-steps-0", lambda c, t: PGD(0.1).replace(steps=0), r"^steps=0"),
    case("replace-eps-inf", lambda c, t: FGSM(0.1).replace(eps=float("inf")), r"^eps=inf must be finite"),
    case("FGSM-call-y-range", lambda c, t: FGSM(0.1)(c.m, c.x, c.y + 10), r"^y holds classes"),
    case("PGD-call-target-range", lambda c, t: PGD(0.1, steps=1, targeted=True)(c.m, c.x, c.y + 10),
         r"^target holds classes"),
    # --- metrics ------------------------------------------------------------------
    case("predict-x-nan", lambda c, t: metrics.predict(c.m, with_nan(c.x)), r"^x holds NaN"),
    case("predict-batch-size-0", lambda c, t: metrics.predict(c.m, c.x, batch_size=0), r"^batch_size=0"),
    case("predict-amp-int", lambda c, t: metrics.predict(c.m, c.x, amp=1), r"^amp=1 must be True or False"),
    case("accuracy-y-length", lambda c, t: metrics.accuracy(c.m, c.x, c.y[:2]), r"^y has 2 labels"),
    case("accuracy-y-class-10", lambda c, t: metrics.accuracy(c.m, c.x, c.y + 7), r"^y holds classes.*10 classes"),
    case("robust-acc-function", lambda c, t: metrics.robust_accuracy(c.m, c.x, c.y, fgsm), r"^attack=.*attacks.PGD"),
    case("robust-acc-str", lambda c, t: metrics.robust_accuracy(c.m, c.x, c.y, "fgsm"), r"^attack='fgsm'"),
    case("robust-acc-targeted", lambda c, t: metrics.robust_accuracy(c.m, c.x, c.y + 10, FGSM(0.1, targeted=True)),
         r"^target holds classes"),
    case("robust-acc-x-rank", lambda c, t: metrics.robust_accuracy(c.m, c.x[0], c.y, FGSM(0.1)), r"^x must be a batch"),
    case("targeted-success-target", lambda c, t: metrics.targeted_success(c.m, c.x, c.y + 10), r"^target holds classes"),
    case("targeted-success-x-adv", lambda c, t: metrics.targeted_success(c.m, with_nan(c.x), c.y), r"^x_adv holds NaN"),
    case("success-matrix-source", lambda c, t: metrics.success_matrix(c.y, c.y + 10, c.y), r"^source holds classes"),
    case("success-matrix-target", lambda c, t: metrics.success_matrix(c.y, c.y, c.y - 4), r"^target holds classes"),
    case("success-matrix-pred-2d", lambda c, t: metrics.success_matrix(c.y[:, None], c.y, c.y), r"^pred must be a 1-D"),
    case("success-matrix-pred-float", lambda c, t: metrics.success_matrix(c.y.float(), c.y, c.y), r"^pred must be.*integer"),
    case("success-matrix-length", lambda c, t: metrics.success_matrix(c.y, c.y[:3], c.y), r"^source has 3 labels"),
    case("success-matrix-empty", lambda c, t: metrics.success_matrix(c.y[:0], c.y[:0], c.y[:0]), r"^pred is empty"),
    case("success-matrix-classes-1", lambda c, t: metrics.success_matrix(c.y, c.y, c.y, num_classes=1),
         r"^num_classes=1 is out of range.*>= 2"),
    case("success-matrix-classes-bool", lambda c, t: metrics.success_matrix(c.y, c.y, c.y, num_classes=True),
         r"^num_classes=True must be an integer"),
    case("jaccard-none", lambda c, t: metrics.jaccard(None, [1]), r"^a=None must be a collection"),
    case("jaccard-str", lambda c, t: metrics.jaccard([1], "abc"), r"^b='abc' must be a collection"),
    case("jaccard-nan", lambda c, t: metrics.jaccard([float("nan")], [1.0]), r"^a holds nan"),
    case("jaccard-unhashable", lambda c, t: metrics.jaccard([[1, 2]], [1]), r"^a holds an unhashable list"),
    case("pairwise-jaccard-str", lambda c, t: metrics.mean_pairwise_jaccard("ab"), r"^sets must be a list"),
    case("pairwise-jaccard-item", lambda c, t: metrics.mean_pairwise_jaccard([[1], 5]), r"^sets\[1\]=5"),
    # --- hooks ----------------------------------------------------------------------
    case("layer-unknown", lambda c, t: hooks.get_layer(c.m, "conv9"), r"^layer='conv9' is not a layer.*'conv1'"),
    case("layer-int", lambda c, t: hooks.get_layer(c.m, 3), r"^layer=3 must be a layer name"),
    case("layer-model-str", lambda c, t: hooks.get_layer("shallow", "conv1"), r"^model must be a torch.nn.Module"),
    case("capture-empty", lambda c, t: enter(hooks.capture(c.m, [])), r"^names=\[\] must be a layer name"),
    case("capture-unknown", lambda c, t: enter(hooks.capture(c.m, ["conv1", "nope"])), r"^layer='nope'"),
    case("capture-detach-str", lambda c, t: enter(hooks.capture(c.m, "conv1", detach="no")), r"^detach='no'"),
    case("channels-too-large", lambda c, t: enter(hooks.zero_channels(c.m, "conv1", [16])),
         r"^channels=\[16\] are outside \[0, 15\]"),
    case("channels-negative", lambda c, t: enter(hooks.zero_channels(c.m, "conv1", [-1])), r"^channels=\[-1\]"),
    case("channels-single-int", lambda c, t: enter(hooks.zero_channels(c.m, "conv1", 3)), r"^channels=3 must be a list"),
    case("channels-float", lambda c, t: enter(hooks.scale_channels(c.m, "conv2", [0.5], 0.5)),
         r"^channels must hold integer indices"),
    case("channels-relu-lazy", lambda c, t: scaled_through_relu(c), r"^channels=\[99\] are outside \[0, 15\]"),
    case("beta-nan", lambda c, t: enter(hooks.scale_channels(c.m, "conv1", [0], float("nan"))), r"^beta=nan must be finite"),
    case("beta-inf", lambda c, t: enter(hooks.scale_channels(c.m, "conv1", [0], float("-inf"))), r"^beta=-inf"),
    case("beta-str", lambda c, t: enter(hooks.scale_channels(c.m, "conv1", [0], "half")), r"^beta='half' must be a number"),
    case("scale-layer-unknown", lambda c, t: enter(hooks.scale_channels(c.m, "fc9", [0], 0.5)), r"^layer='fc9'"),
    # --- fragile (paper 1) --------------------------------------------------------
    case("dropout-layer", lambda c, t: fragile.kernel_dropout_accuracy(c.m, c.x, c.y, "conv9"), r"^layer='conv9'"),
    case("dropout-kernels-range", lambda c, t: fragile.kernel_dropout_accuracy(c.m, c.x, c.y, "conv1", [0, 16]),
         r"^kernels=\[16\] are outside \[0, 15\]"),
    case("dropout-kernels-float", lambda c, t: fragile.kernel_dropout_accuracy(c.m, c.x, c.y, "conv1", [1.0]),
         r"^kernels must hold integer"),
    case("dropout-kernels-int", lambda c, t: fragile.kernel_dropout_accuracy(c.m, c.x, c.y, "conv1", 3),
         r"^kernels=3 must be a list"),
    case("dropout-batch-size-0", lambda c, t: fragile.kernel_dropout_accuracy(c.m, c.x, c.y, batch_size=0),
         r"^batch_size=0"),
    case("dropout-chunk-0", lambda c, t: fragile.kernel_dropout_accuracy(c.m, c.x, c.y, chunk=0), r"^chunk=0"),
    case("dropout-chunk-bool", lambda c, t: fragile.kernel_dropout_accuracy(c.m, c.x, c.y, chunk=True),
         r"^chunk=True must be an integer"),
    case("dropout-y-range", lambda c, t: fragile.kernel_dropout_accuracy(c.m, c.x, c.y + 10), r"^y holds classes"),
    case("dropout-x-nan", lambda c, t: fragile.kernel_dropout_accuracy(c.m, with_nan(c.x), c.y), r"^x holds NaN"),
    case("dropout-amp-str", lambda c, t: fragile.kernel_dropout_accuracy(c.m, c.x, c.y, amp="on"), r"^amp='on'"),
    case("dropout-progress-str", lambda c, t: fragile.kernel_dropout_accuracy(c.m, c.x, c.y, progress="yes"),
         r"^progress='yes'"),
    case("naive-batch-size", lambda c, t: fragile.kernel_dropout_accuracy_naive(c.m, c.x, c.y, batch_size=-1),
         r"^batch_size=-1"),
    case("naive-kernels-range", lambda c, t: fragile.kernel_dropout_accuracy_naive(c.m, c.x, c.y, "conv2", [32]),
         r"^kernels=\[32\] are outside \[0, 31\]"),
    # --- models -------------------------------------------------------------------
    case("build-unknown-kwarg", lambda c, t: models.build("shallow", "mnist", widht=8),
         r"build\('shallow'\) got unknown keyword argument\(s\) \['widht'\].*\['dropout', 'hidden', 'num_classes'\]"),
    case("build-resnet-dropout", lambda c, t: models.build("resnet18", "cifar10", dropout=0.5),
         r"unknown keyword argument\(s\) \['dropout'\].*\['width', 'stem', 'num_classes'\]"),
    case("build-width-0", lambda c, t: models.build("vgg16", "cifar10", width=0), r"^width=0 is out of range.*>= 1"),
    case("build-width-float", lambda c, t: models.build("resnet18", "cifar10", width=2.5), r"^width=2.5 must be an integer"),
    case("build-classes-1", lambda c, t: models.build("shallow", "mnist", num_classes=1), r"^num_classes=1.*>= 2"),
    case("build-classes-bool", lambda c, t: models.build("resnet20", "cifar10", num_classes=True),
         r"^num_classes=True must be an integer"),
    case("build-dropout-1", lambda c, t: models.build("shallow", "mnist", dropout=1.0), r"^dropout=1.0.*< 1"),
    case("build-dropout-negative", lambda c, t: models.build("base", "mnist", dropout=-0.1), r"^dropout=-0.1.*>= 0"),
    case("build-hidden-0", lambda c, t: models.build("base", "mnist", hidden=0), r"^hidden=0"),
    case("build-arch", lambda c, t: models.build("alexnet"), r"^arch='alexnet' is not allowed.*'shallow'"),
    case("build-dataset", lambda c, t: models.build("base", "svhn"), r"^dataset='svhn' is not allowed.*'mnist'"),
    case("count-params-flag", lambda c, t: models.count_params(c.m, trainable_only="yes"), r"^trainable_only='yes'"),
    case("frozen-not-model", lambda c, t: enter(models.frozen("model")), r"^model must be a torch.nn.Module"),
    # --- train.fit and friends -------------------------------------------------------
    case("fit-x-nan", lambda c, t: train.fit(c.m, with_nan(c.x), c.y, progress=False), r"^x holds NaN"),
    case("fit-x-rank", lambda c, t: train.fit(c.m, c.x[:, 0], c.y, progress=False), r"^x must be a batch"),
    case("fit-x-int64", lambda c, t: train.fit(c.m, c.x.long(), c.y, progress=False), r"^x must be a floating"),
    case("fit-x-empty", lambda c, t: train.fit(c.m, c.x[:0], c.y[:0], progress=False), r"^x is an empty batch"),
    case("fit-y-range", lambda c, t: train.fit(c.m, c.x, c.y + 7, progress=False), r"^y holds classes.*\[0, 9\]"),
    case("fit-y-length", lambda c, t: train.fit(c.m, c.x, c.y[:1], progress=False), r"^y has 1 labels"),
    case("fit-x-val-alone", lambda c, t: train.fit(c.m, c.x, c.y, x_val=c.x, progress=False),
         r"^x_val and y_val go together"),
    case("fit-y-val-range", lambda c, t: train.fit(c.m, c.x, c.y, x_val=c.x, y_val=c.y + 10, progress=False),
         r"^y_val holds classes"),
    case("fit-x-val-shape", lambda c, t: train.fit(c.m, c.x, c.y, x_val=torch.rand(4, 3, 32, 32), y_val=c.y,
                                                   progress=False), r"^x_val holds images shaped 3×32×32"),
    case("fit-lr-0", lambda c, t: train.fit(c.m, c.x, c.y, lr=0.0, progress=False), r"^lr=0.0 is out of range.*> 0"),
    case("fit-lr-negative", lambda c, t: train.fit(c.m, c.x, c.y, lr=-1e-3, progress=False), r"^lr=-0.001"),
    case("fit-batch-size-0", lambda c, t: train.fit(c.m, c.x, c.y, batch_size=0, progress=False), r"^batch_size=0"),
    case("fit-batch-size-bool", lambda c, t: train.fit(c.m, c.x, c.y, batch_size=True, progress=False),
         r"^batch_size=True must be an integer"),
    case("fit-patience-0", lambda c, t: train.fit(c.m, c.x, c.y, patience=0, progress=False), r"^patience=0"),
    case("fit-max-epochs-0", lambda c, t: train.fit(c.m, c.x, c.y, max_epochs=0, progress=False), r"^max_epochs=0"),
    case("fit-mix-adv-alone", lambda c, t: train.Objective(mix="adv"), r"^mix='adv' needs adversary"),
    case("fit-adversary-clean", lambda c, t: train.Objective(adversary=FGSM(0.1)),
         r"^mix='clean' needs adversary=None"),
    case("fit-mix-unknown", lambda c, t: train.Objective(mix="both"), r"^mix='both'"),
    case("fit-adversary-str", lambda c, t: train.Objective(mix="adv", adversary="pgd"),
         r"^adversary='pgd' must be a callable"),
    case("fit-objective-dict", lambda c, t: train.fit(c.m, c.x, c.y, objective={"mix": "adv"}, progress=False),
         r"^objective=\{'mix': 'adv'\} must be an nrlib.objectives.Objective"),
    case("objective-term-not-a-term", lambda c, t: train.Objective(terms=[lambda out: 0.0]),
         r"^terms\[0\]=.* must be an objective term"),
    case("objective-paired-term-clean", lambda c, t: train.Objective(terms=[train.LogitPairing(0.5)]),
         r"^terms\[0\]=LogitPairing pairs each clean image.*mix='benign\+adv', got mix='clean'"),
    case("objective-term-bad-layer", lambda c, t: train.fit(
        c.m, c.x, c.y, objective=train.Objective(adversary=FGSM(0.1), mix="benign+adv",
                                                 terms=[train.SNSPenalty(("conv99",))]), progress=False),
         r"conv99"),
    case("fit-optimizer", lambda c, t: train.fit(c.m, c.x, c.y, optimizer="lbfgs", progress=False),
         r"^optimizer='lbfgs'.*'adam'"),
    case("objective-label-smoothing", lambda c, t: train.Objective(label_smoothing=1.5),
         r"^label_smoothing=1.5.*<= 1"),
    case("fit-weight-decay", lambda c, t: train.fit(c.m, c.x, c.y, weight_decay=-1.0, progress=False),
         r"^weight_decay=-1.0"),
    case("fit-schedule", lambda c, t: train.fit(c.m, c.x, c.y, schedule="linear", progress=False), r"^schedule='linear'"),
    case("fit-augment-str", lambda c, t: train.fit(c.m, c.x, c.y, augment="crop_flip", progress=False),
         r"^augment='crop_flip' must be a callable"),
    case("fit-seed", lambda c, t: train.fit(c.m, c.x, c.y, seed=-1, progress=False), r"^seed=-1"),
    case("fit-progress-str", lambda c, t: train.fit(c.m, c.x, c.y, progress="no"), r"^progress='no'"),
    case("optimizer-no-params", lambda c, t: train.make_optimizer([], "adam", 1e-3), r"^params is empty"),
    case("optimizer-lr-nan", lambda c, t: train.make_optimizer(c.m.parameters(), "adam", float("nan")), r"^lr=nan"),
    case("crop-flip-rank", lambda c, t: train.crop_flip(c.x[0]), r"^x must be a non-empty N×C×H×W batch"),
    case("crop-flip-pad", lambda c, t: train.crop_flip(c.x, pad=-1), r"^pad=-1"),
    # --- checkpoints -------------------------------------------------------------
    case("ckpt-other-arch", lambda c, t: train.load_checkpoint(shallow_ckpt(c, t), models.build("base", "mnist")),
         r"checkpoint .*shallow\.pt holds 'shallow' for 'mnist'.*'base' model"),
    case("ckpt-missing", lambda c, t: train.load_checkpoint(t / "nope.pt"), r"checkpoint .*nope\.pt does not exist",
         FileNotFoundError),
    case("ckpt-garbage", lambda c, t: train.load_checkpoint(write_file(t, "junk.pt", "not a checkpoint")),
         r"checkpoint .*junk\.pt is unreadable", train.CorruptCheckpointError),
    case("ckpt-meta-numpy", lambda c, t: train.save_checkpoint(t / "m.pt", c.m, {"acc": np.float64(99.0)}),
         r"^meta\['acc'\]=.*float64"),
    case("ckpt-meta-list", lambda c, t: train.save_checkpoint(t / "m.pt", c.m, [1, 2]), r"^meta=\[1, 2\] must be a dict"),
    case("ckpt-state-str", lambda c, t: train.save_checkpoint(t / "m.pt", "weights"), r"^model_or_state must be"),
    case("ckpt-load-model-str", lambda c, t: train.load_checkpoint(shallow_ckpt(c, t), "shallow"),
         r"^model must be a torch.nn.Module"),
    # --- results -----------------------------------------------------------------
    case("write-notebook-dotdot", lambda c, t: results.write("../x", "smoke", {"a": 1.0}), r"^notebook='\.\./x' is not a plain name"),
    case("write-notebook-slash", lambda c, t: results.write("a/b", "smoke", {"a": 1.0}), r"^notebook='a/b'"),
    case("write-notebook-empty", lambda c, t: results.write("", "smoke", {"a": 1.0}), r"^notebook='' is not a plain name"),
    case("write-notebook-parent", lambda c, t: results.write("..", "smoke", {"a": 1.0}), r"^notebook='\.\.'"),
    case("write-notebook-backslash", lambda c, t: results.write("a\\b", "smoke", {"a": 1.0}), r"^notebook='a\\\\b'"),
    case("write-notebook-none", lambda c, t: results.write(None, "smoke", {"a": 1.0}), r"^notebook=None"),
    case("read-notebook-dotdot", lambda c, t: results.read("../etc", "cpu"), r"^notebook='\.\./etc'"),
    case("best-notebook-slash", lambda c, t: results.best("x/y"), r"^notebook='x/y'"),
    case("write-metric-nan", lambda c, t: results.write("nb", "smoke", {"acc": float("nan")}),
         r"^metrics\['acc'\]=nan must be finite"),
    case("write-metric-inf", lambda c, t: results.write("nb", "smoke", {"acc": np.float32("inf")}),
         r"^metrics\['acc'\]=np.float32\(inf\) must be finite"),
    case("write-metric-str", lambda c, t: results.write("nb", "smoke", {"acc": "97%"}), r"metrics\['acc'\]='97%' is not a number"),
    case("write-metric-bool", lambda c, t: results.write("nb", "smoke", {"ok": True}), r"metrics\['ok'\]=True is not a number"),
    case("write-metrics-list", lambda c, t: results.write("nb", "smoke", [1.0]), r"^metrics must be a dict"),
    case("write-metric-key", lambda c, t: results.write("nb", "smoke", {3: 1.0}), r"^metrics keys must be non-empty strings"),
    case("write-profile", lambda c, t: results.write("nb", "gpu", {"a": 1.0}), r"^profile='gpu' is not allowed.*'smoke'"),
    case("write-seconds-negative", lambda c, t: results.write("nb", "smoke", {"a": 1.0}, seconds={"train": -1.0}),
         r"^seconds\['train'\]=-1.0 is out of range"),
    case("write-extra-clash", lambda c, t: results.write("nb", "smoke", {"a": 1.0}, extra={"metrics": {}}),
         r"^extra=\['metrics'\] would overwrite"),
    case("write-params-object", lambda c, t: results.write("nb", "smoke", {"a": 1.0}, params={"f": object()}),
         r"^params/extra hold a value that JSON cannot store"),
    case("read-corrupt-json", lambda c, t: (write_file(t, "results/nb/cpu.json", "{not json"), results.read("nb", "cpu")),
         r"results file .*nb/cpu\.json is not valid JSON", results.CorruptResultsError),
    case("read-not-a-record", lambda c, t: (write_file(t, "results/nb/cpu.json", "[1, 2]"), results.read("nb", "cpu")),
         r"results file .*nb/cpu\.json is not a results record", results.CorruptResultsError),
    case("read-missing", lambda c, t: results.read("nb", "full"), r"notebook='nb' at profile='full'", FileNotFoundError),
    case("timer-stage-empty", lambda c, t: enter(results.Timer()("")), r"^stage='' must be a non-empty string"),
    # --- widgets -----------------------------------------------------------------
    case("eps-slider-low-high", lambda c, t: widgets.eps_slider(0.3, low=0.5, high=0.2), r"^low=0.5 and high=0.2.*low < high"),
    case("eps-slider-value", lambda c, t: widgets.eps_slider(0.8), r"^value=0.8 is out of range.*<= 0.5"),
    case("eps-slider-step-0", lambda c, t: widgets.eps_slider(step=0), r"^step=0 is out of range.*> 0"),
    case("eps-slider-high", lambda c, t: widgets.eps_slider(high=1.5), r"^high=1.5 is out of range.*<= 1"),
    case("eps-slider-step-wide", lambda c, t: widgets.eps_slider(step=0.9), r"^step=0.9 is wider"),
    case("beta-slider-value", lambda c, t: widgets.beta_slider(2.0), r"^value=2.0 is out of range"),
    case("beta-slider-step", lambda c, t: widgets.beta_slider(step=-0.1), r"^step=-0.1"),
    case("beta-slider-nan", lambda c, t: widgets.beta_slider(low=float("nan")), r"^low=nan must be finite"),
    case("topk-slider-value-0", lambda c, t: widgets.topk_slider(0), r"^value=0 is out of range.*>= 1"),
    case("topk-slider-step-0", lambda c, t: widgets.topk_slider(step=0), r"^step=0 is out of range"),
    case("topk-slider-empty", lambda c, t: widgets.topk_slider(10, low=10, high=10), r"^low=10 and high=10"),
    case("topk-slider-float", lambda c, t: widgets.topk_slider(2.5), r"^value=2.5 must be an integer"),
    case("panel-render-str", lambda c, t: widgets.panel("render", eps=widgets.eps_slider()), r"^render='render' must be"),
    case("panel-no-controls", lambda c, t: widgets.panel(_render), r"^controls: give at least one slider"),
    case("panel-control-number", lambda c, t: widgets.panel(_render, eps=0.3), r"^eps=0.3 must be a slider"),
]


@pytest.mark.parametrize("fn,match,exc", CASES)
def test_bad_input_is_named(c, data_in_tmp, fn, match, exc):
    check_case(c, data_in_tmp, fn, match, exc)


def check_case(c, data_in_tmp, fn, match, exc):
    """One bad-input case: the error, its message, and that nrlib raised it."""
    with pytest.raises(exc, match=match) as info:
        fn(c, data_in_tmp)
    assert_raised_by_nrlib(info)


def assert_raised_by_nrlib(info):
    """The error comes from nrlib's own validation, not from deep inside torch."""
    where = Path(str(info.traceback[-1].path)).resolve()
    assert where.is_relative_to(NRLIB), f"raised in {where}, not by nrlib: {info.value!r}"


def test_there_are_enough_distinct_cases():
    ids = [p.id for p in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 80


def test_none_is_not_measured_and_stays_null(data_in_tmp):
    path = results.write("nb", "smoke", {"acc": None, "n": 3})
    assert results.read("nb", "smoke")["metrics"] == {"acc": None, "n": 3}
    assert '"acc": null' in path.read_text()


def test_good_inputs_still_pass(c):
    """The validation is not stricter than the contract: 0-d tensors and NumPy
    numbers are numbers, a tensor of indices is an index list, ε = 0 is allowed."""
    assert utils.check_number("eps", torch.tensor(0.25)) == 0.25
    assert utils.check_int("k", np.int64(3), low=1) == 3
    assert utils.check_indices("channels", torch.tensor([0, 3]), 16) == [0, 3]
    assert torch.equal(fgsm(c.m, c.x, c.y, 0), c.x)
    assert metrics.jaccard(torch.tensor([1, 2]), {2, 3}) == pytest.approx(1 / 3)
    assert widgets.topk_slider(10, low=5, high=50, step=5).value == 10
    with hooks.zero_channels(c.m, "relu1", [0, 15]):
        c.m(c.x)


# =============================================================================
# nrlib.data (read only here: owned by another engineer)
# =============================================================================
_Y = torch.tensor([0, 0, 1, 1, 2, 2])

DATA_CASES = [
    case("load-name", lambda c, t: data.load("svhn"), r"^name='svhn' is not allowed.*'mnist'"),
    case("load-split", lambda c, t: data.load("mnist", "val"), r"^split='val'.*'train', 'test'"),
    case("load-n-0", lambda c, t: data.load("mnist", "test", n=0), r"^n=0 is out of range"),
    case("load-n-bool", lambda c, t: data.load("mnist", "test", n=True), r"^n=True must be an integer"),
    case("load-n-too-large", lambda c, t: data.load("mnist", "test", n=10001), r"^n=10001 is out of range.*<= 10000"),
    case("load-device-gpu", lambda c, t: data.load("mnist", "test", n=10, device="gpu"), r"device='gpu'"),
    case("load-seed-negative", lambda c, t: data.load("mnist", "test", n=10, seed=-1), r"^seed=-1"),
    case("load-dtype-int", lambda c, t: data.load("mnist", "test", n=10, dtype=torch.int32), r"^dtype="),
    case("per-class-k-0", lambda c, t: data.per_class(_Y, 0), r"^k=0"),
    case("per-class-k-bool", lambda c, t: data.per_class(_Y, True), r"^k=True"),
    case("per-class-k-negative", lambda c, t: data.per_class(_Y, -1), r"^k=-1"),
    case("per-class-k-too-large", lambda c, t: data.per_class(_Y, 3), r"\bk=3\b"),
    case("per-class-y-2d", lambda c, t: data.per_class(_Y[:, None], 1), r"^y must be a 1-D"),
    case("per-class-y-float", lambda c, t: data.per_class(_Y.float(), 1), r"^y must be a 1-D integer"),
    case("subset-n-0", lambda c, t: data.stratified_subset(_Y.numpy(), 0), r"^n=0"),
    case("subset-n-too-large", lambda c, t: data.stratified_subset(_Y.numpy(), 7), r"^n=7"),
    case("subset-y-empty", lambda c, t: data.stratified_subset(np.array([], dtype=np.int64), 1), r"^(y|n)\b"),
    case("split-n-val-0", lambda c, t: data.train_val_split(100, 0), r"^n_val=0"),
    case("split-n-val-all", lambda c, t: data.train_val_split(100, 100), r"^n_val=100.*<= 99"),
    case("split-n-total-bool", lambda c, t: data.train_val_split(True, 1), r"^n_total=True"),
    case("split-n-total-float", lambda c, t: data.train_val_split(100.0, 10), r"^n_total=100.0"),
    case("class-names", lambda c, t: data.class_names("svhn"), r"^name='svhn'"),
]


@pytest.mark.parametrize("fn,match,exc", DATA_CASES)
def test_bad_data_input_is_named(c, data_in_tmp, fn, match, exc):
    with pytest.raises(exc, match=match) as info:
        fn(c, data_in_tmp)
    assert_raised_by_nrlib(info)


# =============================================================================
# nrlib.toggle and nrlib.dominant (rewritten by other engineers; new API names)
# =============================================================================
from nrlib import dominant, toggle  # noqa: E402

_V = np.concatenate([np.linspace(-2, -1, 20), np.linspace(1, 2, 20)])


def _fc1_thresholds(c, **kw):
    return toggle.fit_thresholds(c.m, c.x, ["fc1"], **{"bins": 16, "progress": False, **kw})


def _fc1_ranking(c):
    return toggle.rank_neurons(c.m, c.x, ["fc1"])


def _diff(c):
    return dominant.filter_differences(c.m, ["conv1"], c.x, c.x.flip(0))["conv1"]


LATER_CASES = [
    case("fit-thresholds-bins-1", lambda c, t: _fc1_thresholds(c, bins=1), r"^bins=1 is out of range"),
    case("fit-thresholds-bins-bool", lambda c, t: toggle.fit_thresholds(c.m, c.x, bins=True, progress=False),
         r"^bins=True must be an integer"),
    case("fit-thresholds-ternary-order", lambda c, t: _fc1_thresholds(c, ternary=(0.8, 0.2)), r"ternary"),
    case("fit-thresholds-ternary-range", lambda c, t: _fc1_thresholds(c, ternary=(-0.1, 0.5)), r"ternary"),
    case("fit-thresholds-ternary-shape", lambda c, t: _fc1_thresholds(c, ternary=0.5), r"ternary"),
    case("fit-thresholds-fallback", lambda c, t: _fc1_thresholds(c, fallback="mean"), r"^fallback='mean'"),
    case("fit-thresholds-one-image", lambda c, t: toggle.fit_thresholds(c.m, c.x[:1], ["fc1"], progress=False),
         r"^x\b"),
    case("fit-thresholds-x-nan", lambda c, t: toggle.fit_thresholds(c.m, with_nan(c.x), ["fc1"], progress=False),
         r"^x holds NaN"),
    case("fit-thresholds-layer", lambda c, t: toggle.fit_thresholds(c.m, c.x, ["nope"], progress=False),
         r"^layer='nope'"),
    case("fit-thresholds-batch-size", lambda c, t: _fc1_thresholds(c, batch_size=0), r"^batch_size=0"),
    case("extrema-sizes-0", lambda c, t: toggle.extrema(c.m, c.x, ["fc1"], sizes=[0]), r"^sizes"),
    case("extrema-sizes-too-large", lambda c, t: toggle.extrema(c.m, c.x, ["fc1"], sizes=[100]), r"^sizes"),
    case("extrema-batch-size", lambda c, t: toggle.extrema(c.m, c.x, ["fc1"], batch_size=0), r"^batch_size=0"),
    case("extrema-x-rank", lambda c, t: toggle.extrema(c.m, c.x[0], ["fc1"]), r"^x must be a batch"),
    case("merge-extrema-none", lambda c, t: toggle.merge_extrema(), r"^parts"),
    case("merge-extrema-layers", lambda c, t: toggle.merge_extrema(toggle.extrema(c.m, c.x, ["fc1"]),
                                                                   toggle.extrema(c.m, c.x, ["conv1"])), r"^parts"),
    case("kde-one-value", lambda c, t: toggle.kde_threshold([1.0]), r"^values"),
    case("kde-nan", lambda c, t: toggle.kde_threshold([1.0, float("nan"), 2.0]), r"^values"),
    case("kde-grid", lambda c, t: toggle.kde_threshold(_V, grid=4), r"^grid=4"),
    case("kde-fallback", lambda c, t: toggle.kde_threshold(_V, fallback="max"), r"^fallback='max'"),
    case("toggle-activity-kind", lambda c, t: toggle.toggle_activity(toggle.extrema(c.m, c.x, ["fc1"]),
                                                                     _fc1_thresholds(c), "quaternary"),
         r"^kind='quaternary'"),
    case("ranking-top-0", lambda c, t: _fc1_ranking(c).top(0), r"^k=0"),
    case("ranking-top-too-many", lambda c, t: _fc1_ranking(c).top(33), r"^k=33.*<= 32"),
    case("ranking-top-bool", lambda c, t: _fc1_ranking(c).top(True), r"^k=True"),
    case("rank-neurons-batch-size", lambda c, t: toggle.rank_neurons(c.m, c.x, ["fc1"], batch_size=0),
         r"^batch_size=0"),
    case("rank-neurons-x-nan", lambda c, t: toggle.rank_neurons(c.m, with_nan(c.x), ["fc1"]), r"^x holds NaN"),
    case("filter-diff-shape", lambda c, t: dominant.filter_differences(c.m, ["conv1"], c.x, c.x[:2]), r"\bx_adv\b.*shape"),
    case("filter-diff-layer", lambda c, t: dominant.filter_differences(c.m, ["conv9"], c.x, c.x), r"^layer='conv9'"),
    case("filter-diff-no-layers", lambda c, t: dominant.filter_differences(c.m, [], c.x, c.x), r"^layers"),
    case("filter-diff-x-nan", lambda c, t: dominant.filter_differences(c.m, ["conv1"], with_nan(c.x), c.x),
         r"^x holds NaN"),
    case("top-filters-frac-0", lambda c, t: dominant.top_filters(_diff(c), 0.0), r"^frac=0.0"),
    case("top-filters-frac-big", lambda c, t: dominant.top_filters(_diff(c), 1.5), r"^frac=1.5"),
    case("top-filters-diff-1d", lambda c, t: dominant.top_filters(torch.rand(16), 0.1), r"^diff"),
    case("n-top-channels-0", lambda c, t: dominant.n_top(0, 0.1), r"^channels=0"),
    case("n-top-channels-bool", lambda c, t: dominant.n_top(True, 0.1), r"^channels=True"),
    case("n-top-frac-nan", lambda c, t: dominant.n_top(16, float("nan")), r"^frac=nan"),
    case("dominant-filters-frac", lambda c, t: dominant.dominant_filters(torch.ones(16), 2.0), r"^frac=2.0"),
    case("dominant-filters-freq-2d", lambda c, t: dominant.dominant_filters(torch.ones(4, 4), 0.1), r"^freq"),
    case("split-model-dense-layer", lambda c, t: dominant.split_model(c.m, {"fc1": [0]}), r"fc1"),
    case("split-model-index", lambda c, t: dominant.split_model(c.m, {"conv1": [16]}), r"dominant.*16|16.*\[0, 15\]"),
    case("split-model-train-dense", lambda c, t: dominant.split_model(c.m, {"conv1": [0]}, train_dense="yes"),
         r"^train_dense='yes'"),
    case("targeted-pairs-classes-1", lambda c, t: dominant.targeted_pairs(c.x, c.y, 1), r"^num_classes=1"),
    case("targeted-pairs-y-range", lambda c, t: dominant.targeted_pairs(c.x, c.y + 10, 10), r"^y holds classes"),
    case("targeted-pairs-y-length", lambda c, t: dominant.targeted_pairs(c.x, c.y[:2], 10), r"^y has 2 labels"),
    case("targeted-pairs-x-nan", lambda c, t: dominant.targeted_pairs(with_nan(c.x), c.y, 10), r"^x holds NaN"),
]


@pytest.mark.parametrize("fn,match,exc", LATER_CASES)
def test_bad_toggle_dominant_input_is_named(c, data_in_tmp, fn, match, exc):
    with pytest.raises(exc, match=match) as info:
        fn(c, data_in_tmp)
    assert_raised_by_nrlib(info)


# =============================================================================
# nrlib.toggle and nrlib.dominant: inputs that used to fail deep inside torch
# (or return a wrong-sized / meaningless result) before they were validated
# =============================================================================
def _plain_net():
    """A model without nrlib's layers()/conv_layers()."""
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))


def _fc1_ext(c, **kw):
    return toggle.extrema(c.m, c.x, ["fc1"], **kw)


def _fc1_values(c):
    return toggle.neuron_values(c.m, c.x, "fc1")


_Z5 = torch.zeros(5)

HARDENED_CASES = [
    # --- toggle: layers, sizes, images -----------------------------------------
    case("extrema-layers-none-plain-model", lambda c, t: toggle.extrema(_plain_net(), c.x), r"^layers=None"),
    case("rank-neurons-layers-none-plain-model", lambda c, t: toggle.rank_neurons(_plain_net(), c.x),
         r"^layers=None"),
    case("layer-table-layers-none-plain-model", lambda c, t: toggle.layer_table(_plain_net()), r"^layers=None"),
    case("extrema-layers-empty", lambda c, t: toggle.extrema(c.m, c.x, []), r"^layers=\[\]"),
    case("fit-thresholds-layers-empty", lambda c, t: toggle.fit_thresholds(c.m, c.x, [], progress=False),
         r"^layers=\[\]"),
    case("fit-thresholds-progress-str", lambda c, t: _fc1_thresholds(c, progress="yes"), r"^progress='yes'"),
    case("extrema-sizes-empty", lambda c, t: _fc1_ext(c, sizes=[]), r"^sizes=\[\] holds 0"),
    case("extrema-sizes-float", lambda c, t: _fc1_ext(c, sizes=[2.5]), r"^sizes\[0\]=2.5 must be an integer"),
    case("extrema-sizes-int", lambda c, t: _fc1_ext(c, sizes=4), r"^sizes=4 must be a list"),
    case("neuron-values-x-nan", lambda c, t: toggle.neuron_values(c.m, with_nan(c.x), "fc1"), r"^x holds NaN"),
    case("neuron-values-x-rank", lambda c, t: toggle.neuron_values(c.m, c.x[0], "fc1"), r"^x must be a batch"),
    # --- toggle: thresholds, extrema and their consistency ------------------------
    case("compare-reference-layer", lambda c, t: toggle.compare_with_reference(_fc1_values(c), _fc1_thresholds(c), "conv1"),
         r"^layer='conv1' is not a layer of th"),
    case("compare-reference-values-width", lambda c, t: toggle.compare_with_reference(torch.rand(4, 5), _fc1_thresholds(c),
                                                                              "fc1"), r"^values must be.*32 neurons"),
    case("compare-reference-th-dict", lambda c, t: toggle.compare_with_reference(_fc1_values(c), {"fc1": 0}, "fc1"),
         r"^th must be a Thresholds"),
    case("merge-extrema-list", lambda c, t: toggle.merge_extrema([_fc1_ext(c), _fc1_ext(c)]),
         r"^parts\[0\] must be a non-empty Extrema"),
    case("merge-extrema-sizes-dict", lambda c, t: toggle.merge_extrema(_fc1_ext(c, sizes=[2, 4])),
         r"^parts\[0\]\[2\] must be a pair.*sizes"),
    case("merge-extrema-widths", lambda c, t: toggle.merge_extrema({"fc1": (torch.zeros(32), torch.ones(32))},
                                                                   {"fc1": (torch.zeros(16), torch.ones(16))}),
         r"^parts\[1\]\['fc1'\] holds \(16,\)"),
    case("toggled-low-broadcasts", lambda c, t: toggle.toggled(_Z5, _Z5 + 1, torch.zeros(5, 1)),
         r"^low is shaped \(5, 1\)"),
    case("toggled-mx-shape", lambda c, t: toggle.toggled(_Z5, torch.ones(4), _Z5), r"^mn is shaped \(5,\) but mx"),
    case("toggled-low-none", lambda c, t: toggle.toggled(_Z5, _Z5, None), r"^low=None must be a number"),
    case("toggle-activity-th-dict", lambda c, t: toggle.toggle_activity(_fc1_ext(c), {"fc1": 0.0}),
         r"^th must be a Thresholds"),
    case("toggle-activity-other-layer", lambda c, t: toggle.toggle_activity(toggle.extrema(c.m, c.x, ["conv1"]),
                                                                            _fc1_thresholds(c)),
         r"^ext lacks the layers \['fc1'\]"),
    case("toggle-activity-other-width", lambda c, t: toggle.toggle_activity({"fc1": (torch.zeros(16), torch.ones(16))},
                                                                            _fc1_thresholds(c)),
         r"^ext\['fc1'\] holds \(16,\) neurons.*\(32,\)"),
    case("toggle-activity-sizes-dict", lambda c, t: toggle.toggle_activity(_fc1_ext(c, sizes=[2, 4]),
                                                                           _fc1_thresholds(c)), r"^ext\[2\]"),
    case("datasets-layer-keys", lambda c, t: toggle.Datasets(_fc1_ext(c)), r"^ext keys must be \(arm, tag\)"),
    case("ranking-missing-scores", lambda c, t: toggle.Ranking(["fc1"], {}, {}), r"^score must be a dict"),
    # --- toggle: the experiments check everything before the first attack ----------
    case("size-sweep-sizes-empty", lambda c, t: toggle.size_sweep(c.m, c.x, c.y, FGSM(0.1), [], layers=["fc1"]),
         r"^sizes=\[\]"),
    case("size-sweep-attack-str", lambda c, t: toggle.size_sweep(c.m, c.x, c.y, "fgsm", [2], layers=["fc1"]),
         r"^attack='fgsm' must be an attack"),
    case("size-sweep-x-rank", lambda c, t: toggle.size_sweep(c.m, c.x[0], c.y, FGSM(0.1), [2], layers=["fc1"]),
         r"^x must be a batch"),
    case("equal-size-attack-none", lambda c, t: toggle.equal_size(c.m, c.x, c.y, None, 2, 1, layers=["fc1"]),
         r"^attack=None"),
    case("eps-sweep-grid-number", lambda c, t: toggle.eps_sweep(c.m, c.x, c.y, FGSM(0.1), 0.1, layers=["fc1"]),
         r"^eps_grid=0.1 must be a list"),
    case("eps-sweep-grid-str", lambda c, t: toggle.eps_sweep(c.m, c.x, c.y, FGSM(0.1), ["8/255"], layers=["fc1"]),
         r"^eps_grid\[0\]='8/255' must be a number"),
    case("eps-sweep-grid-empty", lambda c, t: toggle.eps_sweep(c.m, c.x, c.y, FGSM(0.1), [], layers=["fc1"]),
         r"^eps_grid=\[\] holds 0"),
    # --- dominant ----------------------------------------------------------------
    case("filter-diff-dense-layer", lambda c, t: dominant.filter_differences(c.m, ["fc1"], c.x, c.x),
         r"^layers names 'fc1'.*conv outputs"),
    case("filter-diff-x-channels", lambda c, t: dominant.filter_differences(c.m, ["conv1"], c.x.expand(4, 3, 28, 28),
                                                                            c.x.expand(4, 3, 28, 28)),
         r"^x holds images shaped 3×28×28"),
    case("top-filters-no-filters", lambda c, t: dominant.top_filters(torch.rand(4, 0), 0.1), r"^diff must hold"),
    case("top-filters-nan", lambda c, t: dominant.top_filters(torch.full((2, 4), float("nan")), 0.1),
         r"^diff holds NaN"),
    case("frequency-index-too-large", lambda c, t: dominant.frequency(torch.tensor([[0, 16]]), 16),
         r"^top_idx=\[16\] are outside \[0, 15\]"),
    case("frequency-channels-0", lambda c, t: dominant.frequency(torch.tensor([[0]]), 0), r"^channels=0"),
    case("frequency-float", lambda c, t: dominant.frequency(torch.tensor([[0.5]]), 4),
         r"^top_idx must hold integer"),
    case("frequency-list", lambda c, t: dominant.frequency([[0, 1]], 4), r"^top_idx must be a tensor"),
    case("dominant-filters-empty", lambda c, t: dominant.dominant_filters(torch.ones(0), 0.1), r"^freq must hold"),
    case("dominant-filters-nan", lambda c, t: dominant.dominant_filters(torch.tensor([1.0, float("nan")]), 0.5),
         r"^freq must hold a finite count"),
    case("compared-layers-empty", lambda c, t: dominant.compared_layers(c.m, []), r"^convs=\[\] names no conv"),
    case("compared-layers-no-convs", lambda c, t: dominant.compared_layers(_plain_net()),
         r"^convs=None names no conv layer.*no conv layers"),
    case("conv-paths-str", lambda c, t: dominant.conv_paths("shallow"), r"^model must be a torch.nn.Module"),
    case("class-freq-source-range", lambda c, t: dominant.class_frequencies(torch.rand(4, 16), c.y + 10),
         r"^source holds classes"),
    case("class-freq-source-float", lambda c, t: dominant.class_frequencies(torch.rand(4, 16), c.y.float()),
         r"^source must be a 1-D integer"),
    case("class-freq-classes-0", lambda c, t: dominant.class_frequencies(torch.rand(4, 16), c.y, num_classes=0),
         r"^num_classes=0"),
    case("dominant-freq-source-length", lambda c, t: dominant.dominant_frequencies(c.m, c.x, c.x, c.y[:2]),
         r"^source has 2 labels"),
    case("dominant-sets-list", lambda c, t: dominant.dominant_sets([torch.ones(16)]), r"^freq must be a dict"),
    case("dominant-sets-value-list", lambda c, t: dominant.dominant_sets({"conv1": [1, 2]}), r"^freq\['conv1'\]"),
    case("class-stability-one-class", lambda c, t: dominant.class_stability(torch.ones(1, 16)),
         r"^freq must be.*at least 2 classes"),
    case("class-stability-list", lambda c, t: dominant.class_stability([[1, 2], [2, 1]]), r"^freq must be"),
    case("random-stability-n-sets-1", lambda c, t: dominant.random_stability(8, 2, n_sets=1), r"^n_sets=1"),
    case("split-model-list", lambda c, t: dominant.split_model(c.m, ["conv1"]), r"^dominant must be a dict"),
    case("merge-split-str", lambda c, t: dominant.merge_split("model"), r"^model must be a torch.nn.Module"),
    case("trainable-share-no-params", lambda c, t: dominant.trainable_share(torch.nn.ReLU()),
         r"^model \(a ReLU\) has no parameters"),
    case("finetune-x-adv-length", lambda c, t: dominant.finetune(c.m, c.x, c.y, c.x[:2]), r"^x_adv is shaped"),
    case("finetune-x-val-adv-alone", lambda c, t: dominant.finetune(c.m, c.x, c.y, c.x, x_val_adv=c.x),
         r"^x_val_adv needs x_val and y_val"),
    case("finetune-train-dense-str", lambda c, t: dominant.finetune(c.m, c.x, c.y, c.x, train_dense="yes"),
         r"^train_dense='yes'"),
    case("finetune-evaluate-y-test", lambda c, t: dominant.finetune_and_evaluate(
        c.m, c.x, c.y, c.x, x_test=c.x, y_test=c.y[:2], x_test_adv=c.x), r"^y_test has 2 labels"),
    case("finetune-evaluate-x-test-adv", lambda c, t: dominant.finetune_and_evaluate(
        c.m, c.x, c.y, c.x, x_test=c.x, y_test=c.y, x_test_adv=c.x[:2]), r"^x_test_adv is shaped"),
    case("epoch-seconds-fit-kw", lambda c, t: dominant.epoch_seconds(c.m, c.x, c.y, {"conv1": [0]}, max_epochs=2),
         r"^fit_kw=\['max_epochs'\]"),
]


@pytest.mark.parametrize("fn,match,exc", HARDENED_CASES)
def test_bad_toggle_dominant_input_fails_early(c, data_in_tmp, fn, match, exc):
    check_case(c, data_in_tmp, fn, match, exc)


def test_hardened_functions_keep_their_good_inputs(c):
    """What the new checks must not refuse: dense layers as neurons, one conv
    name as a string, shares as frequencies, tensors as size lists, numbers as
    thresholds."""
    row, = toggle.layer_table(c.m, ["fc1"])
    assert (row["c"], row["h"], row["w"], row["neurons"]) == (32, 1, 1, 32)
    top = toggle.rank_neurons(c.m, c.x, ["fc1"]).top(3)
    assert len(top) == 3 and all(r["h"] == r["w"] == 0 and 0 <= r["c"] < 32 for r in top)
    assert dominant.compared_layers(c.m, "conv1") == {"conv1": "relu1"}
    assert dominant.dominant_filters(torch.tensor([0.1, 0.5, 0.2]), 0.5).tolist() == [1, 2]   # not truncated to 0s
    assert dominant.dominant_filters(torch.tensor([4, 9, 9, 9, 0]), 0.4).tolist() == [1, 2]
    ext = toggle.extrema(c.m, c.x, ["fc1"], sizes=torch.tensor([4, 2]))
    assert list(ext) == [2, 4]
    assert toggle.toggled(_Z5, _Z5 + 1, 0.5).all()
    th = _fc1_thresholds(c)
    assert set(toggle.toggle_activity(ext[4], th)) == {"fc1", "total"}
    assert utils.check_list("sizes", np.array([3, 1])) == [3, 1]
    assert dominant.frequency(torch.tensor([[0, 2], [2, 1]]), 4).tolist() == [1, 1, 2, 0]
