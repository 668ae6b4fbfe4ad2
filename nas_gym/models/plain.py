"""Builder of :class:`~nas_gym.arch.plain.PlainCNN` networks (EAS plain / DenseNet space).

Module layout, relied on by :mod:`nas_gym.models.net2net` and the Net2Net env:

- ``model.layers[i]`` is the module of ``arch.layers[i]``: a :class:`ConvBNReLU` (``.conv``,
  ``.bn``), an ``nn.MaxPool2d`` / ``nn.AvgPool2d``, or an :class:`FCReLU` (``.fc``);
- the global average pool runs before ``layers[arch.gap_index]`` (the first fc) or the head;
- ``model.head`` is the final ``nn.Linear(features, num_classes)``;
- ``model.dense`` says whether convs read the concatenation of all earlier conv outputs
  (``space="densenet"``, see :mod:`nas_gym.arch.plain`); ``model.input_shape`` is ``(C, H, W)``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..arch.plain import ConvLayer, FCLayer, PlainCNN, PoolLayer
from ..errors import ArchitectureError
from .builder import register_builder


class ConvBNReLU(nn.Module):
    """``C(filters, kernel, stride)``: conv ("same" padding, no bias: BN follows) -> BN -> ReLU."""

    def __init__(self, in_channels: int, filters: int, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, filters, kernel, stride=stride, padding=kernel // 2,
                              bias=False)
        self.bn = nn.BatchNorm2d(filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


class FCReLU(nn.Module):
    """``FC(units)``: linear -> ReLU."""

    def __init__(self, in_features: int, units: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x))


def make_pool(layer: PoolLayer) -> nn.Module:
    cls = nn.MaxPool2d if layer.mode == "max" else nn.AvgPool2d
    return cls(layer.size, stride=layer.stride)


def conv_out(size: int, kernel: int, stride: int) -> int:
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


class PlainNet(nn.Module):
    """The network of a :class:`PlainCNN` value (layout: see the module docstring)."""

    def __init__(self, arch: PlainCNN, input_shape: tuple[int, int, int],
                 num_classes: int) -> None:
        super().__init__()
        self.dense = arch.dense
        self.input_shape = tuple(input_shape)
        channels, height, width = input_shape
        seen_conv = 0  # features the global pool / next conv reads (after the first conv)
        self.layers = nn.ModuleList()
        for i, layer in enumerate(arch.layers):
            if isinstance(layer, ConvLayer):
                in_c = seen_conv if (self.dense and seen_conv) else channels
                self.layers.append(ConvBNReLU(in_c, layer.filters, layer.kernel, layer.stride))
                height = conv_out(height, layer.kernel, layer.stride)
                width = conv_out(width, layer.kernel, layer.stride)
                seen_conv += layer.filters
                channels = seen_conv if self.dense else layer.filters
            elif isinstance(layer, PoolLayer):
                if min(height, width) < layer.size:
                    raise ArchitectureError(
                        f"layers[{i}]=P({layer.size},{layer.stride},{layer.mode}) does not fit "
                        f"the {height}x{width} map it receives (input_shape={tuple(input_shape)}): "
                        "pooling would shrink it below 1x1"
                    )
                self.layers.append(make_pool(layer))
                height = (height - layer.size) // layer.stride + 1
                width = (width - layer.size) // layer.stride + 1
            elif isinstance(layer, FCLayer):
                self.layers.append(FCReLU(channels, layer.units))
                channels = layer.units
        self.head = nn.Linear(channels, num_classes)

    @property
    def gap_index(self) -> int:
        """Index of the first fc module (``len(layers)`` when none), read from the modules so
        that transforms only have to edit ``layers``."""
        for i, module in enumerate(self.layers):
            if isinstance(module, FCReLU):
                return i
        return len(self.layers)

    def forward_until(self, x: torch.Tensor, position: int) -> torch.Tensor:
        """The input of ``layers[position]`` for the batch ``x``: the (densenet: concatenated)
        feature map when ``position <= gap_index`` (i.e. before the global pool), else the
        vector the fc layer reads. ``position = len(layers)`` is the head's side of the net."""
        seen_conv, gap_index = False, self.gap_index
        for i, module in enumerate(self.layers[:position]):
            if i == gap_index:
                x = global_avg_pool(x)
            out = module(x)
            if self.dense and seen_conv and isinstance(module, ConvBNReLU):
                out = torch.cat([x, out], dim=1)  # eq. 4: all earlier outputs, then this one
            seen_conv = seen_conv or isinstance(module, ConvBNReLU)
            x = out
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_until(x, len(self.layers))
        if self.gap_index == len(self.layers):
            x = global_avg_pool(x)
        return self.head(x)


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """EAS's final global average pooling: ``(N, C, H, W) -> (N, C)``."""
    return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


@register_builder("plain")
def build_plain_cnn(arch: PlainCNN, input_shape: tuple[int, int, int],
                    num_classes: int) -> nn.Module:
    return PlainNet(arch, input_shape, num_classes)
