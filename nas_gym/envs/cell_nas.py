"""``CellNAS-v0``: the cell search space of B-ENAS / ENAS micro (SPEC §1.1)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..arch.cell import COMBINES, OP_SETS, Block, Cell, CellArchitecture
from ..costs import count_params
from ..errors import bad_value
from ..models.cell_ops import OPS
from .base import TokenEnv
from .grammar import rollout
from .masking import HardBudget

REDUCTION_MODES = ("shared", "separate")
SLOT_TYPES = ("input", "input", "op", "op", "combine")
COMBINE_MODES = (*COMBINES, "search")


class CellGrammar:
    """The token grammar of CellNAS-v0 (see :class:`CellNASEnv`'s action space) as pure functions
    of the tokens emitted so far (the state: a tuple of ints)."""

    def __init__(self, min_blocks: int, max_blocks: int, ops: tuple[str, ...], n_cells: int,
                 combine: str, n_normal: int, channels: int) -> None:
        self.min_blocks, self.max_blocks, self.ops, self.n_cells = min_blocks, max_blocks, ops, \
            n_cells
        self.combine, self.n_normal, self.channels = combine, n_normal, channels
        self.slots = 5 if combine == "search" else 4
        self.n_actions = max(max_blocks - min_blocks + 1, max_blocks + 1, len(ops))
        self.max_tokens = n_cells * (1 + self.slots * max_blocks)
        self._masks: dict[tuple[int, int], np.ndarray] = {}

    def start(self) -> tuple[int, ...]:
        return ()

    def apply(self, state: tuple[int, ...], action: int) -> tuple[int, ...]:
        return (*state, int(action))

    def position(self, t: tuple[int, ...]) -> tuple[int, int, int]:
        """(cell, block, slot) of the next token; block -1 = the cell's num_blocks token."""
        start, cell, k = 0, 0, self.slots
        while start < len(t):
            end = start + 1 + k * (self.min_blocks + t[start])
            if len(t) < end:
                within = len(t) - start - 1
                return cell, within // k, within % k
            start, cell = end, cell + 1
        return cell, -1, 0

    def token_type(self, state: tuple[int, ...]) -> str:
        _, block, slot = self.position(state)
        return "num_blocks" if block < 0 else SLOT_TYPES[slot]

    def valid(self, state: tuple[int, ...]) -> np.ndarray:
        """Read-only mask, built once per (block, slot)."""
        _, block, slot = self.position(state)
        key = (block, slot if block >= 0 else 0)
        mask = self._masks.get(key)
        if mask is None:
            mask = np.zeros(self.n_actions, dtype=bool)
            if block < 0:
                mask[: self.max_blocks - self.min_blocks + 1] = True
            elif slot < 2:
                mask[: block + 2] = True
            elif slot == 4:
                mask[: len(COMBINES)] = True
            else:
                mask[: len(self.ops)] = True
            mask.flags.writeable = False
            self._masks[key] = mask
        return mask

    def cells(self, t: tuple[int, ...]) -> list[Cell]:
        """The complete cells of the tokens ``t``."""
        cells, start, k = [], 0, self.slots
        while start < len(t):
            b = self.min_blocks + t[start]
            end = start + 1 + k * b
            if end > len(t):
                break
            body = t[start + 1:end]
            cells.append(Cell(tuple(
                Block(body[k * i], body[k * i + 1], self.ops[body[k * i + 2]],
                      self.ops[body[k * i + 3]],
                      COMBINES[body[k * i + 4]] if k == 5 else self.combine)
                for i in range(b))))
            start = end
        return cells

    def done(self, state: tuple[int, ...]) -> bool:
        return len(self.cells(state)) == self.n_cells

    def architecture(self, state: tuple[int, ...]) -> CellArchitecture:
        cells = self.cells(state)
        return CellArchitecture(normal=cells[0], reduction=cells[1] if len(cells) > 1 else None,
                                n_normal=self.n_normal, channels=self.channels)


class CellNASEnv(TokenEnv):
    """Design a convolutional cell token by token; the episode reward trains the child.

    ## Description
    B-ENAS (Xu et al. 2019) / ENAS micro search: a cell of ``b`` blocks, each block adding two ops
    applied to two earlier states. The network stacks the cell as stem -> N normal -> reduction ->
    N normal -> reduction -> N normal -> global pool -> linear (B-ENAS Fig. 3).

    ## Action Space
    ``Discrete(n)`` with ``n = max(max_blocks - min_blocks + 1, max_blocks + 1, len(ops))``, masked
    per decision. Token order (SPEC **Decision**): ``b`` first (action ``k`` = ``min_blocks + k``
    blocks), then per block ``ind1, ind2, op1, op2`` (and ``combine`` with ``combine="search"``:
    0 = add, 1 = concat, NASNet's Step 5). Input index 0 = cell k-2, 1 = cell k-1,
    ``j + 2`` = block ``j``; op ``k`` = ``ops[k]``. ``info["token_type"]`` is ``"num_blocks"``,
    ``"input"``, ``"op"`` or ``"combine"``. With ``reduction="separate"`` a reduction cell follows the normal one.

    ## Observation Space
    ``MultiDiscrete([n + 1] * max_tokens)``: emitted tokens + 1, zero padded.

    ## Rewards
    0 on every token but the last; then the trained child's validation accuracy minus the cost
    penalty (default ``"benas"``: ``acc - 0.1 * penalty(params)`` against ``budget``; SPEC §3).

    ## Starting State
    An empty token sequence.

    ## Episode End
    Terminates when the last cell is complete (``1 + 4b`` tokens per cell, ``1 + 5b`` with
    ``combine="search"``). Never truncates.

    ## Arguments
    - ``min_blocks`` (2), ``max_blocks`` (7): range of ``b``.
    - ``ops``: ``"enas"`` (5 ops, default), ``"nasnet"`` (13 ops) or a sequence of op names.
    - ``reduction``: ``"shared"`` (B-ENAS: one cell for both) or ``"separate"`` (ENAS / NASNet).
    - ``combine``: how a block joins its two paths: ``"add"`` (ENAS / B-ENAS), ``"concat"``
      (concatenation, then a 1x1 conv back to the cell width) or ``"search"`` (a token per block,
      NASNet Step 5). Default None: ``"search"`` with ``ops="nasnet"`` (NASNet's space) unless
      ``evaluator="shared"`` (the super-network adds paths, so only ``"add"`` runs there), else
      ``"add"``.
    - ``n_normal`` (1): N during search ("3-layer" model); ``channels`` (8): first-stage width,
      sized for the quick digits default (B-ENAS / ENAS use 20-36 on CIFAR-10).
    - ``hard_budget`` (False): mask actions after which no completion meets the budget's upper
      bounds on params / flops / memory_bytes (SPEC §3.5, ``nas_gym.envs.masking``); completion
      rule: fewest blocks, each input the latest state, the op with the fewest parameters.
    - the common arguments of every env (SPEC §0): ``budget``, ``penalty``, ``penalty_kwargs``,
      ``accuracy_transform``, ``dataset``, ``data_root``, ``download``, ``train_size``,
      ``training``, ``epochs``, ``batch_size``, ``lr``, ``device``, ``evaluator``,
      ``evaluator_kwargs``, ``store``, ``seed``, ``reject_infeasible``, ``measure_latency``,
      ``time_limit``, ``invalid_action``; where children train (SPEC §5): ``evaluator_backend``
      (``"local"`` / ``"process"`` / ``"ray"``), ``worker_threads``, ``ray_address``,
      ``ray_resources``, ``max_retries`` (see :mod:`nas_gym.evaluators.remote`).

    ## Version History
    - v0: initial version.
    - v0 (issue 16): ``combine`` added; with ``ops="nasnet"`` the combine is searched by default
      (one more token per block).
    """

    default_metric = "params"
    default_penalty = "benas"
    supports_hard_budget = True

    def __init__(self, *, min_blocks: int = 2, max_blocks: int = 7, ops: Any = "enas",
                 reduction: str = "shared", n_normal: int = 1, channels: int = 8,
                 combine: str | None = None, **common: Any) -> None:
        shared = common.get("evaluator") == "shared"
        if combine is None:
            combine = "search" if ops == "nasnet" and not shared else "add"
        if combine not in COMBINE_MODES:
            raise bad_value("combine", combine, COMBINE_MODES)
        if shared and combine != "add":
            raise bad_value("combine", combine, "'add' with evaluator='shared' (the "
                                                "super-network adds a block's two paths)")
        self.combine = combine
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
        self.grammar = CellGrammar(min_blocks, max_blocks, ops, self.n_cells, combine, n_normal,
                                   channels)
        self.max_tokens = self.grammar.max_tokens
        self._init_spaces()
        self.hard_budget_rule: HardBudget | None = None
        if self.hard_budget:
            self._op_params = [sum(count_params(OPS.get(op)(channels, s)) for s in (1, 2))
                               for op in ops]  # normal and reduction positions
            self.hard_budget_rule = HardBudget.for_space(self.components.reward.constraints,
                                                self.input_shape, self.num_classes)
            self.hard_budget_rule.check_start(
                [rollout(self.grammar, self.grammar.start(), self._cheap_token)])

    def _describe(self) -> list[str]:
        """``render_mode="ansi"``: each cell's blocks as ``op(input) + op(input)`` (``concat``
        instead of ``+`` for a concatenating block)."""
        lines, start, t, k = [], 0, self._tokens, self.grammar.slots

        def source(k: int) -> str:
            return ("cell k-2", "cell k-1")[k] if k < 2 else f"block {k - 2}"

        while start < len(t):
            b = self.min_blocks + t[start]
            kind = "normal" if not lines else "reduction"
            lines.append(f"{kind} cell, {b} blocks:")
            body = t[start + 1:start + 1 + k * b]
            for i in range(0, len(body), k):
                blk = list(body[i:i + k])
                in1, in2 = (source(blk[n]) if len(blk) > n else "?" for n in (0, 1))
                op1 = self.ops[blk[2]] if len(blk) > 2 else "?"
                op2 = self.ops[blk[3]] if len(blk) > 3 else "?"
                combine = COMBINES[blk[4]] if len(blk) > 4 else self.combine
                join = "concat" if combine == "concat" else "+"
                lines.append(f"  block {i // k}: {op1}({in1}) {join} {op2}({in2})")
            start += 1 + k * b
        return lines or [f"{'normal' if self.n_cells == 1 else 'normal + reduction'} cell: "
                         "no block yet"]

    # -- hard budget (SPEC §3.5) ----------------------------------------------------------------
    def _extra_mask(self, state: tuple[int, ...], valid: np.ndarray) -> np.ndarray:
        if self.hard_budget_rule is None:
            return valid
        return self.hard_budget_rule.mask(valid, lambda a: [
            rollout(self.grammar, self.grammar.apply(state, a), self._cheap_token)])

    def _cheap_token(self, state: tuple[int, ...], valid: np.ndarray) -> int:
        """Completion rule of the hard budget: fewest blocks; each input the latest state (so one
        loose end); the op with the fewest parameters at strides 1 and 2 (ties: first in ``ops``)."""
        allowed = np.flatnonzero(valid)
        kind = self.grammar.token_type(state)
        if kind == "op":
            return int(min(allowed, key=lambda a: (self._op_params[a], a)))
        return int(allowed[-1] if kind == "input" else allowed[0])
