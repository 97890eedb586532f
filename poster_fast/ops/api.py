"""The op as callers use it: `window_cross_attention`, `explain` and `reasons`, with the names
the package hands out (ops/__init__.py loads them from here on first use). Importing this
module registers the backends of ops/backends/, in BACKENDS order."""
from __future__ import annotations

import torch

from ..checks import got
from . import backends  # noqa: F401  (importing backends registers them)
from .backend import Backend, register, registered, select
from .backend import explain as _explain
from .backend import reasons as _reasons
from .validate import WindowProblem, check_inputs


def check_backend_name(name: object, argument: str = "backend") -> str:
    """Check a backend name.

    Args:
        name: the value given.
        argument: the argument's name, for the error.

    Returns:
        `name`, when it is "auto" or a registered backend.

    Raises:
        TypeError, ValueError: naming `argument` and the backends.
    """
    known = ("auto", *registered())
    if not isinstance(name, str):
        raise TypeError(f"{argument}: expected one of {', '.join(known)}, got {got(name)}")
    if name not in known:
        raise ValueError(f"{argument}: expected one of {', '.join(known)}, got {name!r}")
    return name


def reasons(name: str, problem: WindowProblem, auto: bool = False) -> list[str]:
    """Why backend `name` cannot run `problem`.

    Args:
        name: a registered backend.
        problem: the sizes, dtype and device of a call (`check_inputs` makes one).
        auto: also say why `backend="auto"` would never pick it on this device type (e.g.
            Triton's CPU interpreter).

    Returns:
        The reasons, empty when the backend can run the problem.
    """
    return _reasons(name, problem, auto)


def window_cross_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rpb_table: torch.Tensor,
    window_size: int | tuple[int, int],
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """W-MCSA forward (differentiable in q, k, v and rpb_table, to any order).

    Args:
        q: (B, H, N, D), one query set per image.
        k, v: (B*nW, H, N, D), window-major per image.
        rpb_table: ((2Wh-1)*(2Ww-1), H), the relative position bias table.
        window_size: Wh = Ww, or (Wh, Ww), with N = Wh*Ww.
        scale: the logits' scale (default D**-0.5).
        backend: a name of `registered()`, or "auto": the first of BACKENDS that can run it.

    Returns:
        (B*nW, H, N, D) in q's dtype.

    Raises:
        TypeError, ValueError: an argument of the wrong type or shape (naming it).
        RuntimeError: the backend named cannot run the problem (with its reasons).
    """
    problem = check_inputs(q, k, v, rpb_table, window_size, scale)
    return select(backend, problem).run(q, k, v, rpb_table, problem)


def explain(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rpb_table: torch.Tensor,
    window_size: int | tuple[int, int],
    scale: float | None = None,
) -> dict[str, object]:
    """Which backend `auto` picks for these arguments, and why not the others.

    Args:
        q, k, v, rpb_table, window_size, scale: as for `window_cross_attention`.

    Returns:
        {"chosen": the backend's name, "skipped": {every other backend: its reasons}}.
    """
    report = _explain(check_inputs(q, k, v, rpb_table, window_size, scale))
    chosen = next(name for name, why in report.items() if not why)
    return {"chosen": chosen, "skipped": {name: why or [f"{chosen!r} comes first in auto's order"]
                                          for name, why in report.items() if name != chosen}}


__all__ = ["window_cross_attention", "explain", "reasons", "registered", "check_backend_name", "check_inputs",
           "WindowProblem", "Backend", "register"]
