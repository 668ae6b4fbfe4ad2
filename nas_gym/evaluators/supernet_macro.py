"""The super-network of the macro layer space (SPEC §5, ``evaluator="shared"``); the base class
and how a child shares its weights: :mod:`nas_gym.evaluators.supernet_base`.

**Macro layers** (:class:`MacroSuperNet`, SPEC §1.2): one weight per (layer, filters, kernel),
stored as one Parameter per input piece it may read (the image, or layer ``j`` at each of its
filter counts) and concatenated along the input channels like the child's concatenated inputs;
its BN per (layer, filters, kernel); any stride runs on the same weights. The head holds one
Parameter per (loose layer, filters[, final size]) piece for ``"flatten"`` and ``"gap"``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..arch.base import Architecture
from ..arch.macro import FILTERS, KERNELS, STRIDES, MacroArchitecture, conv_out
from ..errors import ArchitectureError
from .supernet_base import FLOAT_BYTES, SuperNet, unique_parameters


def _resize(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    return x if tuple(x.shape[-2:]) == tuple(hw) else F.adaptive_avg_pool2d(x, hw)


class MacroSuperNet(SuperNet):
    """Omega of the macro layer space: one weight per (layer, filters, kernel) (module doc).

    :param filters, kernels, strides: the choice sets of ``MacroNAS-v0``.
    :param max_layers: layers a child may have.
    """

    kind = "macro"

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, *,
                 filters: Sequence[int] = FILTERS, kernels: Sequence[int] = KERNELS,
                 strides: Sequence[int] = STRIDES, max_layers: int = 8) -> None:
        super().__init__()
        self.filters, self.kernels = tuple(filters), tuple(kernels)
        self.max_layers, self.input_shape = max_layers, tuple(input_shape)
        c_in, h, w = input_shape
        self.convs = nn.ParameterDict()
        self.bns = nn.ModuleDict()
        for i in range(max_layers):
            pieces = [("x", c_in)] if i == 0 else [(j, g) for j in range(i) for g in self.filters]
            for f in self.filters:
                for k in self.kernels:
                    self.bns[f"L{i}_f{f}_k{k}"] = nn.BatchNorm2d(f)
                    for j, g in pieces:
                        self.convs[f"L{i}_f{f}_k{k}_in{j}_{g}"] = nn.Parameter(
                            torch.empty(f, g, k, k))
        self.final_sizes = sorted(self._reachable((h, w), tuple(strides), max_layers))
        self.flat = nn.ParameterDict({f"L{j}_{g}_{fh}x{fw}": nn.Parameter(
            torch.empty(num_classes, g * fh * fw)) for j in range(max_layers)
            for g in self.filters for fh, fw in self.final_sizes})
        self.gap = nn.ParameterDict({f"L{j}_{g}": nn.Parameter(torch.empty(num_classes, g))
                                     for j in range(max_layers) for g in self.filters})
        self.flat_bias = nn.Parameter(torch.zeros(num_classes))
        self.gap_bias = nn.Parameter(torch.zeros(num_classes))

    @staticmethod
    def _reachable(hw: tuple[int, int], strides: tuple[int, ...], layers: int) -> set:
        seen, frontier = set(), {hw}
        for _ in range(layers):
            frontier = {(conv_out(h, 1, s), conv_out(w, 1, s)) for h, w in frontier
                        for s in strides} - seen
            seen |= frontier
        return seen

    def check(self, arch: Architecture) -> None:
        if not isinstance(arch, MacroArchitecture):
            raise ArchitectureError(f"a {type(arch).__name__} cannot run on a macro super-network")
        if len(arch.layers) > self.max_layers:
            raise ArchitectureError(f"{len(arch.layers)} layers; the super-network holds "
                                    f"{self.max_layers} (evaluator_kwargs max_layers)")
        for i, layer in enumerate(arch.layers):
            if layer.filters not in self.filters or layer.kernel not in self.kernels:
                raise ArchitectureError(
                    f"layer {i}: filters={layer.filters}, kernel={layer.kernel} are outside the "
                    f"super-network's filters {self.filters} / kernels {self.kernels} "
                    "(evaluator_kwargs filters, kernels)")
        if arch.head == "flatten" and arch.sizes(*self.input_shape[1:])[-1] not in self.final_sizes:
            raise ArchitectureError("the final feature map size is outside the super-network's "
                                    "strides (evaluator_kwargs strides)")

    def _keys(self, arch: MacroArchitecture) -> tuple[list[tuple[str, str, list[str]]], list[str]]:
        """Per layer (BN key, conv keys in input order); the head's piece keys."""
        layers = []
        for i, layer in enumerate(arch.layers):
            base = f"L{i}_f{layer.filters}_k{layer.kernel}"
            srcs = ["x_" + str(self.input_shape[0])] if i == 0 else \
                [f"{j}_{arch.layers[j].filters}" for j in layer.inputs]
            layers.append((base, base, [f"{base}_in{s}" for s in srcs]))
        fh, fw = arch.sizes(*self.input_shape[1:])[-1]
        size = f"_{fh}x{fw}" if arch.head == "flatten" else ""
        head = [f"L{j}_{arch.layers[j].filters}{size}" for j in arch.loose_ends()]
        return layers, head

    def path_parameters(self, arch: Architecture) -> list[nn.Parameter]:
        assert isinstance(arch, MacroArchitecture)
        layers, head = self._keys(arch)
        params = [p for _, bn, convs in layers for p in
                  (*(self.convs[k] for k in convs), *self.bns[bn].parameters())]
        table, bias = (self.flat, self.flat_bias) if arch.head == "flatten" else \
            (self.gap, self.gap_bias)
        return unique_parameters([*params, *(table[k] for k in head), bias])

    def forward(self, x: torch.Tensor, arch: MacroArchitecture) -> torch.Tensor:
        layers, head = self._keys(arch)
        sizes = arch.sizes(*self.input_shape[1:])
        outs: list[torch.Tensor] = []
        for i, (layer, (_, bn, convs)) in enumerate(zip(arch.layers, layers, strict=True)):
            xs = [x] if i == 0 else [_resize(outs[j], sizes[i - 1]) for j in layer.inputs]
            w = torch.cat([self.convs[k] for k in convs], dim=1)
            y = F.conv2d(torch.cat(xs, dim=1) if len(xs) > 1 else xs[0], w, stride=layer.stride,
                         padding=layer.kernel // 2)
            outs.append(F.relu(self.bns[bn](y)))
        feats = [_resize(outs[j], sizes[-1]) for j in arch.loose_ends()]
        if arch.head == "flatten":
            z = torch.cat([f.flatten(1) for f in feats], dim=1)
            return F.linear(z, torch.cat([self.flat[k] for k in head], dim=1), self.flat_bias)
        z = torch.cat([f.mean(dim=(2, 3)) for f in feats], dim=1)
        return F.linear(z, torch.cat([self.gap[k] for k in head], dim=1), self.gap_bias)

    def activation_bytes(self, batch: int) -> int:
        # worst case: every layer at full resolution, reading every earlier layer at max width
        _, h, w = self.input_shape
        fmax = max(self.filters)
        maps = sum(i * fmax + 3 * fmax for i in range(self.max_layers))
        return 2 * FLOAT_BYTES * batch * maps * h * w
