"""Forward hooks as context managers that leave the model as they found it.

* ``capture(model, names)`` — record the outputs of named layers.
* ``zero_channels(model, name, channels)`` — kernel (nodal) dropout: zero
  output channels of a layer (Pravin et al. 2021).
* ``scale_channels(model, name, channels, beta)`` — multiply a set of output
  channels by β (Zhang et al. 2021, β-suppression of sensitive neurons).
"""
from __future__ import annotations

import contextlib
from typing import Iterable

import torch
import torch.nn as nn

from .utils import check_number


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The layer called ``name`` in ``model.layers()`` (or a dotted module path)."""
    layers = model.layers() if hasattr(model, "layers") else {}
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
    names = [names] if isinstance(names, str) else list(names)
    store: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    handles = []
    for n in names:
        def hook(_m, _i, out, n=n):
            store[n].append(out.detach() if detach else out)
        handles.append(get_layer(model, n).register_forward_hook(hook))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def _channel_index(layer_name, out_channels, channels):
    idx = torch.as_tensor(list(channels) if not torch.is_tensor(channels) else channels).long().flatten()
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= out_channels):
        raise ValueError(f"channels={idx.tolist()} outside [0, {out_channels - 1}] for layer {layer_name!r}")
    return idx


@contextlib.contextmanager
def scale_channels(model: nn.Module, name: str, channels, beta: float):
    """Multiply output channels ``channels`` of layer ``name`` by ``beta`` inside
    the block (β = 0 zeroes them)."""
    beta = check_number("beta", beta)
    layer = get_layer(model, name)
    state = {}

    def hook(_m, _i, out):
        if "idx" not in state:
            state["idx"] = _channel_index(name, out.shape[1], channels).to(out.device)
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
