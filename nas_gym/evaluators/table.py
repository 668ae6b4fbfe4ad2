"""``evaluator="table"``: answer from a benchmark table instead of training (SPEC §5).

A table (``nas_gym.table``) holds every architecture of a small space trained with several seeds;
a lookup is a dict read, so RL algorithms can be compared in seconds with exact reproducibility
(NAS-Bench-101 / 201). The reported ``train_seconds`` (``info["costs"]["train_seconds"]``) is the
recorded training time, so a benchmark can account simulated search time.

The table also answers the pre-training costs (:meth:`TableEvaluator.known_costs`), so a table
episode builds no module and measures no latency (``nas_gym.evaluation``); a table that records
its input shape and classes (NAS-Bench-Macro) needs no dataset on disk (:func:`table_data`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..arch.base import Architecture, sha256_of
from ..data import DataSplit
from ..errors import ConfigError, bad_value
from ..table import COST_COLUMNS, Table
from ..training import TrainConfig
from .base import EVALUATORS, EvalResult, Evaluator

NOISE_MODES = ("seed", "sample", "mean")
_TABLES: dict[str, Table] = {}  # path -> loaded table: many envs of one process share it


def load_table(path: Any = None) -> Table:
    """The table at ``path`` (a file or a name of ``nas_gym.table.TABLES``; default: the committed
    digits table), loaded once per process."""
    from ..table import table_path

    key = str(table_path(path).resolve())
    if key not in _TABLES:
        _TABLES[key] = Table(path)
    return _TABLES[key]


def table_data(path: Any) -> DataSplit | None:
    """A tensor-free :class:`DataSplit` with the input shape and classes a table records (its
    metadata ``input_shape`` / ``num_classes``), or None when it records none (load the data)."""
    table = load_table(path)
    shape, classes = table.meta.get("input_shape"), table.meta.get("num_classes")
    if shape is None or classes is None:
        return None
    empty = torch.empty(0, *shape)
    label = torch.empty(0, dtype=torch.int64)
    fp = table.meta.get("fingerprint", {}).get("data") or {}
    return DataSplit(name=str(fp.get("name", "table")), train_x=empty, train_y=label,
                     val_x=empty, val_y=label, test_x=empty, test_y=label,
                     input_shape=tuple(shape), num_classes=int(classes), augment="none",
                     fingerprint=fp)


@EVALUATORS.register("table")
class TableEvaluator(Evaluator):
    """Look up the recorded result of an architecture (exact match on its sha256).

    :param data: the env's dataset split (checked against the table's, with ``strict``).
    :param config: the env's training config (checked against the table's, with ``strict``).
    :param time_limit: ignored (nothing is trained).
    :param path: the table file or name (default: ``nas_gym.table.DEFAULT_TABLE``; an env with
        ``evaluator="table"`` picks its preset's table, ``nas_gym.table.default_table``).
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
        allowed = self.table.meta.get("noise_modes", NOISE_MODES)
        if noise not in allowed:  # NAS-Bench-Macro: the 3-run mean is what reports score
            raise bad_value("noise", noise, f"{tuple(allowed)} for table {self.table.path.name} "
                            f"({self.table.meta.get('accuracy', '')})")
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
        # the recorded fingerprint's hash, not the dict: every evaluation hashes this into its
        # store key, and the 15-key training dict dominated a table episode's time
        return {"evaluator": "table", "table": sha256_of(self.table.meta.get("fingerprint")),
                "table_seeds": self.table.seeds, "noise": self.noise}

    def _sha256(self, architecture: Architecture) -> str:
        sha = self._sha.get(architecture)
        if sha is None:
            sha = self._sha.setdefault(architecture, architecture.sha256)
        return sha

    def known_costs(self, architecture: Architecture) -> dict[str, float]:
        """The recorded pre-training costs (``COST_COLUMNS`` the table holds), so the evaluation
        path builds no module and measures no latency for a table episode."""
        row = self.table.lookup(self._sha256(architecture))[0]
        return {c: row[c] for c in COST_COLUMNS if row.get(c) is not None}

    def evaluate(self, architecture: Architecture, *, seed: int,
                 model: nn.Module | None = None) -> EvalResult:
        rows = self.table.lookup(self._sha256(architecture))
        if self.noise == "mean":
            def mean(col: str) -> float:
                vals = [r[col] for r in rows if r[col] is not None]
                return float(np.mean(vals)) if vals else float("nan")
            row = {c: mean(c) for c in ("accuracy", "test_accuracy", "val_loss",
                                        "train_seconds", "epochs")}
            row.update(status=rows[0]["status"], seed=None)
        elif self.noise == "sample":
            rng = self._rngs.get(seed)
            if rng is None:  # (not setdefault: a generator costs more than the lookup it serves)
                rng = self._rngs[seed] = np.random.default_rng(seed)
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
