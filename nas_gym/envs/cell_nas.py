"""``CellNAS-v0``: the cell search space of B-ENAS / ENAS micro (SPEC §1.1)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..arch.cell import OP_SETS, Block, Cell, CellArchitecture
from ..errors import bad_value
from .base import TokenEnv

REDUCTION_MODES = ("shared", "separate")
SLOT_TYPES = ("input", "input", "op", "op")


class CellNASEnv(TokenEnv):
    """Design a convolutional cell token by token; the episode reward trains the child.

    ## Description
    B-ENAS (Xu et al. 2019) / ENAS micro search: a cell of ``b`` blocks, each block adding two ops
    applied to two earlier states. The network stacks the cell as stem -> N normal -> reduction ->
    N normal -> reduction -> N normal -> global pool -> linear (B-ENAS Fig. 3).

    ## Action Space
    ``Discrete(n)`` with ``n = max(max_blocks - min_blocks + 1, max_blocks + 1, len(ops))``, masked
    per decision. Token order (SPEC **Decision**): ``b`` first (action ``k`` = ``min_blocks + k``
    blocks), then per block ``ind1, ind2, op1, op2``. Input index 0 = cell k-2, 1 = cell k-1,
    ``j + 2`` = block ``j``; op ``k`` = ``ops[k]``. ``info["token_type"]`` is ``"num_blocks"``,
    ``"input"`` or ``"op"``. With ``reduction="separate"`` a reduction cell follows the normal one.

    ## Observation Space
    ``MultiDiscrete([n + 1] * max_tokens)``: emitted tokens + 1, zero padded.

    ## Rewards
    0 on every token but the last; then the trained child's validation accuracy minus the cost
    penalty (default ``"benas"``: ``acc - 0.1 * penalty(params)`` against ``budget``; SPEC §3).

    ## Starting State
    An empty token sequence.

    ## Episode End
    Terminates when the last cell is complete (``1 + 4b`` tokens per cell). Never truncates.

    ## Arguments
    - ``min_blocks`` (2), ``max_blocks`` (7): range of ``b``.
    - ``ops``: ``"enas"`` (5 ops, default), ``"nasnet"`` (13 ops) or a sequence of op names.
    - ``reduction``: ``"shared"`` (B-ENAS: one cell for both) or ``"separate"`` (ENAS / NASNet).
    - ``n_normal`` (1): N during search ("3-layer" model); ``channels`` (16): first-stage width.
    - the common arguments of every env (SPEC §0): ``budget``, ``penalty``, ``penalty_kwargs``,
      ``accuracy_transform``, ``dataset``, ``data_root``, ``download``, ``train_size``,
      ``training``, ``epochs``, ``batch_size``, ``lr``, ``device``, ``evaluator``,
      ``evaluator_kwargs``, ``store``, ``seed``, ``reject_infeasible``, ``measure_latency``,
      ``time_limit``, ``invalid_action``.

    ## Version History
    - v0: initial version.
    """

    default_metric = "params"
    default_penalty = "benas"

    def __init__(self, *, min_blocks: int = 2, max_blocks: int = 7, ops: Any = "enas",
                 reduction: str = "shared", n_normal: int = 1, channels: int = 16,
                 **common: Any) -> None:
        for name, v in (("min_blocks", min_blocks), ("max_blocks", max_blocks),
                        ("n_normal", n_normal), ("channels", channels)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise bad_value(name, v, "an integer >= 1")
        if max_blocks < min_blocks:
            raise bad_value("max_blocks", max_blocks, f"an integer >= min_blocks={min_blocks}")
        if isinstance(ops, str):
            if ops not in OP_SETS:
                raise bad_value("ops", ops, f"one of {sorted(OP_SETS)} or a sequence of op names")
            ops = OP_SETS[ops]
        ops = tuple(ops)
        known = set(OP_SETS["enas"]) | set(OP_SETS["nasnet"])
        if not ops or len(set(ops)) != len(ops):
            raise bad_value("ops", ops, "a non-empty sequence of distinct op names")
        for op in ops:
            if op not in known:
                raise bad_value("ops", op, sorted(known))
        if reduction not in REDUCTION_MODES:
            raise bad_value("reduction", reduction, REDUCTION_MODES)
        super().__init__(**common)
        self.min_blocks, self.max_blocks, self.ops = min_blocks, max_blocks, ops
        self.reduction, self.n_normal, self.channels = reduction, n_normal, channels
        self.n_cells = 2 if reduction == "separate" else 1
        self.n_actions = max(max_blocks - min_blocks + 1, max_blocks + 1, len(ops))
        self.max_tokens = self.n_cells * (1 + 4 * max_blocks)
        self._init_spaces()

    # -- grammar ---------------------------------------------------------------------------------
    def _position(self) -> tuple[int, int, int]:
        """(cell, block, slot) of the next token; block -1 = the cell's num_blocks token."""
        start, cell, t = 0, 0, self._tokens
        while start < len(t):
            end = start + 1 + 4 * (self.min_blocks + t[start])
            if len(t) < end:
                within = len(t) - start - 1
                return cell, within // 4, within % 4
            start, cell = end, cell + 1
        return cell, -1, 0

    def _token_type(self) -> str:
        _, block, slot = self._position()
        return "num_blocks" if block < 0 else SLOT_TYPES[slot]

    def _valid(self) -> np.ndarray:
        mask = np.zeros(self.n_actions, dtype=bool)
        _, block, slot = self._position()
        if block < 0:
            mask[: self.max_blocks - self.min_blocks + 1] = True
        elif slot < 2:
            mask[: block + 2] = True
        else:
            mask[: len(self.ops)] = True
        return mask

    def _finished(self) -> bool:
        return len(self._cells_so_far()) == self.n_cells

    def _cells_so_far(self) -> list[Cell]:
        cells, start, t = [], 0, self._tokens
        while start < len(t):
            b = self.min_blocks + t[start]
            end = start + 1 + 4 * b
            if end > len(t):
                break
            body = t[start + 1:end]
            cells.append(Cell(tuple(
                Block(body[4 * i], body[4 * i + 1], self.ops[body[4 * i + 2]],
                      self.ops[body[4 * i + 3]]) for i in range(b))))
            start = end
        return cells

    def _architecture(self) -> CellArchitecture:
        cells = self._cells_so_far()
        return CellArchitecture(normal=cells[0], reduction=cells[1] if len(cells) > 1 else None,
                                n_normal=self.n_normal, channels=self.channels)
