"""Shared helpers for W-MCSA backend tests: random problems and the fp64-anchored error check.

The check follows the flash-attention tests: a fast kernel's error against the float64
reference must be at most `factor` times the error of the PyTorch reference run in the same
dtype (plus a tiny absolute floor for results that the low-precision reference gets exactly).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from poster_fast.model import LEVELS
from poster_fast.ops import window_cross_attention
from poster_fast.ops.validate import table_rows

# The floor, relative to the result's magnitude (at least 1), is a few units in the last place
# in each dtype: 2 ulps for the half types, whose final rounding dominates both errors, and 16
# ulps for float32, where the same-dtype reference's max error over a tensor is itself only a few
# ulps and varies several-fold between random draws (a lucky draw must not fail a sound kernel;
# a kernel bug is orders of magnitude larger).
ABS_FLOOR = {torch.float64: 1e-12, torch.float32: 2.0 ** -20, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
NAMES = ("out", "dq", "dk", "dv", "d_table")


@dataclass(frozen=True)
class Case:
    batch: int
    windows: int
    heads: int
    window: tuple[int, int]
    head_dim: int

    @property
    def tokens(self) -> int:
        return self.window[0] * self.window[1]

    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        return (self.batch * self.windows, self.heads, self.tokens, self.head_dim)


def level_cases(batch=lambda i: 2 ** i, name: str = "L{}") -> dict[str, Case]:
    """POSTER's three levels (poster_fast.model.LEVELS) as Cases of one window per image, named
    `name` with the level's number (1, 2, 3); level i gets `batch(i)` images (default 2, 4, 8:
    more where the windows are smaller)."""
    return {name.format(i): Case(batch(i), 1, level.heads, (level.window, level.window), level.head_dim)
            for i, level in enumerate(LEVELS, start=1)}


def strided(t: torch.Tensor) -> torch.Tensor:
    """The same values in a non-contiguous layout (last two dims transposed in memory)."""
    return t.transpose(-1, -2).contiguous().transpose(-1, -2)


def make_inputs(case: Case, dtype: torch.dtype, device: str = "cpu", seed: int | None = None,
                table_dtype: torch.dtype | None = None, noncontiguous: bool = False):
    """q, k, v, table with requires_grad; fresh random values unless `seed` is given.

    With `noncontiguous`, every tensor is a strided view (transposed storage) of the same values.
    """
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    n, d, h = case.tokens, case.head_dim, case.heads

    def rand(*shape, std=1.0):
        return torch.randn(*shape, generator=gen, dtype=torch.float64) * std

    tensors = [rand(case.batch, h, n, d), rand(*case.out_shape), rand(*case.out_shape),
               rand(table_rows(case.window), h, std=0.5)]
    dtypes = [dtype, dtype, dtype, table_dtype or dtype]
    out = []
    for t, dt in zip(tensors, dtypes):
        t = t.to(device=device, dtype=dt)
        if noncontiguous:
            t = strided(t)
            assert not t.is_contiguous() or t.shape[-1] == 1 or t.shape[-2] == 1
        out.append(t.requires_grad_())
    return out


def forward_and_grads(inputs, window, backend: str, grad_out: torch.Tensor, scale=None):
    out = window_cross_attention(*inputs, window, scale=scale, backend=backend)
    grads = torch.autograd.grad(out, inputs, grad_out.to(out.dtype))
    return [out.detach()] + [g.detach() for g in grads]


def reference_results(inputs, window, grad_out, scale=None):
    """(fp64 results, same-dtype reference results) for out, dq, dk, dv, d_table."""
    as64 = [t.detach().double().requires_grad_() for t in inputs]
    exact = forward_and_grads(as64, window, "reference", grad_out.double(), scale)
    same = forward_and_grads(inputs, window, "reference", grad_out, scale)
    return exact, same


def assert_within_reference_error(got, exact, same, factor: float = 3.0, names=NAMES):
    """Each of got[i] must be within factor * (same-dtype reference error) of the fp64 result.

    The floor follows the least precise dtype among the results: they come from one computation,
    so a float32 d_table computed from bf16 inputs is only as accurate as bf16 allows.
    """
    floor = max(ABS_FLOOR[g.dtype] for g in got)
    for name, g, e, s in zip(names, got, exact, same, strict=True):
        assert g.shape == e.shape, f"{name}: shape {tuple(g.shape)} != {tuple(e.shape)}"
        assert torch.isfinite(g).all(), f"{name}: non-finite values"
        err = (g.double() - e).abs().max().item()
        base = (s.double() - e).abs().max().item()
        scale = max(e.abs().max().item(), 1.0)
        bound = factor * base + floor * scale
        assert err <= bound, f"{name}: error {err:.3e} > {factor} x reference error {base:.3e} + floor"


def check_backend(backend: str, case: Case, dtype: torch.dtype, device: str = "cpu",
                  table_dtype: torch.dtype | None = None, noncontiguous: bool = False,
                  scale: float | None = None, inputs=None,
                  grad_out: torch.Tensor | None = None, factor: float = 3.0) -> list[torch.Tensor]:
    """Forward and all four gradients of `backend` against the policy; returns its results.

    Fresh random inputs and output gradient unless `inputs` / `grad_out` are given."""
    inputs = inputs or make_inputs(case, dtype, device, table_dtype=table_dtype,
                                   noncontiguous=noncontiguous)
    if grad_out is None:
        grad_out = torch.randn(case.out_shape, dtype=torch.float64).to(device=device, dtype=dtype)
    if noncontiguous:
        grad_out = strided(grad_out)
    got = forward_and_grads(inputs, case.window, backend, grad_out, scale)
    for name, g, like in zip(NAMES, got, [inputs[0]] + list(inputs)):
        assert (g.dtype, g.device) == (like.dtype, like.device), f"{name}: {g.dtype} on {g.device}"
    exact, same = reference_results(inputs, case.window, grad_out, scale)
    assert_within_reference_error(got, exact, same, factor)
    return got
