"""The plan of chapter 5 (Prattico 2022): ResNet-20 and ResNet-18 trained; every toggle
measurement is a forward pass over its images (``toggle.extrema``) and an FGSM step to make the
attacked ones; the neural ranking is a forward and an input-side backward pass per image
(``ranking.rank_neurons``)."""
from __future__ import annotations

from ..cost import Net, Work, attack, forward, notebook_sizes, training

NOTEBOOK = "05_toggle_activity"


def plan(profile: str) -> list[Work]:
    """The work of chapter 5's run at ``profile``."""
    sizes = notebook_sizes(NOTEBOOK, profile)
    S, P = sizes["SIZES"], sizes["params"]
    archs, main = P["ARCHS"], P["MAIN"]
    net = {a: Net.of(a, "cifar", profile) for a in archs}
    views = [main, archs[1], main]                   # resnet20 (convs), resnet18, resnet20 (ReLUs)
    out = [w for a in archs for w in training(a, "cifar", profile)]
    out += [w for a in archs for w in forward("untimed", net[a], 10000, what="test accuracy")]
    for v in views:                                  # two valley rules, one pass each
        out += forward("thresholds", net[v], 2 * S["n_profile"], what="activations (KDE inputs)")
    N = S["sizes"][-1]
    for v in views:                                  # size_sweep, one per draw
        out += attack("toggle_sizes", net[v], N * S["draws"], 1, what="FGSM")
        out += forward("toggle_sizes", net[v], 3 * N * S["draws"], what="extrema, accuracy")
    nd = S["n_draws"]
    for v in views:
        for n in S["n_equal"]:                       # equal_size at ε and at ε_high
            draws = nd if n <= 100 else max(2, nd // 4)
            out += attack("toggle_equal", net[v], 2 * draws * (n // 2), 1, what="FGSM")
            out += forward("toggle_equal", net[v], 2 * draws * (n + n // 2), what="extrema")
    grid = len(S["eps_grid"])
    for v in views:
        for n in S["n_eps"]:                         # eps_sweep, one per draw
            out += attack("toggle_eps", net[v], n * grid * S["draws"], 1, what="FGSM per ε")
            out += forward("toggle_eps", net[v], n * (2 * grid + 1) * S["draws"], what="extrema")
    nr = S["n_rank"]
    for a in archs:            # clean, clean+fgsm, fgsm; the draws' parts; the three aggregates
        rank = nr * (1 + 2 + 1) + 3 * nr + 3 * 3 * nr
        out += [Work("ranking", net[a], "attack", rank, 250, "neural ranking")]
    out += [Work("neurons", net[main], "attack", 3 * nr, 250, "neurons.rank toggle (3 layers)")]
    out += attack("neurons", net[main], 3 * nr, 1, what="FGSM")
    for n in S["n_eps"][:2]:                         # the panel's cache: a ranking per (ε, n)
        out += attack("slider_cache", net[main], n * grid, 1, what="FGSM")
        out += [Work("slider_cache", net[main], "attack", 2 * n * grid, 250, "neural ranking")]
    return out
