"""``evaluator="table"``: answer from a benchmark table instead of training (SPEC §5).

A table (``nas_gym.table``) holds every architecture of a small space trained with several seeds;
a lookup is a dict read, so RL algorithms can be compared in seconds with exact reproducibility
(NAS-Bench-101 / 201). The reported ``train_seconds`` (``info["costs"]["train_seconds"]``) is the
recorded training time, so a benchmark can account simulated search time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from .arch.base import Architecture
from .data import DataSplit
from .errors import ConfigError, bad_value
from .evaluators import EVALUATORS, EvalResult, Evaluator
from .table import Table
from .training import TrainConfig

NOISE_MODES = ("seed", "sample", "mean")
_TABLES: dict[str, Table] = {}  # path -> loaded table: many envs of one process share it


def load_table(path: Any = None) -> Table:
    """The table at ``path`` (default: the committed one), loaded once per process."""
    table = Table(path)
    key = str(table.path.resolve())
    return _TABLES.setdefault(key, table)


@EVALUATORS.register("table")
class TableEvaluator(Evaluator):
    """Look up the recorded result of an architecture (exact match on its sha256).

    :param data: the env's dataset split (checked against the table's, with ``strict``).
    :param config: the env's training config (checked against the table's, with ``strict``).
    :param time_limit: ignored (nothing is trained).
    :param path: the table file (default: ``nas_gym.table.DEFAULT_TABLE``).
    :param noise: which recorded seed answers: ``"seed"`` (default) the row of seed
        ``seed % n_seeds`` (fixed per env seed), ``"sample"`` a row drawn per query from a generator
        seeded by the env's seed (realistic noise, still reproducible), ``"mean"`` the mean over
        the seeds (noise-free).
    :param strict: refuse an env whose data or training differs from the table's (its results
        would not be what the env asks for); the table's ``env_kwargs`` give a matching env.
    """

    needs_model = False
    #: ``info["eval_seconds"]`` is the recorded training time, not the lookup's wall time
    simulated_time = True

    def __init__(self, data: DataSplit, config: TrainConfig, *, time_limit: float | None = None,
                 path: Any = None, noise: str = "seed", strict: bool = True) -> None:
        if noise not in NOISE_MODES:
            raise bad_value("noise", noise, NOISE_MODES)
        self.table, self.noise = load_table(path), noise
        recorded = self.table.meta.get("fingerprint", {})
        if strict:
            for name, mine in (("data", data.fingerprint), ("training", config.fingerprint())):
                if recorded.get(name) is not None and recorded[name] != mine:
                    raise ConfigError(
                        f"evaluator='table': the env's {name} {mine} differs from the table's "
                        f"{recorded[name]} ({self.table.path}); make the env with the table's "
                        f"env_kwargs {self.table.env_kwargs} (or pass strict=False)")
        self._rngs: dict[int, np.random.Generator] = {}
        self._sha: dict[Architecture, str] = {}  # sha256 is canonical JSON + hashing: cache it

    def fingerprint(self) -> dict[str, Any]:
        return {"evaluator": "table", "table": self.table.meta.get("fingerprint"),
                "table_seeds": self.table.seeds, "noise": self.noise}

    def evaluate(self, architecture: Architecture, *, seed: int,
                 model: nn.Module | None = None) -> EvalResult:
        sha = self._sha.get(architecture)
        if sha is None:
            sha = self._sha.setdefault(architecture, architecture.sha256)
        rows = self.table.lookup(sha)
        if self.noise == "mean":
            def mean(col: str) -> float:
                vals = [r[col] for r in rows if r[col] is not None]
                return float(np.mean(vals)) if vals else float("nan")
            row = {c: mean(c) for c in ("accuracy", "test_accuracy", "val_loss",
                                        "train_seconds", "epochs")}
            row.update(status=rows[0]["status"], seed=None)
        elif self.noise == "sample":
            rng = self._rngs.setdefault(seed, np.random.default_rng(seed))
            row = rows[int(rng.integers(len(rows)))]
        else:
            row = rows[seed % len(rows)]
        loss = row.get("val_loss")
        return EvalResult(
            accuracy=float(row["accuracy"] or 0.0), status=str(row["status"]),
            train_seconds=float(row["train_seconds"] or 0.0),
            val_loss=float("nan") if loss is None else float(loss),
            epochs=float(row["epochs"] or 0.0),
            extra={"test_accuracy": row["test_accuracy"], "table_seed": row["seed"]})
