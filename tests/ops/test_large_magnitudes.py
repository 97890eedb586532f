"""Every backend with attention scores that reach +-1e4: a softmax must subtract the row maximum
(not, say, the first logit: equal in exact arithmetic, but exp overflows past 88 in float32).

The scores come from q.k and from the bias table, both large. So that the comparison measures
the softmax and not the rounding of the scores (at 1e4 a float32 ulp is 1e-3, which moves a
probability by 1e-3 wherever two scores are close), the inputs are integers (the table's
multiples of 64, exact in bfloat16 up to 16384) and the scale is 0.25: every score is exact in
float32, in every backend, and float16/bfloat16 inputs carry them without overflow (q and k
stay below 100; float16's largest value is 65504).

Forward: the fp64-anchored policy of wmca_utils. The baseline is the float32 reference for
float32; for float16 and bfloat16 it is the reference computed in float32 from the same
half-precision inputs, rounded to the half type: the fused backends compute scores and softmax
in float32 (as PyTorch's fused attention does in these dtypes), while the plain half-precision
reference rounds the scores to the half type first (by up to 4 in float16, 32 in bfloat16 at
1e4), which randomises the probabilities and so bounds nothing.

Gradients: the same policy plus what the fused backward loses by design (flash-attention
style). It recomputes each row's probabilities as exp(s - lse) from lse = max + log(sum) saved
in float32, which at |lse| ~ 1e4 is rounded by up to 2^-24 |lse| (about 6e-4): every
probability of the row is off by that factor. In half precision it also takes
delta_i = dout_i . out_i from the rounded output, and may round P and dS to the half type
before its matmuls. `backward_loss_bound` carries these through dS = P (dP - delta) to each
gradient, elementwise, in float64.
"""
from __future__ import annotations

import pytest
import torch

from poster_fast import ops
from poster_fast.ops.reference import relative_position_bias, relative_position_index
from poster_fast.ops.validate import table_rows
from test_backends import FUSED, device_for, emulated, require
from wmca_utils import ABS_FLOOR, NAMES, Case, assert_within_reference_error, forward_and_grads

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning"),
]
F32, F16, BF16, F64 = torch.float32, torch.float16, torch.bfloat16, torch.float64
SCORE = 1e4
SCALE = 0.25  # exact: the scores of integer q, k stay exact
UNIT_ROUNDOFF = {F32: 2.0 ** -24, BF16: 2.0 ** -8, F16: 2.0 ** -11}
CASES = {"windows": Case(2, 2, 2, (3, 5), 16), "level3": Case(1, 1, 8, (7, 7), 32)}


def large_inputs(case: Case, dtype: torch.dtype, device: str, seed: int | None = None) -> list[torch.Tensor]:
    """Integer q, k (|.| < 100), v ~ N(0, 1), integer table (multiples of 64): SCALE * q.k and
    the bias each have a standard deviation of SCORE / 4."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    n, d, h = case.tokens, case.head_dim, case.heads
    # SCALE * sum_d q_d k_d, with q, k uniform integers in [-a, a]: std SCALE * sqrt(d) * a^2 / 3
    a = round((SCORE / 4 * 3 / (SCALE * d ** 0.5)) ** 0.5)

    def integers(*shape):
        return torch.randint(-a, a + 1, shape, generator=gen).double()

    table = (torch.randn(table_rows(case.window), h, generator=gen, dtype=F64) * SCORE / 4 / 64).round() * 64
    tensors = [integers(case.batch, h, n, d), integers(*case.out_shape),
               torch.randn(*case.out_shape, generator=gen, dtype=F64), table.clamp(-16320, 16320)]
    return [t.to(device=device, dtype=dtype).requires_grad_() for t in tensors]


def scores(q: torch.Tensor, k: torch.Tensor, table: torch.Tensor, case: Case) -> torch.Tensor:
    """The float64 logits the softmax sees, (B*nW, H, N, N)."""
    q = q.detach().double().repeat_interleave(case.windows, dim=0)
    return SCALE * q @ k.detach().double().transpose(-2, -1) \
        + relative_position_bias(table.detach().double(), case.window)


def backward_loss_bound(inputs: list[torch.Tensor], grad_out: torch.Tensor, case: Case,
                        dtype: torch.dtype) -> list[torch.Tensor]:
    """Elementwise bounds, for dq, dk, dv, d_table, of what the fused backward loses: each row's
    probabilities scaled by up to 1 + eta (lse saved in float32), dP = dout v^T and
    delta = rowsum(dout * out) accumulated in float32 (worst case D ulps), delta taken from the
    output rounded to `dtype`, P and dS rounded to `dtype` before their matmuls (Triton does,
    in half precision); dS's error is magnified by |k| or |q| (up to 100 here)."""
    q, k, v, table = (t.detach().double().cpu() for t in inputs)
    dout = grad_out.double().cpu()
    s = scores(q, k, table, case)
    p = s.softmax(-1)
    out = p @ v
    ds = p * (dout @ v.transpose(-2, -1) - (dout * out).sum(-1, keepdim=True))
    u, gamma = UNIT_ROUNDOFF[F32], case.head_dim * UNIT_ROUNDOFF[F32]
    eta = 4 * u * s.logsumexp(-1).abs().max()  # lse rounded, and exp's own ulps
    delta_err = (gamma + UNIT_ROUNDOFF[dtype]) * (dout.abs() * out.abs()).sum(-1, keepdim=True)
    eta = eta + UNIT_ROUNDOFF[dtype]
    ds_err = eta * ds.abs() + p * (gamma * dout.abs() @ v.abs().transpose(-2, -1) + delta_err)
    dq = SCALE * (ds_err @ k.abs()).reshape(case.batch, case.windows, *q.shape[1:]).sum(1)
    dk = SCALE * ds_err.transpose(-2, -1) @ q.abs().repeat_interleave(case.windows, dim=0)
    dv = eta * p.transpose(-2, -1) @ dout.abs()
    index = relative_position_index(case.window).reshape(-1)
    d_table = torch.zeros_like(table).index_add_(0, index, ds_err.sum(0).flatten(1).T)
    return [dq, dk, dv, d_table]


def baseline(inputs: list[torch.Tensor], grad_out: torch.Tensor, case: Case) -> list[torch.Tensor]:
    """The float32 reference's results (for half inputs: on their values, rounded back)."""
    dtype = inputs[0].dtype
    if dtype == F32:
        return forward_and_grads(inputs, case.window, "reference", grad_out, SCALE)
    as32 = [t.detach().float().requires_grad_() for t in inputs]
    return [r.to(dtype) for r in forward_and_grads(as32, case.window, "reference", grad_out.float(), SCALE)]


@pytest.mark.parametrize("dtype", [F32, F16, BF16], ids=str)
@pytest.mark.parametrize("case_id", list(CASES))
@pytest.mark.parametrize("name", FUSED)
def test_scores_of_1e4(name: str, case_id: str, dtype: torch.dtype) -> None:
    case = CASES[case_id]
    device = device_for(name)
    require(name, case, dtype, device)
    if emulated(name, device) and case_id != "windows":
        pytest.skip(f"{name} on {device} is an emulation: small cases only")
    inputs = large_inputs(case, dtype, device)
    s = scores(*inputs[:2], inputs[3], case)
    assert s.max() > SCORE / 2 and s.min() < -SCORE / 2  # the magnitudes this test is about
    # most rows have keys far above their first: a softmax shifted by the first logit overflows
    assert (s.amax(-1) - s[..., 0] > 200).double().mean() > 0.5
    grad_out = torch.randn(case.out_shape, dtype=F64).to(device=device, dtype=dtype)
    got = forward_and_grads(inputs, case.window, name, grad_out, SCALE)
    exact = forward_and_grads([t.detach().double().requires_grad_() for t in inputs], case.window,
                              "reference", grad_out.double(), SCALE)
    same = baseline(inputs, grad_out, case)
    assert_within_reference_error(got[:1], exact[:1], same[:1], names=NAMES[:1])
    floor = ABS_FLOOR[dtype]
    for what, g, e, b, lost in zip(NAMES[1:], got[1:], exact[1:], same[1:],
                                   backward_loss_bound(inputs, grad_out, case, dtype)):
        assert torch.isfinite(g).all(), f"{what}: non-finite values"
        err = (g.double().cpu() - e.cpu()).abs()
        allowed = 3 * (b.double() - e).abs().max().item() + floor * max(e.abs().max().item(), 1.0) + lost
        worst = (err - allowed).argmax()
        assert (err <= allowed).all(), (f"{what}: error {err.flatten()[worst]:.3e} > allowed "
                                        f"{allowed.flatten()[worst]:.3e} at flat index {int(worst)}")


@pytest.mark.parametrize("name", FUSED)
def test_rows_far_below_zero_and_one_dominant_key(name: str) -> None:
    """Every score of a row near -1e4 (exp underflows unless shifted), then the bias of each
    query to itself 1e4 above the rest (each output row is its own key's value)."""
    case = CASES["windows"]
    device = device_for(name)
    require(name, case, F32, device)
    q, k, v, _ = (t.detach() for t in large_inputs(case, F32, device))
    q, k = q / 16, k / 16  # SCALE * q.k ~ 10, multiples of 2^-10: exact in float32 beside -1e4
    table = torch.full((table_rows(case.window), case.heads), -SCORE, device=device)
    out = ops.window_cross_attention(q, k, v, table, case.window, SCALE, backend=name)
    want = ops.window_cross_attention(q.double(), k.double(), v.double(), table.double(), case.window,
                                      SCALE, backend="reference")
    assert_within_reference_error([out], [want],
                                  [ops.window_cross_attention(q, k, v, table, case.window, SCALE,
                                                              backend="reference")], names=NAMES[:1])
    table[table_rows(case.window) // 2] = 0.0  # relative offset (0, 0)
    out = ops.window_cross_attention(q, k, v, table, case.window, SCALE, backend=name)
    torch.testing.assert_close(out, v)
