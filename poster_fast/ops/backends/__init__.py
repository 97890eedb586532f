"""The W-MCSA backends: one module each, declaring `BACKEND` (an ops.backend.Backend).

Every module of this package is imported and its `BACKEND` registered, so adding a backend is
adding one module here; `auto` then considers it at its declared priority. Importing a module
must not import its heavy dependencies (triton): those load when the backend first runs.
"""
from __future__ import annotations

import importlib
import pkgutil

from ..backend import register

for _module in pkgutil.iter_modules(__path__):
    register(importlib.import_module(f"{__name__}.{_module.name}").BACKEND)
