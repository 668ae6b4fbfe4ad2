"""The macro layer space of Zoph & Le (2017) and seed 001 (SPEC §1.2), searched by ``MacroNAS-v0``.

A network is a chain of conv layers, bottom to top; each layer is conv (``filters`` output
channels, ``kernel`` x ``kernel``, ``stride``, "same" padding ``kernel // 2``, no bias) -> BatchNorm
-> ReLU, followed by a head (``"flatten"``: flatten -> linear, seed 001, so the head's parameters
grow with the last feature map; ``"gap"``: global average pool -> linear).

**Connections** (Zoph & Le's anchor points). Layer ``i`` reads the layers listed in ``inputs``
(indices of earlier layers, increasing); layer 0 reads the image (``inputs == ()``). A layer that
chose no skip reads the previous layer (the env writes that as ``inputs == (i - 1,)``, so one
network has one value). Several inputs are concatenated on channels after being brought to one
spatial size: **Decision** the *trunk* size, i.e. the output size of layer ``i - 1`` (the image
for layer 0). Strides only act along the chain, so the trunk size never grows and every input
of layer ``i`` is at least that large; larger maps are shrunk with adaptive average pooling
(parameter-free; Zoph & Le instead zero-pad the smaller maps, which misaligns features).

**Loose ends** (layers no later layer reads; the last layer always is one) all feed the head, as
in Zoph & Le ("all layer outputs that have not been connected are concatenated ... and sent to
the classifier"): they are brought to the last layer's size and concatenated on channels. With
skip connections off every layer reads the previous one and only the last layer is loose.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .base import Architecture, register_architecture, require

#: Seed 001's choice sets (its Table "Child Network Manager"; SPEC §1.2).
FILTERS: tuple[int, ...] = (4, 8, 16, 32)
KERNELS: tuple[int, ...] = (1, 3, 5, 7)
STRIDES: tuple[int, ...] = (1, 2, 4)
#: Accepted values of ``MacroArchitecture.head``.
HEADS: tuple[str, ...] = ("flatten", "gap")


def conv_out(n: int, kernel: int, stride: int) -> int:
    """Output length of a "same"-padded (``kernel // 2``) conv along one axis of length ``n``."""
    return (n + 2 * (kernel // 2) - kernel) // stride + 1


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class MacroLayer:
    """conv(filters, kernel x kernel, stride) -> BN -> ReLU over the concatenation of ``inputs``."""

    filters: int
    kernel: int
    stride: int = 1
    inputs: tuple[int, ...] = ()


@register_architecture
@dataclass(frozen=True)
class MacroArchitecture(Architecture):
    """A macro (layer-by-layer) network; see the module doc for its exact meaning.

    :param layers: the conv layers, bottom to top (at least one).
    :param head: ``"flatten"`` (seed 001) or ``"gap"``.
    """

    kind = "macro"
    layers: tuple[MacroLayer, ...]
    head: str = "flatten"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MacroArchitecture:
        layers = []
        for i, layer in enumerate(data["layers"]):
            if not isinstance(layer, Mapping):
                raise TypeError(f"layer {i} must be a dict with filters, kernel, stride, inputs; "
                                f"got {layer!r}")
            inputs = layer.get("inputs")
            if inputs is None:  # hand-written dicts may leave the plain chain implicit
                inputs = () if i == 0 else (i - 1,)
            layers.append(MacroLayer(layer["filters"], layer["kernel"], layer.get("stride", 1),
                                     tuple(inputs)))
        return cls(layers=tuple(layers), head=data.get("head", "flatten"))

    def validate(self) -> None:
        require(isinstance(self.layers, tuple) and len(self.layers) >= 1,
                "layers must be a non-empty tuple of MacroLayer")
        require(self.head in HEADS, f"head={self.head!r} is not accepted; expected one of {HEADS}")
        for i, layer in enumerate(self.layers):
            require(_is_int(layer.filters) and layer.filters >= 1,
                    f"layer {i}: filters={layer.filters!r} must be an integer >= 1")
            require(_is_int(layer.kernel) and layer.kernel >= 1 and layer.kernel % 2 == 1,
                    f"layer {i}: kernel={layer.kernel!r} must be an odd integer >= 1 "
                    "(same padding)")
            require(_is_int(layer.stride) and layer.stride >= 1,
                    f"layer {i}: stride={layer.stride!r} must be an integer >= 1")
            ins = layer.inputs
            require(all(_is_int(j) for j in ins), f"layer {i}: inputs={ins!r} must be integers")
            if i == 0:
                require(ins == (), f"layer 0 reads the image: inputs={ins!r} must be empty")
            else:
                require(len(ins) >= 1 and all(0 <= j < i for j in ins)
                        and list(ins) == sorted(set(ins)),
                        f"layer {i}: inputs={ins!r} must be distinct increasing indices in "
                        f"[0, {i - 1}]")

    def loose_ends(self) -> tuple[int, ...]:
        """Layers no later layer reads (they feed the head; always includes the last layer)."""
        read = {j for layer in self.layers for j in layer.inputs}
        return tuple(i for i in range(len(self.layers)) if i not in read)

    def sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Spatial size of every layer's output for an input of ``height`` x ``width``."""
        out, h, w = [], height, width
        for layer in self.layers:
            h, w = conv_out(h, layer.kernel, layer.stride), conv_out(w, layer.kernel, layer.stride)
            out.append((h, w))
        return out
