"""The cell search space of B-ENAS / ENAS micro (SPEC §1.1).

A cell has ``b`` blocks; block ``i`` reads two inputs among: the output of cell k-2 (index 0),
of cell k-1 (index 1) and of blocks ``0..i-1`` (indices ``2..i+1``), applies one op to each and adds
them (``combine="add"``, ENAS / B-ENAS) or concatenates them (``"concat"``; NASNet's Step 5 "select
a method to combine the outputs ... to create a new hidden state"; **Decision:** a 1x1 conv brings
the concatenation back to the cell width, so every state keeps one width). The cell's output concatenates its loose ends (blocks no other block reads) and projects them
back to the cell width with a 1x1 conv. B-ENAS uses one cell for both normal and reduction
positions (``reduction=None``); ENAS / NASNet sample a second, reduction cell.

The network (B-ENAS Fig. 3): stem conv -> N normal -> reduction -> N normal -> reduction ->
N normal -> global average pool -> linear; channels double at each reduction.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .base import Architecture, register_architecture, require

#: B-ENAS / ENAS micro default op set (5 ops).
ENAS_OPS: tuple[str, ...] = (
    "identity",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "avg_pool_3x3",
    "max_pool_3x3",
)

#: The 13 NASNet ops (lecture 003 / Zoph et al. 2018).
NASNET_OPS: tuple[str, ...] = (
    "identity",
    "conv_1x3_3x1",
    "conv_1x7_7x1",
    "dil_conv_3x3",
    "avg_pool_3x3",
    "max_pool_3x3",
    "max_pool_5x5",
    "max_pool_7x7",
    "conv_1x1",
    "conv_3x3",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "sep_conv_7x7",
)

#: Every op name a cell may use (the builders in ``nas_gym.models.cell_ops`` implement each).
ALL_OPS: frozenset[str] = frozenset(ENAS_OPS) | frozenset(NASNET_OPS)

#: How a block combines its two paths (NASNet Step 5).
COMBINES: tuple[str, ...] = ("add", "concat")

#: Named op sets accepted by ``ops=`` of CellNAS-v0.
OP_SETS: dict[str, tuple[str, ...]] = {"enas": ENAS_OPS, "nasnet": NASNET_OPS}


@dataclass(frozen=True)
class Block:
    """``op1(input in1) + op2(input in2)`` (or their concatenation, ``combine="concat"``);
    inputs: 0 = cell k-2, 1 = cell k-1, j+2 = block j."""

    in1: int
    in2: int
    op1: str
    op2: str
    combine: str = "add"


@dataclass(frozen=True)
class Cell:
    blocks: tuple[Block, ...]

    def loose_ends(self) -> tuple[int, ...]:
        """Indices of the blocks that no later block reads (always includes the last block)."""
        read = {i - 2 for b in self.blocks for i in (b.in1, b.in2) if i >= 2}
        return tuple(j for j in range(len(self.blocks)) if j not in read)

    def to_dict(self) -> dict[str, Any]:
        """Blocks as ``[in1, in2, op1, op2]``, plus the combine when it is not ``"add"`` (so the
        canonical form, and the store keys, of add-only cells are as before the choice existed)."""
        return {"blocks": [[b.in1, b.in2, b.op1, b.op2]
                           + ([b.combine] if b.combine != "add" else []) for b in self.blocks]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cell:
        return cls(tuple(Block(int(b[0]), int(b[1]), str(b[2]), str(b[3]),
                               str(b[4]) if len(b) > 4 else "add") for b in data["blocks"]))


@register_architecture
@dataclass(frozen=True)
class CellArchitecture(Architecture):
    """A cell network: the normal cell, an optional separate reduction cell, and the macro shape.

    :param normal: the cell used at normal positions (and at reduction positions when
        ``reduction`` is None, as in B-ENAS).
    :param reduction: ENAS / NASNet's separate reduction cell, or None.
    :param n_normal: N, cells per stage (search: 1, "3-layer"; final model: 3, "11-layer").
    :param channels: width of the first stage (doubles at each reduction).
    """

    kind = "cell"
    normal: Cell
    reduction: Cell | None = None
    n_normal: int = 1
    channels: int = 8

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "normal": self.normal.to_dict(),
            "reduction": None if self.reduction is None else self.reduction.to_dict(),
            "n_normal": self.n_normal,
            "channels": self.channels,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellArchitecture:
        red = data.get("reduction")
        return cls(
            normal=Cell.from_dict(data["normal"]),
            reduction=None if red is None else Cell.from_dict(red),
            n_normal=int(data.get("n_normal", 1)),
            channels=int(data.get("channels", 8)),
        )

    def validate(self) -> None:
        require(self.n_normal >= 1, f"n_normal={self.n_normal} must be >= 1")
        require(self.channels >= 1, f"channels={self.channels} must be >= 1")
        for name, cell in (("normal", self.normal), ("reduction", self.reduction)):
            if cell is None:
                continue
            require(len(cell.blocks) >= 1, f"{name} cell has no blocks")
            for i, b in enumerate(cell.blocks):
                for slot, ind in (("in1", b.in1), ("in2", b.in2)):
                    require(
                        0 <= ind <= i + 1,
                        f"{name} block {i}: {slot}={ind} must be in [0, {i + 1}] "
                        "(0 = cell k-2, 1 = cell k-1, j+2 = block j < i)",
                    )
                require(b.combine in COMBINES, f"{name} block {i}: combine={b.combine!r} is not "
                                               f"accepted; expected one of {list(COMBINES)}")
                for slot, op in (("op1", b.op1), ("op2", b.op2)):
                    require(op in ALL_OPS, f"{name} block {i}: {slot}={op!r} is not accepted; "
                                           f"expected one of {sorted(ALL_OPS)}")

    def with_size(self, n_normal: int, channels: int | None = None) -> CellArchitecture:
        """The same cells at another macro size (B-ENAS retrains the N=3 model)."""
        return replace(self, n_normal=n_normal, channels=channels or self.channels)
