"""The plain-CNN space of EAS (Cai et al. 2018), explored by ``Net2Net-v0`` (SPEC §1.3).

A network is a tuple of layers, bottom to top:

- :class:`ConvLayer` ``C(filters, kernel, stride)``: conv ("same" padding ``kernel // 2``, no
  bias) -> BatchNorm -> ReLU;
- :class:`PoolLayer` ``P(size, stride, mode)``: max or average pooling, no padding;
- :class:`FCLayer` ``FC(units)``: linear -> ReLU.

Convs and pools come first, fcs last. Between them, always and implicitly, sits a **global average
pool** over the remaining spatial map (EAS's "final global average pooling layer"), so any input
size works once the convs and pools fit in it. The final linear layer (EAS's ``SM(num_classes)``)
is not a layer of the value: the builder adds it from ``num_classes``. At least one conv is
required: Net2Net's identity layers rely on the non-negative (post-ReLU) features it produces.

**DenseNet variant** (``space="densenet"``, EAS §"Function-preserving Transformation for
DenseNet", eq. 4-5). The first conv reads the network input (it plays DenseNet's initial
convolution; the raw input is *not* concatenated into the features). Every later conv reads the
channel concatenation of the outputs of *all* earlier convs, in layer order, and its own output is
appended to that concatenation. A pool applies to the whole concatenation, so a block (the convs
between two pools) reads its block input -- the pooled features of all earlier blocks -- plus
the outputs of the earlier convs of its own block, as in eq. 4. The global average pool, too, sees
the concatenation of all conv outputs. Convs keep stride 1 in this space (only pools
downsample, so all concatenated maps share one size). Pools before the first conv apply to the
input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ArchitectureError
from .base import Architecture, register_architecture, require

#: Net2Wider levels of conv filters (EAS §Experiments; SPEC §1.3).
CONV_WIDTHS: tuple[int, ...] = (16, 32, 64, 96, 128, 192, 256, 320, 384, 448, 512)
#: Kernel sizes a Net2Deeper conv may use.
CONV_KERNELS: tuple[int, ...] = (1, 3, 5)
#: Net2Wider levels of fc units.
FC_UNITS: tuple[int, ...] = (64, 128, 256, 384, 512, 640, 768, 896, 1024)
#: Accepted values of ``PlainCNN.space``.
SPACES: tuple[str, ...] = ("plain", "densenet")
#: Accepted values of ``PoolLayer.mode``.
POOL_MODES: tuple[str, ...] = ("max", "avg")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class ConvLayer:
    """``C(filters, kernel, stride)``: conv (padding ``kernel // 2``) -> BN -> ReLU."""

    filters: int
    kernel: int
    stride: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"type": "conv", "filters": self.filters, "kernel": self.kernel,
                "stride": self.stride}


@dataclass(frozen=True)
class PoolLayer:
    """``P(size, stride, mode)``; ``stride`` defaults to ``size`` (non-overlapping windows)."""

    mode: str
    size: int
    stride: int = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.stride is None:
            object.__setattr__(self, "stride", self.size)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "pool", "mode": self.mode, "size": self.size, "stride": self.stride}


@dataclass(frozen=True)
class FCLayer:
    """``FC(units)``: linear -> ReLU (after the global average pool)."""

    units: int

    def to_dict(self) -> dict[str, Any]:
        return {"type": "fc", "units": self.units}


Layer = ConvLayer | PoolLayer | FCLayer


def layer_from_dict(data: dict[str, Any]) -> Layer:
    """Inverse of the layers' ``to_dict()`` (dispatch on the ``"type"`` key)."""
    kind = data.get("type")
    if kind == "conv":
        return ConvLayer(int(data["filters"]), int(data["kernel"]), int(data.get("stride", 1)))
    if kind == "pool":
        size = int(data["size"])
        return PoolLayer(str(data["mode"]), size, int(data.get("stride", size)))
    if kind == "fc":
        return FCLayer(int(data["units"]))
    raise ArchitectureError(
        f"layer['type']={kind!r} is not accepted; expected one of 'conv', 'pool', 'fc'"
    )


def next_level(value: int, levels: tuple[int, ...]) -> int | None:
    """The smallest level strictly above ``value`` (EAS widens "to the next discrete level")."""
    above = [v for v in levels if v > value]
    return min(above) if above else None


@register_architecture
@dataclass(frozen=True)
class PlainCNN(Architecture):
    """A plain (or DenseNet-connected) CNN: see the module docstring for the exact semantics.

    :param layers: conv / pool layers, then fc layers; the global average pool between them and
        the final linear layer are implicit.
    :param space: ``"plain"`` (layer-by-layer) or ``"densenet"`` (EAS eq. 4-5 connectivity).
    """

    kind = "plain"
    layers: tuple[Layer, ...]
    space: str = "plain"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "layers": [layer.to_dict() for layer in self.layers],
                "space": self.space}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlainCNN:
        return cls(layers=tuple(layer_from_dict(d) for d in data["layers"]),
                   space=str(data.get("space", "plain")))

    # -- structure ------------------------------------------------------------------------------
    @property
    def gap_index(self) -> int:
        """Index of the first fc layer (``len(layers)`` when none): the global average pool sits
        just before it. Layers ``[0, gap_index)`` are convs / pools, the rest fcs."""
        for i, layer in enumerate(self.layers):
            if isinstance(layer, FCLayer):
                return i
        return len(self.layers)

    @property
    def conv_indices(self) -> tuple[int, ...]:
        return tuple(i for i, layer in enumerate(self.layers) if isinstance(layer, ConvLayer))

    @property
    def dense(self) -> bool:
        return self.space == "densenet"

    def features_at(self, position: int) -> int:
        """Channels (before the global pool) or units (after it) entering layer ``position``
        (``position == len(layers)``: the final linear layer). Needs a conv below ``position``
        when ``position <= gap_index`` (else the count is the input's channels, unknown here)."""
        below = self.layers[:position]
        if position > self.gap_index:
            return below[-1].units  # type: ignore[union-attr]
        convs = [layer.filters for layer in below if isinstance(layer, ConvLayer)]
        if not convs:
            raise ArchitectureError(f"no conv below position={position}")
        return sum(convs) if self.dense else convs[-1]

    # -- validation -----------------------------------------------------------------------------
    def validate(self) -> None:
        require(self.space in SPACES,
                f"space={self.space!r} is not accepted; expected one of {list(SPACES)}")
        require(isinstance(self.layers, tuple), "layers must be a tuple of layers")
        seen_fc = False
        for i, layer in enumerate(self.layers):
            if isinstance(layer, ConvLayer):
                require(not seen_fc, f"layers[{i}] is a conv after an fc layer; fc layers come "
                                     "last (after the global average pool)")
                require(_is_int(layer.filters) and layer.filters >= 1,
                        f"layers[{i}].filters={layer.filters!r} must be an integer >= 1")
                require(_is_int(layer.kernel) and layer.kernel >= 1 and layer.kernel % 2 == 1,
                        f"layers[{i}].kernel={layer.kernel!r} must be an odd integer >= 1 "
                        "('same' padding kernel // 2)")
                require(_is_int(layer.stride) and layer.stride >= 1,
                        f"layers[{i}].stride={layer.stride!r} must be an integer >= 1")
                require(not self.dense or layer.stride == 1,
                        f"layers[{i}].stride={layer.stride} is not accepted with "
                        "space='densenet'; expected 1 (only pools downsample)")
            elif isinstance(layer, PoolLayer):
                require(not seen_fc, f"layers[{i}] is a pool after an fc layer; fc layers come "
                                     "last (after the global average pool)")
                require(layer.mode in POOL_MODES, f"layers[{i}].mode={layer.mode!r} is not "
                                                  f"accepted; expected one of {list(POOL_MODES)}")
                for name in ("size", "stride"):
                    value = getattr(layer, name)
                    require(_is_int(value) and value >= 1,
                            f"layers[{i}].{name}={value!r} must be an integer >= 1")
            elif isinstance(layer, FCLayer):
                seen_fc = True
                require(_is_int(layer.units) and layer.units >= 1,
                        f"layers[{i}].units={layer.units!r} must be an integer >= 1")
            else:
                raise ArchitectureError(f"layers[{i}]={layer!r} is not a ConvLayer, PoolLayer "
                                        "or FCLayer")
        require(bool(self.conv_indices), "a plain CNN needs at least one conv layer")


#: EAS Table 1 start net for 32x32 inputs (the final SM(10) comes from ``num_classes``).
EAS_START_NET = PlainCNN(layers=(
    ConvLayer(16, 3), PoolLayer("max", 2, 2),
    ConvLayer(32, 3), PoolLayer("max", 2, 2),
    ConvLayer(64, 3), PoolLayer("max", 2, 2),
    ConvLayer(128, 3), PoolLayer("avg", 4, 4),
    FCLayer(256),
))

#: A small start net that fits the 8x8 ``digits`` images (8 -> 4 after its pool).
DIGITS_START_NET = PlainCNN(layers=(
    ConvLayer(16, 3), PoolLayer("max", 2, 2),
    ConvLayer(32, 3),
    FCLayer(64),
))
