"""Builder of :class:`~nas_gym.arch.macro.MacroArchitecture` networks (Zoph & Le; seed 001), and
their pre-training costs in closed form.

:func:`macro_costs` gives ``params``, ``flops`` and ``memory_bytes`` without building a module, so
``MacroNAS-v0`` can check a hard budget on many candidate completions at every step (SPEC §3.5).
It follows the module structure below line by line and counts what
:func:`nas_gym.costs.static_costs` counts: parameters; 2 FLOPs per multiply-accumulate of convs
and the linear layer (pooling is not counted by ``FlopCounterMode``); parameter bytes plus the
output bytes of every leaf module (float32). ``tests/test_macro_nas.py`` checks the equality on
hundreds of random architectures: change both together.
"""

from __future__ import annotations

import torch
from torch import nn

from ..arch.macro import MacroArchitecture
from .builder import register_builder
from .closed_form import CostTally, register_costs


class Gather(nn.Module):
    """Bring maps to ``target`` (height, width) with adaptive average pooling where they differ,
    then concatenate them on channels (Zoph & Le's multi-input layers and loose ends)."""

    def __init__(self, sizes: list[tuple[int, int]], target: tuple[int, int]) -> None:
        super().__init__()
        self.target = target
        self.resize = nn.ModuleDict({str(p): nn.AdaptiveAvgPool2d(target)
                                     for p, hw in enumerate(sizes) if hw != target})

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        xs = [self.resize[str(p)](x) if str(p) in self.resize else x for p, x in enumerate(xs)]
        return xs[0] if len(xs) == 1 else torch.cat(xs, dim=1)


class MacroLayerModule(nn.Module):
    """Gather the inputs, then conv -> BN -> ReLU (SPEC §1.2)."""

    def __init__(self, in_channels: int, sizes: list[tuple[int, int]], target: tuple[int, int],
                 filters: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.gather = Gather(sizes, target)
        self.conv = nn.Conv2d(in_channels, filters, kernel, stride=stride, padding=kernel // 2,
                              bias=False)
        self.bn = nn.BatchNorm2d(filters)
        self.relu = nn.ReLU()

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return self.relu(self.bn(self.conv(self.gather(xs))))


class MacroNetwork(nn.Module):
    def __init__(self, arch: MacroArchitecture, input_shape: tuple[int, int, int],
                 num_classes: int) -> None:
        super().__init__()
        self.inputs = [layer.inputs for layer in arch.layers]
        self.loose = arch.loose_ends()
        c_in, h, w = input_shape
        sizes = arch.sizes(h, w)
        channels = [layer.filters for layer in arch.layers]
        self.layers = nn.ModuleList()
        for i, layer in enumerate(arch.layers):
            trunk = (h, w) if i == 0 else sizes[i - 1]
            srcs = layer.inputs
            self.layers.append(MacroLayerModule(
                c_in if i == 0 else sum(channels[j] for j in srcs),
                [trunk] if i == 0 else [sizes[j] for j in srcs], trunk,
                layer.filters, layer.kernel, layer.stride))
        self.gather = Gather([sizes[j] for j in self.loose], sizes[-1])
        features = sum(channels[j] for j in self.loose)
        if arch.head == "flatten":
            fh, fw = sizes[-1]
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(features * fh * fw, num_classes))
        else:
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                      nn.Linear(features, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs: list[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            outs.append(layer([x] if i == 0 else [outs[j] for j in self.inputs[i]]))
        return self.head(self.gather([outs[j] for j in self.loose]))


@register_builder("macro")
def build_macro_network(arch: MacroArchitecture, input_shape: tuple[int, int, int],
                        num_classes: int) -> nn.Module:
    return MacroNetwork(arch, input_shape, num_classes)


def _macro_tally(arch: MacroArchitecture, input_shape: tuple[int, int, int],
                 num_classes: int) -> CostTally:
    """What the leaf modules of ``build_model(arch, ...)`` hold and move (see the module doc)."""
    c_in, h, w = input_shape
    sizes = arch.sizes(h, w)
    t = CostTally()

    def gather(srcs: list[tuple[int, tuple[int, int]]], target: tuple[int, int]) -> None:
        """The pooling modules of a Gather (maps not already at target)."""
        for c, hw in srcs:
            if hw != target:
                t.leaf(c * hw[0] * hw[1], c * target[0] * target[1])

    for i, layer in enumerate(arch.layers):
        if i == 0:
            srcs, trunk = [(c_in, (h, w))], (h, w)
        else:
            srcs = [(arch.layers[j].filters, sizes[j]) for j in layer.inputs]
            trunk = sizes[i - 1]
        gather(srcs, trunk)
        cin, f, k = sum(c for c, _ in srcs), layer.filters, layer.kernel
        t.conv(cin, f, (k, k), trunk, sizes[i])  # no bias: BN follows
        t.bn(f, sizes[i])
        t.same(f * sizes[i][0] * sizes[i][1])  # ReLU
    loose = [(arch.layers[j].filters, sizes[j]) for j in arch.loose_ends()]
    fh, fw = sizes[-1]
    features = sum(c for c, _ in loose)
    gather(loose, (fh, fw))
    if arch.head == "flatten":
        linear_in = features * fh * fw
        t.same(linear_in)  # Flatten
    else:
        linear_in = features
        t.leaf(features * fh * fw, features)  # AdaptiveAvgPool2d(1)
        t.same(features)  # Flatten
    t.linear(linear_in, num_classes)
    return t


def macro_costs(arch: MacroArchitecture, input_shape: tuple[int, int, int],
                num_classes: int) -> dict[str, int]:
    """``params``, ``flops`` and ``memory_bytes`` of ``build_model(arch, ...)``, in closed form
    (equal to :func:`nas_gym.costs.static_costs` on the module; see the module doc)."""
    costs = _macro_tally(arch, input_shape, num_classes).costs()
    return {k: int(costs[k]) for k in ("params", "flops", "memory_bytes")}


@register_costs("macro")
def macro_all_costs(arch: MacroArchitecture, input_shape: tuple[int, int, int],
                    num_classes: int) -> dict[str, float]:
    """:func:`macro_costs` and ``compute_intensity`` (the closed form of
    :func:`nas_gym.costs.architecture_costs` for this space)."""
    return _macro_tally(arch, input_shape, num_classes).costs()
