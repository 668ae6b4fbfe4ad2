"""Cell ops (ENAS / NASNet): each ``op(channels, stride) -> nn.Module`` keeps the channel count and
maps an HxW map to ceil(H/stride) x ceil(W/stride)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..arch.cell import ALL_OPS
from ..registry import Registry

OpFactory = Callable[[int, int], nn.Module]
OPS: Registry[OpFactory] = Registry("op")


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0, dilation: int = 1) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(c_out),
        )


class SepConv(nn.Sequential):
    """Separable conv applied twice (ENAS / DARTS): ReLU-dw-pw-BN, stride on the first."""

    def __init__(self, c: int, kernel: int, stride: int) -> None:
        pad = kernel // 2
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c, c, kernel, stride, pad, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=False),
            nn.Conv2d(c, c, kernel, 1, pad, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c),
        )


class FactorizedReduce(nn.Module):
    """Halve the spatial size with two offset 1x1 stride-2 convs (ENAS); odd sizes are padded so
    both paths give ceil(H/2)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv1 = nn.Conv2d(c_in, c_out // 2, 1, 2, bias=False)
        self.conv2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return self.bn(torch.cat([self.conv1(x), self.conv2(shifted)], dim=1))


class ConvPair(nn.Sequential):
    """NASNet's 1xk then kx1 conv."""

    def __init__(self, c: int, k: int, stride: int) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c, c, (1, k), (1, stride), (0, k // 2), bias=False),
            nn.Conv2d(c, c, (k, 1), (stride, 1), (k // 2, 0), bias=False),
            nn.BatchNorm2d(c),
        )


def _identity(c: int, stride: int) -> nn.Module:
    return nn.Identity() if stride == 1 else FactorizedReduce(c, c)


def _pool(kind: str, k: int) -> OpFactory:
    def make(c: int, stride: int) -> nn.Module:
        if kind == "avg":
            return nn.AvgPool2d(k, stride, k // 2, count_include_pad=False)
        return nn.MaxPool2d(k, stride, k // 2)

    return make


OPS.register("identity", _identity)
OPS.register("sep_conv_3x3", lambda c, s: SepConv(c, 3, s))
OPS.register("sep_conv_5x5", lambda c, s: SepConv(c, 5, s))
OPS.register("sep_conv_7x7", lambda c, s: SepConv(c, 7, s))
OPS.register("avg_pool_3x3", _pool("avg", 3))
OPS.register("max_pool_3x3", _pool("max", 3))
OPS.register("max_pool_5x5", _pool("max", 5))
OPS.register("max_pool_7x7", _pool("max", 7))
OPS.register("conv_1x1", lambda c, s: ReLUConvBN(c, c, 1, s, 0))
OPS.register("conv_3x3", lambda c, s: ReLUConvBN(c, c, 3, s, 1))
OPS.register("dil_conv_3x3", lambda c, s: ReLUConvBN(c, c, 3, s, 2, dilation=2))
OPS.register("conv_1x3_3x1", lambda c, s: ConvPair(c, 3, s))
OPS.register("conv_1x7_7x1", lambda c, s: ConvPair(c, 7, s))

assert set(OPS) == ALL_OPS, "every op name of the cell space has a builder"
