"""Neuron sensitivity of the logits layer and the attacks built on it
(Suri & Evans 2020, "One neuron to fool them all").

The features z(x) are the inputs of a model's last linear layer (the logits
layer, ``logits_layer``): for the book's VGGs the 512 (× width/64) channels
after global average pooling, non-negative since they follow a ReLU.

* ``delta`` — eq. 2, the closed form: the smallest change of one feature
  that changes the prediction.
* ``feature_stats``, ``scaled_delta`` — Fig. 1's scaled sensitivities.
* ``neuron_order``, ``mean_sensitivity`` — which neurons an attack targets,
  and which pruning removes (§3); ``pruned_hits`` — the accuracy of many
  pruned feature sets at once, from the features.
* ``neuron_attack`` — the single-neuron attack of §2.2 (eq. 3), one target
  neuron per image, batched; ``ns_success`` — the k-NS attack of Table 1.

Where the paper leaves a detail open its public code (sauron) fixes it; each
function says which of the code's choices it follows.

Neuron sensitivity of any layer (Zhang et al. 2021, "Interpreting and
improving adversarial robustness of deep neural networks with neuron
sensitivity"), where a *neuron* is one channel of a layer's output:

* ``neuron_sensitivity`` — eq. 1, σ: the mean over pairs (x, x′) of
  (1/dim)·‖F(x) − F(x′)‖₁; ``sensitive_neurons`` — eq. 2, the top-k by σ.
* ``sensitivity_ratio`` — eq. 11, the deviation relative to ‖F(x)‖₁.
* ``layer_sensitivity`` — both for many layers of a model at once, one
  forward pass of each clean and adversarial batch; ``select_sensitive`` —
  the Ω_l of several layers, for SNS training.
* ``mean_ratio``, ``ratio_bootstrap`` — Table II's mean ratio on a layer's
  sensitive neurons, with its interval over the images (or a paired
  difference); ``sharing_bootstrap`` — Fig. 8's sharing of sensitive neurons
  across target classes, with its interval.
* ``importance``, ``important_neurons``, ``vote`` — eqs. 3–5: a feature's
  contribution to the target logit, the top-k per image and the voted Γ^y.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .attacks import NORMS, _l2_normalise, _project, keep_best
from .metrics import predict
from .models import frozen
from .precision import autocast
from .hooks import capture, features_of, layer_names, logits_layer  # noqa: F401 (logits_layer: public here too)
from .utils import (batches, check_choice, check_eps, check_fraction, check_indices, check_input, check_int,
                    check_labels, check_number)


def features(model, x: torch.Tensor, *, batch_size: int = 4096, amp: bool | None = False):
    """``(z, logits)``: the features (inputs of the logits layer, [N, F]) and
    the logits ([N, C]) of images ``x``, in float32, computed in eval mode
    without gradients."""
    x = check_input(model, x)
    batch_size = check_int("batch_size", batch_size, low=1)
    zs, ls = [], []
    with frozen(model), torch.no_grad(), features_of(model) as st:
        for xb in batches(x, batch_size=batch_size):
            with autocast(xb.device, amp):
                logits = model(xb)
            zs.append(st["z"].float().flatten(1))
            ls.append(logits.float())
    return torch.cat(zs), torch.cat(ls)


def _check_fw(z, weight, bias):
    if not isinstance(z, torch.Tensor) or z.dim() != 2:
        raise ValueError(f"features must be a 2-D tensor [images, features], got "
                         f"{getattr(z, 'shape', type(z).__name__)}")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[1] != z.shape[1]:
        raise ValueError(f"weight must be [classes, features] = [C, {z.shape[1]}] (nn.Linear's layout), "
                         f"got {getattr(weight, 'shape', type(weight).__name__)}")
    if weight.shape[0] < 2:
        raise ValueError(f"weight has {weight.shape[0]} class(es); a prediction can only change with ≥ 2")
    if bias is not None and (not isinstance(bias, torch.Tensor) or bias.shape != (weight.shape[0],)):
        raise ValueError(f"bias must be None or a tensor of shape [{weight.shape[0]}], "
                         f"got {getattr(bias, 'shape', type(bias).__name__)}")


def delta(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
          batch_size: int = 512) -> torch.Tensor:
    """Neuron sensitivity Δ(i, x) of every feature of every image (Suri &
    Evans 2020, Definition 2.1 and eq. 2): the signed change of feature i
    alone that changes the prediction, of smallest magnitude. ``features``
    [N, F], ``weight`` [C, F] and ``bias`` [C] (``nn.Linear``'s layout);
    returns [N, F], float32.

    With z = W·f + b and p the **predicted** class (the public code's
    choice; eq. 2 writes the label y, which for a misclassified image would
    measure the change that makes the true class win — a correction, not an
    attack), moving f_i by d
    moves z_p − z_j by d·(W[p, i] − W[j, i]), so class j overtakes p at

        Δ_j = (z_p − z_j) / (W[j, i] − W[p, i]).

    Only values with f_i + Δ_j ≥ 0 are kept (a ReLU feature cannot be
    negative); Δ(i, x) is the kept Δ_j of smallest |Δ_j|, sign kept, and
    +inf where none is kept (or every W[j, i] equals W[p, i]). Adding
    1.001·Δ to feature i changes the prediction; 0.999·Δ does not.
    Vectorised over images, features and classes, in chunks of ``batch_size``
    images (memory N·C·F)."""
    _check_fw(features, weight, bias)
    batch_size = check_int("batch_size", batch_size, low=1)
    w = weight.detach().float().to(features.device)
    b = None if bias is None else bias.detach().float().to(features.device)
    out = []
    for f in batches(features.detach().float(), batch_size=batch_size):
        z = f @ w.T + (0 if b is None else b)                       # [n, C]
        p = z.argmax(1)
        num = z.gather(1, p[:, None]) - z                            # z_p − z_j, [n, C]
        den = w[None, :, :] - w[p][:, None, :]                       # W[j, i] − W[p, i], [n, C, F]
        with torch.no_grad():
            d = num[:, :, None] / den
        other = torch.ones_like(num, dtype=torch.bool).scatter_(1, p[:, None], False)
        ok = other[:, :, None] & (den != 0) & torch.isfinite(d) & (f[:, None, :] + d >= 0)
        mag = torch.where(ok, d.abs(), torch.full_like(d, math.inf))
        best = mag.argmin(1, keepdim=True)                           # [n, 1, F]
        val = d.gather(1, best).squeeze(1)
        out.append(torch.where(torch.isfinite(mag.gather(1, best).squeeze(1)), val,
                               torch.full_like(val, math.inf)))
    return torch.cat(out) if out else features.new_zeros((0, features.shape[1]))


def feature_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each feature's mean and standard deviation over a set of images (the
    training set in the paper), the μ_i and σ_i of Fig. 1's scaling."""
    if not isinstance(features, torch.Tensor) or features.dim() != 2 or features.shape[0] < 2:
        raise ValueError(f"features must be [images ≥ 2, features], got {getattr(features, 'shape', features)}")
    f = features.float()
    return f.mean(0), f.std(0)


def scaled_delta(delta_values: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Fig. 1's scaled sensitivities (Δ(i, x) − μ_i) / σ_i, with μ_i and σ_i
    the mean and standard deviation of feature i's *activation* over the
    training set (``feature_stats``; the public code's ``scaled_values``
    scales by the feature's statistics, not by Δ's). +inf stays +inf; a
    feature that never varies (σ_i = 0, a dead feature) gets +inf too, so
    it is never an attack's first choice and drops out of a density."""
    if delta_values.dim() != 2 or mean.shape != (delta_values.shape[1],) or std.shape != mean.shape:
        raise ValueError(f"delta_values [N, F] with mean and std of shape [F]; got {tuple(delta_values.shape)}, "
                         f"{tuple(mean.shape)}, {tuple(std.shape)}")
    s = (delta_values - mean) / std.clamp_min(1e-30)
    return torch.where(torch.isfinite(delta_values) & (std > 0), s, torch.full_like(s, math.inf))


def neuron_order(scaled: torch.Tensor) -> torch.Tensor:
    """Per image, the features from easiest to hardest to attack: ascending
    scaled Δ (the public code's ``np.argsort(scaled_delta_values)``; signed,
    so a large negative Δ comes first), +inf last. [N, F] of indices."""
    return torch.argsort(scaled, dim=1, stable=True)


def mean_sensitivity(delta_values: torch.Tensor) -> torch.Tensor:
    """Each feature's mean |Δ| over the images where it is finite (+inf where
    it is never finite): low = sensitive. §3 prunes "the most sensitive
    (lowest average Δ(i, x) over … set inputs)" features; the public code
    (``best_target_image``) averages |Δ| over the finite values."""
    fin = torch.isfinite(delta_values)
    n = fin.sum(0)
    s = torch.where(fin, delta_values.abs(), torch.zeros_like(delta_values)).sum(0)
    return torch.where(n > 0, s / n.clamp_min(1), torch.full_like(s, math.inf))


def pruned_hits(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                labels: torch.Tensor, sets) -> torch.Tensor:
    """Whether each image is still classified right when the features of a set
    are zeroed, for many sets at once (Suri & Evans 2020, §3: pruning the
    most or the least sensitive features, and random sets of the same sizes
    as the control): ``[len(sets), N]`` bool. The same as zeroing those
    channels of the model after its global pooling
    (``hooks.zero_channels(model, "gap", set)``) and classifying again, but one
    masked product with the logits layer per set instead of a pass through
    the network."""
    _check_fw(features, weight, bias)
    labels = check_labels(labels, features.shape[0], weight.shape[0], name="labels").to(features.device)
    n_feat = features.shape[1]
    if isinstance(sets, (str, bytes, torch.Tensor)) or not hasattr(sets, "__len__") or len(sets) == 0:
        raise ValueError(f"sets must be a non-empty list of feature-index lists, got {str(sets)[:80]}")
    out = []
    for i, s in enumerate(sets):
        idx = check_indices(f"sets[{i}]", s, n_feat)
        z = features.clone()
        z[:, torch.tensor(idx, dtype=torch.long, device=features.device)] = 0
        logits = z @ weight.T + (0 if bias is None else bias)
        out.append(logits.argmax(1) == labels)
    return torch.stack(out)


def _finite_max(delta_values: torch.Tensor) -> torch.Tensor:
    fin = delta_values[torch.isfinite(delta_values)]
    return fin.max() if fin.numel() else delta_values.new_zeros(())


def neuron_targets(z: torch.Tensor, delta_values: torch.Tensor, neurons: torch.Tensor, *,
                   cap: torch.Tensor | None = None) -> torch.Tensor:
    """The target representation of the single-neuron attack: t = z + Δ(i, x)·e_i
    for the neuron ``neurons[n]`` of image n. An infinite Δ is replaced by
    ``cap``, by default the largest finite Δ of ``delta_values`` (the public
    code's choice)."""
    idx = neurons.long().view(-1, 1)
    d = delta_values.gather(1, idx).squeeze(1)
    cap = _finite_max(delta_values) if cap is None else cap
    d = torch.where(torch.isfinite(d), d, cap.to(d))
    t = z.clone()
    t.scatter_add_(1, idx, d.view(-1, 1).to(t.dtype))
    return t


def _neuron_loss(z, t, mask, reg):
    """Eq. 3 as the public code writes it: ‖z − t‖₂/‖t‖₂ + reg·|z_i − t_i|/|t_i| per image."""
    main = (z - t).norm(dim=1) / t.norm(dim=1).clamp_min(1e-12)
    aux = ((z - t) * mask).abs().sum(1) / (t * mask).norm(dim=1).clamp_min(1e-12)
    return main + reg * aux


def neuron_attack(model, x: torch.Tensor, neurons: torch.Tensor, delta_values: torch.Tensor, *,
                  eps: float, norm: str = "l2", steps: int = 50, alpha: float | None = None,
                  reg: float = 10.0, batch_size: int = 1024, amp: bool | None = None) -> torch.Tensor:
    """The single-neuron attack (Suri & Evans 2020, §2.2, eq. 3): for image
    ``x[n]`` and its target neuron ``neurons[n]``, PGD toward the target
    representation t = z(x) + Δ(i, x)·e_i (``neuron_targets``), minimising

        ‖z(x′) − t‖₂ / ‖t‖₂ + reg · |z_i(x′) − t_i| / |t_i|      (reg = 10)

    inside the ``norm`` ball of radius ``eps`` and the [0, 1] box: no random
    start, step α = 2.5·ε/steps, the L2 step along the normalised gradient
    and the L∞ one along its sign. Of the iterates, each image keeps the one
    with the highest cross-entropy against the model's clean prediction (the
    code's ``custom_best``). Rows of ``x`` may repeat an image with different
    neurons: the k-NS attack is one call (``ns_success``). ``delta_values`` are
    the images' Δ ([N, F], from ``delta``). Returns x′ in pixels."""
    x = check_input(model, x)
    check_choice("norm", norm, NORMS)
    eps = check_eps(eps) if norm == "linf" else check_number("eps", eps, low=0.0)
    steps = check_int("steps", steps, low=1)
    alpha = 2.5 * eps / steps if alpha is None else check_number("alpha", alpha, low=0.0, low_open=True)
    reg = check_number("reg", reg, low=0.0)
    batch_size = check_int("batch_size", batch_size, low=1)
    n_feat = logits_layer(model)[1].in_features
    if not isinstance(neurons, torch.Tensor) or neurons.shape != (x.shape[0],):
        raise ValueError(f"neurons must be a tensor of {x.shape[0]} feature indices (one per image), "
                         f"got {getattr(neurons, 'shape', neurons)}")
    if len(neurons) and (int(neurons.min()) < 0 or int(neurons.max()) >= n_feat):
        raise ValueError(f"neurons must lie in [0, {n_feat - 1}] (the logits layer has {n_feat} inputs); "
                         f"got values in [{int(neurons.min())}, {int(neurons.max())}]")
    if not isinstance(delta_values, torch.Tensor) or delta_values.shape != (x.shape[0], n_feat):
        raise ValueError(f"delta_values must be [{x.shape[0]}, {n_feat}] (one row per image), "
                         f"got {getattr(delta_values, 'shape', delta_values)}")
    neurons, delta_values = neurons.to(x.device), delta_values.to(x.device)
    cap = _finite_max(delta_values)             # over all images, not per chunk
    out = []
    with frozen(model), features_of(model) as st:
        for xb, nb, db in batches(x, neurons, delta_values, batch_size=batch_size):
            with torch.no_grad(), autocast(xb.device, amp):
                clean = model(xb).float().argmax(1)
            z0 = st["z"].float().flatten(1)
            t = neuron_targets(z0, db, nb, cap=cap)
            mask = F.one_hot(nb.long(), n_feat).to(t.dtype)
            xa, best, best_ce = xb.clone(), None, None
            for _ in range(steps):
                with torch.enable_grad():
                    xg = xa.detach().requires_grad_(True)
                    with autocast(xb.device, amp):
                        model(xg)
                    loss = _neuron_loss(st["z"].float().flatten(1), t, mask, reg).sum()
                    (g,) = torch.autograd.grad(loss, xg)
                step = g.sign() if norm == "linf" else _l2_normalise(g)
                xa = (xb + _project(xa - alpha * step - xb, eps, norm)).clamp_(0.0, 1.0).detach()
                with torch.no_grad(), autocast(xb.device, amp):
                    ce = F.cross_entropy(model(xa).float(), clean, reduction="none")
                best, best_ce = keep_best(best, best_ce, xa, ce)
            out.append(best)
    return torch.cat(out) if out else x.clone()


def ns_success(model, x: torch.Tensor, delta_values: torch.Tensor, order: torch.Tensor, *,
               ranks, eps: float, norm: str = "l2", steps: int = 50, batch_size: int = 1024,
               amp: bool | None = None) -> torch.Tensor:
    """Single-neuron attacks on the neurons at positions ``ranks`` of each
    image's ``order`` (``neuron_order``), all as one batch: returns a bool
    tensor [N, len(ranks)], True where the attack on that neuron changed the
    model's prediction. The k-NS attack of Table 1 (independent attacks on
    the top-k neurons, success if any succeeds) is ``success[:, :k].any(1)``
    with ``ranks = range(k)``."""
    ranks = [check_int("ranks", r, low=0, high=order.shape[1] - 1) for r in ranks]
    if not ranks:
        raise ValueError("ranks: give at least one rank (0 = each image's most sensitive neuron)")
    n, k = x.shape[0], len(ranks)
    rep = torch.arange(n, device=x.device).repeat_interleave(k)
    neurons = order[:, ranks].reshape(-1).to(x.device)
    xa = neuron_attack(model, x[rep], neurons, delta_values.to(x.device)[rep], eps=eps, norm=norm,
                       steps=steps, batch_size=batch_size, amp=amp)
    clean = predict(model, x, batch_size=batch_size, amp=amp)
    return (predict(model, xa, batch_size=batch_size, amp=amp) != clean[rep]).view(n, k)


# ----------------------------------------------------------------------------
# Zhang et al. 2021: neuron sensitivity of any layer
# ----------------------------------------------------------------------------
def _check_pair(act_clean, act_adv):
    for nm, a in (("act_clean", act_clean), ("act_adv", act_adv)):
        if not isinstance(a, torch.Tensor) or a.dim() < 2 or a.shape[0] == 0:
            raise ValueError(f"{nm} must be a layer's outputs [N, C, ...] for N ≥ 1 samples, "
                             f"got {getattr(a, 'shape', type(a).__name__)}")
    if act_clean.shape != act_adv.shape:
        raise ValueError(f"act_clean {tuple(act_clean.shape)} and act_adv {tuple(act_adv.shape)} must have "
                         "the same shape: the outputs of one layer for x and for its x′")
    return act_clean.detach().float(), act_adv.detach().to(act_clean.device).float()


def _l1_per_channel(a: torch.Tensor) -> torch.Tensor:
    """[N, C, ...] → [N, C]: the L1 norm over each channel's positions."""
    return a.abs().flatten(2).sum(2) if a.dim() > 2 else a.abs()


def _deviation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[N, C]: (1/dim)·‖F_m(x) − F_m(x′)‖₁ per pair and channel (dim = the
    channel's H·W values; 1 for a vector layer) — the summand of eq. 1, and of
    the SNS loss (eq. 12). Keeps gradients."""
    return _l1_per_channel(a - b) / math.prod(a.shape[2:])


def _ratio_sums(a: torch.Tensor, l1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per channel, the sum over pairs of ‖F(x) − F(x′)‖₁ / ‖F(x)‖₁ (``l1``: the
    numerators [N, C], ``a``: the clean outputs) and the number of pairs
    counted: those whose clean output is not all 0 (eq. 11)."""
    den = _l1_per_channel(a)
    ok = den > 0
    return torch.where(ok, l1 / den.clamp_min(1e-30), torch.zeros_like(l1)).sum(0), ok.sum(0)


def _mean_or_nan(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, math.nan))


def neuron_sensitivity(act_clean: torch.Tensor, act_adv: torch.Tensor) -> torch.Tensor:
    """Neuron sensitivity σ (Zhang et al. 2021, eq. 1) of every channel of a
    layer: σ_m = (1/N) Σᵢ (1/dim) ‖F_m(xᵢ) − F_m(x′ᵢ)‖₁, with F_m(x) channel
    m of the layer's output for x (its dim = H·W values; 1 for a vector
    layer). ``act_clean``, ``act_adv``: [N, C, ...] for the pairs (xᵢ, x′ᵢ).
    Returns [C]; 0 for identical inputs."""
    a, b = _check_pair(act_clean, act_adv)
    return _deviation(a, b).mean(0)


def sensitivity_ratio(act_clean: torch.Tensor, act_adv: torch.Tensor) -> torch.Tensor:
    """Sensitivity ratio (Zhang et al. 2021, eq. 11) of every channel:
    (1/N) Σᵢ ‖F_m(xᵢ) − F_m(x′ᵢ)‖₁ / ‖F_m(xᵢ)‖₁ — the deviation as a share of
    the clean output, so scaling a layer's outputs leaves it unchanged. Pairs
    whose clean output is all 0 in a channel are left out of that channel's
    mean (NaN where every pair is). Returns [C]."""
    a, b = _check_pair(act_clean, act_adv)
    return _mean_or_nan(*_ratio_sums(a, _l1_per_channel(a - b)))


def sensitive_neurons(sigma: torch.Tensor, k: int | None = None, *, share: float | None = None) -> torch.Tensor:
    """The sensitive neurons Ω (Zhang et al. 2021, eq. 2): the indices of the
    ``k`` largest σ (or of the top ``share`` of the layer, at least one), in
    descending order of σ (ties: lower index first)."""
    if not isinstance(sigma, torch.Tensor) or sigma.dim() != 1 or sigma.numel() == 0:
        raise ValueError(f"sigma must be a non-empty [C] tensor (one σ per neuron), "
                         f"got {getattr(sigma, 'shape', type(sigma).__name__)}")
    if (k is None) == (share is None):
        raise ValueError(f"give exactly one of k (a count) and share (a fraction); got k={k!r}, share={share!r}")
    if share is not None:
        k = max(1, round(check_fraction("share", share, low_open=True) * sigma.numel()))
    k = check_int("k", k, low=1, high=sigma.numel())
    order = torch.argsort(-sigma.float().nan_to_num(-math.inf), stable=True)
    return order[:k]


def layer_sensitivity(model, x: torch.Tensor, x_adv: torch.Tensor, layers, *, batch_size: int = 1024,
                      amp: bool | None = False, per_image=()) -> dict[str, dict[str, torch.Tensor]]:
    """σ (eq. 1) and the sensitivity ratio (eq. 11) of every channel of each
    layer in ``layers`` (names as in ``model.layers()``), for the pairs
    (x[i], x_adv[i]): one forward pass of each clean and adversarial batch
    records all layers at once (hooks removed afterwards), and the sums are
    accumulated batch by batch, so no layer's outputs are kept for all images.
    Returns ``{layer: {"sigma": [C], "ratio": [C], "pair_mean": [N]}}``:
    ``pair_mean`` is each pair's deviation averaged over the layer's channels,
    whose mean over the pairs is the layer's mean σ — the per-image sample a
    bootstrap interval of the layer's mean σ, or a paired comparison of two
    models on the same images, needs. For the layers named in ``per_image``
    (``True``: all of them) the per-pair values behind σ and the ratio are
    kept too, on the CPU: ``"dev"`` [N, C], each pair's (1/dim)·‖F(x) − F(x′)‖₁,
    and ``"ratio_pairs"`` [N, C], each pair's ‖F(x) − F(x′)‖₁ / ‖F(x)‖₁ (NaN
    where the clean output is all 0) — what an interval over the images of a
    statistic of σ or of the ratio (``ratio_bootstrap``) resamples."""
    x = check_input(model, x)
    x_adv = check_input(model, x_adv, "x_adv")
    if x_adv.shape != x.shape:
        raise ValueError(f"x_adv {tuple(x_adv.shape)} must have the shape of x {tuple(x.shape)}: one x′ per x")
    names = layer_names(model, layers)
    batch_size = check_int("batch_size", batch_size, low=1)
    keep = set(names) if per_image is True else \
        set(layer_names(model, per_image, name="per_image")) if per_image else set()
    if not keep <= set(names):
        raise ValueError(f"per_image={sorted(keep - set(names))} must name layers among layers={names}")
    pairs: dict[str, dict[str, list]] = {n: {"dev": [], "ratio_pairs": []} for n in keep}
    sig: dict[str, torch.Tensor] = {}
    rat: dict[str, torch.Tensor] = {}
    cnt: dict[str, torch.Tensor] = {}
    per: dict[str, list] = {n: [] for n in names}
    with frozen(model), torch.no_grad(), capture(model, names) as st:
        for xb, xab in batches(x, x_adv.to(x.device), batch_size=batch_size):
            with autocast(xb.device, amp):
                model(xb)
                model(xab)
            for n in names:
                a, b = (t.float() for t in st[n])
                st[n].clear()
                l1 = _l1_per_channel(a - b)
                r, c = _ratio_sums(a, l1)
                dev = l1 / math.prod(a.shape[2:])
                sig[n] = sig.get(n, 0) + dev.sum(0)
                per[n].append(dev.mean(1))
                rat[n], cnt[n] = rat.get(n, 0) + r, cnt.get(n, 0) + c
                if n in keep:
                    den = _l1_per_channel(a)
                    pairs[n]["dev"].append(dev.cpu())
                    pairs[n]["ratio_pairs"].append(torch.where(
                        den > 0, l1 / den.clamp_min(1e-30), torch.full_like(l1, math.nan)).cpu())
    return {n: {"sigma": sig[n] / x.shape[0], "ratio": _mean_or_nan(rat[n], cnt[n]),
                "pair_mean": torch.cat(per[n])} | {q: torch.cat(v) for q, v in pairs.get(n, {}).items()}
            for n in names}


def _neuron_ratios(r: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """[B, C]: each neuron's ratio (eq. 11), the ``w``-weighted mean over the pairs where it is
    defined (``r`` [N, C], NaN where the clean output is all 0; ``w`` [B, N] pair weights)."""
    ok = torch.isfinite(r)
    return (w @ torch.where(ok, r, 0.0)) / (w @ ok.double())


def mean_ratio(ratio_pairs, neurons, weights=None):
    """Table II's statistic (Zhang et al. 2021, eq. 11, §V-B): the sensitivity
    ratio of each neuron in ``neurons`` — its mean over the pairs whose clean
    output is not all 0 — averaged over those neurons. ``ratio_pairs`` [N, C]
    from ``layer_sensitivity(..., per_image=...)``; ``weights`` [B, N] (how
    many times each pair counts, one row per bootstrap resample) gives [B]
    values; without it, one value (a float) over all pairs."""
    r = torch.as_tensor(ratio_pairs, dtype=torch.float64).cpu()
    if r.dim() != 2:
        raise ValueError(f"ratio_pairs must be [N, C] (per pair and channel), got shape {tuple(r.shape)}")
    idx = check_indices("neurons", neurons, r.shape[1])
    w = torch.ones(1, r.shape[0], dtype=torch.float64) if weights is None else \
        torch.as_tensor(weights, dtype=torch.float64).reshape(-1, r.shape[0])
    out = _neuron_ratios(r[:, idx], w).nanmean(1)
    return float(out[0]) if weights is None else out.numpy()


def ratio_bootstrap(a: dict, b: dict | None = None, *, share: float = 0.1, n_resamples: int = 2000,
                    seed: int = 0):
    """Table II's mean ratio on a layer's sensitive neurons (``mean_ratio``: the top ``share`` by σ)
    with its bootstrap interval over the images. ``a``: one layer's output of ``layer_sensitivity(...,
    per_image=...)`` (its ``"dev"`` and ``"ratio_pairs"``); on every resample of the images σ, the
    sensitive neurons and their mean ratio are recomputed, so the interval carries the selection's
    own uncertainty. With ``b`` (the same, on the same N clean images: another layer, model or ε)
    the paired difference a − b on each resample's images — the evidence for Zhang et al.'s "the
    ratio grows with depth / with ε / at a ReLU" and "adversarial training lowers it"."""
    from . import stats
    share = check_fraction("share", share, low_open=True)
    parts = [a] if b is None else [a, b]
    for name, d in zip("ab", parts):
        if not isinstance(d, dict) or "dev" not in d or "ratio_pairs" not in d:
            raise ValueError(f"{name} must be a layer's layer_sensitivity(..., per_image=...) output, with its "
                             "'dev' and 'ratio_pairs' per pair")
    n = parts[0]["dev"].shape[0]
    if any(d["dev"].shape[0] != n for d in parts):
        raise ValueError(f"b has {parts[-1]['dev'].shape[0]} pairs, a has {n}: a paired difference needs the "
                         "same images")
    arrs = [(torch.as_tensor(d["dev"], dtype=torch.float64).cpu(),
             torch.as_tensor(d["ratio_pairs"], dtype=torch.float64).cpu()) for d in parts]

    def one(dev, r, w):                # [B] mean ratio on each resample's own top-share neurons
        k = max(1, round(share * dev.shape[1]))
        top = torch.argsort(-(w @ dev), dim=1, stable=True)[:, :k]        # σ up to the factor 1/Σw
        return _neuron_ratios(r, w).gather(1, top).nanmean(1)

    def stat(w):
        w = torch.as_tensor(w, dtype=torch.float64)
        v = one(*arrs[0], w) - (one(*arrs[1], w) if len(arrs) > 1 else 0.0)
        return v.numpy()
    return stats.bootstrap_weights(stat, n, n_resamples=n_resamples, seed=seed)


def sharing_bootstrap(dev_a, dev_b=None, *, share: float, measure, n_resamples: int = 1000, seed: int = 0):
    """Fig. 8 of Zhang et al. 2021 (§IV-C) with its interval: ``measure``
    (``metrics.avg_pair_levenshtein``, eq. 9, or ``metrics.jaccard_total``,
    eq. 10) of the target classes' sensitive neurons — the top ``share`` of a
    layer by σ over each class's targeted pairs. ``dev_a``: one [N_y, C] array
    of per-pair deviations per class (``layer_sensitivity(..., per_image=...)
    ["dev"]``); each class's pairs are resampled on their own, σ and the top
    set recomputed on every resample. With ``dev_b`` (another layer on the same
    pairs) the paired difference a − b."""
    from . import stats
    share = check_fraction("share", share, low_open=True)
    da = [torch.as_tensor(d, dtype=torch.float64).cpu() for d in dev_a]
    db = None if dev_b is None else [torch.as_tensor(d, dtype=torch.float64).cpu() for d in dev_b]
    if len(da) < 2 or (db is not None and [len(d) for d in db] != [len(d) for d in da]):
        raise ValueError("dev_a must hold ≥ 2 classes, and dev_b the same classes with the same pairs")
    def one(devs, ws, i):
        seqs = [sensitive_neurons((w[i] @ d) / w[i].sum(), share=share).tolist() for d, w in zip(devs, ws)]
        return measure(seqs)
    def stat(*ws):
        ws = [torch.as_tensor(w, dtype=torch.float64) for w in ws]
        return [one(da, ws, i) - (0.0 if db is None else one(db, ws, i)) for i in range(ws[0].shape[0])]
    return stats.bootstrap_weights(stat, *(len(d) for d in da), n_resamples=n_resamples, seed=seed)


def select_sensitive(model, x: torch.Tensor, x_adv: torch.Tensor, layers, *, share: float = 0.1,
                     batch_size: int = 1024) -> dict[str, list[int]]:
    """The sensitive neurons Ω_l (eq. 2) of each layer: the top ``share`` of
    its channels by σ over the pairs (x, x_adv) — what SNS training
    stabilises (Zhang et al. 2021, §V-C: the top 10% of conv8–conv13 of the
    vanilla model, on PGD examples of the training set). Layer → indices."""
    share = check_fraction("share", share, low_open=True)
    sig = layer_sensitivity(model, x, x_adv, layers, batch_size=batch_size)
    return {n: sensitive_neurons(d["sigma"], share=share).tolist() for n, d in sig.items()}


def importance(features: torch.Tensor, weight: torch.Tensor, y) -> torch.Tensor:
    """Neuron importance φ (Zhang et al. 2021, eq. 3): the direct
    contribution F_m(x′)·W[y, m] of each penultimate feature m to the logit of
    class ``y`` (an int, or one class per image). ``features`` [N, F],
    ``weight`` [C, F] (``nn.Linear``'s layout). Returns [N, F]."""
    _check_fw(features, weight, None)
    n = features.shape[0]
    y = torch.full((n,), int(y), dtype=torch.long) if isinstance(y, int) else y
    y = check_labels(y, n, weight.shape[0])
    return features.detach().float() * weight.detach().float().to(features.device)[y.to(features.device)]


def important_neurons(phi: torch.Tensor, k: int = 20) -> torch.Tensor:
    """Π (Zhang et al. 2021, eq. 4): per image, the ``k`` features of largest φ
    in descending order ([N, k] indices; the paper's k = 20)."""
    if not isinstance(phi, torch.Tensor) or phi.dim() != 2:
        raise ValueError(f"phi must be [N, F] (from importance), got {getattr(phi, 'shape', type(phi).__name__)}")
    k = check_int("k", k, low=1, high=phi.shape[1])
    return torch.argsort(-phi, dim=1, stable=True)[:, :k]


def vote(sequences: torch.Tensor, n_neurons: int, k: int | None = None) -> torch.Tensor:
    """Γ^y (Zhang et al. 2021, eq. 5): weighted voting over per-image ranked
    sequences ([N, L] neuron indices, most important first): position j of a
    sequence gives its neuron L − j votes (L … 1); the ``k`` (default L)
    neurons with the most votes, in descending order of votes (ties: lower
    index first). Returns [k] indices; ``vote_counts`` gives the votes."""
    votes = vote_counts(sequences, n_neurons)
    k = check_int("k", sequences.shape[1] if k is None else k, low=1, high=n_neurons)
    return torch.argsort(-votes, stable=True)[:k]


def vote_counts(sequences: torch.Tensor, n_neurons: int) -> torch.Tensor:
    """The votes of every neuron ([n_neurons]) in ``vote``'s weighting."""
    n_neurons = check_int("n_neurons", n_neurons, low=1)
    if not isinstance(sequences, torch.Tensor) or sequences.dim() != 2 or sequences.shape[1] == 0:
        raise ValueError(f"sequences must be [N, L] neuron indices (L ≥ 1), "
                         f"got {getattr(sequences, 'shape', type(sequences).__name__)}")
    if sequences.numel() and (int(sequences.min()) < 0 or int(sequences.max()) >= n_neurons):
        raise ValueError(f"sequences hold indices outside [0, {n_neurons - 1}]")
    L = sequences.shape[1]
    w = torch.arange(L, 0, -1, dtype=torch.float64, device=sequences.device).expand_as(sequences)
    return torch.zeros(n_neurons, dtype=torch.float64, device=sequences.device).scatter_add_(
        0, sequences.reshape(-1).long(), w.reshape(-1))
