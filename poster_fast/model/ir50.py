"""Image stream: IR-50 truncated after its third stage (the fourth and the head are never used)."""
from __future__ import annotations

import torch
from torch import nn


class BottleneckIR(nn.Module):
    """IR unit: BN -> 3x3 conv -> PReLU -> 3x3 conv (stride) -> BN, plus a shortcut; no final act."""

    def __init__(self, in_channels: int, depth: int, stride: int) -> None:
        super().__init__()
        if in_channels == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, depth, 1, stride, bias=False), nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


def _stage(in_channels: int, depth: int, units: int) -> nn.Sequential:
    return nn.Sequential(BottleneckIR(in_channels, depth, 2),
                         *(BottleneckIR(depth, depth, 1) for _ in range(units - 1)))


class IR50(nn.Module):
    """Returns the three feature maps 64x56x56, 128x28x28, 256x14x14 of a 112x112 input."""

    def __init__(self) -> None:
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64),
                                         nn.PReLU(64))
        self.body1 = _stage(64, 64, 3)
        self.body2 = _stage(64, 128, 4)
        self.body3 = _stage(128, 256, 14)

    def forward(self, x112: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x1 = self.body1(self.input_layer(x112))
        x2 = self.body2(x1)
        return x1, x2, self.body3(x2)
