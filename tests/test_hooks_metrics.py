"""nrlib.hooks (capture, kernel dropout, β-scaling) and nrlib.metrics."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nrlib import attacks, hooks, metrics, models
from nrlib.attacks import fgsm
from nrlib.hooks import capture, scale_channels, zero_channels


def _no_hooks_left(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def _out(model, x):
    with torch.no_grad():
        return model(x)


# ---------------------------------------------------------------------------
# hooks
# ---------------------------------------------------------------------------
def test_capture_records_named_layers_and_removes_hooks(trained_shallow, batch):
    m = trained_shallow
    x, _ = batch
    with capture(m, ["conv1", "relu2", "fc1"]) as acts:
        _out(m, x)
        _out(m, x[:5])
    assert [a.shape for a in acts["conv1"]] == [(64, 16, 28, 28), (5, 16, 28, 28)]
    assert acts["relu2"][0].shape == (64, 32, 14, 14) and acts["fc1"][0].shape == (64, 32)
    assert float(acts["relu2"][0].min()) >= 0.0  # a ReLU's output
    # the recorded tensor is the layer's output: conv1 of the normalised input
    assert torch.allclose(acts["conv1"][1], m.conv1(m.normalize(x[:5])), atol=1e-5)
    assert not acts["conv1"][0].requires_grad
    assert _no_hooks_left(m)
    _out(m, x)
    assert len(acts["conv1"]) == 2, "nothing is recorded after the block"


def test_capture_single_name_and_removal_on_error(trained_shallow, batch):
    m = trained_shallow
    with pytest.raises(RuntimeError, match="boom"):
        with capture(m, "conv2") as acts:
            _out(m, batch[0][:2])
            raise RuntimeError("boom")
    assert list(acts) == ["conv2"] and acts["conv2"][0].shape == (2, 32, 14, 14)
    assert _no_hooks_left(m)


def test_unknown_layer_is_named(trained_shallow):
    with pytest.raises(ValueError, match="conv9"):
        with capture(trained_shallow, "conv9"):
            pass
    assert hooks.get_layer(trained_shallow, "fc2") is trained_shallow.fc2


def test_zero_channels_zeroes_exactly_those_channels(trained_shallow, batch):
    m = trained_shallow
    x, _ = batch
    chans = [0, 3, 7]
    with capture(m, "conv1") as clean:
        ref = _out(m, x)
    with zero_channels(m, "conv1", chans):
        with capture(m, "conv1") as acts:  # registered later: sees the zeroed output
            dropped = _out(m, x)
    a, c = acts["conv1"][0], clean["conv1"][0]
    assert torch.all(a[:, chans] == 0)
    keep = [i for i in range(16) if i not in chans]
    assert torch.equal(a[:, keep], c[:, keep])
    assert c[:, chans].abs().sum() > 0, "those channels were not zero to begin with"
    assert not torch.allclose(dropped, ref), "dropping kernels changes the logits"
    assert torch.equal(_out(m, x), ref), "the model is restored after the block"
    assert _no_hooks_left(m)


def test_scale_channels(trained_shallow, batch):
    m = trained_shallow
    x, _ = batch
    ref = _out(m, x)
    with scale_channels(m, "conv2", [1, 2, 5], 1.0):
        assert torch.equal(_out(m, x), ref)  # β = 1 is the identity
    with capture(m, "conv2") as clean:
        _out(m, x)
    with scale_channels(m, "conv2", [1, 2, 5], 0.5):
        with capture(m, "conv2") as half:
            _out(m, x)
    assert torch.allclose(half["conv2"][0][:, [1, 2, 5]], 0.5 * clean["conv2"][0][:, [1, 2, 5]])
    assert torch.equal(half["conv2"][0][:, 0], clean["conv2"][0][:, 0])
    assert torch.equal(_out(m, x), ref) and _no_hooks_left(m)


@pytest.mark.parametrize("chans", [[16], [-1], [0, 99]])
def test_out_of_range_channels_raise(trained_shallow, batch, chans):
    m = trained_shallow
    with pytest.raises(ValueError, match="channels"):
        with zero_channels(m, "conv1", chans):
            _out(m, batch[0][:2])
    assert _no_hooks_left(m)


def test_scale_channels_checks_beta(trained_shallow):
    with pytest.raises(ValueError, match="beta"):
        with scale_channels(trained_shallow, "conv1", [0], float("nan")):
            pass


# ---------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------
def test_accuracy_of_own_predictions_is_100(trained_shallow, batch):
    x, _ = batch
    pred = metrics.predict(trained_shallow, x)
    assert pred.shape == (64,) and pred.dtype == torch.int64
    assert metrics.accuracy(trained_shallow, x, pred) == 100.0
    assert metrics.accuracy(trained_shallow, x, (pred + 1) % 10) == 0.0
    half = pred.clone()
    half[:16] = (half[:16] + 1) % 10
    assert metrics.accuracy(trained_shallow, x, half) == pytest.approx(75.0)
    # batching does not change the predictions
    assert torch.equal(metrics.predict(trained_shallow, x, batch_size=5), pred)


def test_accuracy_checks_labels(trained_shallow, batch):
    x, y = batch
    with pytest.raises(ValueError, match=r"^y "):
        metrics.accuracy(trained_shallow, x, y[:10])


def test_robust_and_targeted_metrics(trained_shallow, batch):
    x, y = batch
    x_adv = fgsm(trained_shallow, x, y, 0.2)
    assert metrics.robust_accuracy(trained_shallow, x, y, attacks.FGSM(0.2)) == metrics.accuracy(trained_shallow, x_adv, y)
    t = (y + 3) % 10
    xt = fgsm(trained_shallow, x, t, 0.2, targeted=True)
    assert metrics.targeted_success(trained_shallow, xt, t) == metrics.accuracy(trained_shallow, xt, t)


def test_success_matrix_hand_made():
    source = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    target = torch.tensor([1, 1, 0, 2, 0, 0, 0])
    pred = torch.tensor([1, 0, 0, 1, 0, 2, 0])
    m = metrics.success_matrix(pred, source, target, num_classes=3)
    assert m.shape == (3, 3)
    assert m[0, 1] == 50.0 and m[1, 0] == 100.0 and m[1, 2] == 0.0
    assert m[2, 0] == pytest.approx(200.0 / 3)
    assert all(math.isnan(m[i, i]) for i in range(3))
    assert math.isnan(m[0, 2]) and math.isnan(m[2, 1])  # no pairs there
    assert np.isfinite(m).sum() == 4


def test_jaccard_of_known_sets():
    assert metrics.jaccard({1, 2, 3}, {2, 3, 4}) == 0.5
    assert metrics.jaccard([1, 2], [3]) == 0.0
    assert metrics.jaccard(torch.tensor([5, 1]), np.array([1, 5])) == 1.0
    assert metrics.jaccard([], []) == 1.0
    assert metrics.jaccard([1, 1, 2], [2]) == 0.5  # sets, not multisets
    assert metrics.mean_pairwise_jaccard([{1, 2}, {2, 3}, {1, 2}]) == pytest.approx((1 / 3 + 1 + 1 / 3) / 3)


def test_success_over_all_images_counts_the_misclassified_as_successes():
    correct = [True, False, True, False, True]
    want = [True, True, False, True, False]
    assert metrics.success_over_all(correct, [True, False, False]).tolist() == want   # per correct image
    assert metrics.success_over_all(correct, [1, 0, 0, 1, 0]).tolist() == want   # per image: 0/1 read as bools
    with pytest.raises(ValueError, match="fooled has 4 values"):
        metrics.success_over_all(correct, [True] * 4)
    with pytest.raises(ValueError, match="clean_correct must be a 1-D sequence of per-image outcomes"):
        metrics.success_over_all([[True]], [True])


def test_success_over_all_images_is_100_minus_robust_accuracy_on_a_model_that_errs():
    """Suri & Evans's Table 1 PGD rates: over every image, misclassified ones counted as successes —
    100 − robust accuracy; the rate over the correct images alone is lower by the misclassified
    share's part."""
    torch.manual_seed(0)
    m = models.build("vgg19", "cifar10", width=4).eval()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(64, 3, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g)
    ok = metrics.hits(m, x, y)
    assert 0 < int(ok.sum()) < len(y), "a model that gets some images wrong"
    still = metrics.robust_hits(m, x, y, attacks.PGD(8 / 255, steps=5))
    s = metrics.success_over_all(ok, ~still[ok])
    assert 100 * s.mean() == pytest.approx(100 - 100 * still.float().mean().item())
    assert s.mean() >= (~still[ok]).float().mean().item()
