"""torch ops over the Triton launchers: `poster_fast::wmca_triton_fwd` / `wmca_triton_bwd`.

Imported on the triton backend's first run (it imports triton). On GPU they are
`torch.library.triton_op`s, so Inductor sees the kernels themselves; under the interpreter
triton_op's fake-tensor tracing would run the kernels on fake tensors, so there they are plain
`custom_op`s with the fake kernels of ops/autograd.py. Autograd as for every compiled backend.
"""
from __future__ import annotations

import torch

from .. import autograd
from . import kernels, launch

FWD, BWD = "poster_fast::wmca_triton_fwd", "poster_fast::wmca_triton_bwd"

if kernels.INTERPRET:
    wmca_fwd = torch.library.custom_op(FWD, mutates_args=())(launch.forward)
    wmca_bwd = torch.library.custom_op(BWD, mutates_args=())(launch.backward)
    autograd.register_fakes(FWD, BWD)
else:
    wmca_fwd = torch.library.triton_op(FWD, launch.forward, mutates_args=())
    wmca_bwd = torch.library.triton_op(BWD, launch.backward, mutates_args=())
autograd.register_autograd(FWD, wmca_bwd)
