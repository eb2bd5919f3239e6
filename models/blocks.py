"""Transform building blocks of the ELIC family (He et al., "ELIC: Efficient Learned Image
Compression with Unevenly Grouped Space-Channel Contextual Adaptive Coding", CVPR 2022).

ELIC replaces GDN by stacks of residual bottleneck blocks and adds the simplified attention
block of Cheng et al. (CVPR 2020) at a few depths::

    ResidualBottleneck:  x ─┬─ 1×1 (C→C/2) ─ ReLU ─ 3×3 ─ ReLU ─ 1×1 (C/2→C) ─┬─▶ x + ·
                            └──────────────────────────────────────────────────┘

    AttentionBlock:      x ─┬─ trunk: 3 residual units ─────────────────┐
                            ├─ mask: 3 residual units ─ 1×1 ─ sigmoid ──⊙── + x
                            └───────────────────────────────────────────────┘
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def conv(in_channels: int, out_channels: int, kernel: int = 5, stride: int = 2) -> nn.Conv2d:
    """``kernel×kernel`` convolution with "same" padding; ``stride`` 2 halves H and W."""
    return nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2)


def deconv(
    in_channels: int, out_channels: int, kernel: int = 5, stride: int = 2
) -> nn.ConvTranspose2d:
    """Transposed convolution that multiplies H and W by exactly ``stride``."""
    return nn.ConvTranspose2d(
        in_channels,
        out_channels,
        kernel,
        stride=stride,
        padding=kernel // 2,
        output_padding=stride - 1,
    )


class ResidualBottleneck(nn.Module):
    """ELIC's residual bottleneck block on ``(B, C, H, W)``; shape-preserving."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        mid = max(channels // 2, 1)
        self.body = nn.Sequential(
            nn.Conv2d(channels, mid, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class _ResidualUnit(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = ResidualBottleneck(channels)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.block(x))


class AttentionBlock(nn.Module):
    """Simplified attention block (Cheng et al. 2020) on ``(B, C, H, W)``; shape-preserving."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.trunk = nn.Sequential(*(_ResidualUnit(channels) for _ in range(3)))
        self.mask = nn.Sequential(
            *(_ResidualUnit(channels) for _ in range(3)), nn.Conv2d(channels, channels, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.trunk(x) * torch.sigmoid(self.mask(x))
