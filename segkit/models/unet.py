"""The from-scratch U-Net of Ronneberger et al. (2015), as the Helen tutorial builds it.

Encoder: a double 3x3 conv (+ BatchNorm + ReLU) block then four 2x2 max-pool + double-conv
steps, widths ``base * [1, 2, 4, 8, 16]`` (64 ... 1024 by default). Decoder: four steps
of upsampling (transposed conv, or bilinear + halved bottleneck) + skip concatenation +
double conv, then a 1x1 head. With ``upsample="transpose"`` and 64 channels it has
about 31.0 M parameters. Inputs must have sides divisible by 16 (four poolings).
"""

from __future__ import annotations

import torch
from torch import nn

from segkit.errors import ConfigError
from segkit.models.registry import register_model
from segkit.models.spec import UNIT_MEAN, UNIT_STD, ModelSpec


class DoubleConv(nn.Sequential):
    """(3x3 conv -> BatchNorm -> ReLU) twice."""

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int | None = None):
        mid = mid_channels or out_channels
        super().__init__(
            nn.Conv2d(in_channels, mid, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class Down(nn.Sequential):
    """2x2 max-pool then a double conv."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels))


class Up(nn.Module):
    """Upsample ``x``, concatenate the skip connection, double conv.

    Args:
        in_channels: channels after concatenation.
        out_channels: channels out.
        bilinear: bilinear upsampling (no weights) instead of a 2x2 transposed conv.
    """

    def __init__(self, in_channels: int, out_channels: int, bilinear: bool):
        super().__init__()
        if bilinear:
            self.up: nn.Module = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
            self.conv = DoubleConv(in_channels, out_channels, in_channels // 2)
        else:
            self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
            self.conv = DoubleConv(in_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    """The classic U-Net returning logits ``N x classes x H x W``.

    Args:
        in_channels: input channels.
        classes: output channels.
        base_channels: width of the first block (64 in the paper).
        bilinear: bilinear upsampling instead of transposed convolutions.
    """

    def __init__(
        self,
        in_channels: int = 3,
        classes: int = 1,
        base_channels: int = 64,
        bilinear: bool = False,
    ):
        super().__init__()
        c = [base_channels * m for m in (1, 2, 4, 8, 16)]
        factor = 2 if bilinear else 1
        self.inc = DoubleConv(in_channels, c[0])
        self.down1 = Down(c[0], c[1])
        self.down2 = Down(c[1], c[2])
        self.down3 = Down(c[2], c[3])
        self.down4 = Down(c[3], c[4] // factor)
        self.up1 = Up(c[4], c[3] // factor, bilinear)
        self.up2 = Up(c[3], c[2] // factor, bilinear)
        self.up3 = Up(c[2], c[1] // factor, bilinear)
        self.up4 = Up(c[1], c[0], bilinear)
        self.head = nn.Conv2d(c[0], classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x = self.down4(x4)
        x = self.up1(x, x4)
        x = self.up2(x, x3)
        x = self.up3(x, x2)
        x = self.up4(x, x1)
        return self.head(x)


@register_model("unet", mean=UNIT_MEAN, std=UNIT_STD, divisor=16, uses_encoder=False)
def build_unet(spec: ModelSpec) -> nn.Module:
    """From-scratch U-Net (paper / Helen tutorial), width ``base_channels``."""
    if spec.options:
        raise ConfigError(
            f"The from-scratch unet takes no options, got {sorted(spec.options)}. "
            "Use base_channels and upsample to change it."
        )
    return UNet(spec.in_channels, spec.classes, spec.base_channels, spec.upsample == "bilinear")
