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
             cuda_graphs: bool = False) -> "nn.Module":
    """A faster copy of `model` computing the same function within `dtype`'s tolerance.

    Both modes: 1x1 max-pool shortcuts as strided slices, channels-last activations, SDPA in
    the ViT, the W-MCSA backend `attn_backend`, autocast to `dtype` (float32, the default, runs
    without autocast); they keep every parameter and buffer, so `.model.state_dict()` is the
    plain model's. mode "inference" also puts the copy in eval mode and folds each BatchNorm fed
    by a convolution into it (the IR units' leading BatchNorm, which precedes its convolution,
    stays); "train" keeps every tensor, trainable as before. `compile` wraps the result in
    torch.compile(fullgraph=True); `cuda_graphs` (CUDA only, implies compile) uses
    mode="reduce-overhead" for small batches. The original model is left as it was.
    """
    import torch

    from .model import POSTERV2
    from .rewrites import OptimizedPOSTER, fold_batchnorm, speed_up_in_place

    dtype = torch.float32 if dtype is None else dtype
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype: expected torch.float32, torch.bfloat16 or torch.float16, got {dtype}")
    if not isinstance(model, POSTERV2):
        raise TypeError(f"model: expected a POSTERV2, got {type(model).__name__}")
    fast = speed_up_in_place(copy.deepcopy(model), channels_last)
    fast.attn_backend = attn_backend
    if mode == "inference":
        fold_batchnorm(fast.eval())
    wrapped: nn.Module = OptimizedPOSTER(fast, dtype, channels_last)
    if cuda_graphs:
        if next(fast.parameters()).device.type != "cuda":
            raise ValueError("cuda_graphs: needs the model on a CUDA device")
        return torch.compile(wrapped, fullgraph=True, mode="reduce-overhead")
    if compile:
        return torch.compile(wrapped, fullgraph=True)
    return wrapped
