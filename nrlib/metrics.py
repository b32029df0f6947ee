"""Accuracy, attack success and set similarity, batched and in percent."""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from .attacks import Attack
from .models import frozen
from .precision import EVAL_AMP, autocast
from .stats import _bools
from .utils import batches, check_bool, check_input, check_int, check_labels, num_classes


@torch.no_grad()
def predict(model, x: torch.Tensor, *, batch_size: int = 8192, amp: bool | None = EVAL_AMP) -> torch.Tensor:
    """Predicted classes of ``x`` (pixels in [0, 1]) in eval mode, batched;
    fp32 unless ``amp`` (see ``nrlib.precision``)."""
    check_input(model, x)
    check_bool("amp", amp, allow_none=True)
    return _predict(model, x, batch_size=batch_size, amp=amp)


def _predict(model, x, *, batch_size, amp) -> torch.Tensor:
    """``predict`` without its checks, for callers that made them already."""
    out = []
    with frozen(model):
        for xb in batches(x, batch_size=batch_size):
            with autocast(x.device, amp):
                out.append(model(xb).argmax(1))
    return torch.cat(out)


def accuracy(model, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 8192,
             amp: bool | None = EVAL_AMP) -> float:
    """Top-1 accuracy in percent (fp32 unless ``amp=True``)."""
    return _accuracy(model, x, y, batch_size=batch_size, amp=amp)


def hits(model, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 8192,
         amp: bool | None = EVAL_AMP) -> torch.Tensor:
    """Per image, whether the model predicts ``y`` (a bool tensor): :func:`accuracy`'s
    outcomes, for an interval (``stats.proportion``) or a paired comparison
    (``stats.paired_difference``)."""
    return _hits(model, x, y, batch_size=batch_size, amp=amp)


def _hits(model, x, y, *, x_name="x", y_name="y", batch_size=8192, amp=EVAL_AMP) -> torch.Tensor:
    check_input(model, x, x_name)
    y = check_labels(y, x.shape[0], num_classes(model), name=y_name).to(x.device)
    check_bool("amp", amp, allow_none=True)
    return _predict(model, x, batch_size=batch_size, amp=amp) == y


def _accuracy(model, x, y, *, x_name="x", y_name="y", batch_size=8192, amp=EVAL_AMP) -> float:
    return 100.0 * _hits(model, x, y, x_name=x_name, y_name=y_name, batch_size=batch_size,
                         amp=amp).float().mean().item()


def robust_accuracy(model, x: torch.Tensor, y: torch.Tensor, attack: Attack, *,
                    amp: bool | None = EVAL_AMP) -> float:
    """Accuracy (percent) on ``attack(model, x, y)``: the attack object of
    ``nrlib.attacks`` (``PGD(8/255)``, …) is run and the result scored in the
    precision ``amp`` (fp32 by default, for the attack too, so that a robust
    accuracy never depends on bf16: see ``nrlib.precision``)."""
    return 100.0 * robust_hits(model, x, y, attack, amp=amp).float().mean().item()


def robust_hits(model, x: torch.Tensor, y: torch.Tensor, attack: Attack, *,
                amp: bool | None = EVAL_AMP) -> torch.Tensor:
    """Per image, whether the model is still right on ``attack(model, x, y)`` (a bool
    tensor): :func:`robust_accuracy`'s outcomes, for an interval (``stats.proportion``)
    or a paired comparison (``stats.paired_difference``)."""
    if not isinstance(attack, Attack):
        raise ValueError(f"attack={attack!r} must be an attack object of nrlib.attacks, e.g. attacks.PGD(8/255) "
                         "or attacks.FGSM(0.3) (not the function fgsm/pgd)")
    check_bool("amp", amp, allow_none=True)     # x and y: the attack checks them
    if attack.amp is None:
        attack = attack.replace(amp=amp)
    return _hits(model, attack(model, x, y), y, x_name="x_adv", amp=amp)


def success_over_all(clean_correct, fooled) -> np.ndarray:
    """Per image, whether an attack succeeds as "100 − robust accuracy over all the test images"
    counts it — the PGD columns of Suri & Evans 2020's Table 1 (the robustness library's
    accuracies): an image the model already misclassifies is a success, a correctly classified one
    is when the attack fools the model. (Their code's k-NS rates count differently: every test
    image is attacked, misclassified ones too, and a success is a *changed prediction*, over all
    the images — ``sensitivity.ns_success`` on every image gives that.) ``clean_correct``: a bool
    per image (N); ``fooled``: a bool per correctly classified image, in order (as many as
    ``clean_correct`` holds True), or a bool per image (N), read only where the image is classified
    correctly. Its mean is the success rate over all images; the rate over the correct images
    alone (``fooled.mean()``) is lower by the misclassified share's part. A bool array (N), for
    ``stats.proportion``."""
    c = _bools("clean_correct", clean_correct)
    f = _bools("fooled", fooled)
    if f.size not in (c.size, int(c.sum())):
        raise ValueError(f"fooled has {f.size} values; give one per image ({c.size}) or one per correctly "
                         f"classified image ({int(c.sum())})")
    out = ~c
    out[c] = f[c] if f.size == c.size else f
    return out


def targeted_success(model, x_adv: torch.Tensor, target: torch.Tensor) -> float:
    """Share (percent) of targeted adversarial examples classified as their target."""
    return _accuracy(model, x_adv, target, x_name="x_adv", y_name="target")


def success_matrix(pred: torch.Tensor, source: torch.Tensor, target: torch.Tensor,
                   num_classes: int = 10) -> np.ndarray:
    """Targeted success rate (percent) per (source class, target class) cell;
    NaN on the diagonal (Karnine et al. 2024, Tables 2–3)."""
    num_classes = check_int("num_classes", num_classes, low=2)
    n = pred.numel() if isinstance(pred, torch.Tensor) else -1
    if n == 0:
        raise ValueError("pred is empty; success_matrix needs at least one (source, target) pair")
    pred, source, target = (check_labels(t, n, num_classes, name=nm)
                            for t, nm in ((pred, "pred"), (source, "source"), (target, "target")))
    src, tgt, ok = (t.detach().cpu().numpy() for t in (source, target, pred == target))
    hits = np.zeros((num_classes, num_classes))
    counts = np.zeros((num_classes, num_classes))
    np.add.at(hits, (src, tgt), ok)
    np.add.at(counts, (src, tgt), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = 100.0 * hits / counts
    m[counts == 0] = np.nan
    return m


def _flat(a):
    """A tensor or array as the flat list of its items; anything else as it is."""
    if torch.is_tensor(a):
        a = a.detach().cpu().numpy()
    return a.ravel().tolist() if isinstance(a, np.ndarray) else a


def _as_set(a, name: str) -> set:
    a = _flat(a)
    if isinstance(a, (str, bytes, dict)) or not isinstance(a, Iterable):
        raise ValueError(f"{name}={a!r} must be a collection of items (a list, set, array or tensor)")
    items = [x.item() if isinstance(x, np.generic) or (torch.is_tensor(x) and x.numel() == 1) else x for x in a]
    for x in items:
        if isinstance(x, float) and not np.isfinite(x):
            raise ValueError(f"{name} holds {x!r}; NaN and inf are not set items (NaN != NaN)")
        if torch.is_tensor(x) or isinstance(x, (list, dict, set, np.ndarray)):
            raise ValueError(f"{name} holds an unhashable {type(x).__name__} {x!r}; "
                             "items must be numbers, strings or tuples")
    return set(items)


def jaccard(a: Iterable, b: Iterable) -> float:
    """|A ∩ B| / |A ∪ B| of two sets (1.0 for two empty sets); items may be
    numbers, NumPy/torch scalars or any hashable (e.g. (layer, c, h, w) tuples)."""
    a, b = _as_set(a, "a"), _as_set(b, "b")
    return 1.0 if not (a | b) else len(a & b) / len(a | b)


def mean_pairwise_jaccard(sets: list) -> float:
    """Mean Jaccard index over all unordered pairs of sets."""
    if not isinstance(sets, (list, tuple)):
        raise ValueError(f"sets must be a list of sets, got {type(sets).__name__}")
    sets = [_as_set(s, f"sets[{i}]") for i, s in enumerate(sets)]
    vals = [jaccard(sets[i], sets[j]) for i in range(len(sets)) for j in range(i + 1, len(sets))]
    return float(np.mean(vals)) if vals else 1.0


# ----------------------------------------------------------------------------
# similarity of neuron sequences (Zhang et al. 2021, eqs. 7–10)
# ----------------------------------------------------------------------------
def _as_seq(a, name: str) -> list:
    a = _flat(a)
    if isinstance(a, (str, bytes, dict, set)) or not isinstance(a, Iterable):
        raise ValueError(f"{name}={a!r} must be an ordered sequence of items (a list, tuple, array or tensor)")
    return list(a)


def levenshtein(a: Iterable, b: Iterable) -> int:
    """The Levenshtein distance (Zhang et al. 2021, eq. 7): the fewest
    insertions, deletions and substitutions that turn sequence ``a`` into
    ``b`` (items compared with ==); one row of the dynamic programme at a time."""
    a, b = _as_seq(a, "a"), _as_seq(b, "b")
    prev = list(range(len(b) + 1))
    for i, ai in enumerate(a, 1):
        cur = [i]
        for j, bj in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ai != bj)))
        prev = cur
    return prev[-1]


def levenshtein_similarity(a: Iterable, b: Iterable) -> float:
    """S_ω(a, b) = 1 − lev(a, b) / (|a| + |b|) (Zhang et al. 2021, eq. 8), in
    [0, 1]; 1 for identical sequences (and for two empty ones)."""
    a, b = _as_seq(a, "a"), _as_seq(b, "b")
    return 1.0 if not (a or b) else 1.0 - levenshtein(a, b) / (len(a) + len(b))


def avg_pair_levenshtein(seqs: list) -> float:
    """The average pair Levenshtein similarity (Zhang et al. 2021, eq. 9):
    the mean of S_ω over all pairs of distinct sequences (needs ≥ 2)."""
    if not isinstance(seqs, (list, tuple)) or len(seqs) < 2:
        raise ValueError(f"seqs must be a list of at least 2 sequences, got {seqs!r:.80}")
    seqs = [_as_seq(s, f"seqs[{i}]") for i, s in enumerate(seqs)]
    return float(np.mean([levenshtein_similarity(seqs[i], seqs[j])
                          for i in range(len(seqs)) for j in range(i + 1, len(seqs))]))


def jaccard_total(seqs: list) -> float:
    """The total Jaccard index (Zhang et al. 2021, eq. 10): |∩ S_y| / |∪ S_y|
    of the sequences taken as sets (1.0 when all are empty)."""
    if not isinstance(seqs, (list, tuple)) or not seqs:
        raise ValueError(f"seqs must be a non-empty list of sequences, got {seqs!r:.80}")
    sets = [_as_set(s, f"seqs[{i}]") for i, s in enumerate(seqs)]
    union = set().union(*sets)
    return 1.0 if not union else len(set.intersection(*sets)) / len(union)
