"""The "reference" backend: the pure-PyTorch formula, on any device and dtype, always last.

Not declared deterministic: on CUDA the table gradient (the backward of a gather) accumulates
with atomics unless torch.use_deterministic_algorithms is on.
"""
from __future__ import annotations

from .. import reference
from ..backend import Backend

BACKEND = Backend("reference", run=reference.run, devices=None, dtypes=None,
                  deterministic=False)
