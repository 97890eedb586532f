"""Pure-PyTorch W-MCSA: the executable specification every fused backend is tested against.

out[b*nW + w, h] = softmax(scale * q[b, h] @ k[b*nW + w, h]^T + bias[h]) @ v[b*nW + w, h]
with bias[h][i, j] = rpb_table[rel(i, j), h] and rel the Swin relative-position index.
"""
from __future__ import annotations

import torch

from .validate import WindowProblem


def relative_position_index(window: tuple[int, int], device: torch.device | None = None) -> torch.Tensor:
    """Swin index (N, N): rel(i, j) = (hi - hj + Wh - 1) * (2Ww - 1) + (wi - wj + Ww - 1)."""
    wh, ww = window
    rows = torch.arange(wh, device=device).repeat_interleave(ww)
    cols = torch.arange(ww, device=device).repeat(wh)
    dh = rows[:, None] - rows[None, :] + wh - 1
    dw = cols[:, None] - cols[None, :] + ww - 1
    return dh * (2 * ww - 1) + dw


def relative_position_bias(rpb_table: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """Gather the table into the (H, N, N) bias."""
    n = window[0] * window[1]
    index = relative_position_index(window, rpb_table.device)
    return rpb_table[index.reshape(-1)].reshape(n, n, -1).permute(2, 0, 1)


def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rpb_table: torch.Tensor,
        p: WindowProblem) -> torch.Tensor:
    """Differentiable in every input (autograd sums dq over windows and scatters d_table)."""
    q_win = q.unsqueeze(1).expand(p.batch, p.windows, p.heads, p.tokens, p.head_dim)
    q_win = q_win.reshape(p.batch * p.windows, p.heads, p.tokens, p.head_dim)
    logits = (q_win * p.scale) @ k.transpose(-2, -1)
    # The bias adds in the promoted dtype (an fp32 table over half logits gives fp32 logits, as
    # under autocast); the probabilities go back to v's dtype for the second matmul.
    logits = logits + relative_position_bias(rpb_table, p.window).unsqueeze(0)
    return (logits.softmax(dim=-1).to(v.dtype) @ v).to(q.dtype)
