"""AnatomyNet (Zhu et al., Med Phys 2019) from MONAI parts.

A 3D U-Net with a single down-sampling: a strided 3×3×3 stem to half resolution, squeeze-and-
excitation residual blocks there (widths ≈ 28 → 34), concatenation skips, and a transposed
convolution back to full size. Trained with Dice + focal loss (MONAI's DiceFocalLoss, γ = 2).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import ChannelSELayer, Convolution
from torch import nn

__all__ = ["AnatomyNet", "SEResidualBlock"]


class SEResidualBlock(nn.Module):
    """conv–norm–act–conv–norm, channel squeeze-and-excitation, residual add, act."""

    def __init__(self, in_channels: int, out_channels: int, se_reduction: int = 4):
        super().__init__()
        self.conv1 = Convolution(3, in_channels, out_channels, kernel_size=3, act="PRELU", norm="INSTANCE")
        self.conv2 = Convolution(3, out_channels, out_channels, kernel_size=3, act=None, norm="INSTANCE")
        self.se = ChannelSELayer(3, out_channels, r=max(1, se_reduction))
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv3d(in_channels, out_channels, 1)
        self.act = nn.PReLU()

    def forward(self, x):
        return self.act(self.se(self.conv2(self.conv1(x))) + self.skip(x))


class AnatomyNet(nn.Module):
    """Args mirror MONAI's style: primitives only, checked up front."""

    def __init__(
        self, in_channels: int = 1, out_channels: int = 2, widths: Sequence[int] = (28, 30, 32, 34), se_reduction: int = 4
    ):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"widths must hold at least two positive channel counts, got {widths}")
        if out_channels < 2:
            raise ValueError("out_channels counts the background too: at least 2")
        self.widths = widths
        self.stem = Convolution(3, in_channels, widths[0], strides=2, kernel_size=3, act="PRELU", norm="INSTANCE")
        self.encoder = nn.ModuleList(SEResidualBlock(a, b, se_reduction) for a, b in zip(widths[:-1], widths[1:]))
        self.decoder = nn.ModuleList(
            SEResidualBlock(widths[i + 1] + widths[i], widths[i], se_reduction) for i in reversed(range(len(widths) - 1))
        )
        self.up = nn.ConvTranspose3d(widths[0], widths[0], kernel_size=2, stride=2)
        self.head = nn.Sequential(
            Convolution(3, widths[0] + in_channels, widths[0], kernel_size=3, act="PRELU", norm="INSTANCE"),
            nn.Conv3d(widths[0], out_channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        h = self.stem(x)
        skips = [h]
        for block in self.encoder:
            h = block(h)
            skips.append(h)
        skips.pop()  # the deepest output is h itself
        for block in self.decoder:
            h = block(torch.cat([h, skips.pop()], dim=1))
        h = self.up(h)
        if h.shape[2:] != size:  # odd sizes: pad the upsampled map to the input
            pads = []
            for have, want in zip(reversed(h.shape[2:]), reversed(size)):
                pads += [0, want - have]
            h = nn.functional.pad(h, pads)
        return self.head(torch.cat([h, x], dim=1))
