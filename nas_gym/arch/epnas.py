"""EPNAS search spaces (seed 004, §3.3, Tables 2 and 3): layer-by-layer nets and stacked modules.

**Layer-by-layer pattern** (Table 2): a :class:`LayerNet` is a stem followed by ``layers``. Sources
are *node* indices: node 0 is the stem's output (the network input after a 3x3 conv), node ``j > 0``
is the output of layer ``j - 1``. Layer ``i`` reads ``src1`` in ``[0, i]`` and, when ``src2 != -1``,
adds a skip from node ``src2`` in ``[0, i]`` (``-1`` = no skip). The network output is node ``L``
(the last layer), followed by global average pooling and a linear classifier. An ``add`` layer is
``node[src1] + node[src2]`` and so needs ``src2 != -1``.

**Module pattern** (Table 3): a :class:`ModuleNet` is a stem, then ``num_modules`` copies of one
module (each with its own weights), a stride-2 reduction before every copy but the first, then
global average pooling and a linear classifier. Inside a module node 0 is the module's
(preprocessed) input and node ``j > 0`` the output of branch ``j - 1``; branch ``i`` reads ``src1``
(and ``src2`` for two-op types) in ``[0, i]``; ``propagate`` says whether the branch is part of the
module's output (concatenated). How shapes are made to fit is in :mod:`nas_gym.models.epnas`.

Fields a type does not use are ignored and stored as their canonical value (the first entry of
their table; ``src2 = 0`` for one-op branches), so one network has one value and one sha256.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .base import Architecture, register_architecture, require

# -- layer-by-layer pattern (EPNAS Table 2) ---------------------------------------------------------
LAYER_TYPES: tuple[str, ...] = ("conv2d", "dep_sep_conv2d", "max_pool", "avg_pool", "add")
CONV_LAYER_TYPES: tuple[str, ...] = ("conv2d", "dep_sep_conv2d")
POOL_LAYER_TYPES: tuple[str, ...] = ("max_pool", "avg_pool")
FILTER_WIDTHS: tuple[int, ...] = (1, 3, 5, 7)
POOL_WIDTHS: tuple[int, ...] = (2, 3)
LAYER_CHANNELS: tuple[int, ...] = (16, 32, 64, 96, 128, 256)
ACTIVATIONS: tuple[str, ...] = ("relu", "crelu", "elu", "selu", "swish")
MAX_LAYERS = 20
"""Longest layer net; src1 / src2 take values in ``range(MAX_LAYERS)`` (Table 2)."""
LAYER_STEM_CHANNELS = 32

# -- module pattern (EPNAS Table 3) -----------------------------------------------------------------
BRANCH_TYPES: tuple[str, ...] = (
    "conv-conv", "conv-maxpool", "conv-avgpool", "conv-none", "maxpool-none", "avgpool-none",
    "1x7-7x1-none",
)
BRANCH_CHANNELS: tuple[int, ...] = (8, 12, 16, 24, 32)
MAX_BRANCHES = 8
"""Most branches in one module; src1 / src2 take values in ``range(MAX_BRANCHES + 1)`` (Table 3)."""
MAX_MODULES = 6
MODULE_STEM_CHANNELS = 16


def branch_ops(branch_type: str) -> tuple[str, str]:
    """The two operations of a branch type: ``"conv-maxpool" -> ("conv", "maxpool")``.

    ``"1x7-7x1-none"`` is one factorised 7x7 conv, ``("1x7-7x1", "none")``.
    """
    if branch_type == "1x7-7x1-none":
        return ("1x7-7x1", "none")
    first, second = branch_type.split("-")
    return (first, second)


def layer_uses(layer_type: str) -> frozenset[str]:
    """The fields (besides type and sources) that a layer type reads."""
    if layer_type in CONV_LAYER_TYPES:
        return frozenset({"filter_width", "channels", "activation"})
    if layer_type in POOL_LAYER_TYPES:
        return frozenset({"pool_width"})
    return frozenset()


def branch_uses(branch_type: str) -> frozenset[str]:
    """The fields (besides type, src1 and propagate) that a branch type reads."""
    ops = branch_ops(branch_type) if branch_type in BRANCH_TYPES else ()
    used: set[str] = set()
    if "conv" in ops:
        used |= {"filter_width", "channels"}
    if "1x7-7x1" in ops:
        used.add("channels")
    if "maxpool" in ops or "avgpool" in ops:
        used.add("pool_width")
    if len(ops) == 2 and ops[1] != "none":
        used.add("src2")
    return frozenset(used)


def _canonical(entry: Any, used: frozenset[str], defaults: dict[str, Any]) -> None:
    for name, value in defaults.items():
        if name not in used:
            object.__setattr__(entry, name, value)


@dataclass(frozen=True)
class EpnasLayer:
    """One layer of a :class:`LayerNet` (EPNAS Table 2)."""

    type: str
    filter_width: int = 3
    pool_width: int = 2
    channels: int = 32
    activation: str = "relu"
    src1: int = 0
    src2: int = -1

    def __post_init__(self) -> None:
        if self.type in LAYER_TYPES:
            _canonical(self, layer_uses(self.type), {
                "filter_width": FILTER_WIDTHS[0], "pool_width": POOL_WIDTHS[0],
                "channels": LAYER_CHANNELS[0], "activation": ACTIVATIONS[0]})


@dataclass(frozen=True)
class Branch:
    """One branch of a :class:`ModuleNet` module (EPNAS Table 3): two ops, concatenated."""

    type: str
    filter_width: int = 3
    pool_width: int = 2
    channels: int = 16
    src1: int = 0
    src2: int = 0
    propagate: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.propagate, bool):
            object.__setattr__(self, "propagate", int(self.propagate))
        if self.type in BRANCH_TYPES:
            _canonical(self, branch_uses(self.type), {
                "filter_width": FILTER_WIDTHS[0], "pool_width": POOL_WIDTHS[0],
                "channels": BRANCH_CHANNELS[0], "src2": 0})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_choice(where: str, name: str, value: Any, table: tuple[Any, ...]) -> None:
    require(value in table and type(value) is type(table[0]),
            f"{where}.{name}={value!r} is not accepted; expected one of {list(table)}")


def _check_source(where: str, name: str, value: Any, index: int, allow_none: bool) -> None:
    ok = _is_int(value) and (0 <= value <= index or (allow_none and value == -1))
    accepted = ("-1 (no skip) or " if allow_none else "") + f"a node index in [0, {index}]"
    require(ok, f"{where}.{name}={value!r} is not accepted; expected {accepted} "
                "(sources point to the stem / module input (0) or an earlier entry)")


@register_architecture
@dataclass(frozen=True)
class LayerNet(Architecture):
    """EPNAS layer-by-layer network (Table 2); see the module docstring for the node numbering."""

    kind = "epnas_layer"
    layers: tuple[EpnasLayer, ...]
    stem_channels: int = LAYER_STEM_CHANNELS

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerNet:
        return cls(layers=tuple(EpnasLayer(**dict(d)) for d in data["layers"]),
                   stem_channels=data.get("stem_channels", LAYER_STEM_CHANNELS))

    @property
    def entries(self) -> tuple[EpnasLayer, ...]:
        return self.layers

    def validate(self) -> None:
        require(isinstance(self.layers, tuple) and 1 <= len(self.layers) <= MAX_LAYERS,
                f"layers has {len(self.layers)} entries; expected a tuple of 1 to {MAX_LAYERS}")
        require(_is_int(self.stem_channels) and 1 <= self.stem_channels <= 1024,
                f"stem_channels={self.stem_channels!r} is not accepted; expected an int in [1, 1024]")
        for i, layer in enumerate(self.layers):
            where = f"layers[{i}]"
            require(isinstance(layer, EpnasLayer), f"{where} is a {type(layer).__name__}, "
                                                   "expected EpnasLayer")
            _check_choice(where, "type", layer.type, LAYER_TYPES)
            _check_choice(where, "filter_width", layer.filter_width, FILTER_WIDTHS)
            _check_choice(where, "pool_width", layer.pool_width, POOL_WIDTHS)
            _check_choice(where, "channels", layer.channels, LAYER_CHANNELS)
            _check_choice(where, "activation", layer.activation, ACTIVATIONS)
            _check_source(where, "src1", layer.src1, i, allow_none=False)
            _check_source(where, "src2", layer.src2, i, allow_none=True)
            require(layer.type != "add" or layer.src2 != -1,
                    f"{where}.src2=-1 is not accepted for type 'add'; expected a node index "
                    f"in [0, {i}] (an add needs two inputs)")


@register_architecture
@dataclass(frozen=True)
class ModuleNet(Architecture):
    """EPNAS module network (Table 3): one module of ``branches`` stacked ``num_modules`` times."""

    kind = "epnas_module"
    branches: tuple[Branch, ...]
    num_modules: int = 3
    stem_channels: int = MODULE_STEM_CHANNELS

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModuleNet:
        return cls(branches=tuple(Branch(**dict(d)) for d in data["branches"]),
                   num_modules=data.get("num_modules", 3),
                   stem_channels=data.get("stem_channels", MODULE_STEM_CHANNELS))

    @property
    def entries(self) -> tuple[Branch, ...]:
        return self.branches

    def validate(self) -> None:
        require(isinstance(self.branches, tuple) and 1 <= len(self.branches) <= MAX_BRANCHES,
                f"branches has {len(self.branches)} entries; expected a tuple of 1 to "
                f"{MAX_BRANCHES}")
        require(_is_int(self.num_modules) and 1 <= self.num_modules <= MAX_MODULES,
                f"num_modules={self.num_modules!r} is not accepted; expected an int in "
                f"[1, {MAX_MODULES}]")
        require(_is_int(self.stem_channels) and 1 <= self.stem_channels <= 1024,
                f"stem_channels={self.stem_channels!r} is not accepted; expected an int in [1, 1024]")
        for i, branch in enumerate(self.branches):
            where = f"branches[{i}]"
            require(isinstance(branch, Branch), f"{where} is a {type(branch).__name__}, "
                                                "expected Branch")
            _check_choice(where, "type", branch.type, BRANCH_TYPES)
            _check_choice(where, "filter_width", branch.filter_width, FILTER_WIDTHS)
            _check_choice(where, "pool_width", branch.pool_width, POOL_WIDTHS)
            _check_choice(where, "channels", branch.channels, BRANCH_CHANNELS)
            _check_choice(where, "propagate", branch.propagate, (0, 1))
            _check_source(where, "src1", branch.src1, i, allow_none=False)
            _check_source(where, "src2", branch.src2, i, allow_none=False)

