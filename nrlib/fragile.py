"""Fragile and null kernels of the first convolutional layer (paper 1).

Pravin, Martino, Nicosia & Ojha 2021, "Adversarial robustness in deep
learning: attacks on fragile neurons" (ICANN 2021), §3.3 "Fragile and Null
Kernels Identification": the kernels (output channels) of a layer are
"dropped out systematically one-by-one" and the model's test accuracy is
measured with each one gone (their Fig. 1, and Fig. 4 across training
stages). Kernels whose removal costs the most accuracy are the fragile ones,
those whose removal hardly matters the null ones.

This module holds, for now, that nodal-dropout sweep:

* ``kernel_dropout_accuracy`` — vectorised: each batch of images runs through
  the layers before ``layer`` once; a forward hook on ``layer`` repeats its
  output K times along the batch axis with copy k's channel k zeroed, so the
  rest of the network scores K dropped kernels in one pass (K·N samples).
  Measured by the book's benchmarks, ``python -m nrbook.bench`` (section c).
* ``kernel_dropout_accuracy_naive`` — the reference: a Python loop that
  zeroes one kernel with ``nrlib.hooks.zero_channels`` and re-runs the whole
  model in fp32 each time. The tests and ``python -m nrbook.bench`` check the
  two agree, and the bench measures how much faster the first one is.

Dropping a kernel means zeroing that channel of the layer's output; for a
convolution without bias (the ResNets' ``conv1``) this is exactly zeroing the
kernel's weights, and the batch-norm that follows then sees a constant 0.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .precision import autocast
from .hooks import capture, get_layer, layer_channels, zero_channels
from .metrics import accuracy
from .models import frozen
from .utils import check_bool, check_indices, check_input, check_int, check_labels, num_classes

# Samples (images × kernels) per forward pass of the vectorised sweep. On a GPU
# large passes keep the tensor cores busy (a bf16 ResNet-18 at 16k 32×32 images
# needs a few GB); on the CPU the work is compute-bound, so a moderate pass
# size only bounds memory.
SAMPLES_PER_PASS = {"cuda": 16384, "cpu": 1024}


def _n_channels(model: nn.Module, layer_name: str, module: nn.Module, x: torch.Tensor) -> int:
    """Output channels of ``module`` (read from the layer, else probed with one image)."""
    width = layer_channels(module)
    if width is not None:
        return width
    with torch.no_grad(), frozen(model), capture(model, layer_name) as store:
        model(x[:1])
    return int(store[layer_name][0].shape[1])


def _validate(model, x, y, layer, kernels, progress):
    check_input(model, x)
    y = check_labels(y, x.shape[0], num_classes(model)).to(x.device)
    check_bool("progress", progress)
    module = get_layer(model, layer)  # ValueError naming the layer and the model's layers
    n_channels = _n_channels(model, layer, module, x)
    idx = list(range(n_channels)) if kernels is None else check_indices("kernels", kernels, n_channels)
    return y, module, idx


def _repeat_point(model: nn.Module, module: nn.Module) -> nn.Module | None:
    """Where the batch can be repeated K times: ``None`` for a layer that is a
    direct child of the model (repeat its output), else the outermost module
    around it that is an element of an ``nn.Sequential`` — for a ResNet layer
    such as ``l2b1c1`` its residual block, whose input is the only stream into
    the block (repeating at the layer alone would leave the skip connection
    with N samples). The models' top-level forward chains their children."""
    path = next(name for name, m in model.named_modules() if m is module)
    parts = path.split(".")
    if len(parts) == 1:
        return None
    for depth in range(1, len(parts) + 1):
        parent = model.get_submodule(".".join(parts[:depth - 1]))
        if isinstance(parent, nn.Sequential) and depth > 1:
            return model.get_submodule(".".join(parts[:depth]))
    top = model.get_submodule(parts[0])
    if isinstance(top, (nn.ModuleList, nn.ModuleDict)):
        raise ValueError(f"cannot find where the stream into layer {path!r} can be repeated")
    return top


def _percent(correct: torch.Tensor, n: int) -> torch.Tensor:
    """Percent correct, rounded exactly as ``metrics.accuracy`` rounds it (a
    float32 mean, then ×100 in double), so the two sweeps compare with ==."""
    return 100.0 * (correct.float() / n).double()


@torch.no_grad()
def kernel_dropout_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, layer: str = "conv1",
                            kernels=None, *, batch_size: int | None = None, chunk: int | None = None,
                            amp: bool | None = None, progress: bool = False) -> torch.Tensor:
    """Test accuracy (percent) with each kernel of ``layer`` dropped, one at a
    time (Pravin et al. 2021, §3.3; their Fig. 1).

    Returns a float64 CPU tensor with one accuracy per kernel: all output
    channels of ``layer`` (``kernels=None``) or those listed in ``kernels``,
    in that order.

    Vectorised: a forward hook on ``layer`` returns its output repeated K times
    along the batch axis, copy k with channel ``kernels[k]`` zeroed; the layers
    after it then process K·N samples in one pass and the logits are read as
    K×N. (For a layer inside a residual block the batch is repeated where it
    enters the block, so that the skip connection carries K·N samples too.)
    ``chunk`` (K, kernels per pass) and ``batch_size`` (N, images per pass)
    bound the memory; by default all kernels go in one chunk and N is chosen
    so that K·N ≈ ``SAMPLES_PER_PASS`` (16,384 on a GPU, 1,024 on the CPU).
    The model is frozen (eval mode, no weight gradients) and left as it was;
    on CUDA the passes run under bf16 autocast (``amp``, as in
    ``nrlib.attacks``) with channels_last inputs, so a few predictions near a
    tie may differ from the fp32 ``kernel_dropout_accuracy_naive``; on the CPU
    (fp32 both) they agree exactly in the tests and in ``nrbook.bench``.
    """
    y, module, idx = _validate(model, x, y, layer, kernels, progress)
    n, dev = x.shape[0], x.device
    budget = SAMPLES_PER_PASS.get(dev.type, SAMPLES_PER_PASS["cpu"])
    if chunk is not None:
        chunk = check_int("chunk", chunk, low=1)
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, low=1)
    check_bool("amp", amp, allow_none=True)
    if not idx:
        return torch.zeros(0, dtype=torch.float64)
    if chunk is None:
        chunk = len(idx) if batch_size is None else max(1, budget // batch_size)
    chunk = min(chunk, len(idx))
    if batch_size is None:
        batch_size = max(1, budget // chunk)
    batch_size = min(batch_size, n)

    entry = _repeat_point(model, module)
    state: dict = {}

    def repeat(_m, args):
        # K copies of the stream entering the block that holds ``layer``, so the
        # block's skip connection sees the same K·N batch as the layer does
        xin = args[0]
        return (xin.unsqueeze(0).expand(state["k"], *xin.shape).reshape(-1, *xin.shape[1:]),
                *args[1:])

    def hook(_m, _i, out):
        # copy k = the layer's output with channel ks[k] zeroed: one multiply by
        # a K×C mask of ones with a single 0 per row (× 0 as zero_channels does)
        ks = state["ks"]
        k, c = len(ks), out.shape[1]
        mask = torch.ones(k, c, device=out.device, dtype=out.dtype)
        mask[torch.arange(k, device=out.device), ks] = 0
        mask = mask.view(k, 1, c, *([1] * (out.dim() - 2)))
        copies = out.unsqueeze(0) if entry is None else out.unflatten(0, (k, -1))
        rep = (copies * mask).flatten(0, 1)
        return rep.contiguous(memory_format=torch.channels_last) if rep.dim() == 4 else rep

    correct = torch.zeros(len(idx), dtype=torch.long, device=dev)
    idx_t = torch.tensor(idx, dtype=torch.long, device=dev)
    starts = [(i, j) for i in range(0, n, batch_size) for j in range(0, len(idx), chunk)]
    with frozen(model):
        handles = [module.register_forward_hook(hook)]
        if entry is not None:
            handles.append(entry.register_forward_pre_hook(repeat))
        try:
            for i, j in tqdm(starts, desc=f"dropout {layer}", disable=not progress, leave=False):
                xb, yb = x[i:i + batch_size], y[i:i + batch_size]
                if xb.dim() == 4:
                    # channels_last (NHWC): what cuDNN's tensor-core kernels and oneDNN want
                    xb = xb.contiguous(memory_format=torch.channels_last)
                ks = idx_t[j:j + chunk]
                state["ks"], state["k"] = ks, len(ks)
                with autocast(dev, amp):
                    logits = model(xb)
                pred = logits.argmax(1).view(len(ks), xb.shape[0])
                correct[j:j + len(ks)] += (pred == yb.view(1, -1)).sum(1)
        finally:
            for h in handles:
                h.remove()
    return _percent(correct.cpu(), n)


def kernel_dropout_accuracy_naive(model: nn.Module, x: torch.Tensor, y: torch.Tensor, layer: str = "conv1",
                                  kernels=None, *, batch_size: int = 1024,
                                  progress: bool = False) -> torch.Tensor:
    """The reference sweep of ``kernel_dropout_accuracy`` (Pravin et al. 2021,
    §3.3): for each kernel, zero it with ``nrlib.hooks.zero_channels`` and run
    the whole model over ``x`` again with ``nrlib.metrics.accuracy`` (fp32, in
    batches of ``batch_size``). Returns a float64 CPU tensor of accuracies in
    percent, one per kernel."""
    y, _module, idx = _validate(model, x, y, layer, kernels, progress)
    batch_size = check_int("batch_size", batch_size, low=1)
    accs = []
    for k in tqdm(idx, desc=f"dropout {layer} (naive)", disable=not progress, leave=False):
        with zero_channels(model, layer, [k]):
            accs.append(accuracy(model, x, y, batch_size=batch_size, amp=False))
    return torch.tensor(accs, dtype=torch.float64)
