"""White-box evasion attacks, configured once and called the same way everywhere.

An attack is an object built from its settings and called on a model and a
batch — torchattacks' uniformity, without its state::

    atk = attacks.PGD(8 / 255, steps=10)          # α defaults to 2.5·ε/steps
    x_adv = atk(model, x, y)                       # pixels in, pixels out
    atk.replace(eps=4 / 255, targeted=True)        # a variant, the original unchanged

The same object drives a chapter's sweep, adversarial training
(``train.fit(..., adversary=atk)``, ``dominant.finetune``), evaluation
(``metrics.robust_accuracy(model, x, y, atk)``) and the benchmarks. The
classes are thin, frozen wrappers over the functional core ``fgsm`` and
``pgd`` below, which stay the tested kernels.

Pixels in, pixels out: ``x`` and the result are images in [0, 1] (N×C×H×W),
ε is in the same pixel units, and every output stays inside both the ε-ball
around ``x`` and the [0, 1] box. During an attack the model is in eval mode,
its weights are not updated and their gradients are not computed (only the
gradient with respect to the input is, also when the caller is inside
``torch.no_grad()``); the model's state is restored after. With
``targeted=True`` ``y`` holds the target classes and each step descends the
loss toward them. Inputs are processed in chunks of ``batch_size``; on CUDA
the forward and backward passes run under bf16 autocast unless ``amp=False``
(``nrlib.precision``).

* FGSM — Goodfellow, Shlens & Szegedy 2015, "Explaining and harnessing
  adversarial examples": x' = clip(x + ε·sign(∇ₓ J(θ, x, y))).
* PGD — Madry et al. 2018, "Towards deep learning models resistant to
  adversarial attacks", eq. (2): x^{t+1} = Π_{x+S}(x^t + α·sign(∇ₓ J)) for
  L∞, and the normalised-gradient step with projection onto the L2 ball for L2.
"""
from __future__ import annotations

import dataclasses
from dataclasses import KW_ONLY, dataclass

import torch
import torch.nn.functional as F

from .models import frozen
from .precision import autocast
from .utils import (batches, check_bool, check_choice, check_eps, check_input, check_int, check_labels,
                    check_number, num_classes)

NORMS = ("linf", "l2")


def _input_grad(model, x, y, targeted: bool, amp) -> torch.Tensor:
    """∇ₓ of the summed cross-entropy (summed so each sample's gradient does not
    depend on the batch it sits in); sign flipped for targeted attacks.
    Gradients are enabled here, so an attack also works inside ``torch.no_grad()``."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        with autocast(x.device, amp):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, x)
    return -g if targeted else g


def _check_settings(eps, norm, targeted, batch_size, amp) -> float:
    """The settings every attack has (functions and classes alike); returns ε."""
    check_choice("norm", norm, NORMS)
    eps = check_eps(eps) if norm == "linf" else check_number("eps", eps, low=0.0)
    check_bool("targeted", targeted)
    check_int("batch_size", batch_size, low=1)
    check_bool("amp", amp, allow_none=True)
    return eps


def _check_pgd_settings(alpha, steps, restarts, seed, random_start, *, alpha_optional=False):
    steps = check_int("steps", steps, low=1)
    if alpha is None and not alpha_optional:
        raise ValueError("alpha=None: pgd needs a step size alpha > 0 (attacks.PGD picks 2.5·eps/steps)")
    if alpha is not None:
        check_number("alpha", alpha, low=0.0, low_open=True)
    check_int("restarts", restarts, low=1)
    if seed is not None:
        check_int("seed", seed, low=0)
    check_bool("random_start", random_start)


def _validate(model, x, y, eps, norm="linf", targeted=False, batch_size=4096, amp=None):
    check_input(model, x)
    eps = _check_settings(eps, norm, targeted, batch_size, amp)
    y = check_labels(y, x.shape[0], num_classes(model), name="target" if targeted else "y")
    return eps, y.to(x.device)


def fgsm(model, x, y, eps, *, targeted: bool = False, batch_size: int = 4096, amp: bool | None = None):
    """Fast Gradient Sign Method (Goodfellow et al. 2015): one step of size ε
    along the sign of the input gradient, clipped to [0, 1]."""
    eps, y = _validate(model, x, y, eps, targeted=targeted, batch_size=batch_size, amp=amp)
    if eps == 0:
        return x.clone()
    out = []
    with frozen(model):
        for xb, yb in batches(x, y, batch_size=batch_size):
            g = _input_grad(model, xb, yb, targeted, amp)
            out.append((xb + eps * g.sign()).clamp_(0.0, 1.0))
    return torch.cat(out)


def _l2_normalise(v: torch.Tensor) -> torch.Tensor:
    n = v.flatten(1).norm(dim=1).clamp_min(1e-12)
    return v / n.view(-1, *([1] * (v.dim() - 1)))


def _project(delta, eps, norm):
    if norm == "linf":
        return delta.clamp(-eps, eps)
    n = delta.flatten(1).norm(dim=1).view(-1, *([1] * (delta.dim() - 1)))
    return delta * torch.clamp(eps / n.clamp_min(1e-12), max=1.0)


def _random_start(x, eps, norm, generator):
    """L∞: uniform in the ε-cube. L2: a uniformly random direction scaled by a
    radius drawn uniformly from [0, ε] — not uniform in the ball (which would
    need radius ε·U^{1/d}); the same start as torchattacks' PGDL2."""
    if norm == "linf":
        u = torch.rand(x.shape, generator=generator, device="cpu").to(x.device, x.dtype)
        return (2 * u - 1) * eps
    d = _l2_normalise(torch.randn(x.shape, generator=generator, device="cpu").to(x.device, x.dtype))
    r = torch.rand(x.shape[0], generator=generator, device="cpu").to(x.device, x.dtype)
    return d * (r * eps).view(-1, *([1] * (x.dim() - 1)))


def _pgd_once(model, x, y, eps, alpha, steps, norm, delta0, targeted, amp):
    x_adv = (x + delta0).clamp(0.0, 1.0)
    for _ in range(steps):
        g = _input_grad(model, x_adv, y, targeted, amp)
        step = g.sign() if norm == "linf" else _l2_normalise(g)
        x_adv = (x + _project(x_adv + alpha * step - x, eps, norm)).clamp_(0.0, 1.0)
    return x_adv.detach()


def pgd(model, x, y, eps, *, alpha, steps, norm: str = "linf", random_start: bool = True,
        targeted: bool = False, restarts: int = 1, seed: int | None = 0, batch_size: int = 4096,
        amp: bool | None = None):
    """Projected Gradient Descent (Madry et al. 2018, eq. 2).

    ``steps`` iterations of size ``alpha`` (sign step for L∞, unit-L2 gradient
    step for L2), each projected onto the ε-ball of ``norm`` and the [0, 1]
    box. ``random_start`` begins from a random point of the ball, seeded by
    ``seed`` (L∞: uniform in the cube; L2: see ``_random_start``); ``seed=None``
    draws from torch's global generator instead, so every call starts afresh —
    what adversarial training wants (a fixed seed would reuse the same start
    noise for every batch). With
    ``restarts`` > 1 each sample keeps, among its restarts, a *successful* one
    if there is any (misclassified; or classified as the target when
    ``targeted``) and, among those — or among all when none succeeded — the
    one of highest loss (untargeted) or lowest loss toward the target.
    """
    eps, y = _validate(model, x, y, eps, norm, targeted, batch_size, amp)
    _check_pgd_settings(alpha, steps, restarts, seed, random_start)
    if eps == 0:
        return x.clone()
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    out = []
    with frozen(model):
        for xb, yb in batches(x, y, batch_size=batch_size):
            best, best_score = None, None
            for _ in range(restarts):
                d0 = _random_start(xb, eps, norm, gen) if random_start else torch.zeros_like(xb)
                xa = _pgd_once(model, xb, yb, eps, alpha, steps, norm, d0, targeted, amp)
                if restarts == 1:
                    best = xa
                    break
                with torch.no_grad(), autocast(xb.device, amp):
                    logits = model(xa).float()
                loss = F.cross_entropy(logits, yb, reduction="none")
                success = (logits.argmax(1) == yb) if targeted else (logits.argmax(1) != yb)
                # success dominates; among equals the stronger loss wins
                score = success.float() * 1e6 + (-loss if targeted else loss)
                best, best_score = keep_best(best, best_score, xa, score)
            out.append(best)
    return torch.cat(out)


def keep_best(best, best_score, x, score):
    """Per sample, the candidate ``x`` where its ``score`` beats ``best_score``
    (the first candidate when ``best`` is None): ``(best, best_score)``."""
    if best is None:
        return x, score
    better = (score > best_score).view(-1, *([1] * (x.dim() - 1)))
    return torch.where(better, x, best), torch.maximum(score, best_score)


def pgd_default_alpha(eps: float, steps: int) -> float:
    """α = 2.5·ε/steps (Madry et al. 2018): lets PGD walk across the ball and back."""
    return 2.5 * check_number("eps", eps, low=0.0) / check_int("steps", steps, low=1)


# ----------------------------------------------------------------------------
# the configured form: one call shape, atk(model, x, y)
# ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Attack:
    """Settings of an attack; call it as ``atk(model, x, y)``. Frozen: use
    ``atk.replace(eps=..., targeted=...)`` for a variant."""

    eps: float
    _: KW_ONLY
    targeted: bool = False
    batch_size: int = 4096
    amp: bool | None = None

    norm = "linf"

    def __post_init__(self):
        _check_settings(self.eps, self.norm, self.targeted, self.batch_size, self.amp)

    def replace(self, **changes) -> "Attack":
        """A copy with some settings changed (validated again)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"{type(self).__name__} has no setting(s) {sorted(unknown)}; "
                             f"its settings are {[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **changes)

    def __call__(self, model, x, y):  # pragma: no cover - overridden
        raise NotImplementedError

    def describe(self) -> str:
        """A short human-readable name with the settings, for tables and legends."""
        k = self.eps * 255
        # the papers' "ε = 8" on CIFAR-10 is 8/255; other values read better as decimals (MNIST's 0.3)
        eps = f"{round(k)}/255" if self.norm == "linf" and k >= 1 and abs(k - round(k)) < 1e-6 else f"{self.eps:.3g}"
        return f"{type(self).__name__}{' (targeted)' if self.targeted else ''} ε={eps}"


@dataclass(frozen=True)
class FGSM(Attack):
    """FGSM (Goodfellow et al. 2015), configured: ``FGSM(eps)(model, x, y)``."""

    def __call__(self, model, x, y):
        return fgsm(model, x, y, self.eps, targeted=self.targeted, batch_size=self.batch_size, amp=self.amp)


@dataclass(frozen=True, kw_only=True)
class PGD(Attack):
    """PGD (Madry et al. 2018, eq. 2), configured: ``PGD(eps, steps=10)(model, x, y)``.

    ``alpha=None`` takes α = 2.5·ε/steps (``pgd_default_alpha``); ``norm`` is
    ``"linf"`` (ε ≤ 1) or ``"l2"`` (any ε ≥ 0)."""

    steps: int = 10
    alpha: float | None = None
    norm: str = "linf"
    random_start: bool = True
    restarts: int = 1
    seed: int | None = 0

    def __post_init__(self):
        super().__post_init__()
        _check_pgd_settings(self.alpha, self.steps, self.restarts, self.seed, self.random_start,
                            alpha_optional=True)

    @property
    def step_size(self) -> float:
        return self.alpha if self.alpha is not None else pgd_default_alpha(self.eps, self.steps)

    def __call__(self, model, x, y):
        return pgd(model, x, y, self.eps, alpha=self.step_size if self.eps > 0 else 1.0, steps=self.steps,
                   norm=self.norm, random_start=self.random_start, targeted=self.targeted,
                   restarts=self.restarts, seed=self.seed, batch_size=self.batch_size, amp=self.amp)

    def describe(self) -> str:
        base = super().describe().replace("PGD", f"PGD-{self.steps}{' L2' if self.norm == 'l2' else ''}", 1)
        return base + (f" ×{self.restarts} restarts" if self.restarts > 1 else "")


# CIFAR-10-C's Gaussian noise (Hendrycks & Dietterich 2019): the noise sd c of severities 1-5, pixels in [0, 1]
GAUSS_SEVERITY = (0.04, 0.06, 0.08, 0.09, 0.10)


@dataclass(frozen=True)
class GaussianNoise(Attack):
    """Not an attack but a corruption, with the same call shape so that
    ``metrics.robust_accuracy`` scores it: x + N(0, eps²) per pixel, clipped
    to [0, 1] — CIFAR-10-C's ``gaussian_noise`` (Hendrycks & Dietterich
    2019; Zhang et al. 2021, Table I) without its rounding to 8 bits.
    ``eps`` is the noise's standard deviation c; ``GaussianNoise.severity(s)``
    gives c for severity s = 1…5. Seeded: the same call draws the same noise."""

    seed: int = 0

    @classmethod
    def severity(cls, s: int, **kw) -> "GaussianNoise":
        return cls(GAUSS_SEVERITY[check_int("severity", s, low=1, high=len(GAUSS_SEVERITY)) - 1], **kw)

    def __call__(self, model, x, y):
        _validate(model, x, y, self.eps, self.norm, self.targeted, self.batch_size, self.amp)
        gen = torch.Generator().manual_seed(check_int("seed", self.seed, low=0))
        noise = torch.randn(x.shape, generator=gen).to(x.device, x.dtype)
        return (x + self.eps * noise).clamp_(0.0, 1.0)

    def describe(self) -> str:
        return f"Gaussian noise c={self.eps:g}"


ATTACKS = {"fgsm": FGSM, "pgd": PGD}
