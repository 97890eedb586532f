"""Landmark stream: MobileFaceNet (frozen), returning its 28x28, 14x14 and 7x7 feature maps.

The authors also run its landmark regression head (GDC) and discard the result; it is not built.
"""
from __future__ import annotations

import torch
from torch import nn


class ConvBlock(nn.Module):
    """conv (no bias) -> BN -> PReLU."""

    def __init__(self, in_c: int, out_c: int, kernel: int = 1, stride: int = 1, padding: int = 0,
                 groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_c, out_c, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_c)
        self.prelu = nn.PReLU(out_c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.bn(self.conv(x)))


class LinearBlock(nn.Module):
    """conv (no bias) -> BN."""

    def __init__(self, in_c: int, out_c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_c, out_c, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class DepthWise(nn.Module):
    """1x1 expand -> depthwise 3x3 (stride) -> 1x1 project, optionally residual."""

    def __init__(self, in_c: int, out_c: int, expand: int, stride: int, residual: bool = False) -> None:
        super().__init__()
        self.conv = ConvBlock(in_c, expand)
        self.conv_dw = ConvBlock(expand, expand, 3, stride, 1, groups=expand)
        self.project = LinearBlock(expand, out_c)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.conv_dw(self.conv(x)))
        return x + y if self.residual else y


class Residual(nn.Module):
    def __init__(self, channels: int, blocks: int, expand: int) -> None:
        super().__init__()
        self.model = nn.Sequential(*(DepthWise(channels, channels, expand, 1, residual=True)
                                     for _ in range(blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class MobileFaceNet(nn.Module):
    """Returns landmark maps 64x28x28, 128x14x14, 512x7x7 of a 112x112 input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = ConvBlock(3, 64, 3, 2, 1)
        self.conv2_dw = ConvBlock(64, 64, 3, 1, 1, groups=64)
        self.conv_23 = DepthWise(64, 64, 128, 2)
        self.conv_3 = Residual(64, 4, 128)
        self.conv_34 = DepthWise(64, 128, 256, 2)
        self.conv_4 = Residual(128, 6, 256)
        self.conv_45 = DepthWise(128, 128, 512, 2)
        self.conv_5 = Residual(128, 2, 256)
        self.conv_6_sep = ConvBlock(128, 512)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x112: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.conv_23(self.conv2_dw(self.conv1(x112)))
        map1 = self.conv_3(x)
        map2 = self.conv_4(self.conv_34(map1))
        map3 = self.conv_6_sep(self.conv_5(self.conv_45(map2)))
        return map1, map2, map3
