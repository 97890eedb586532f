"""The W-MCSA backends: one module each, declaring `BACKEND` (an ops.backend.Backend).

The modules named in ops.BACKENDS are imported and registered in that order, the order in which
`auto` tries them: adding a backend is adding its module here and its name there. Importing a
module must not import its heavy dependencies (triton): those load when the backend first runs.
"""
from __future__ import annotations

import importlib

from .. import BACKENDS
from ..backend import register

for _name in BACKENDS:
    register(importlib.import_module(f"{__name__}.{_name}").BACKEND)
