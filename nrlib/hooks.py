"""Forward hooks as context managers that leave the model as they found it.

* ``capture(model, names)`` — record the outputs of named layers.
* ``zero_channels(model, name, channels)`` — kernel (nodal) dropout: zero
  output channels of a layer (Pravin et al. 2021).
* ``scale_channels(model, name, channels, beta)`` — multiply a set of output
  channels by β (Zhang et al. 2021, β-suppression of sensitive neurons).
* ``logits_layer(model)`` and ``features_of(model)`` — the logits layer and,
  inside the block, its inputs (the features z of Suri & Evans 2020) of the
  last forward pass.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch
import torch.nn as nn

from .utils import check_bool, check_indices, check_model, check_number


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The layer called ``name`` in ``model.layers()`` (or a dotted module path)."""
    check_model(model)
    layers = model.layers() if hasattr(model, "layers") else {}
    if not isinstance(name, str):
        raise ValueError(f"layer={name!r} must be a layer name (a string); "
                         f"the layers of {type(model).__name__} are {list(layers)}")
    if name in layers:
        return layers[name]
    modules = dict(model.named_modules())
    if name in modules and name:
        return modules[name]
    raise ValueError(f"layer={name!r} is not a layer of {type(model).__name__}; "
                     f"its layers are {list(layers)}")


@contextlib.contextmanager
def capture(model: nn.Module, names: Iterable[str] | str, *, detach: bool = True):
    """Record the outputs of the named layers for every forward pass inside the
    block: yields a dict name → list of tensors (one per forward call)."""
    names = layer_names(model, names, name="names")
    check_bool("detach", detach)
    layers = [get_layer(model, n) for n in names]     # all found before any hook is set
    store: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    handles = []
    for n, layer in zip(names, layers):
        def hook(_m, _i, out, n=n):
            store[n].append(out.detach() if detach else out)
        handles.append(layer.register_forward_hook(hook))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def layer_names(model: nn.Module, names, *, name: str = "layers") -> list[str]:
    """``names`` (one name or a list) as a non-empty list of layers of ``model``."""
    if isinstance(names, str):
        out = [names]
    else:
        out = list(names) if isinstance(names, Iterable) and not isinstance(names, bytes) else []
    if not out:
        raise ValueError(f"{name}={names!r} must be a layer name or a non-empty list of layer names")
    for n in out:
        get_layer(model, n)
    return out


def layer_channels(module: nn.Module) -> int | None:
    """The output channels of a conv / dense / norm layer (None where the layer
    does not say, e.g. a ReLU: known only from its output)."""
    for attr in ("out_channels", "out_features", "num_features"):
        if isinstance(getattr(module, attr, None), int):
            return getattr(module, attr)
    return None


@contextlib.contextmanager
def scale_channels(model: nn.Module, name: str, channels, beta: float):
    """Multiply output channels ``channels`` of layer ``name`` by ``beta`` inside
    the block (β = 0 zeroes them)."""
    beta = check_number("beta", beta)
    layer = get_layer(model, name)
    width = layer_channels(layer)
    check_indices("channels", channels, width)
    state = {}

    def hook(_m, _i, out):
        if "idx" not in state:     # a layer that does not declare its width is checked on its output
            state["idx"] = torch.tensor(check_indices("channels", channels, out.shape[1]), dtype=torch.long,
                                        device=out.device)
        scale = torch.ones(out.shape[1], device=out.device, dtype=out.dtype)
        scale[state["idx"]] = beta
        return out * scale.view(1, -1, *([1] * (out.dim() - 2)))

    h = layer.register_forward_hook(hook)
    try:
        yield model
    finally:
        h.remove()


def zero_channels(model: nn.Module, name: str, channels):
    """Kernel (nodal) dropout: zero output channels ``channels`` of layer ``name``."""
    return scale_channels(model, name, channels, 0.0)


@contextlib.contextmanager
def scale_many(model: nn.Module, channels: dict, beta: float):
    """``scale_channels`` for several layers at once: multiply the channels
    ``channels[layer]`` of every named layer by ``beta`` inside the block (the
    β-suppression of Zhang et al. 2021 §IV-D, applied after the activations)."""
    if not isinstance(channels, dict):
        raise ValueError(f"channels must be a dict layer -> channel indices, got {type(channels).__name__}")
    with contextlib.ExitStack() as stack:
        for name, idx in channels.items():
            stack.enter_context(scale_channels(model, name, idx, beta))
        yield model


def logits_layer(model: nn.Module) -> tuple[str, nn.Linear]:
    """The model's logits layer: its last ``nn.Linear`` (``(name, module)``)."""
    check_model(model)
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise ValueError(f"model {type(model).__name__} has no nn.Linear layer: neuron sensitivity "
                         "is defined on the inputs of the logits layer")
    return found[-1]


@contextlib.contextmanager
def features_of(model, layer: nn.Module | None = None):
    """Inside the block, ``store["z"]`` is the input of the logits layer of the last forward pass;
    ``layer``: that layer where the caller holds it already (``logits_layer(model)[1]``)."""
    layer = logits_layer(model)[1] if layer is None else layer
    store = {}
    h = layer.register_forward_pre_hook(lambda _m, inp: store.__setitem__("z", inp[0]))
    try:
        yield store
    finally:
        h.remove()
