"""What a chapter's run costs, counted before it runs: the network work of each stage in images
through a training step, an attack step or a forward pass, and the FLOPs of each pass counted by
``torch.utils.flop_counter`` on the book's own models. ``nrbook.plans`` writes each chapter's work
with these pieces; ``python -m nrbook.budget`` turns it into seconds on a device.

* ``Net`` — a model as ``nrlib.models.build`` makes it (architecture, dataset, width, stem);
* ``Work`` — one stage's share of work: a number of images through one kind of pass on one net;
* ``flops_per_image`` — the counted FLOPs of one image through a pass of each kind:
  ``"train"`` (forward and backward, weight gradients included), ``"attack"`` (forward and the
  backward to the input only, the weights frozen as ``nrlib.attacks`` freezes them) and
  ``"forward"``;
* ``training`` — the work of training a zoo model (``nrlib.recipes``): epochs × images × the
  training step, plus the attack steps of adversarial training;
* ``attack`` / ``forward`` — the work of an attack of some steps and restarts, or of a forward pass;
* ``notebook_sizes`` — a chapter's sizes per profile, read from its notebook (its parameters
  cell and its ``NAME = {"smoke": …, "cpu": …, "full": …}[profile]`` tables), so that the sizes
  the chapter runs and the sizes the estimate counts are written once.

FLOPs here are the counter's: 2 per multiply-add of the convolutions and matrix products, both
directions; batch norms, ReLUs and the optimiser's update are not counted (a few per cent of a
convnet's work).
"""
from __future__ import annotations

import ast
import functools
import json
from dataclasses import dataclass, field

from . import NOTEBOOKS, chapter_notebooks

KINDS = ("train", "attack", "forward")


@dataclass(frozen=True)
class Net:
    """A model of the book as ``nrlib.models.build(arch, dataset, **kwargs)`` makes it."""
    arch: str
    dataset: str
    kwargs: tuple = ()           # sorted (name, value) pairs: width, stem

    @classmethod
    def of(cls, arch: str, recipe: str, profile: str, dataset: str | None = None) -> "Net":
        """The net a zoo recipe trains at ``profile`` (its width and stem, ``recipes.model_kwargs``)."""
        from nrlib import recipes

        ds = dataset or recipes.recipe_datasets(recipe)[0]
        return cls(arch, ds, tuple(sorted(recipes.model_kwargs(arch, recipe, profile, ds).items())))

    @property
    def label(self) -> str:
        kw = dict(self.kwargs)
        size = f" w{kw['width']}" if "width" in kw else ""
        return f"{self.arch}{size} ({self.dataset})"


@dataclass(frozen=True)
class Work:
    """``images`` images through one pass of ``kind`` on ``net``, in batches of ``batch``, as part of
    the chapter's stage ``stage`` (the name its timer gives it, so that a cpu run's measured seconds
    line up); ``what`` says what it is in a table; ``zoo``: part of training a zoo model, which a
    run that finds its checkpoint skips."""
    stage: str
    net: Net
    kind: str
    images: float
    batch: int = 500
    what: str = field(default="", compare=False)
    zoo: bool = field(default=False, compare=False)   # trains a zoo model: a cached checkpoint skips it

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r} is not allowed; choose one of {list(KINDS)}")
        if not self.images >= 0:
            raise ValueError(f"images={self.images!r} must be a number ≥ 0")
        if int(self.batch) < 1:
            raise ValueError(f"batch={self.batch!r} must be an integer ≥ 1")

    @property
    def flops(self) -> float:
        return self.images * flops_per_image(self.net, self.kind)

    @property
    def steps(self) -> int:
        """Batches: what a per-step floor (kernel launches) is charged on."""
        return -(-int(round(self.images)) // int(self.batch))


@functools.lru_cache(maxsize=None)
def flops_per_image(net: Net, kind: str) -> float:
    """FLOPs of one image through a pass of ``kind`` on ``net``, counted by
    ``torch.utils.flop_counter.FlopCounterMode`` on a batch of 2 (batch norm in training mode needs
    more than one image) and halved."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from nrlib import models

    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not allowed; choose one of {list(KINDS)}")
    model = models.build(net.arch, net.dataset, **dict(net.kwargs))
    c, h, w = models.SHAPES[net.dataset]
    x = torch.rand(2, c, h, w)
    y = torch.zeros(2, dtype=torch.long)
    model.train(kind == "train")
    for p in model.parameters():
        p.requires_grad_(kind == "train")
    x.requires_grad_(kind == "attack")
    with FlopCounterMode(display=False) as counter:
        if kind == "forward":
            with torch.no_grad():
                model(x)
        else:
            torch.nn.functional.cross_entropy(model(x), y).backward()
    return counter.get_total_flops() / 2


def default_of(fn, name: str):
    """The default of argument ``name`` of the library function ``fn`` (a batch size): a plan reads
    the batch a call runs in from the library, not from a number typed again."""
    import inspect

    return inspect.signature(fn).parameters[name].default


@functools.lru_cache(maxsize=None)
def layers(net: Net) -> int:
    """The net's layers with kernels to launch (its leaf modules: convolutions, batch norms,
    activations, pools, linear layers): what a per-batch launch floor is charged on."""
    from nrlib import models

    model = models.build(net.arch, net.dataset, **dict(net.kwargs))
    return sum(1 for m in model.modules() if not list(m.children()))


def training(arch: str, recipe: str, profile: str, *, dataset: str | None = None,
             variant: str | None = None, seeds: int = 1, overrides: dict | None = None,
             stage: str = "train") -> list[Work]:
    """The work of training a zoo model ``seeds`` times (``nrlib.zoo.zoo_get``): per epoch, every
    training image through a training step (twice with ``mix="benign+adv"``: the clean and the
    adversarial copy), ``adv_steps`` attack steps per image for adversarial training, the test
    images through a forward pass at the end and at each snapshot, and, for a recipe that keeps its
    best epoch (``select``), a PGD attack on the held-out images after every epoch. A recipe with early stopping is counted at its largest
    number of epochs; a fine-tuned variant (``init``) counts its own epochs only — the model it
    starts from is a separate entry of the plan."""
    from nrlib import recipes

    st = recipes.recipe_settings(arch, recipe, profile, dataset, variant, overrides)
    net = Net.of(arch, recipe, profile, st["dataset"])
    n = float(st["epochs"]) * st["n_train"] * seeds
    name = f"{arch} {variant or 'standard'}" + (f" ×{seeds}" if seeds > 1 else "")
    mix = st.get("mix")
    how = f"{st['epochs']} epochs × {st['n_train']:,} images" + (
        f", PGD-{st['adv_steps']} ({mix})" if mix and st.get("adv_steps") else "")
    out = [Work(stage, net, "train", n * (2 if mix == "benign+adv" else 1), st["batch_size"],
                f"train {name}: {how}", zoo=True)]
    if mix and st.get("adv_steps"):
        out.append(Work(stage, net, "attack", n * st["adv_steps"], st["batch_size"],
                        f"attack {name}: PGD-{st['adv_steps']}", zoo=True))
    # the test images scored once at the end and at each snapshot (``zoo_get``)
    scored = (1 + len(st.get("snapshots") or [])) * float(st.get("n_test", 0)) * seeds
    out.append(Work(stage, net, "forward", scored, 1000, f"test {name}", zoo=True))
    sel = st.get("select")
    if sel:                    # the epoch kept by PGD accuracy on held-out images (``zoo._selector``)
        n_val = float(st["epochs"]) * st["n_val"] * seeds
        out.append(Work(stage, net, "attack", n_val * sel["steps"], 500,
                        f"select {name}: PGD-{sel['steps']} {sel['norm']}", zoo=True))
        out.append(Work(stage, net, "forward", 2 * n_val, 1000, f"select {name}: score", zoo=True))
    return out


def attack(stage: str, net: Net, images: float, steps: int, *, restarts: int = 1, batch: int = 500,
           score: bool = True, what: str = "") -> list[Work]:
    """An iterative attack (PGD, FGSM at ``steps=1``) of ``steps`` steps and ``restarts`` restarts on
    ``images`` images, as ``attacks.pgd`` runs it: with several restarts a forward pass scores each
    one to keep the best (one restart returns its iterate unscored); ``score``: the caller then
    scores the result with a forward pass (``metrics.robust_hits``, a prediction)."""
    name = what or f"PGD-{steps}"
    out = [Work(stage, net, "attack", float(images) * steps * restarts, batch, name)]
    scored = (restarts if restarts > 1 else 0) + (1 if score else 0)
    if scored:
        out.append(Work(stage, net, "forward", float(images) * scored, batch, f"{name}: score"))
    return out


def forward(stage: str, net: Net, images: float, *, batch: int = 1000, what: str = "") -> list[Work]:
    """``images`` forward passes (evaluation, activations, an ablation's accuracy)."""
    return [Work(stage, net, "forward", float(images), batch, what or "forward")]


# ----------------------------------------------------------------------------
# a chapter's sizes, read from its notebook
# ----------------------------------------------------------------------------
_SAFE = {"range": range, "list": list, "dict": dict, "tuple": tuple, "len": len, "max": max,
         "min": min, "round": round, "int": int, "float": float, "sorted": sorted, "sum": sum}


def _code_cells(notebook: str) -> list[tuple[list, str]]:
    path = NOTEBOOKS / f"{notebook}.ipynb"
    if not path.exists():
        names = [p.stem for p in chapter_notebooks()]
        raise ValueError(f"notebook={notebook!r} is not a chapter; chapters: {names}")
    nb = json.loads(path.read_text())
    return [(c.get("metadata", {}).get("tags", []), "".join(c["source"]))
            for c in nb["cells"] if c["cell_type"] == "code"]


@functools.lru_cache(maxsize=None)
def _tables(notebook: str) -> tuple[dict, dict]:
    """(the parameters cell's values, {name: {profile: sizes}}) of a chapter's notebook."""
    ns: dict = {}
    tables: dict = {}
    params: set = set()
    for tags, src in _code_cells(notebook):
        try:
            tree = ast.parse(src)
        except SyntaxError:           # a cell with IPython magics: no sizes in it
            continue
        for node in tree.body:
            if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
                continue
            target, value = node.targets[0], node.value
            if (isinstance(target, ast.Name) and isinstance(value, ast.Subscript)
                    and isinstance(value.slice, ast.Name) and value.slice.id == "profile"):
                expr = value.value
                try:
                    table = eval(compile(ast.Expression(expr), notebook, "eval"), {"__builtins__": _SAFE}, ns)
                except Exception:     # a table built from the run's own objects: not a size table
                    continue
                if isinstance(table, dict) and {"smoke", "cpu", "full"} <= set(table):
                    tables[target.id] = table
                continue
            if "parameters" in tags and isinstance(target, ast.Name):
                params.add(target.id)
            # plain values the tables may use (ε grids, the parameters); `A, B = a, b` pairwise
            pairs = ([(target, value)] if isinstance(target, ast.Name) else
                     list(zip(target.elts, value.elts)) if isinstance(target, ast.Tuple)
                     and isinstance(value, ast.Tuple) and len(target.elts) == len(value.elts) else [])
            for t, e in pairs:
                if not isinstance(t, ast.Name):
                    continue
                try:
                    ns[t.id] = eval(compile(ast.Expression(e), notebook, "eval"), {"__builtins__": _SAFE}, ns)
                except Exception:
                    continue
    keep = {k: v for k, v in ns.items()
            if k in params or (k.isupper() and _plain(v) and v not in ({}, []))}
    return keep, tables


def notebook_sizes(notebook: str, profile: str) -> dict:
    """A chapter's sizes at ``profile``: ``{"params": the parameters and plain values of its cells,
    NAME: that profile's entry of each ``NAME = {…}[profile]`` table}`` (e.g. ``SIZES``)."""
    from nrlib.profiles import PROFILES

    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r} is not allowed; choose one of {list(PROFILES)}")
    ns, tables = _tables(notebook)
    if not tables:
        raise ValueError(f"notebook {notebook!r} has no size table (NAME = {{'smoke': …, 'cpu': …, "
                         f"'full': …}}[profile])")
    return {"params": dict(ns), **{name: t[profile] for name, t in tables.items()}}


def _plain(v) -> bool:
    if isinstance(v, (str, int, float, bool, type(None))):
        return True
    if isinstance(v, (list, tuple)):
        return all(_plain(x) for x in v)
    if isinstance(v, dict):
        return all(_plain(k) and _plain(x) for k, x in v.items())
    return False
