"""POSTER V2 (POSTER++): the three stages of the paper wired together.

1. Landmark queries: the frozen MobileFaceNet turns the face into three maps whose channels,
   split into heads, are used directly as W-MCSA queries (no projection).
2. Cross-fusion: three IR-50 maps, each downsampled, attend to those queries (W-MCSA) at 28x28,
   14x14 and 7x7, followed by a layer-scaled feed-forward.
3. Multi-scale ViT: each level is tokenised to 49 tokens of 768, concatenated (147 tokens) and
   classified by a 2-block ViT with class token and SE-gated head.

Module names follow the authors' `pyramid_trans_expr2` so their checkpoints load as they are.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import NUM_CLASSES
from ..ops import check_backend_name
from ..pretrained import PretrainedMixin
from .cross_fusion import FusionFeedForward, WindowCrossAttention, WindowNorm
from .fusion_vit import EMBED_DIM, FusionViT
from .ir50 import IR50
from .levels import LEVELS
from .mobilefacenet import MobileFaceNet

DROP_PATH = (0.0, 0.125, 0.25)  # the first three of linspace(0, 0.5, 5)
INPUT_SIZE = 112  # both backbones see a nearest-neighbour 112x112 resize of any input


class PatchEmbed(nn.Module):
    """Level-3 tokeniser: a 1x1 conv 256 -> 768, flattened to tokens."""

    def __init__(self, in_c: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_c, dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def to_queries(landmark_map: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, heads, H*W, C // heads): channel c belongs to head c // head_dim."""
    b, c, h, w = landmark_map.shape
    return landmark_map.permute(0, 2, 3, 1).reshape(b, h * w, heads, c // heads).transpose(1, 2)


def tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C)."""
    return x.flatten(2).transpose(1, 2)


class POSTERV2(PretrainedMixin, nn.Module):
    """POSTER V2 classifier: (B, 3, H, W) ImageNet-normalised images -> (B, num_classes) logits.

    The landmark network is frozen and stays in eval mode even under `model.train()` (the
    authors let its BatchNorm statistics drift). Files: `from_checkpoint`, `from_pretrained`,
    `load_trained`, `load_exported` and `save_pretrained` (pretrained.PretrainedMixin).

    Args:
        num_classes: the number of logits: 7 or 8 for the paper's datasets, any other count from 2
            to 10000 for other class sets (checks.NUM_CLASSES).
        attn_backend: the W-MCSA implementation, "auto" or one of `poster_fast.ops.BACKENDS`
            ("triton", "cuda", "cpu", "reference"); see `poster_fast.ops.explain`.
    """

    def __init__(self, num_classes: int = 7, attn_backend: str = "auto") -> None:
        super().__init__()
        num_classes = NUM_CLASSES.check("num_classes", num_classes)
        check_backend_name(attn_backend, "attn_backend")
        self.num_classes = num_classes
        self.face_landback = MobileFaceNet()
        self.face_landback.requires_grad_(False)
        self.VIT = FusionViT(num_classes)
        self.ir_back = IR50()
        for i, level in enumerate(LEVELS, start=1):
            self.add_module(f"attn{i}", WindowCrossAttention(level.dim, level.heads, level.window, attn_backend))
        for i, level in enumerate(LEVELS, start=1):
            self.add_module(f"window{i}", WindowNorm(level.window, level.dim))
        for i, level in enumerate(LEVELS, start=1):
            self.add_module(f"conv{i}", nn.Conv2d(level.dim, level.dim, 3, stride=2, padding=1))
        for i, (level, dp) in enumerate(zip(LEVELS, DROP_PATH), start=1):
            self.add_module(f"ffn{i}", FusionFeedForward(level.dim, level.window, dp))
        self.last_face_conv = nn.Conv2d(512, 256, 3, padding=1)
        self.embed_q = nn.Sequential(nn.Conv2d(LEVELS[0].dim, EMBED_DIM, 3, stride=2, padding=1),
                                     nn.Conv2d(EMBED_DIM, EMBED_DIM, 3, stride=2, padding=1))
        self.embed_k = nn.Sequential(nn.Conv2d(LEVELS[1].dim, EMBED_DIM, 3, stride=2, padding=1))
        self.embed_v = PatchEmbed(LEVELS[2].dim, EMBED_DIM)

    @property
    def attn_backend(self) -> str:
        return self.attn1.attn_backend

    @attn_backend.setter
    def attn_backend(self, name: str) -> None:
        check_backend_name(name, "attn_backend")
        for level in self.levels():
            level[1].attn_backend = name

    def levels(self) -> list[tuple[nn.Conv2d, WindowCrossAttention, WindowNorm, FusionFeedForward]]:
        """(downsample conv, attention, window norm, feed-forward) of each cross-fusion level."""
        return [(getattr(self, f"conv{i}"), getattr(self, f"attn{i}"), getattr(self, f"window{i}"),
                 getattr(self, f"ffn{i}")) for i in (1, 2, 3)]

    def train(self, mode: bool = True) -> "POSTERV2":
        super().train(mode)
        self.face_landback.eval()
        return self

    def landmark_queries(self, x112: torch.Tensor) -> list[torch.Tensor]:
        """Stage 1: the three landmark maps as W-MCSA queries (B, heads, N, 32)."""
        # The frozen landmark net keeps no activations for backward (unless someone unfreezes it).
        frozen = not any(p.requires_grad for p in self.face_landback.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            map1, map2, map3 = self.face_landback(x112)
        maps = (map1, map2, self.last_face_conv(map3))
        return [to_queries(m, level.heads) for m, level in zip(maps, LEVELS)]

    def cross_fusion(self, x112: torch.Tensor, queries: list[torch.Tensor]) -> list[torch.Tensor]:
        """Stage 2: IR-50 maps attend to the landmark queries; returns (B, C, h, w) per level."""
        fused = []
        for image_map, q, (conv, attn, window, ffn) in zip(self.ir_back(x112), queries, self.levels()):
            windows, shortcut = window(conv(image_map))
            fused.append(ffn(attn(windows, q), shortcut).permute(0, 3, 1, 2))
        return fused

    def multiscale_vit(self, fused: list[torch.Tensor]) -> torch.Tensor:
        """Stage 3: 3 x 49 tokens of 768 -> logits."""
        o1, o2, o3 = fused
        return self.VIT(torch.cat((tokens(self.embed_q(o1)), tokens(self.embed_k(o2)), self.embed_v(o3)),
                                  dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x, (B, 3, H, W) ImageNet-normalised images (any size: both backbones see a
        112x112 nearest-neighbour resize). Returns: (B, num_classes) logits."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x: expected a tensor of images (B, 3, H, W), got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != 3 or min(x.shape) < 1:
            raise ValueError(f"x: expected images of shape (B, 3, H, W) with B, H, W >= 1, got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"x: expected floating-point (ImageNet-normalised) images, got {x.dtype}")
        weight = self.embed_v.proj.weight
        if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
            raise TypeError(f"x: expected {weight.dtype} images, the dtype of the model's weights, got {x.dtype}: "
                            f"convert the images (x.to({weight.dtype})) or the model (model.to(dtype)), or run "
                            "under torch.autocast")
        if x.device != weight.device:
            raise ValueError(f"x: on {x.device}, the model on {weight.device}: move one of them")
        x112 = F.interpolate(x, size=INPUT_SIZE)
        return self.multiscale_vit(self.cross_fusion(x112, self.landmark_queries(x112)))
