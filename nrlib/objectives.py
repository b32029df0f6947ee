"""Training objectives: what ``nrlib.train.fit`` minimises, configured once and then called, as
the attacks are (``attacks.PGD(8/255)``).

An ``Objective`` is cross-entropy on the clean batch, on its adversarial copy, or on both (the
``adversary`` and the ``mix`` belong to the objective), plus weighted ``terms``:

* ``Objective()`` — standard training;
* ``Objective(adversary=PGD(8/255, steps=7, seed=None), mix="adv")`` — PGD adversarial training
  (Madry et al. 2018); ``mix="benign+adv"`` trains each clean batch together with its
  adversarial copy (Goodfellow et al. 2015; Zhang et al. 2021's PAT);
* ``terms=[LogitPairing(0.5)]`` — adversarial logit pairing (Kannan et al. 2018; Zhang et al.
  2021 §V-A's ALP);
* ``terms=[SensitivityPenalty()]`` — Suri & Evans 2020's sensitivity regulariser (eq. 5);
* ``terms=[SNSPenalty(("relu8", …), sensitive)]`` — Sensitive Neuron Stabilizing, λ·L_sns
  (Zhang et al. 2021, eqs. 12–13).

Each term declares what it needs from the forward pass — ``needs_features`` (the logits layer's
inputs and weight), ``layers`` (named layers' outputs, with gradients), ``paired`` (the clean and
the adversarial half of a ``mix="benign+adv"`` batch) — and ``fit`` captures each thing once per
batch for all the terms. A reader's own term is a small class::

    from nrlib.objectives import Objective, Term

    class LogitNorm(Term):
        '''λ times the mean squared norm of the logits (a confidence penalty).'''
        def __init__(self, weight=1e-3):
            self.weight = weight
        def __call__(self, out):                    # out: a Forward
            return self.weight * out.logits.pow(2).sum(1).mean()

    train.fit(model, x, y, objective=Objective(terms=[LogitNorm()]))
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from . import hooks
from .precision import autocast
from .regularizers import sensitivity_loss, sns_loss
from .utils import check_callable, check_choice, check_fraction, check_number

MIXES = ("clean", "adv", "benign+adv")


@dataclass
class Forward:
    """What one training batch's forward pass gives the terms: ``logits`` (float32 [B, C], with
    gradients), the labels ``y``, and where a term asked for them, ``features`` (the logits
    layer's inputs, float32 [B, F]) with that layer's ``weight`` (float32 [C, F]), and ``acts``
    (layer name → output). ``half``: for a ``mix="benign+adv"`` batch, the first ``half`` rows
    are the clean images and the rest their adversarial copies."""

    logits: torch.Tensor
    y: torch.Tensor
    features: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    acts: dict = field(default_factory=dict)
    half: int | None = None

    def pair(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``t``'s clean half and adversarial half (a paired term's view of a mixed batch)."""
        return t[:self.half], t[self.half:]


class Term:
    """One weighted term of an objective: ``term(out: Forward) -> scalar tensor``, added to the
    cross-entropy. Subclasses set what they need: ``needs_features`` (``out.features`` and
    ``out.weight``), ``layers`` (``out.acts``), ``paired`` (``out.half``: needs
    ``mix="benign+adv"``)."""

    needs_features: bool = False
    layers: tuple = ()
    paired: bool = False

    def __call__(self, out: Forward) -> torch.Tensor:      # pragma: no cover - the interface
        raise NotImplementedError


@dataclass(frozen=True)
class LogitPairing(Term):
    """Adversarial logit pairing (Kannan et al. 2018; Zhang et al. 2021 §V-A's ALP, λ = 0.5,
    "implemented with ℓ2 loss"): ``weight`` times the squared difference between each clean
    image's logits and its adversarial copy's, averaged over the logits and the batch
    (``reduce="mean"``: Kannan et al.'s mean-squared-error form) or summed over the logits and
    averaged over the batch (``reduce="sum"``: the squared L2 distance, C times larger for C
    classes)."""

    weight: float = 0.5
    reduce: str = "mean"
    paired = True

    def __post_init__(self):
        check_number("weight", self.weight, low=0.0)
        check_choice("reduce", self.reduce, ("mean", "sum"))

    def __call__(self, out: Forward) -> torch.Tensor:
        clean, adv = out.pair(out.logits)
        d = (clean - adv).pow(2)
        return self.weight * (d.mean(1) if self.reduce == "mean" else d.sum(1)).mean()


@dataclass(frozen=True)
class SensitivityPenalty(Term):
    """Suri & Evans 2020's sensitivity regulariser (eq. 5), δ1·R1 + δ2·R2 over the logits
    layer's inputs, its weight and the labels (``regularizers.sensitivity_loss``; the public
    code's δ1 = 10, δ2 = 100, top-16)."""

    top_k: int = 16
    delta1: float = 10.0
    delta2: float = 100.0
    needs_features = True

    def __call__(self, out: Forward) -> torch.Tensor:
        return sensitivity_loss(out.features, out.weight, out.y, top_k=self.top_k, delta1=self.delta1,
                                delta2=self.delta2)


@dataclass(frozen=True)
class SNSPenalty(Term):
    """Sensitive Neuron Stabilizing (Zhang et al. 2021, eq. 13): ``weight``·L_sns (eq. 12,
    ``regularizers.sns_loss``) over ``layers`` — λ = 5 on conv8–conv13 of VGG-16 in the paper —
    with ``sensitive`` (layer → channels; a dict ``sns_finetune`` may refill between epochs) or
    every neuron (None)."""

    layers: tuple
    sensitive: dict | None = None
    weight: float = 5.0
    paired = True

    def __post_init__(self):
        if not self.layers or isinstance(self.layers, str):
            raise ValueError(f"layers={self.layers!r}: give a tuple of at least one layer name")
        check_number("weight", self.weight, low=0.0)

    def __call__(self, out: Forward) -> torch.Tensor:
        clean, adv = {}, {}
        for n in self.layers:
            clean[n], adv[n] = out.pair(out.acts[n])
        return self.weight * sns_loss(clean, adv, self.sensitive)


@dataclass(frozen=True)
class Objective:
    """What ``fit`` minimises: cross-entropy (with ``label_smoothing``) on the clean batch
    (``mix="clean"``), on ``adversary(model, x, y)`` alone (``"adv"``) or on both, each clean
    batch with its adversarial copy (``"benign+adv"``), plus the sum of ``terms`` in their order.
    ``adversary`` is any attack of ``nrlib.attacks`` (or a callable of the same shape)."""

    adversary: Callable | None = None
    mix: str = "clean"
    terms: tuple = ()
    label_smoothing: float = 0.0

    def __post_init__(self):
        check_choice("mix", self.mix, MIXES)
        if (self.mix == "clean") != (self.adversary is None):
            raise ValueError(f"mix={self.mix!r} needs adversary={'None' if self.mix == 'clean' else 'an attack'}")
        if self.adversary is not None:
            check_callable("adversary", self.adversary)
        check_fraction("label_smoothing", self.label_smoothing)
        if isinstance(self.terms, Term) or not isinstance(self.terms, (list, tuple)):
            raise ValueError(f"terms={self.terms!r} must be a list of objective terms (e.g. [LogitPairing(0.5)])")
        object.__setattr__(self, "terms", tuple(self.terms))
        for i, t in enumerate(self.terms):
            if not isinstance(t, Term):
                raise ValueError(f"terms[{i}]={t!r} must be an objective term (a subclass of nrlib.objectives.Term)")
            if t.paired and self.mix != "benign+adv":
                raise ValueError(f"terms[{i}]={type(t).__name__} pairs each clean image with its adversarial "
                                 f"copy: it needs mix='benign+adv', got mix={self.mix!r}")

    def bind(self, model) -> Callable:
        """``step(xb, yb) -> (loss, logits, labels)`` for ``model``: the batch mixed with its
        adversarial copy as ``mix`` says, one forward pass under autocast that captures what the
        terms need (checked against the model's layers now, not at the first batch)."""
        layers = list(dict.fromkeys(n for t in self.terms for n in t.layers))
        if layers:
            layers = hooks.layer_names(model, layers, name="terms' layers")
        head = hooks.logits_layer(model)[1] if any(t.needs_features for t in self.terms) else None

        def step(xb: torch.Tensor, yb: torch.Tensor):
            half = None
            if self.adversary is not None:
                xa = self.adversary(model, xb, yb)
                if self.mix == "adv":
                    xb = xa
                else:
                    half, xb, yb = len(yb), torch.cat([xb, xa]), torch.cat([yb, yb])
            with autocast(xb.device), \
                    (hooks.features_of(model, head) if head is not None else contextlib.nullcontext({})) as feats, \
                    (hooks.capture(model, layers, detach=False) if layers else contextlib.nullcontext({})) as acts:
                logits = model(xb)
            lf = logits.float()
            loss = F.cross_entropy(lf, yb, label_smoothing=self.label_smoothing)
            if self.terms:
                out = Forward(lf, yb, half=half, acts={n: a[0] for n, a in acts.items()},
                              features=feats["z"].float().flatten(1) if head is not None else None,
                              weight=head.weight.float() if head is not None else None)
                for t in self.terms:
                    loss = loss + t(out)
            return loss, logits, yb

        return step

    def describe(self) -> str:
        """The objective in words, for tables and progress bars."""
        base = "CE" if self.adversary is None else \
            f"CE on {'adversarial' if self.mix == 'adv' else 'clean + adversarial'} ({_name(self.adversary)})"
        return " + ".join([base, *(type(t).__name__ for t in self.terms)])


def _name(f) -> str:
    d = getattr(f, "describe", None)
    return d() if callable(d) else getattr(f, "__name__", type(f).__name__)


__all__ = ["MIXES", "Forward", "Term", "LogitPairing", "SensitivityPenalty", "SNSPenalty", "Objective"]
