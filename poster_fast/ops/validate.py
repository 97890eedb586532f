"""Argument checks shared by every W-MCSA backend: one place, clear messages."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


@dataclass(frozen=True)
class WindowProblem:
    """Sizes of one window_cross_attention call (all plain Python ints)."""

    batch: int
    windows: int
    heads: int
    tokens: int
    head_dim: int
    window: tuple[int, int]
    scale: float
    dtype: torch.dtype
    device: torch.device


def _is_int(value: object) -> bool:
    return isinstance(value, (int, torch.SymInt)) and not isinstance(value, bool)


def window_pair(window_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """(Wh, Ww) from an int or a pair of ints, each >= 1; TypeError/ValueError naming window_size."""
    expected = "a positive int or a pair (Wh, Ww) of positive ints"
    if _is_int(window_size):
        pair = (window_size, window_size)
    elif isinstance(window_size, (tuple, list)) and all(_is_int(w) for w in window_size):
        pair = tuple(int(w) for w in window_size)
    else:
        raise TypeError(f"window_size: expected {expected}, got {window_size!r} ({type(window_size).__name__})")
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"window_size: expected {expected}, got {window_size!r}")
    return pair


def table_rows(window: tuple[int, int]) -> int:
    return (2 * window[0] - 1) * (2 * window[1] - 1)


def check_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rpb_table: torch.Tensor,
    window_size: int | tuple[int, int],
    scale: float | None = None,
) -> WindowProblem:
    """Validate the op's arguments (those of window_cross_attention).

    Returns:
        The problem's sizes, dtype and device.

    Raises:
        TypeError, ValueError: naming the argument and what it expected.
    """
    for name, t, rank in (("q", q, 4), ("k", k, 4), ("v", v, 4), ("rpb_table", rpb_table, 2)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.dim() != rank:
            raise ValueError(f"{name}: expected {rank} dimensions, got shape {tuple(t.shape)}")
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name}: expected a floating dtype {FLOAT_DTYPES}, got {t.dtype}")
    for name, t in (("k", k), ("v", v), ("rpb_table", rpb_table)):
        if t.device != q.device:
            raise ValueError(f"{name}: expected device {q.device} (the device of q), got {t.device}")
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise TypeError(f"{name}: expected dtype {q.dtype} (the dtype of q), got {t.dtype}")
    if k.shape != v.shape:
        raise ValueError(f"v: expected the shape of k {tuple(k.shape)}, got {tuple(v.shape)}")
    for name, t in (("q", q), ("k", k)):
        for dim, what in enumerate(("batch" if name == "q" else "B*nW", "heads", "tokens", "head_dim")):
            if t.shape[dim] < 1:
                raise ValueError(f"{name}: expected {what} (dim {dim}) >= 1, got shape {tuple(t.shape)}")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))
                              or not math.isfinite(scale) or scale <= 0):
        raise ValueError(f"scale: expected None or a finite number > 0, got {scale!r}")
    window = window_pair(window_size)
    b, h, n, d = q.shape
    bw, hk, nk, dk = k.shape
    if n != window[0] * window[1]:
        raise ValueError(f"q: expected N = Wh*Ww = {window[0] * window[1]} tokens for window_size "
                         f"{window}, got N={n} (shape {tuple(q.shape)})")
    if (hk, nk, dk) != (h, n, d):
        raise ValueError(f"k: expected (B*nW, H={h}, N={n}, D={d}) to match q, got {tuple(k.shape)}")
    if b == 0 or bw % b != 0 or bw == 0:
        raise ValueError(f"k: expected dim 0 (B*nW) to be a positive multiple of q's batch B={b}, "
                         f"got {bw}")
    rows = table_rows(window)
    if tuple(rpb_table.shape) != (rows, h):
        raise ValueError(f"rpb_table: expected shape ((2Wh-1)*(2Ww-1), H) = ({rows}, {h}) for window "
                         f"{window}, got {tuple(rpb_table.shape)}")
    if scale is None:
        scale = d ** -0.5
    return WindowProblem(b, bw // b, h, n, d, window, float(scale), q.dtype, q.device)
