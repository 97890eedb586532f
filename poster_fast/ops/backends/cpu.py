"""The "cpu" backend: the fused C++ kernels of poster_fast._C (OpenMP, AVX2 where available).

float64 computes in float64, the other dtypes in float32; no size limits (64-bit indexing,
heap buffers).
"""
from __future__ import annotations

import torch

from .. import extension
from ..backend import Backend

BACKEND = Backend(
    "cpu", run=extension.run, devices=("cpu",),
    dtypes=(torch.float32, torch.float16, torch.bfloat16, torch.float64),
    missing=extension.missing, torch_ops=("poster_fast::wmca_fwd", "poster_fast::wmca_bwd"))
