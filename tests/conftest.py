"""Shared fixtures for the nrlib unit tests.

The unit tests must run in well under three minutes on a 2-core CPU, so the
only training is one session-scoped fixture: the ``shallow`` MNIST CNN of
Karnine et al. (2024) fitted for one epoch on 4,000 training images (a few
seconds), reused — through deep copies where a test could alter it — by the
attack, hook, metric and dominant-filter tests.
"""
from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from nrlib import data, metrics, models, train  # noqa: E402

# One intra-op thread unless the caller chose otherwise: the models here are tiny,
# so a second thread buys nothing, and on a 2-core box where anything else is busy
# (a notebook running beside the tests) OpenMP's spinning threads stall — measured
# 151 s for the unit tests with two threads vs 21 s with one, under the same load.
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(1)

# One epoch of Adam (lr 3e-3, batch 32) on 4,000 images gives 94.0% on the
# 1,000-image test subset (seeded); test_train asserts > 90%. Keras-style RMSprop
# at batch 128 on 3,000 images reaches only ~74% in one epoch.


@pytest.fixture(scope="session")
def mnist_train_small():
    """4,000 class-stratified MNIST training images (pixels in [0, 1])."""
    return data.load("mnist", "train", n=4000, seed=0)


@pytest.fixture(scope="session")
def mnist_test_small():
    """1,000 class-stratified MNIST test images."""
    return data.load("mnist", "test", n=1000, seed=0)


@pytest.fixture(scope="session")
def _trained_shallow_session(mnist_train_small, mnist_test_small):
    x, y = mnist_train_small
    torch.manual_seed(0)  # initial weights and dropout masks
    model = models.build("shallow", "mnist")
    hist = train.fit(model, x, y, optimizer="adam", lr=3e-3, batch_size=32, max_epochs=1,
                     patience=None, seed=0, progress=False)
    xt, yt = mnist_test_small
    acc = metrics.accuracy(model, xt, yt)
    return model.eval(), hist, acc


@pytest.fixture
def trained_shallow(_trained_shallow_session):
    """A private copy of the trained shallow CNN (eval mode) for one test."""
    return copy.deepcopy(_trained_shallow_session[0])


@pytest.fixture(scope="session")
def trained_shallow_fit(_trained_shallow_session):
    """``(history, test accuracy)`` of the session model's training run."""
    return _trained_shallow_session[1], _trained_shallow_session[2]


@pytest.fixture
def batch(mnist_test_small):
    """64 test images and labels, the batch most attack/hook tests use."""
    x, y = mnist_test_small
    return x[:64].clone(), y[:64].clone()

