"""The decisions of one ``ProgressiveNAS-v0`` transform (see
:class:`~nas_gym.envs.progressive.ProgressiveNASEnv`, "Action Space"): their layout, their exact
and union masks, which of them a transform reads, the multidiscrete mapping of illegal values to
legal ones, and applying a complete transform to a network. The transforms, masks and the
check-table position prior are :mod:`nas_gym.arch.epnas_ops`."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..arch import epnas_ops as E
from ..arch.epnas import LayerNet, ModuleNet, branch_uses, layer_uses
from ..errors import InvalidActionError


def insert_reads(entry_type: str, layer: bool) -> frozenset[str]:
    """The insert fields a new entry of ``entry_type`` reads (the others are ignored)."""
    if layer:  # every layer may skip (src2), add included
        return layer_uses(entry_type) | {"type", "src1", "src2"}
    return branch_uses(entry_type) | {"type", "src1", "propagate"}


class TransformDecisions:
    """The decisions of one transform: ``scale_<field>`` x ``num_parts`` per scaled field, ``op``,
    ``position``, then the new entry's fields (read for ``insert`` only)."""

    def __init__(self, layer: bool, scale_fields: tuple[str, ...], num_parts: int) -> None:
        self.layer, self.scale_fields, self.num_parts = layer, scale_fields, num_parts
        self.max_entries = E.MAX_LAYERS if layer else E.MAX_BRANCHES
        self.fields = E.LAYER_FIELDS if layer else E.BRANCH_FIELDS
        n_scale = num_parts * len(scale_fields)
        #: (token type, size) of each decision, in order
        self.decisions: list[tuple[str, int]] = [
            *((f"scale_{f}", len(E.MOVES)) for f in scale_fields for _ in range(num_parts)),
            ("op", len(E.OPS)), ("position", self.max_entries + E.EXTRA_POSITIONS),
            *((name, len(values)) for name, values in self.fields.items())]
        self.n_scale, self.op_at, self.pos_at = n_scale, n_scale, n_scale + 1

    def __len__(self) -> int:
        return len(self.decisions)

    @property
    def sizes(self) -> list[int]:
        return [s for _, s in self.decisions]

    def kind(self, k: int) -> str:
        return self.decisions[k][0]

    def count(self, choice: list[int]) -> int:
        """Decisions of the transform begun with ``choice``: fields only for insert."""
        if len(choice) > self.op_at and E.OPS[choice[self.op_at]] != "insert":
            return self.pos_at + 1
        return len(self.decisions)

    def mask(self, arch: LayerNet | ModuleNet, k: int, choice: list[int]) -> np.ndarray:
        """Bool mask of decision ``k`` given the earlier decisions ``choice[:k]`` (exact).

        Scaling never changes the number of entries, the types or the sources, so the masks of
        the later decisions, computed on the unscaled net, hold for the scaled one."""
        kind = self.kind(k)
        if k < self.n_scale:
            field, part = divmod(k, self.num_parts)
            return E.scale_mask(arch, self.num_parts, field=self.scale_fields[field])[part]
        if kind == "op":
            return E.op_mask(arch)
        if kind == "position":
            return E.position_mask(arch, E.OPS[choice[self.op_at]])
        position = E.resolve_position(arch, "insert", choice[self.pos_at])
        entry_type = None if kind == "type" else self.fields["type"][choice[self.pos_at + 1]]
        return E.field_masks(arch, position, entry_type)[kind]

    def union_mask(self, arch: LayerNet | ModuleNet, k: int) -> np.ndarray:
        """Multidiscrete mode: values of decision ``k`` legal for *some* earlier decisions."""
        kind = self.kind(k)
        if k < self.pos_at:
            return self.mask(arch, k, [])
        if kind == "position":
            ops = np.flatnonzero(E.op_mask(arch))
            return np.logical_or.reduce([E.position_mask(arch, E.OPS[o]) for o in ops])
        last = min(len(E.entries(arch)), self.max_entries - 1)
        return E.field_masks(arch, last)[kind]

    def is_read(self, k: int, choice: list[int]) -> bool:
        """Whether decision ``k`` is read by the transform begun with ``choice``."""
        if k >= self.count(choice):
            return False
        kind = self.kind(k)
        if kind == "position":
            return E.OPS[choice[self.op_at]] != "keep"
        if k > self.pos_at + 1:
            return kind in insert_reads(self.fields["type"][choice[self.pos_at + 1]], self.layer)
        return True

    def resolve(self, arch: LayerNet | ModuleNet, action: Any, invalid_action: str
                ) -> tuple[list[int], bool]:
        """Multidiscrete mode: the decisions to apply and whether any read one was illegal
        (``invalid_action="raise"``: raise instead)."""
        try:
            values = np.asarray(action, dtype=np.int64).reshape(-1)
        except (TypeError, ValueError):
            raise InvalidActionError(f"action={action!r} is not an integer vector") from None
        if values.size != len(self.decisions):
            raise InvalidActionError(f"action has {values.size} entries; expected "
                                     f"{len(self.decisions)} (the action space's nvec)")
        choice, invalid = [], False
        for k, value in enumerate(values.tolist()):
            if k >= self.count(choice):
                break
            mask = self.mask(arch, k, choice)
            ok = 0 <= value < mask.size and bool(mask[value])
            if not ok and self.is_read(k, choice):
                if invalid_action == "raise":
                    raise InvalidActionError(
                        f"action[{k}]={value} ({self.kind(k)}) is not allowed now; "
                        f"allowed: {np.flatnonzero(mask).tolist()}")
                invalid = True
            choice.append(value if ok else E.nearest_legal(mask, value))
        return choice, invalid

    def apply(self, arch: LayerNet | ModuleNet, choice: list[int]
              ) -> tuple[LayerNet | ModuleNet, dict[str, Any]]:
        """The net after the complete transform ``choice``, and the transform's record."""
        moves: dict[str, list[int]] = {}
        for i, field in enumerate(self.scale_fields):
            moves[field] = [E.MOVES[c] for c in choice[i * self.num_parts:(i + 1) * self.num_parts]]
            arch = E.scale(arch, moves[field], field=field)
        op, raw = E.OPS[choice[self.op_at]], choice[self.pos_at]
        index = E.resolve_position(arch, op, raw)
        # "entry" is always a dict (empty unless inserting): vector envs batch info by key type
        record: dict[str, Any] = {"scale": moves, "op": op, "position": raw, "index": index,
                                  "entry": {}}
        if op == "insert":
            names = list(self.fields)
            entry = E.make_entry(arch, {n: self.fields[n][choice[self.pos_at + 1 + j]]
                                        for j, n in enumerate(names)})
            arch = E.insert(arch, index, entry)
            record["entry"] = dataclasses.asdict(entry)
        elif op == "remove":
            arch = E.remove(arch, index)
        return arch, record
