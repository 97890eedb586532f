"""Cross-fusion: image windows attend to landmark queries (W-MCSA), then a layer-scaled MLP.

One level = `WindowNorm` (LayerNorm; its output is also the residual base) ->
`WindowCrossAttention` (k, v from the image tokens, q = raw landmark features) ->
`FusionFeedForward` (shortcut + gamma1 * attn; + gamma2 * MLP(LN(.))).
"""
from __future__ import annotations

import torch
from torch import nn

from ..ops import window_cross_attention
from ..ops.reference import relative_position_index
from ..ops.validate import table_rows


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, window * window, C), windows row-major within each image."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c).transpose(2, 3)
    return x.reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of `window_partition`: (B * nW, window * window, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.reshape(-1, h // window, w // window, window, window, c).transpose(2, 3)
    return x.reshape(-1, h, w, c)


class DropPath(nn.Module):
    """Stochastic depth per sample, rescaled by 1/keep (timm's scale_by_keep=True)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask.div_(keep)


class WindowNorm(nn.Module):
    """Channels-last LayerNorm of an image feature map, then window partition.

    Returns (window tokens, normalised map): the normalised map is the residual base (quirk).
    """

    def __init__(self, window_size: int, dim: int) -> None:
        super().__init__()
        self.window_size = window_size
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shortcut = self.norm(x.permute(0, 2, 3, 1))
        return window_partition(shortcut, self.window_size), shortcut


class WindowCrossAttention(nn.Module):
    """W-MCSA: multi-head attention of landmark queries over image windows, Swin position bias."""

    def __init__(self, dim: int, num_heads: int, window_size: int, attn_backend: str = "auto") -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        # The authors' scale is a float32 tensor: keep its float32-rounded value.
        self.scale = float(torch.tensor(dim / num_heads, dtype=torch.float32) ** -0.5)
        self.attn_backend = attn_backend
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros(table_rows((window_size, window_size)), num_heads))
        # Kept for checkpoint compatibility; kernels compute the index from token coordinates.
        self.register_buffer("relative_position_index",
                             relative_position_index((window_size, window_size)))
        self.qkv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """x: (B*nW, N, C) window tokens; q: (B, heads, N, head_dim) landmark queries."""
        bw, n, c = x.shape
        kv = self.qkv(x).reshape(bw, n, 2, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = window_cross_attention(q.to(kv.dtype), kv[0], kv[1], self.relative_position_bias_table,
                                     self.window_size, self.scale, backend=self.attn_backend)
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class FusionFeedForward(nn.Module):
    """Window reverse, then y = shortcut + gamma1 * attn; out = y + gamma2 * MLP(LN(y))."""

    def __init__(self, dim: int, window_size: int, drop_path: float, layer_scale: float = 1e-5) -> None:
        super().__init__()
        self.window_size = window_size
        self.gamma1 = nn.Parameter(layer_scale * torch.ones(dim))
        self.gamma2 = nn.Parameter(layer_scale * torch.ones(dim))
        self.mlp = Mlp(dim, 4 * dim)
        self.norm = nn.LayerNorm(dim)
        self.drop_path = DropPath(drop_path)

    def forward(self, attn_windows: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        _, h, w, _ = shortcut.shape
        x = shortcut + self.drop_path(self.gamma1 * window_reverse(attn_windows, self.window_size, h, w))
        return x + self.drop_path(self.gamma2 * self.mlp(self.norm(x)))
