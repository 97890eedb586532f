"""Offline accuracy check of 3xTF32 for the fp32 Triton kernels, no GPU needed.

The CPU interpreter computes every dot exactly in fp32, so it cannot show what the GPU's
input_precision="tf32x3" does. This emulates it in PyTorch the way Triton lowers it for the
tensor cores: big = round-to-nearest-away TF32 (cvt.rna.tf32.f32), small = x - big read as TF32
(low 13 bits dropped), small products accumulated first, NaNs there zeroed, the big product on
top. Two models of the sum:
- `mm_tf32x3`: every product and sum in fp32 as a CPU matmul rounds it (what the interpreter
  tests run: `kernels._tf32x3_emulated`);
- `mm_tf32x3_tc`: the tensor core's own accumulation. The three products of one dot run as one
  chain on the accumulator, `k_step` products at a time (the instruction's k: 8 for TF32 HGMMA
  and mma.sync; 4 is the finer grouping measured on A100); each step adds its exact products to
  the fp32 accumulator and rounds once: "rn" to nearest, or "rz" the truncating adder of Fasi,
  Higham, Mikaitis and Pranesh (2021, "Numerical behavior of NVIDIA tensor cores"): every term
  aligned to the largest one, the bits below fp32's 24 dropped, the sum truncated to fp32. The
  kernels' dots are tiles (K = D = 32 for QK^T and dO V^T, K = one 64-token block for PV, dS K,
  dS^T Q, P^T dO); the tiles' results are added in fp32, rounded to nearest (CUDA cores).
The W-MCSA forward and all gradients are computed with the dots of the kernels (S = QK^T,
O = PV, dP = dO V^T, dQ = dS K, dK = dS^T Q, dV = P^T dO) done each way, and their error against
float64 is printed next to the error of the eager fp32 reference, with the fp32 policy of
tests/wmca_utils.py (at most 3x that error plus a floor of 16 ulps of the result's magnitude),
for POSTER's three level shapes.

python benchmarks/tf32x3_check.py [--seeds 5] [--levels L1,L2,L3]
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from wmca_utils import ABS_FLOOR, NAMES, Case, level_cases, make_inputs, reference_results  # noqa: E402

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


def tc_step(terms: list[torch.Tensor], rounding: str) -> torch.Tensor:
    """One accumulation step of a tensor core: `terms` (float64: the fp32 accumulator and the
    step's exact products) summed and rounded once to fp32 (module docstring)."""
    if rounding == "rn":
        return sum(terms).float().double()
    largest = terms[0].abs()
    for t in terms[1:]:
        largest = torch.maximum(largest, t.abs())
    exponent = (largest.view(torch.int64) >> 52) & 0x7FF  # biased float64 exponent of the largest term
    quantum = ((exponent - 23).clamp_(min=1) << 52).view(torch.float64)  # its fp32 ulp (a power of 2)
    total = sum((t / quantum).trunc_() for t in terms) * quantum  # aligned, truncated: exact in float64
    return (total.view(torch.int64) & ~((1 << 29) - 1)).view(torch.float64)  # truncated to fp32's 24 bits


def tc_dot(a: torch.Tensor, b: torch.Tensor, acc: torch.Tensor, rounding: str, k_step: int) -> torch.Tensor:
    """acc + a @ b on the tensor core: TF32 operands (exact products), k_step products a step."""
    a, b = a.double(), b.double()
    for j in range(0, a.shape[-1], k_step):
        products = [a[..., :, i, None] * b[..., None, i, :] for i in range(j, min(j + k_step, a.shape[-1]))]
        acc = tc_step([acc, *products], rounding)
    return acc


def mm_tf32x3_tc(a: torch.Tensor, b: torch.Tensor, rounding: str = "rz", k_step: int = 4,
                 tile_k: int = 64) -> torch.Tensor:
    """a @ b as the kernels compute it on tensor cores: per K tile of `tile_k`, one tf32x3 dot
    (small products, NaNs zeroed, big product, one accumulator chain); tiles added in fp32."""
    out = torch.zeros(*a.shape[:-1], b.shape[-1])
    for j in range(0, a.shape[-1], tile_k):
        a_t, b_t = a[..., j:j + tile_k], b[..., j:j + tile_k, :]
        a_big, b_big = tf32_round(a_t), tf32_round(b_t)
        a_small, b_small = tf32_truncate(a_t - a_big), tf32_truncate(b_t - b_big)
        acc = torch.zeros(*out.shape, dtype=torch.float64)
        acc = tc_dot(a_small, b_big, acc, rounding, k_step)
        acc = torch.nan_to_num(tc_dot(a_big, b_small, acc, rounding, k_step), nan=0.0)
        out = out + tc_dot(a_big, b_big, acc, rounding, k_step).float()
    return out


# The sums compared: name -> the kernels' matmul (None: the eager reference itself).
MODELS: dict[str, Matmul | None] = {
    "eager fp32": None,
    "fp32 dots": mm_fp32,
    "3xTF32, fp32 sums": mm_tf32x3,
    "3xTF32 TC rn k8": partial(mm_tf32x3_tc, rounding="rn", k_step=8),
    "3xTF32 TC rz k8": partial(mm_tf32x3_tc, rounding="rz", k_step=8),
    "3xTF32 TC rz k4": partial(mm_tf32x3_tc, rounding="rz", k_step=4),
}


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


def errors(case: Case, seed: int, models: dict[str, Matmul | None] = MODELS) -> dict[str, list[float]]:
    """Max abs error against float64 per result (out, dq, dk, dv, d_table) of each model, and
    under "bound" the fp32 policy's bound: 3x the eager error plus 16 fp32 ulps of the result."""
    torch.manual_seed(seed)
    inputs = make_inputs(case, torch.float32)
    grad_out = torch.randn(case.batch * case.windows, case.heads, case.tokens, case.head_dim)
    exact, eager = reference_results(inputs, case.window, grad_out)
    out = {}
    for name, mm in models.items():
        got = eager if mm is None else kernel_dots(inputs, case.window, grad_out, mm)
        out[name] = [(g.double() - e).abs().max().item() for g, e in zip(got, exact)]
    out["bound"] = [3 * err + ABS_FLOOR[torch.float32] * max(e.abs().max().item(), 1.0)
                    for err, e in zip(out["eager fp32"], exact)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--levels", default=",".join(LEVELS), help="comma-separated, from " + ", ".join(LEVELS))
    args = parser.parse_args()
    shown = [n for n in MODELS if n != "eager fp32"]
    print("Worst seed per model: error / eager fp32 error, and in brackets error / the fp32 policy's bound "
          "(3x eager + 16 ulps; > 1 fails)")
    print("| level | result | eager fp32 err | " + " | ".join(shown) + " |")
    print("|---|---|---:|" + "---:|" * len(shown))
    for level in args.levels.split(","):
        case = LEVELS[level]
        runs = [errors(case, seed) for seed in range(args.seeds)]
        for i, name in enumerate(NAMES):
            cells = []
            for model in shown:
                ratio = max(r[model][i] / r["eager fp32"][i] for r in runs)
                margin = max(r[model][i] / r["bound"][i] for r in runs)
                cells.append(f"{ratio:.2f} ({margin:.2f})")
            eager = max(r["eager fp32"][i] for r in runs)
            print(f"| {level} (N={case.tokens}, B={case.batch}, H={case.heads}) | {name} | {eager:.2e} | "
                  + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
