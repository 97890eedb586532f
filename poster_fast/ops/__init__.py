"""W-MCSA, the window multi-head cross-attention of POSTER V2, behind one function.

`window_cross_attention(q, k, v, rpb_table, window_size)` computes, for every window w of
image b, softmax(scale * q[b] k[b*nW+w]^T + bias) v[b*nW+w], with the Swin relative position
bias gathered from `rpb_table`. The backends (ops/backends/, one module each) declare what they
support as data (ops/backend.py); `backend="auto"` takes the first one, in BACKENDS order, that
can run the problem, `explain` says which and why each other one was skipped, and
`reasons(name, problem)` why a given one cannot run.

Layout: api.py (the functions above), validate.py (argument checks, `WindowProblem`),
reference.py (the pure-PyTorch specification), backend.py (the contract, registry and
selection), backends/ (the declarations), autograd.py (fake kernels and autograd of the compiled
ops), extension.py (poster_fast._C), triton/ (the Triton kernels and their torch ops, loaded on
first use). This file imports nothing: BACKENDS is plain data (the command line's choices), and
the other names load, with torch, on first use.
"""
from __future__ import annotations

from ..lazy import lazy_names

# The backends, one module each in ops/backends/, in the order `backend="auto"` tries them.
BACKENDS = ("triton", "cuda", "cpu", "reference")

_API = ("window_cross_attention", "explain", "reasons", "registered", "check_backend_name", "check_inputs",
        "WindowProblem", "Backend", "register")
__all__ = ["BACKENDS", *_API, "reference"]

__getattr__, __dir__ = lazy_names(__name__, {**dict.fromkeys(_API, ".api"), "reference": ".reference"})
