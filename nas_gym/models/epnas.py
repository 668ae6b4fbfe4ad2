"""Builders of the EPNAS spaces (seed 004, Tables 2 and 3): ``epnas_layer`` and ``epnas_module``.

Shape rules (every valid architecture builds for every input of at least 1x1, so 8x8 digits and
32x32 CIFAR both work):

* Convolutions use stride 1 and "same" padding; conv layers are conv -> BN -> activation,
  ``dep_sep_conv2d`` is depthwise kxk -> pointwise 1x1 -> BN -> activation. ``crelu`` is
  ``cat(relu(x), relu(-x))`` and so doubles the layer's output channels (2 x ``channels``).
* **Layer pattern:** ``max_pool`` / ``avg_pool`` are the reductions of the space: window
  ``pool_width``, stride 2, output ``ceil(H/2) x ceil(W/2)`` (padded so a 1x1 map stays 1x1;
  max-pool pads with -inf, avg-pool averages valid pixels only). They keep their input's channels.
* **Two inputs** (``src2 != -1``, and ``add``): the result is ``y + proj(skip)`` where ``y`` is the
  op applied to ``node[src1]`` (``node[src1]`` itself for ``add``). Spatial sizes never grow: the
  larger of the two maps is average-pooled (adaptive) to the smaller one's size. ``proj`` is a
  1x1 conv + BN, present only when the skip's channel count differs from ``y``'s.
* **Module pattern:** every module copy starts with a preprocessing conv + BN + ReLU to
  ``stem_channels * 2**m`` channels (1x1 for the first copy, 3x3 stride 2 for the others: the
  stride-2 reduction between stacks, as NASNet doubles the width when it halves the map). Inside a
  module everything is stride 1: conv ops are conv (``channels * 2**m`` filters) -> BN -> ReLU,
  ``1x7-7x1`` is 1x7 conv -> 7x1 conv -> BN -> ReLU, pools are stride-1 "same" pools keeping the
  channels. A branch concatenates its two ops' outputs (EPNAS §3.3: "two operations to be
  concatenated"). The module's output concatenates the branches with ``propagate=1``; when none
  propagates, the branches no other branch reads (NASNet's rule, EPNAS Fig. 3) are used.

Stable module names (the parameter-sharing keys of EPNAS §3.4): ``model.share_units()`` maps
``"stem/conv3x3"``, ``"{i}/{layer type}"`` (layer ``i``), ``"m{m}/pre"``,
``"m{m}.b{b}/{branch type}"`` (branch ``b`` of module copy ``m``) and ``"head/linear"`` to the
submodule holding those weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..arch.epnas import CONV_LAYER_TYPES, Branch, EpnasLayer, LayerNet, ModuleNet, branch_ops
from .builder import register_builder


class CReLU(nn.Module):
    """``cat(relu(x), relu(-x))`` along channels: doubles the channel count."""

    counts_no_flops = True  # no convolution or matrix product (nas_gym.costs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.relu(x), F.relu(-x)], dim=1)


def activation(name: str) -> nn.Module:
    return {"relu": nn.ReLU, "crelu": CReLU, "elu": nn.ELU, "selu": nn.SELU,
            "swish": nn.SiLU}[name]()


def conv_bn(c_in: int, c_out: int, kernel: int | tuple[int, int], stride: int = 1) -> list[nn.Module]:
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    return [nn.Conv2d(c_in, c_out, (kh, kw), stride=stride, padding=(kh // 2, kw // 2), bias=False),
            nn.BatchNorm2d(c_out)]


class Pool(nn.Module):
    """Max / average pool of window ``width``; stride 2 -> ``ceil(H/2)``, stride 1 -> ``H``.

    The padding is explicit (and asymmetric for even windows) so every input size, down to 1x1,
    gives that output size; average pooling divides by the number of real (unpadded) pixels.
    """

    counts_no_flops = True  # no convolution or matrix product (nas_gym.costs)

    def __init__(self, mode: str, width: int, stride: int) -> None:
        super().__init__()
        self.mode, self.width, self.stride = mode, width, stride

    def _pad(self, size: int) -> tuple[int, int]:
        out = math.ceil(size / self.stride)
        total = (out - 1) * self.stride + self.width - size
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = self._pad(x.shape[-2])
        left, right = self._pad(x.shape[-1])
        pad = (left, right, top, bottom)
        if self.mode == "max":
            return F.max_pool2d(F.pad(x, pad, value=-math.inf), self.width, self.stride)
        summed = F.avg_pool2d(F.pad(x, pad), self.width, self.stride)
        ones = F.pad(torch.ones_like(x[:1, :1]), pad)
        return summed / F.avg_pool2d(ones, self.width, self.stride)


def fit_spatial(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-pool the larger map down to the smaller one's size (sizes never grow)."""
    # plain ints: a traced / exported graph (nas_gym.export) keeps them as constants, which ONNX's
    # adaptive pooling needs (the sizes are fixed by the architecture and the input size)
    size = (int(min(a.shape[-2], b.shape[-2])), int(min(a.shape[-1], b.shape[-1])))
    if tuple(a.shape[-2:]) != size:
        a = F.adaptive_avg_pool2d(a, size)
    if tuple(b.shape[-2:]) != size:
        b = F.adaptive_avg_pool2d(b, size)
    return a, b


class LayerBlock(nn.Module):
    """Layer ``i`` of a :class:`LayerNet`: ``op(node[src1])`` (+ projected ``node[src2]``)."""

    def __init__(self, layer: EpnasLayer, c_in: int, c_skip: int | None) -> None:
        super().__init__()
        self.op: nn.Module
        if layer.type == "conv2d":
            self.op = nn.Sequential(*conv_bn(c_in, layer.channels, layer.filter_width),
                                    activation(layer.activation))
        elif layer.type == "dep_sep_conv2d":
            k = layer.filter_width
            self.op = nn.Sequential(
                nn.Conv2d(c_in, c_in, k, padding=k // 2, groups=c_in, bias=False),
                *conv_bn(c_in, layer.channels, 1), activation(layer.activation))
        elif layer.type in ("max_pool", "avg_pool"):
            self.op = Pool(layer.type[:3], layer.pool_width, stride=2)
        else:  # add: the op is the identity on node[src1]
            self.op = nn.Identity()
        doubled = 2 if layer.activation == "crelu" and layer.type in CONV_LAYER_TYPES else 1
        self.out_channels = layer.channels * doubled if layer.type in CONV_LAYER_TYPES else c_in
        self.proj: nn.Module | None = None
        if c_skip is not None and c_skip != self.out_channels:
            self.proj = nn.Sequential(*conv_bn(c_skip, self.out_channels, 1))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        y = self.op(x)
        if skip is None:
            return y
        y, skip = fit_spatial(y, skip)
        return y + (self.proj(skip) if self.proj is not None else skip)


class EpnasLayerModel(nn.Module):
    """Stem (3x3 conv-BN-ReLU) -> layers (by node index) -> global average pool -> linear."""

    def __init__(self, arch: LayerNet, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.sources = [(layer.src1, layer.src2) for layer in arch.layers]
        self.stem = nn.Sequential(*conv_bn(input_shape[0], arch.stem_channels, 3), nn.ReLU())
        channels = [arch.stem_channels]
        blocks = []
        for layer in arch.layers:
            c_skip = channels[layer.src2] if layer.src2 != -1 else None
            block = LayerBlock(layer, channels[layer.src1], c_skip)
            blocks.append(block)
            channels.append(block.out_channels)
        self.layers = nn.ModuleList(blocks)
        self.head = nn.Linear(channels[-1], num_classes)
        self._types = [layer.type for layer in arch.layers]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [self.stem(x)]
        for block, (src1, src2) in zip(self.layers, self.sources, strict=True):
            nodes.append(block(nodes[src1], nodes[src2] if src2 != -1 else None))
        return self.head(nodes[-1].mean(dim=(2, 3)))

    def share_units(self) -> dict[str, nn.Module]:
        """Parameter-sharing units keyed ``"{layer index}/{layer type}"`` (EPNAS §3.4)."""
        units: dict[str, nn.Module] = {"stem/conv3x3": self.stem}
        units.update({f"{i}/{t}": block for i, (t, block) in
                      enumerate(zip(self._types, self.layers, strict=True))})
        units["head/linear"] = self.head
        return units


def _module_op(op: str, c_in: int, channels: int, filter_width: int, pool_width: int
               ) -> tuple[nn.Module, int]:
    if op == "conv":
        return nn.Sequential(*conv_bn(c_in, channels, filter_width), nn.ReLU()), channels
    if op == "1x7-7x1":
        return nn.Sequential(nn.Conv2d(c_in, channels, (1, 7), padding=(0, 3), bias=False),
                             *conv_bn(channels, channels, (7, 1)), nn.ReLU()), channels
    return Pool(op[:3], pool_width, stride=1), c_in  # maxpool / avgpool keep the channels


class BranchBlock(nn.Module):
    """One branch: ``cat(op1(node[src1]), op2(node[src2]))`` (op2 may be absent)."""

    def __init__(self, branch: Branch, channels: list[int], mult: int) -> None:
        super().__init__()
        first, second = branch_ops(branch.type)
        c = branch.channels * mult
        self.op1, c1 = _module_op(first, channels[branch.src1], c, branch.filter_width,
                                  branch.pool_width)
        self.op2: nn.Module | None = None
        c2 = 0
        if second != "none":
            self.op2, c2 = _module_op(second, channels[branch.src2], c, branch.filter_width,
                                      branch.pool_width)
        self.src1, self.src2 = branch.src1, branch.src2
        self.out_channels = c1 + c2

    def forward(self, nodes: list[torch.Tensor]) -> torch.Tensor:
        y = self.op1(nodes[self.src1])
        if self.op2 is None:
            return y
        return torch.cat([y, self.op2(nodes[self.src2])], dim=1)


def module_outputs(arch: ModuleNet) -> list[int]:
    """Indices of the branches concatenated into a module's output (see the module docstring)."""
    chosen = [b for b, branch in enumerate(arch.branches) if branch.propagate]
    if chosen:
        return chosen
    read = set()
    for branch in arch.branches:
        read.add(branch.src1)
        if branch_ops(branch.type)[1] != "none":
            read.add(branch.src2)
    return [b for b in range(len(arch.branches)) if b + 1 not in read]


class EpnasModule(nn.Module):
    """One copy ``m`` of the module: preprocessing conv, then the branches."""

    def __init__(self, arch: ModuleNet, c_in: int, m: int) -> None:
        super().__init__()
        width = arch.stem_channels * 2**m
        # the stride-2 reduction between stacked copies lives in the next copy's preprocessing
        kernel, stride = (1, 1) if m == 0 else (3, 2)
        self.pre = nn.Sequential(*conv_bn(c_in, width, kernel, stride=stride), nn.ReLU())
        channels = [width]
        blocks = []
        for branch in arch.branches:
            block = BranchBlock(branch, channels, 2**m)
            blocks.append(block)
            channels.append(block.out_channels)
        self.branches = nn.ModuleList(blocks)
        self.outputs = module_outputs(arch)
        self.out_channels = sum(channels[b + 1] for b in self.outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [self.pre(x)]
        for block in self.branches:
            nodes.append(block(nodes))
        return torch.cat([nodes[b + 1] for b in self.outputs], dim=1)


class EpnasModuleModel(nn.Module):
    """Stem -> ``num_modules`` module copies (stride 2 between) -> global average pool -> linear."""

    def __init__(self, arch: ModuleNet, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(input_shape[0], arch.stem_channels, 3), nn.ReLU())
        c = arch.stem_channels
        mods = []
        for m in range(arch.num_modules):
            mods.append(EpnasModule(arch, c, m))
            c = mods[-1].out_channels
        self.stack = nn.ModuleList(mods)
        self.head = nn.Linear(c, num_classes)
        self._types = [branch.type for branch in arch.branches]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for mod in self.stack:
            x = mod(x)
        return self.head(x.mean(dim=(2, 3)))

    def share_units(self) -> dict[str, nn.Module]:
        """Parameter-sharing units (EPNAS §3.4): stem, per-copy preprocessing, branches, head."""
        units: dict[str, nn.Module] = {"stem/conv3x3": self.stem}
        for m, mod in enumerate(self.stack):
            units[f"m{m}/pre"] = mod.pre
            for b, (t, block) in enumerate(zip(self._types, mod.branches, strict=True)):
                units[f"m{m}.b{b}/{t}"] = block
        units["head/linear"] = self.head
        return units


@register_builder("epnas_layer")
def build_layer_net(arch: LayerNet, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return EpnasLayerModel(arch, input_shape, num_classes)


@register_builder("epnas_module")
def build_module_net(arch: ModuleNet, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return EpnasModuleModel(arch, input_shape, num_classes)
