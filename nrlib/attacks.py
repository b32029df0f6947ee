"""White-box evasion attacks, configured once and called the same way everywhere.

An attack is an object built from its settings and called on a model and a
batch — torchattacks' uniformity, without its state::

    atk = attacks.PGD(8 / 255, steps=10)          # α defaults to 2.5·ε/steps
    x_adv = atk(model, x, y)                       # pixels in, pixels out
    atk.replace(eps=4 / 255, targeted=True)        # a variant, the original unchanged

The same object drives a chapter's sweep, adversarial training
(``Objective(adversary=atk, mix="adv")`` for ``train.fit``, ``dominant.finetune``), evaluation
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
* C&W-L2 — Carlini & Wagner 2017: the smallest L2 perturbation found by Adam
  in tanh space with a binary search over the loss weight c.
* SPSA — Uesato et al. 2018, and NAttack — Li et al. 2019: gradient-free L∞
  attacks that only query the model's logits (the black-box attacks of Zhang
  et al. 2021, Table III).
* ``GaussianNoise`` — not an attack: CIFAR-10-C's Gaussian-noise corruption,
  in the same call shape so that ``metrics.robust_accuracy`` scores it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import KW_ONLY, dataclass

import torch
import torch.nn.functional as F

from .data import DATASETS
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
def eps_text(eps: float, norm: str = "linf", *, dataset: str | None = None) -> str:
    """ε for tables and legends, as the papers write it for the data: the papers' "ε = 8" on
    CIFAR-10 is 8/255, so an L∞ ε that is a whole number of 1/255 reads ``8/255``; MNIST's papers
    write decimals (ε = 0.2, never 51/255), so ``dataset="mnist"`` always reads a decimal, as do
    other values. ``dataset``: ``None`` (judged by the value), or one of ``nrlib.data.DATASETS``."""
    if dataset is not None:
        check_choice("dataset", dataset, DATASETS)
    k = eps * 255
    whole = norm == "linf" and k >= 1 and abs(k - round(k)) < 1e-6 and dataset != "mnist"
    return f"{round(k)}/255" if whole else f"{eps:.3g}"


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

    def describe(self, dataset: str | None = None) -> str:
        """A short human-readable name with the settings, for tables and legends; ``dataset``
        writes ε as the papers on that data do (``eps_text``)."""
        eps = eps_text(self.eps, self.norm, dataset=dataset)
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

    def describe(self, dataset: str | None = None) -> str:
        base = super().describe(dataset).replace("PGD", f"PGD-{self.steps}{' L2' if self.norm == 'l2' else ''}", 1)
        return base + (f" ×{self.restarts} restarts" if self.restarts > 1 else "")


def _to_tanh(x: torch.Tensor) -> torch.Tensor:
    """w with (tanh w + 1)/2 = x (pixels kept a hair inside (0, 1), where arctanh is finite):
    the change of variables of C&W and NAttack that keeps x′ in the box."""
    return torch.atanh((2 * x - 1).clamp(-1 + 1e-6, 1 - 1e-6))


def _from_tanh(w: torch.Tensor) -> torch.Tensor:
    return (torch.tanh(w) + 1) / 2


@dataclass(frozen=True, kw_only=True)
class CW(Attack):
    """Carlini & Wagner's L2 attack (2017): minimise ‖x′ − x‖₂² + c·max(margin, −κ)
    over w with x′ = (tanh w + 1)/2 (so x′ stays in [0, 1]) by Adam (``lr``),
    ``steps`` iterations for each of ``binary_steps`` values of c found by
    binary search per image (start ``c``; ×10 until a success, then
    bisection). Returns, per image, the successful x′ of smallest L2 norm
    found — or x itself where none succeeded or the smallest exceeds ``eps``
    (an L2 bound on what counts; ``CW.unbounded()`` counts any size). The
    settings of Zhang et al. 2021 §IV-A2: c = 0.01, κ = 0, 3 binary-search
    steps of 300 iterations."""

    norm: str = "l2"
    c: float = 0.01
    kappa: float = 0.0
    steps: int = 300
    binary_steps: int = 3
    lr: float = 0.01

    def __post_init__(self):
        if self.norm != "l2":
            raise ValueError(f"norm={self.norm!r}: CW is an L2 attack")
        super().__post_init__()
        check_number("c", self.c, low=0.0, low_open=True)
        check_number("kappa", self.kappa, low=0.0)
        check_int("steps", self.steps, low=1)
        check_int("binary_steps", self.binary_steps, low=1)
        check_number("lr", self.lr, low=0.0, low_open=True)

    @classmethod
    def unbounded(cls, **kw) -> "CW":
        """A CW whose ``eps`` is the diagonal of the unit box of a CIFAR-10 image (any size counts)."""
        return cls(eps=float(3 * 32 * 32) ** 0.5 + 1.0, **kw)

    def __call__(self, model, x, y):
        eps, y = _validate(model, x, y, self.eps, "l2", self.targeted, self.batch_size, self.amp)
        if eps == 0:
            return x.clone()
        out = []
        with frozen(model):
            for xb, yb in batches(x, y, batch_size=self.batch_size):
                out.append(self._attack(model, xb, yb, eps))
        return torch.cat(out)

    def _attack(self, model, x, y, eps):
        n = x.shape[0]
        w0 = _to_tanh(x)
        lo, hi = torch.zeros(n, device=x.device), torch.full((n,), torch.inf, device=x.device)
        c = torch.full((n,), self.c, device=x.device)
        best, best_l2 = x.clone(), torch.full((n,), torch.inf, device=x.device)
        for _ in range(self.binary_steps):
            w = w0.clone().requires_grad_(True)
            opt = torch.optim.Adam([w], lr=self.lr)
            hit = torch.zeros(n, dtype=torch.bool, device=x.device)
            for _ in range(self.steps):
                with torch.enable_grad():
                    xa = _from_tanh(w)
                    with autocast(x.device, self.amp):
                        logits = model(xa)
                    m = margin_loss(logits, y, self.targeted)
                    l2 = (xa - x).flatten(1).pow(2).sum(1)
                    loss = (l2 + c * m.clamp_min(-self.kappa)).sum()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                with torch.no_grad():
                    ok = (m < 0) & (l2.sqrt() <= eps)
                    better = ok & (l2 < best_l2)
                    best = torch.where(better.view(-1, 1, 1, 1), xa.detach(), best)
                    best_l2 = torch.where(better, l2.detach(), best_l2)
                    hit |= m < 0
                opt.step()
            hi = torch.where(hit, torch.minimum(hi, c), hi)
            lo = torch.where(hit, lo, torch.maximum(lo, c))
            c = torch.where(torch.isfinite(hi), (lo + hi) / 2, c * 10)
        return best

    def describe(self, dataset: str | None = None) -> str:
        return f"C&W-L2 {self.binary_steps}×{self.steps}" + (" (targeted)" if self.targeted else "")


# ----------------------------------------------------------------------------
# gradient-free attacks: they only query the model's logits
# ----------------------------------------------------------------------------
def margin_loss(logits: torch.Tensor, y: torch.Tensor, targeted: bool = False) -> torch.Tensor:
    """The logit margin an attack minimises, per sample: z_y − max_{j≠y} z_j
    (untargeted; < 0 once misclassified) or max_{j≠t} z_j − z_t (targeted,
    ``y`` the target; < 0 once classified as t) — Carlini & Wagner's f6."""
    z = logits.float()
    zy = z.gather(1, y.view(-1, 1)).squeeze(1)
    other = z.scatter(1, y.view(-1, 1), -torch.inf).amax(1)
    return other - zy if targeted else zy - other


def _query(model, x, y, targeted, amp, rows):
    """Margin losses of images ``x`` (any leading shape, labels ``y`` broadcast
    the same way), ``rows`` images per forward pass, without gradients."""
    shape = x.shape[: x.dim() - 3]
    xf, yf = x.reshape(-1, *x.shape[-3:]), y.reshape(-1)
    out = []
    with torch.no_grad():
        for xb, yb in batches(xf, yf, batch_size=rows):
            with autocast(xb.device, amp):
                out.append(margin_loss(model(xb), yb, targeted))
    return torch.cat(out).view(shape)


def _chunk_images(per_image: int, rows: int) -> int:
    """How many images fit in one forward pass of ``rows`` queries when each needs ``per_image``."""
    return max(1, rows // per_image)


@dataclass(frozen=True, kw_only=True)
class _QueryAttack(Attack):
    """The frame the gradient-free L∞ attacks share: ``steps`` iterations of step ``lr`` with
    noise from ``seed``. ``__call__`` checks the inputs, returns ``x`` unchanged at ε = 0, draws
    the noise from a generator on the images' device (at hundreds of queries per image it is the
    bulk of the work; a CPU and a GPU run draw different, equally random vectors) and, with the
    model frozen, hands ``_attack`` as many images at a time as fit ``batch_size`` queries per
    forward pass when each needs ``_queries`` (the samples or the population)."""

    steps: int = 100
    lr: float = 0.01
    seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        check_int("steps", self.steps, low=1)
        check_number("lr", self.lr, low=0.0, low_open=True)
        check_int("seed", self.seed, low=0)
        self._check()

    def _check(self) -> None:        # pragma: no cover - each attack checks its own settings
        raise NotImplementedError

    @property
    def _queries(self) -> int:       # pragma: no cover - each attack says
        raise NotImplementedError

    def _attack(self, model, xb, yb, eps, gen):      # pragma: no cover - each attack's iterations
        raise NotImplementedError

    def __call__(self, model, x, y):
        eps, y = _validate(model, x, y, self.eps, "linf", self.targeted, self.batch_size, self.amp)
        if eps == 0:
            return x.clone()
        gen = torch.Generator(device=x.device).manual_seed(self.seed)
        with frozen(model):
            return torch.cat([self._attack(model, xb, yb, eps, gen) for xb, yb in
                              batches(x, y, batch_size=_chunk_images(self._queries, self.batch_size))])


@dataclass(frozen=True, kw_only=True)
class SPSA(_QueryAttack):
    """SPSA (Uesato et al. 2018, "Adversarial risk and the dangers of
    evaluating against weak attacks"), L∞: the gradient of the margin loss is
    estimated from ``samples`` queries per image — ``samples``/2 antithetic
    pairs x ± δ·v with v a random ±1 vector — and the perturbation is updated
    by Adam (``lr``) and projected onto the ε-ball and [0, 1], for ``steps``
    iterations. Gradient-free: the model is only queried (under
    ``torch.no_grad``). The settings of Zhang et al. 2021 §IV-A2: ε = 8/255,
    512 samples, lr 0.01, 100 iterations; δ = 0.01 (Uesato et al.). Returns
    the last iterate, as PGD does. ``batch_size`` counts queries per forward
    pass."""

    samples: int = 512
    delta: float = 0.01

    def _check(self) -> None:
        if check_int("samples", self.samples, low=2) % 2:
            raise ValueError(f"samples={self.samples} must be even (antithetic pairs x ± δ·v)")
        check_number("delta", self.delta, low=0.0, low_open=True)

    @property
    def _queries(self) -> int:
        return self.samples

    def _attack(self, model, xb, yb, eps, gen):
        half = self.samples // 2
        d = torch.zeros_like(xb)
        m, v = torch.zeros_like(xb), torch.zeros_like(xb)
        for t in range(1, self.steps + 1):
            r = torch.randint(0, 2, (xb.shape[0], half, *xb.shape[1:]), generator=gen,
                              device=xb.device).to(xb.dtype) * 2 - 1
            xa = (xb + d).unsqueeze(1)
            pair = torch.cat([xa + self.delta * r, xa - self.delta * r], 1)
            lab = yb.view(-1, 1).expand(-1, 2 * half)
            lv = _query(model, pair.clamp(0.0, 1.0), lab, self.targeted, self.amp, self.batch_size)
            diff = (lv[:, :half] - lv[:, half:]).view(-1, half, *([1] * (xb.dim() - 1)))
            g = (diff * r).mean(1) / (2 * self.delta)
            m = 0.9 * m + 0.1 * g                       # Adam (β1 0.9, β2 0.999)
            v = 0.999 * v + 0.001 * g * g
            step = (m / (1 - 0.9 ** t)) / ((v / (1 - 0.999 ** t)).sqrt() + 1e-8)
            d = ((xb + (d - self.lr * step).clamp(-eps, eps)).clamp(0.0, 1.0) - xb)
        return xb + d

    def describe(self, dataset: str | None = None) -> str:
        return super().describe(dataset).replace("SPSA", f"SPSA-{self.steps}×{self.samples}", 1)


@dataclass(frozen=True, kw_only=True)
class NAttack(_QueryAttack):
    """NAttack (Li et al. 2019, "NATTACK: learning the distributions of
    adversarial examples"), L∞: a Gaussian N(μ, σ²) over a perturbation of
    the image's arctanh, sampled ``population`` times per iteration; each
    sample is mapped back to pixels, projected onto the ε-ball and scored by
    the clipped margin loss max(margin, 0), and μ moves against the
    standardised scores (natural evolution strategies, step ``lr``), for
    ``steps`` iterations. Gradient-free. The settings of Zhang et al. 2021
    §IV-A2: ε = 8/255, population 300, σ = 0.1 (σ² = 0.01), lr 0.008, 100
    iterations. An image stops at its first success (that sample is
    returned); otherwise the projected mean. ``batch_size`` counts queries
    per forward pass."""

    population: int = 300
    sigma: float = 0.1
    lr: float = 0.008

    def _check(self) -> None:
        check_int("population", self.population, low=2)
        check_number("sigma", self.sigma, low=0.0, low_open=True)

    @property
    def _queries(self) -> int:
        return self.population

    def _attack(self, model, xb, yb, eps, gen):
        n, k, shp = xb.shape[0], self.population, (1,) * (xb.dim() - 1)
        w0 = _to_tanh(xb)
        mu = torch.zeros_like(xb)
        proj = lambda w: xb.unsqueeze(1) + (_from_tanh(w) - xb.unsqueeze(1)).clamp(-eps, eps)   # noqa: E731
        done = torch.zeros(n, dtype=torch.bool, device=xb.device)
        best = xb.clone()
        for _ in range(self.steps):
            z = torch.randn((n, k, *xb.shape[1:]), generator=gen, device=xb.device, dtype=xb.dtype)
            cand = proj(w0.unsqueeze(1) + mu.unsqueeze(1) + self.sigma * z).clamp(0.0, 1.0)
            f = _query(model, cand, yb.view(-1, 1).expand(-1, k), self.targeted, self.amp, self.batch_size)
            hit = (f < 0) & ~done.view(-1, 1)
            first = hit.float().argmax(1)
            new = hit.any(1)
            best[new] = cand[new, first[new]]
            done |= new
            if bool(done.all()):
                break
            f = f.clamp_min(0.0)
            fs = (f - f.mean(1, keepdim=True)) / (f.std(1, keepdim=True) + 1e-7)
            step = (fs.view(n, k, *shp) * z).mean(1) * (self.lr / self.sigma)
            mu = torch.where(done.view(-1, *shp), mu, mu - step)
        last = proj(w0.unsqueeze(1) + mu.unsqueeze(1)).squeeze(1).clamp(0.0, 1.0)
        return torch.where(done.view(-1, *shp), best, last)

    def describe(self, dataset: str | None = None) -> str:
        return super().describe(dataset).replace("NAttack", f"NAttack-{self.steps}×{self.population}", 1)


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

    def __post_init__(self):
        super().__post_init__()
        check_int("seed", self.seed, low=0)

    @classmethod
    def severity(cls, s: int, **kw) -> "GaussianNoise":
        return cls(GAUSS_SEVERITY[check_int("severity", s, low=1, high=len(GAUSS_SEVERITY)) - 1], **kw)

    def __call__(self, model, x, y):
        _validate(model, x, y, self.eps, self.norm, self.targeted, self.batch_size, self.amp)
        gen = torch.Generator().manual_seed(self.seed)
        noise = self._shape(torch.randn(x.shape, generator=gen)).to(x.device, x.dtype)
        return (x + self.eps * noise).clamp_(0.0, 1.0)

    @staticmethod
    def _shape(noise: torch.Tensor) -> torch.Tensor:
        return noise

    def describe(self, dataset: str | None = None) -> str:
        return f"Gaussian noise c={self.eps:g}"


class SignNoise(GaussianNoise):
    """Not an attack but its control: x + ε·s with a random sign s = ±1 per pixel,
    clipped to [0, 1] — a perturbation of exactly an FGSM step's size (its L∞
    ball's corners) in a random direction. Karnine et al. 2024 §3.4's dominant
    filters are compared against it in chapter 4 §4: a filter that dominates
    under this noise too dominates because of its weights, not of the attack.
    Seeded: the same call draws the same signs."""

    @staticmethod
    def _shape(noise: torch.Tensor) -> torch.Tensor:
        return noise.sign()

    def describe(self, dataset: str | None = None) -> str:
        return f"random sign noise ε={self.eps:g}"


ATTACKS = {"fgsm": FGSM, "pgd": PGD, "cw": CW, "spsa": SPSA, "nattack": NAttack}
