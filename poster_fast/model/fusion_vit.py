"""Multi-scale fusion ViT: class token + 147 fused tokens, 2 pre-norm blocks, SE-gated head.

Not a stock ViT: 8 heads of 96, LayerNorm eps 1e-6, scale applied after q k^T, an SE
gate on the class token before the linear head, and a learned positional embedding of 148.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cross_fusion import Mlp

EMBED_DIM = 768
TOKENS = 148


class Attention(nn.Module):
    """Multi-head self-attention; `use_sdpa` swaps the authors' explicit softmax(q k^T * scale) v
    for PyTorch's fused scaled_dot_product_attention (same maths, different rounding)."""

    def __init__(self, dim: int, num_heads: int = 8) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.use_sdpa = False
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        if self.use_sdpa:
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        else:
            out = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class SEBlock(nn.Module):
    """t * sigmoid(W2 relu(W1 t + b1) + b2), no channel reduction."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, dim)
        self.linear2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.linear2(torch.relu(self.linear1(x))))


class ClassificationHead(nn.Module):
    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class FusionViT(nn.Module):
    """(B, 147, 768) tokens -> (B, num_classes) logits."""

    def __init__(self, num_classes: int, depth: int = 2, dim: int = EMBED_DIM) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, TOKENS, dim))
        self.se_block = SEBlock(dim)
        self.head = ClassificationHead(dim, num_classes)
        self.blocks = nn.Sequential(*(Block(dim) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = torch.cat((self.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1) + self.pos_embed
        cls = self.norm(self.blocks(x))[:, 0]
        return self.head(self.se_block(cls))
