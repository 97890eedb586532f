"""`optimize(model)`: a faster copy of a POSTERV2, in one call (the rewrites are in rewrites.py).

This module imports torch only when `optimize` runs, so that `import poster_fast` stays light.
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .model import POSTERV2

MODES = ("inference", "train")


def optimize(model: "POSTERV2", mode: str = "inference", dtype: "torch.dtype | None" = None,
             channels_last: bool = True, attn_backend: str = "auto", compile: bool = False,
             cuda_graphs: bool = False, onednn: bool = True) -> "nn.Module":
    """A faster copy of `model` computing the same function within `dtype`'s tolerance.

    Both modes: 1x1 max-pool shortcuts as strided slices, channels-last activations, SDPA in
    the ViT, the W-MCSA backend `attn_backend`. mode "inference" also puts the copy in eval mode
    without gradients, folds each BatchNorm fed by a convolution into it (in float32; the IR
    units' leading BatchNorm, which precedes its convolution, stays) and then holds every weight
    in `dtype` (float32, the default; bfloat16 or float16): inputs are cast to it once and the
    logits come back in float32. mode "train" keeps every tensor, trainable and in float32, and
    runs under autocast to `dtype`; `.model.state_dict()` is the plain model's. `compile` wraps
    the result in torch.compile(fullgraph=True), on the CPU in inference mode with Inductor's
    freezing (weights become constants, prepacked for oneDNN); `cuda_graphs` (CUDA only, implies
    compile) uses mode="reduce-overhead". On the CPU, mode "inference" also runs the convolutions
    and linear layers through oneDNN with packed weights (`onednn`; rewrites.use_onednn: residual
    adds fused into the convolutions, the MLPs' GELU into their first layer, linear layers through
    oneDNN only where it is measured faster than ATen's BLAS), in fp32 and, where oneDNN has it,
    bf16 (elsewhere ATen's layers run; `.layers` of the result says which run, and why). The
    original model is left as it was.

    Args:
        model: a POSTERV2.
        mode: "inference" or "train".
        dtype: torch.float32 (default), torch.bfloat16 or torch.float16.
        channels_last: channels-last activations and weights.
        attn_backend: the W-MCSA backend of the copy (see poster_fast.ops.explain).
        compile, cuda_graphs: as above.
        onednn: the oneDNN layers of CPU inference (False: ATen's, as in training).

    Returns:
        The faster module: (B, 3, H, W) images -> (B, num_classes) float32 logits.
    """
    import torch

    from .model import POSTERV2
    from .rewrites import OptimizedPOSTER, fold_batchnorm, speed_up_in_place, use_onednn

    dtype = torch.float32 if dtype is None else dtype
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype: expected torch.float32, torch.bfloat16 or torch.float16, got {dtype}")
    if not isinstance(model, POSTERV2):
        raise TypeError(f"model: expected a POSTERV2, got {type(model).__name__}")
    device = next(model.parameters()).device
    if cuda_graphs and device.type != "cuda":
        raise ValueError("cuda_graphs: needs the model on a CUDA device")
    fast = copy.deepcopy(model)
    fast.attn_backend = attn_backend
    inference = mode == "inference"
    if inference:
        fold_batchnorm(fast.eval()).requires_grad_(False).to(dtype)
    speed_up_in_place(fast, channels_last)  # after folding: the folded weights go channels-last too
    layers = "ATen layers"
    if inference and device.type == "cpu":
        layers = use_onednn(fast, dtype) if onednn else "ATen layers: optimize(onednn=False)"
    wrapped: nn.Module = OptimizedPOSTER(fast, dtype, channels_last, autocast=not inference, layers=layers)
    if cuda_graphs:
        return torch.compile(wrapped, fullgraph=True, mode="reduce-overhead")
    if compile:
        freeze = inference and device.type == "cpu"
        return torch.compile(wrapped, fullgraph=True, options={"freezing": True} if freeze else None)
    return wrapped
