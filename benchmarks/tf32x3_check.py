"""Offline accuracy check of 3xTF32 for the fp32 Triton kernels, no GPU needed.

The CPU interpreter computes every dot exactly in fp32, so it cannot show what the GPU's
input_precision="tf32x3" does. This emulates it in PyTorch the way Triton lowers it for the
tensor cores: big = round-to-nearest-away TF32 (cvt.rna.tf32.f32), small = x - big read as TF32
(low 13 bits dropped), small products accumulated first, NaNs there zeroed, the big product on
top, every product and sum in fp32 (tensor cores accumulate in fp32; their internal rounding of
the sum is not modelled). The W-MCSA forward and all gradients are computed with the dots of the
kernels (S = QK^T, O = PV, dP = dO V^T, dQ = dS K, dK = dS^T Q, dV = P^T dO) done this way, and
their error against float64 is printed next to the error of the eager fp32 reference (the fp32
policy of tests/wmca_utils.py: at most 3x that error), for POSTER's three level shapes.

python benchmarks/tf32x3_check.py [--seeds 5]
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from wmca_utils import NAMES, Case, level_cases, make_inputs, reference_results  # noqa: E402

from poster_fast.ops.reference import relative_position_index  # noqa: E402

LEVELS = level_cases()
Matmul = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def tf32_round(x: torch.Tensor) -> torch.Tensor:
    """cvt.rna.tf32.f32: keep 10 mantissa bits, round to nearest, ties away from zero."""
    return ((x.view(torch.int32) + 0x1000) & -8192).view(torch.float32)


def tf32_truncate(x: torch.Tensor) -> torch.Tensor:
    """What a tensor core reads of an fp32 register given as TF32."""
    return (x.view(torch.int32) & -8192).view(torch.float32)


def mm_tf32x3(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a_big, b_big = tf32_round(a), tf32_round(b)
    a_small, b_small = tf32_truncate(a - a_big), tf32_truncate(b - b_big)
    small = torch.nan_to_num(a_small @ b_big + a_big @ b_small, nan=0.0)
    return small + a_big @ b_big


def mm_fp32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a @ b


def kernel_dots(inputs: list[torch.Tensor], window: tuple[int, int], grad_out: torch.Tensor,
                mm: Matmul) -> list[torch.Tensor]:
    """out, dq, dk, dv, d_table of W-MCSA in fp32 with the kernels' dots done by `mm`."""
    q, k, v, table = (t.detach().float() for t in inputs)
    b, h, n, d = q.shape
    nw = k.shape[0] // b
    scale = d ** -0.5
    index = relative_position_index(window).reshape(-1)
    bias = table[index].reshape(n, n, h).permute(2, 0, 1)
    qw = q.repeat_interleave(nw, 0)
    s = mm(qw, k.transpose(-1, -2)) * scale + bias
    p = torch.exp(s - torch.logsumexp(s, -1, keepdim=True))
    out = mm(p, v)
    dout = grad_out.float()
    ds = p * (mm(dout, v.transpose(-1, -2)) - (dout * out).sum(-1, keepdim=True))
    dq = (mm(ds, k) * scale).reshape(b, nw, h, n, d).sum(1)
    dk = mm(ds.transpose(-1, -2), qw) * scale
    dv = mm(p.transpose(-1, -2), dout)
    dtable = torch.zeros_like(table).index_add_(0, index, ds.sum(0).permute(1, 2, 0).reshape(n * n, h))
    return [out, dq, dk, dv, dtable]


def errors(case: Case, seed: int) -> dict[str, list[float]]:
    """Max abs error against float64 of eager fp32, fp32 dots and 3xTF32 dots, per result."""
    torch.manual_seed(seed)
    inputs = make_inputs(case, torch.float32)
    grad_out = torch.randn(case.batch * case.windows, case.heads, case.tokens, case.head_dim)
    exact, eager = reference_results(inputs, case.window, grad_out)
    runs = {"eager fp32": eager, "fp32 dots": kernel_dots(inputs, case.window, grad_out, mm_fp32),
            "3xTF32 dots": kernel_dots(inputs, case.window, grad_out, mm_tf32x3)}
    return {name: [(g.double() - e).abs().max().item() for g, e in zip(got, exact)] for name, got in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    print("| level | result | eager fp32 err | fp32-dot err (x eager) | 3xTF32-dot err (x eager), worst seed |")
    print("|---|---|---:|---:|---:|")
    for level, case in LEVELS.items():
        runs = [errors(case, seed) for seed in range(args.seeds)]
        for i, name in enumerate(NAMES):
            worst = max(runs, key=lambda r: r["3xTF32 dots"][i] / r["eager fp32"][i])
            eager = worst["eager fp32"][i]
            ratio_fp32 = max(r["fp32 dots"][i] / r["eager fp32"][i] for r in runs)
            print(f"| {level} (N={case.tokens}, B={case.batch}, H={case.heads}) | {name} | {eager:.2e} | "
                  f"{ratio_fp32:.2f} | {worst['3xTF32 dots'][i]:.2e} ({worst['3xTF32 dots'][i] / eager:.2f}) |")


if __name__ == "__main__":
    main()
