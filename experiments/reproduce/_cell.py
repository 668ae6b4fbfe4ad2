"""What the cell-space reproductions (``benas``, ``enas``) share: the tiny-run overrides of a
:class:`~nas_gym.experiments.benas_config.BenasConfig`, a CPU / wall clock, and counting a cell's ops."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from nas_gym.arch.cell import CellArchitecture

#: Tiny-run overrides of the B-ENAS / ENAS search fields (smoke tests: a few seconds).
TINY_SEARCH = {"epochs": 1, "child_steps": 2, "controller_steps": 2, "select_samples": 2,
               "final_epochs": 1}
#: Tiny-run overrides of the env keywords (fewer images; from-scratch children train 1 epoch).
TINY_ENV = {"train_size": 96, "epochs": 1}
#: Ops with weights (a cell's "non-trivial" ops; identity and pooling have none).
WEIGHTED_PREFIXES = ("sep_conv", "conv", "dil_conv")


def shrink(section: dict[str, Any], tiny: bool) -> dict[str, Any]:
    """A deep copy of a search section, with the tiny overrides when ``tiny``."""
    out = copy.deepcopy(section)
    if tiny:
        out.update({k: v for k, v in TINY_SEARCH.items() if k in out})
        out["env_kwargs"] = {**out.get("env_kwargs", {}), **TINY_ENV}
    return out


@contextmanager
def clock() -> Iterator[dict[str, float]]:
    """Measures the block: ``{"cpu_s": process CPU seconds (every thread), "wall_s": ...}``."""
    times: dict[str, float] = {}
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        yield times
    finally:
        times["cpu_s"] = time.process_time() - cpu
        times["wall_s"] = time.perf_counter() - wall


def cell_complexity(architecture: dict[str, Any]) -> dict[str, int]:
    """Blocks and weighted (non-trivial) ops of a cell architecture's cells."""
    arch = CellArchitecture.from_dict(architecture)
    cells = [c for c in (arch.normal, arch.reduction) if c is not None]
    ops = [op for c in cells for b in c.blocks for op in (b.op1, b.op2)]
    return {"blocks": sum(len(c.blocks) for c in cells),
            "weighted_ops": sum(op.startswith(WEIGHTED_PREFIXES) for op in ops)}
