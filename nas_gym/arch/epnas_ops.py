"""EPNAS transforms on architecture values (seed 004, §3.2, Table 1): scale, insert, remove, keep.

Pure functions (architecture value in, new value out; no torch) plus the masks an env exposes and
seeded random start networks (EPNAS starts every branch from a random network). They work on both
patterns: the *entries* of a net are the layers of a :class:`LayerNet` or the branches of a
:class:`ModuleNet`; ``L`` is their number and ``MAX`` is ``MAX_LAYERS`` / ``MAX_BRANCHES``.

One EPNAS transform = a **scale action** (the entries are split into ``F`` contiguous parts; each
part moves the channels, or the filter width, of its conv entries one level down / stays / one
level up its table, clamped at the table ends) followed by an **insert action**: an op in
``OPS = ("keep", "insert", "remove")``, a position, and for ``insert`` the new entry's fields.

**Position (the paper's check table, L + 5 values).** The position head has ``MAX + 5`` values.
For ``insert`` the legal values are ``0 .. L + 4``: ``p <= L`` inserts before entry ``p``
(``p = L`` appends), and the four extra values ``L + k`` (k = 1..4) fold onto the interior
positions ``round(k * L / 5)``, the prior that makes inner insertions likelier than appending
(EPNAS §3.2: "encourage inserting inside the network"). For ``remove`` the legal values are
``0 .. L - 1`` (the entry removed), and only while ``L > 1``. For ``keep`` only ``0`` is legal.

**Re-indexing.** Sources are node indices (0 = stem / module input, ``j`` = entry ``j - 1``).
``insert`` at ``p`` shifts every later source ``> p`` up by one; in a layer net, a later layer whose
``src1`` read node ``p`` now reads the new layer (the layer is inserted *into* the path, Fig. 3),
while skips (``src2``) keep their origin; branches keep their sources. ``remove`` at ``p`` shifts
later sources ``> p + 1`` down by one and remaps sources that read the removed entry (node
``p + 1``) to the removed entry's own ``src1``: the entry is bypassed.

**Action model for an env** (token mode: one Discrete sub-step each; the masks of a sub-step
depend only on the net and on earlier sub-steps):

1. scale: ``F`` decisions of size 3 (index of ``MOVES``), masks ``scale_mask(arch, F)``;
2. op: size 3 (``OPS``), mask ``op_mask(arch)`` (depends on ``L``);
3. position: size ``MAX + 5``, mask ``position_mask(arch, op)``; ``resolve_position`` gives the
   entry index (scaling never changes ``L``, so masks before and after scaling agree);
4. for ``insert`` only, the new entry's fields in ``fields_of(arch)`` order, type first: layers
   type 5, filter_width 4, pool_width 2, channels 6, activation 5, src1 ``MAX_LAYERS``, src2
   ``MAX_LAYERS + 1`` (index 0 = -1); branches type 7, filter_width 4, pool_width 2, channels 5,
   src1 / src2 ``MAX_BRANCHES + 1``, propagate 2. Masks ``field_masks(arch, position, type)``
   depend on the resolved position (sources) and the chosen type (ignored fields, ``add``).

A MultiDiscrete env, whose masks cannot depend on sub-decisions of the same step, can map each
illegal value to the nearest legal one with :func:`nearest_legal` (a deterministic remap).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ArchitectureError, TransformError, bad_value
from .epnas import (
    ACTIVATIONS,
    BRANCH_CHANNELS,
    BRANCH_TYPES,
    FILTER_WIDTHS,
    LAYER_CHANNELS,
    LAYER_TYPES,
    MAX_BRANCHES,
    MAX_LAYERS,
    POOL_WIDTHS,
    Branch,
    EpnasLayer,
    LayerNet,
    ModuleNet,
    branch_uses,
    layer_uses,
)

OPS: tuple[str, ...] = ("keep", "insert", "remove")
MOVES: tuple[int, ...] = (-1, 0, 1)
EXTRA_POSITIONS = 5
"""The check table's ``L + 5``: the position head has ``MAX + EXTRA_POSITIONS`` values."""

LAYER_FIELDS: dict[str, tuple[Any, ...]] = {
    "type": LAYER_TYPES, "filter_width": FILTER_WIDTHS, "pool_width": POOL_WIDTHS,
    "channels": LAYER_CHANNELS, "activation": ACTIVATIONS,
    "src1": tuple(range(MAX_LAYERS)), "src2": (-1, *range(MAX_LAYERS)),
}
"""Value of each insert sub-decision of the layer pattern, by action index (Table 2)."""
BRANCH_FIELDS: dict[str, tuple[Any, ...]] = {
    "type": BRANCH_TYPES, "filter_width": FILTER_WIDTHS, "pool_width": POOL_WIDTHS,
    "channels": BRANCH_CHANNELS, "src1": tuple(range(MAX_BRANCHES + 1)),
    "src2": tuple(range(MAX_BRANCHES + 1)), "propagate": (0, 1),
}
"""Value of each insert sub-decision of the module pattern, by action index (Table 3)."""
SCALE_FIELDS: tuple[str, ...] = ("channels", "filter_width")

Net = LayerNet | ModuleNet
Entry = EpnasLayer | Branch


def _check_net(arch: Any) -> None:
    if not isinstance(arch, (LayerNet, ModuleNet)):
        raise bad_value("arch", type(arch).__name__, "a LayerNet or a ModuleNet")


def entries(arch: Net) -> tuple[Entry, ...]:
    """The layers of a :class:`LayerNet` or the branches of a :class:`ModuleNet`."""
    _check_net(arch)
    return arch.layers if isinstance(arch, LayerNet) else arch.branches


def max_entries(arch: Net) -> int:
    return MAX_LAYERS if isinstance(arch, LayerNet) else MAX_BRANCHES


def fields_of(arch: Net) -> dict[str, tuple[Any, ...]]:
    """``LAYER_FIELDS`` or ``BRANCH_FIELDS``, by the pattern of ``arch``."""
    return LAYER_FIELDS if isinstance(arch, LayerNet) else BRANCH_FIELDS


def num_positions(arch: Net) -> int:
    """Size of the position head: ``MAX + 5``."""
    return max_entries(arch) + EXTRA_POSITIONS


def _with_entries(arch: Net, new: Sequence[Entry]) -> Net:
    name = "layers" if isinstance(arch, LayerNet) else "branches"
    out = dataclasses.replace(arch, **{name: tuple(new)})
    try:
        out.validate()
    except ArchitectureError as exc:
        raise TransformError(f"the transform gives an invalid network: {exc}") from None
    return out


# -- scale action ---------------------------------------------------------------------------------
def split_parts(arch: Net, num_parts: int) -> list[list[int]]:
    """Entry indices split into ``num_parts`` contiguous parts, sizes differing by at most one
    (the first parts are the larger ones; with ``num_parts > L`` the last parts are empty)."""
    if not isinstance(num_parts, int) or num_parts < 1:
        raise bad_value("num_parts", num_parts, "an integer >= 1")
    n = len(entries(arch))
    base, extra = divmod(n, num_parts)
    parts, start = [], 0
    for f in range(num_parts):
        size = base + (1 if f < extra else 0)
        parts.append(list(range(start, start + size)))
        start += size
    return parts


def _scale_table(arch: Net, entry: Entry, field: str) -> tuple[int, ...] | None:
    """The table ``field`` of ``entry`` moves along, or None when the entry has no such field."""
    if field not in SCALE_FIELDS:
        raise bad_value("field", field, SCALE_FIELDS)
    used = layer_uses(entry.type) if isinstance(entry, EpnasLayer) else branch_uses(entry.type)
    if field not in used:
        return None
    if field == "filter_width":
        return FILTER_WIDTHS
    return LAYER_CHANNELS if isinstance(arch, LayerNet) else BRANCH_CHANNELS


def scale_mask(arch: Net, num_parts: int, *, field: str = "channels") -> np.ndarray:
    """Bool ``(num_parts, 3)``: move index 0/1/2 = -1/0/+1 per part. Staying is always legal;
    a move is legal when it changes at least one entry of the part (so parts with no conv entry,
    or with all of them at the table end, can only stay)."""
    mask = np.zeros((num_parts, len(MOVES)), dtype=bool)
    mask[:, 1] = True
    items = entries(arch)
    for f, part in enumerate(split_parts(arch, num_parts)):
        for i in part:
            table = _scale_table(arch, items[i], field)
            if table is None:
                continue
            level = table.index(getattr(items[i], field))
            mask[f, 0] |= level > 0
            mask[f, 2] |= level < len(table) - 1
    return mask


def scale(arch: Net, part_moves: Sequence[int], *, field: str = "channels") -> Net:
    """EPNAS scale action: part ``f`` moves the ``field`` of its conv entries by
    ``part_moves[f]`` in {-1, 0, +1} levels of the field's table, clamped at the table ends.
    ``len(part_moves)`` is the number of parts F (see :func:`split_parts`)."""
    moves = list(part_moves)
    if not moves or any(m not in MOVES for m in moves):
        raise bad_value("part_moves", part_moves, "a non-empty sequence of -1, 0 and +1")
    items = list(entries(arch))
    for move, part in zip(moves, split_parts(arch, len(moves)), strict=True):
        for i in part:
            table = _scale_table(arch, items[i], field)
            if table is None or move == 0:
                continue
            level = table.index(getattr(items[i], field))
            level = min(max(level + move, 0), len(table) - 1)
            items[i] = dataclasses.replace(items[i], **{field: table[level]})
    return _with_entries(arch, items)


# -- insert action --------------------------------------------------------------------------------
def op_mask(arch: Net) -> np.ndarray:
    """Bool over ``OPS``: keep always; insert while ``L < MAX``; remove while ``L > 1``."""
    n = len(entries(arch))
    return np.array([True, n < max_entries(arch), n > 1], dtype=bool)


def position_mask(arch: Net, op: str) -> np.ndarray:
    """Bool over the ``MAX + 5`` position values legal for ``op`` (see the module docstring)."""
    if op not in OPS:
        raise bad_value("op", op, OPS)
    n = len(entries(arch))
    mask = np.zeros(num_positions(arch), dtype=bool)
    if op == "keep":
        mask[0] = True
    elif op == "insert" and n < max_entries(arch):
        mask[: n + EXTRA_POSITIONS] = True
    elif op == "remove" and n > 1:
        mask[:n] = True
    return mask


def resolve_position(arch: Net, op: str, value: int) -> int:
    """The entry index a position value means for ``op`` (the check table for ``insert``)."""
    mask = position_mask(arch, op)
    if not (isinstance(value, (int, np.integer)) and 0 <= value < mask.size and mask[value]):
        legal = np.flatnonzero(mask).tolist()
        raise TransformError(f"position={value!r} is not accepted for op={op!r} on a net of "
                             f"{len(entries(arch))} entries; expected one of {legal}")
    n = len(entries(arch))
    if op == "insert" and value > n:
        k = value - n
        return (2 * k * n + 5) // 10  # round(k * n / 5), halves up
    return int(value)


def field_masks(arch: Net, position: int, entry_type: str | None = None) -> dict[str, np.ndarray]:
    """Bool masks over ``fields_of(arch)[name]`` for a new entry at (resolved) ``position``.

    Sources may only name nodes before the new entry (``[0, position]``). Given ``entry_type``
    (the type is decided first), fields the type ignores allow only their canonical value, an
    ``add`` layer needs a skip (``src2 != -1``) and one-op branches fix ``src2 = 0``.
    """
    table = fields_of(arch)
    if not 0 <= position <= min(len(entries(arch)), max_entries(arch) - 1):
        raise bad_value("position", position, f"an entry index in [0, {len(entries(arch))}]")
    masks = {name: np.ones(len(values), dtype=bool) for name, values in table.items()}
    for name in ("src1", "src2"):
        masks[name] = np.array([0 <= v <= position for v in table[name]], dtype=bool)
    if isinstance(arch, LayerNet):
        masks["src2"][0] = entry_type != "add"  # value -1: no skip
    if entry_type is None:
        return masks
    if entry_type not in table["type"]:
        raise bad_value("entry_type", entry_type, table["type"])
    masks["type"] = np.array([t == entry_type for t in table["type"]], dtype=bool)
    # a default-built entry of this type holds the canonical value of every field it ignores
    probe = EpnasLayer(entry_type) if isinstance(arch, LayerNet) else Branch(entry_type)
    ignored = {"filter_width", "pool_width", "channels", "activation"} - _uses(probe)
    if isinstance(probe, Branch) and "src2" not in _uses(probe):
        ignored.add("src2")
    for name in ignored & set(masks):
        masks[name] = np.array([v == getattr(probe, name) for v in table[name]], dtype=bool)
    return masks


def _uses(entry: Entry) -> frozenset[str]:
    return layer_uses(entry.type) if isinstance(entry, EpnasLayer) else branch_uses(entry.type)


def make_entry(arch: Net, choice: Mapping[str, Any]) -> Entry:
    """The new entry from field values (missing fields take their defaults)."""
    cls = EpnasLayer if isinstance(arch, LayerNet) else Branch
    unknown = sorted(set(choice) - set(fields_of(arch)))
    if unknown:
        raise bad_value("fields", unknown, sorted(fields_of(arch)))
    # numpy scalars (from an action array) become Python values: the JSON form needs them
    return cls(**{k: v.item() if isinstance(v, np.generic) else v for k, v in choice.items()})


def _shift(entry: Entry, names: Sequence[str], fn) -> Entry:
    return dataclasses.replace(entry, **{n: fn(n, getattr(entry, n)) for n in names})


def insert(arch: Net, position: int, entry: Entry | Mapping[str, Any]) -> Net:
    """Insert ``entry`` before entry ``position`` (``L`` appends); its sources are node indices
    in ``[0, position]``. Later sources are re-indexed as in the module docstring."""
    items = list(entries(arch))
    if len(items) >= max_entries(arch):
        raise TransformError(f"insert on a net of {len(items)} entries is not accepted; the "
                             f"maximum is {max_entries(arch)}")
    if not isinstance(position, (int, np.integer)) or not 0 <= position <= len(items):
        raise bad_value("position", position, f"an entry index in [0, {len(items)}]")
    position = int(position)
    new = make_entry(arch, entry) if isinstance(entry, Mapping) else entry
    rewire = isinstance(arch, LayerNet)

    def fix(name: str, s: int) -> int:
        if s > position:
            return s + 1
        if s == position and rewire and name == "src1":
            return s + 1
        return s

    later = [_shift(e, ("src1", "src2"), fix) for e in items[position:]]
    return _with_entries(arch, [*items[:position], new, *later])


def remove(arch: Net, position: int) -> Net:
    """Remove entry ``position``; sources reading it are remapped to its ``src1`` (bypass)."""
    items = list(entries(arch))
    if len(items) <= 1:
        raise TransformError("remove is not accepted on a net of one entry")
    if not isinstance(position, (int, np.integer)) or not 0 <= position < len(items):
        raise bad_value("position", position, f"an entry index in [0, {len(items) - 1}]")
    position = int(position)
    gone = items[position]

    def fix(name: str, s: int) -> int:
        if s == position + 1:
            return gone.src1
        return s - 1 if s > position + 1 else s

    later = [_shift(e, ("src1", "src2"), fix) for e in items[position + 1:]]
    return _with_entries(arch, [*items[:position], *later])


def keep(arch: Net) -> Net:
    """The insert action "keep": the network is unchanged."""
    _check_net(arch)
    return arch


def apply_transform(arch: Net, part_moves: Sequence[int], op: str, position: int = 0,
                    entry: Entry | Mapping[str, Any] | None = None, *,
                    field: str = "channels") -> Net:
    """One EPNAS transform: :func:`scale`, then ``op`` at the *raw* position value (resolved
    with :func:`resolve_position`; ``entry``'s sources refer to the resolved position)."""
    scaled = scale(arch, part_moves, field=field)
    if op not in OPS:
        raise bad_value("op", op, OPS)
    index = resolve_position(scaled, op, position)
    if op == "insert":
        if entry is None:
            raise bad_value("entry", None, "the new entry (op='insert')")
        return insert(scaled, index, entry)
    if op == "remove":
        return remove(scaled, index)
    return keep(scaled)


# -- random start networks ------------------------------------------------------------------------
def sample_masked(rng: np.random.Generator, mask: np.ndarray) -> int:
    """A uniform draw among the ``True`` indices of ``mask``."""
    legal = np.flatnonzero(mask)
    if legal.size == 0:
        raise TransformError("the mask allows no value")
    return int(rng.choice(legal))


def nearest_legal(mask: np.ndarray, index: int) -> int:
    """``index`` when ``mask`` allows it, else the nearest allowed index (ties: the lower one)."""
    legal = np.flatnonzero(mask)
    if legal.size == 0:
        raise TransformError("the mask allows no value")
    return int(legal[np.argmin(np.abs(legal - int(index)))])


def random_entry(arch: Net, rng: np.random.Generator, position: int) -> Entry:
    """A random new entry at ``position``, uniform over the masked fields, except that a layer
    reads its predecessor (``src1 = position``, the insertion place) and skips with chance 1/2."""
    table = fields_of(arch)
    kind = table["type"][sample_masked(rng, field_masks(arch, position)["type"])]
    masks = field_masks(arch, position, kind)
    choice = {name: table[name][sample_masked(rng, masks[name])] for name in table}
    if isinstance(arch, LayerNet):
        choice["src1"] = position
        if kind != "add" and rng.random() < 0.5:
            choice["src2"] = -1
    return make_entry(arch, choice)


def _grow(arch: Net, rng: np.random.Generator, n: int) -> Net:
    for i in range(1, n):
        arch = insert(arch, i, random_entry(arch, rng, i))
    return arch


def random_layer_net(rng: np.random.Generator, n_layers: int = 4, *,
                     stem_channels: int = 32) -> LayerNet:
    """A seeded random layer net of ``n_layers`` layers (a chain with random skips)."""
    if not isinstance(n_layers, int) or not 1 <= n_layers <= MAX_LAYERS:
        raise bad_value("n_layers", n_layers, f"an integer in [1, {MAX_LAYERS}]")
    seed = LayerNet(layers=(EpnasLayer("conv2d"),), stem_channels=stem_channels)
    first = LayerNet(layers=(random_entry(seed, rng, 0),), stem_channels=stem_channels)
    return _grow(_with_entries(first, first.layers), rng, n_layers)  # type: ignore[return-value]


def random_module_net(rng: np.random.Generator, n_branches: int = 3, *, num_modules: int = 3,
                      stem_channels: int = 16) -> ModuleNet:
    """A seeded random module of ``n_branches`` branches, stacked ``num_modules`` times."""
    if not isinstance(n_branches, int) or not 1 <= n_branches <= MAX_BRANCHES:
        raise bad_value("n_branches", n_branches, f"an integer in [1, {MAX_BRANCHES}]")
    seed = ModuleNet(branches=(Branch("conv-none"),), num_modules=num_modules,
                     stem_channels=stem_channels)
    first = dataclasses.replace(seed, branches=(random_entry(seed, rng, 0),))
    return _grow(_with_entries(first, first.branches), rng, n_branches)  # type: ignore[return-value]
