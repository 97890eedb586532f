"""The op's contract: validation messages, dispatch/explain, and the reference's semantics."""
from __future__ import annotations

import pytest
import torch

from poster_fast import ops
from poster_fast.ops.reference import relative_position_index


def inputs(b=2, nw=3, h=2, window=(3, 4), d=8, dtype=torch.float64):
    n = window[0] * window[1]
    return (torch.randn(b, h, n, d, dtype=dtype), torch.randn(b * nw, h, n, d, dtype=dtype),
            torch.randn(b * nw, h, n, d, dtype=dtype),
            torch.randn((2 * window[0] - 1) * (2 * window[1] - 1), h, dtype=dtype))


def loop_definition(q, k, v, table, window, scale):
    """out[b*nW+w, h, i] = sum_j softmax_j(scale q[b,h,i].k[.,h,j] + table[rel(i,j), h]) v[.,h,j]."""
    wh, ww = window
    b, h, n, _ = q.shape
    nw = k.shape[0] // b
    out = torch.empty_like(k)
    for r in range(k.shape[0]):
        for head in range(h):
            for i in range(n):
                logits = torch.stack([scale * q[r // nw, head, i] @ k[r, head, j]
                                      + table[(i // ww - j // ww + wh - 1) * (2 * ww - 1)
                                              + (i % ww - j % ww + ww - 1), head] for j in range(n)])
                out[r, head, i] = torch.softmax(logits, 0) @ v[r, head]
    return out


def test_reference_matches_loop_definition_multiwindow_nonsquare():
    q, k, v, table = inputs()
    got = ops.window_cross_attention(q, k, v, table, (3, 4), backend="reference")
    torch.testing.assert_close(got, loop_definition(q, k, v, table, (3, 4), 8 ** -0.5))


def test_relative_index_is_swin():
    index = relative_position_index((7, 7))
    assert index[0, :5].tolist() == [84, 83, 82, 81, 80]
    assert int(index.max()) == 13 * 13 - 1 and not torch.equal(index, index.T)


def test_reference_gradients_fp64():
    q, k, v, table = (t.requires_grad_() for t in inputs(b=1, nw=2, h=1, window=(2, 3), d=4))
    assert torch.autograd.gradcheck(
        lambda *a: ops.window_cross_attention(*a, (2, 3), backend="reference"), (q, k, v, table))


@pytest.mark.parametrize("mutate,match", [
    (lambda q, k, v, t: (q[0], k, v, t), "q: expected 4 dimensions"),
    (lambda q, k, v, t: (q, k[:, :1], v[:, :1], t), r"k: expected \(B\*nW, H=2"),
    (lambda q, k, v, t: (q, k, v[..., :4], t), "v: expected the shape of k"),
    (lambda q, k, v, t: (q, k[:5], v[:5], t), "positive multiple of q's batch B=2"),
    (lambda q, k, v, t: (q, k, v, t[:-1]), r"rpb_table: expected shape .* \(35, 2\)"),
    (lambda q, k, v, t: (q, k.float(), v, t), "k: expected dtype torch.float64"),
    (lambda q, k, v, t: (q, k, v, t.long()), "rpb_table: expected a floating dtype"),
    (lambda q, k, v, t: (q, k, v, t.to("meta")), "rpb_table: expected device cpu"),
])
def test_bad_inputs_are_named(mutate, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ops.window_cross_attention(*mutate(*inputs()), (3, 4))


def test_bad_window_size():
    with pytest.raises(ValueError, match=r"expected N = Wh\*Ww = 16"):
        ops.window_cross_attention(*inputs(), 4)
    with pytest.raises(ValueError, match="window_size: expected a positive int"):
        ops.window_cross_attention(*inputs(), (3, 4, 1))


def test_explain_and_explicit_backend_errors():
    report = ops.explain(*inputs(), (3, 4))
    assert report["chosen"] in ops.registered()
    assert all(isinstance(r, list) and r for r in report["skipped"].values())
    with pytest.raises(RuntimeError, match="unknown backend 'nope'"):
        ops.window_cross_attention(*inputs(), (3, 4), backend="nope")
    if "cuda" in ops.registered() and not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="backend='cuda' cannot run"):
            ops.window_cross_attention(*inputs(dtype=torch.float32), (3, 4), backend="cuda")
