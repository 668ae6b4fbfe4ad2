"""Benchmark tables: every architecture of a small search space, trained with several seeds
(what NAS-Bench-101 / 201 gave the field; SPEC §5 ``evaluator="table"``).

A table is one SQLite file with three tables:

- ``meta(key, value)``: JSON values - ``format`` (:data:`FORMAT`), ``env_id`` and ``env_kwargs``
  (the env configuration whose space the table enumerates, data and training arguments included:
  ``gym.make(env_id, **env_kwargs)`` emits exactly the table's architectures), ``seeds``,
  ``fingerprint`` (the training evaluator's), ``num_architectures``, ``build_seconds``;
- ``architectures(sha256, architecture)``: the canonical JSON of each architecture, keyed by its
  stable sha256 (:attr:`nas_gym.arch.Architecture.sha256`);
- ``results(sha256, seed, status, accuracy, test_accuracy, val_loss, train_seconds, epochs,
  params, flops, memory_bytes, compute_intensity, latency_ms)``: one row per (architecture, seed);
  ``accuracy`` is validation accuracy, ``test_accuracy`` is for reports only (never a reward).

:func:`enumerate_architectures` walks an env's own token grammar (its masks), so every architecture
the env can emit is in the table by construction.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .arch.base import Architecture
from .envs.grammar import enumerate_states
from .errors import ConfigError

FORMAT = "nas_gym-table-1"
#: The committed table of the default digits space (MacroNAS-v0, ``max_layers=2``), package data
#: (``nas_gym/tables/``, found through importlib.resources: editable and wheel installs alike).
DEFAULT_TABLE = Path(str(importlib.resources.files("nas_gym").joinpath("tables",
                                                                      "macro_digits.sqlite")))


@dataclass(frozen=True)
class TableEntry:
    """A table found by name: its file, the env id it answers and the ``preset`` of that env
    whose ``evaluator="table"`` picks it when no ``path`` is given."""

    file: str
    env_id: str
    preset: str | None = None
    package_data: bool = False  # ``file`` is package data of nas_gym (``nas_gym/tables/``)

    @property
    def path(self) -> Path:
        if self.package_data:  # importlib.resources: works for editable and wheel installs
            return Path(str(importlib.resources.files("nas_gym").joinpath("tables", self.file)))
        return Path(self.file)


#: Tables by name (``nas-gym bench --envs NAME``, ``Table(NAME)``, ``evaluator_kwargs={"path": NAME}``).
TABLES: dict[str, TableEntry] = {
    "nas-bench-macro": TableEntry("nas-bench-macro_cifar10.json", "MacroNAS-v0",
                                  "nas_bench_macro", package_data=True),
    "macro-digits": TableEntry("macro_digits.sqlite", "MacroNAS-v0", package_data=True),
}


def table_path(table: str | os.PathLike | None) -> Path:
    """The file of a table given by name (:data:`TABLES`), path, or None (the digits table)."""
    if table is None:
        return DEFAULT_TABLE
    if isinstance(table, str) and table in TABLES:
        return TABLES[table].path
    return Path(table)


def default_table(env_id: str, preset: str | None) -> str | None:
    """The name of the table answering ``gym.make(env_id, preset=preset, evaluator="table")``."""
    return next((name for name, e in TABLES.items()
                 if e.env_id == env_id and e.preset == preset), None)
COST_COLUMNS = ("params", "flops", "memory_bytes", "compute_intensity", "latency_ms")
RESULT_COLUMNS = ("status", "accuracy", "test_accuracy", "val_loss", "train_seconds", "epochs",
                  *COST_COLUMNS)
_SCHEMA = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE architectures (sha256 TEXT PRIMARY KEY, architecture TEXT NOT NULL);
CREATE TABLE results (sha256 TEXT NOT NULL, seed INTEGER NOT NULL,
    {", ".join(f"{c} {'TEXT' if c == 'status' else 'REAL'}" for c in RESULT_COLUMNS)},
    PRIMARY KEY (sha256, seed));
"""


class ArchitectureNotInTable(ConfigError, KeyError):
    """An architecture outside the table's search space (or not built yet)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def enumerate_architectures(env: Any, *, limit: int = 100_000) -> list[Architecture]:
    """Every distinct architecture a token env (``nas_gym.envs.base.TokenEnv``) can emit.

    Depth-first over the env's public grammar (:mod:`nas_gym.envs.grammar`) and its masks
    (``env.allowed_actions(state)``: the grammar's mask and the hard budget's) - what ``step``
    runs, minus the evaluation - so the enumeration cannot drift from the env. Token sequences
    mapping to the same architecture are merged (first seen wins). Raises :class:`ConfigError`
    past ``limit`` architectures. The env is not stepped.
    """
    env = getattr(env, "unwrapped", env)
    grammar = env.grammar
    found: dict[str, Architecture] = {}

    def visit(state: Any) -> None:
        arch = grammar.architecture(state)
        found.setdefault(arch.sha256, arch)
        if len(found) > limit:
            raise ConfigError(f"the space has more than limit={limit} architectures; "
                              "shrink it (fewer layers / choices) to build a table")

    enumerate_states(grammar, env.allowed_actions, visit)
    return list(found.values())


def write_table(path: str | os.PathLike, meta: Mapping[str, Any],
                architectures: Iterable[Architecture],
                rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write a table file atomically (temporary file + ``os.replace``). ``rows`` carry ``sha256``,
    ``seed`` and the :data:`RESULT_COLUMNS` (missing ones are NULL)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp)
    try:
        conn.executescript(_SCHEMA)
        conn.executemany("INSERT INTO meta VALUES (?, ?)",
                         [(k, json.dumps(v)) for k, v in {"format": FORMAT, **meta}.items()])
        conn.executemany("INSERT INTO architectures VALUES (?, ?)",
                         [(a.sha256, json.dumps(a.to_dict(), sort_keys=True))
                          for a in architectures])
        conn.executemany(
            f"INSERT INTO results VALUES ({', '.join('?' * (2 + len(RESULT_COLUMNS)))})",
            [(r["sha256"], int(r["seed"]), *(r.get(c) for c in RESULT_COLUMNS)) for r in rows])
        conn.commit()
    finally:
        conn.close()
    os.replace(tmp, path)
    return path


class Table:
    """A benchmark table loaded into memory (a few thousand rows: lookups are dict reads).

    :param path: the table file (default: :data:`DEFAULT_TABLE`), or a name of :data:`TABLES`.
        A ``.json`` file is read as NAS-Bench-Macro's published format (:func:`nas_bench_macro`).
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = table_path(path)
        if not self.path.is_file():
            raise ConfigError(f"table path={str(path)!r} is not a file nor a table name "
                              f"{sorted(TABLES)}; build one with `nas-gym table build`")
        if self.path.suffix == ".json":
            self.meta, archs, rows = nas_bench_macro(self.path)
            self.architectures = {a.sha256: a.to_dict() for a in archs}
            self.rows = {}
            for row in rows:
                self.rows.setdefault(row["sha256"], []).append(row)
            return
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            self.meta = {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM meta")}
            if self.meta.get("format") != FORMAT:
                raise ConfigError(f"table {str(self.path)!r} has format="
                                  f"{self.meta.get('format')!r}; expected {FORMAT!r}")
            self.architectures = {sha: json.loads(a) for sha, a in
                                  conn.execute("SELECT sha256, architecture FROM architectures")}
            self.rows: dict[str, list[dict[str, Any]]] = {}
            cols = ("sha256", "seed", *RESULT_COLUMNS)
            for values in conn.execute(f"SELECT {', '.join(cols)} FROM results ORDER BY sha256, seed"):
                row = dict(zip(cols, values, strict=True))
                self.rows.setdefault(row["sha256"], []).append(row)
        finally:
            conn.close()

    @property
    def env_id(self) -> str:
        return str(self.meta["env_id"])

    @property
    def env_kwargs(self) -> dict[str, Any]:
        """The ``gym.make`` keyword arguments whose space (and data / training) the table holds."""
        return dict(self.meta["env_kwargs"])

    @property
    def seeds(self) -> list[int]:
        return [int(s) for s in self.meta["seeds"]]

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, sha256: object) -> bool:
        return sha256 in self.rows

    def lookup(self, sha256: str) -> list[dict[str, Any]]:
        """The rows (one per seed) of an architecture, by its sha256."""
        rows = self.rows.get(sha256)
        if rows is None:
            raise ArchitectureNotInTable(
                f"architecture sha256={sha256} is not in table {str(self.path)!r} "
                f"({len(self)} architectures of {self.env_id} with {self.env_kwargs}); "
                "use the env configuration of the table's metadata (Table.env_kwargs)")
        return rows

    def mean(self, sha256: str, column: str = "accuracy") -> float:
        """Mean of ``column`` over the architecture's seeds (NaN-free rows only)."""
        vals = [r[column] for r in self.lookup(sha256) if r[column] is not None]
        return float(np.mean(vals)) if vals else float("nan")

    def summary(self) -> list[dict[str, Any]]:
        """One dict per architecture: sha256, mean validation / test accuracy, mean train seconds
        and the static costs (for regret references and reports)."""
        out = []
        for sha, rows in self.rows.items():
            d = {"sha256": sha, **{c: rows[0][c] for c in COST_COLUMNS}}
            for c in ("accuracy", "test_accuracy", "train_seconds"):
                vals = [r[c] for r in rows if r[c] is not None]
                d[c] = float(np.mean(vals)) if vals else float("nan")
            out.append(d)
        return out


#: NAS-Bench-Macro's network input and classes (CIFAR-10), recorded in the table's metadata so
#: ``evaluator="table"`` needs no CIFAR-10 on disk.
NAS_BENCH_MACRO_INPUT = (3, 32, 32)


def nas_bench_macro(path: str | os.PathLike) -> tuple[dict[str, Any], list[Architecture],
                                                       list[dict[str, Any]]]:
    """Read NAS-Bench-Macro's JSON (Su et al. CVPR 2021) as a table: (meta, architectures, rows).

    **The 3 published runs.** NAS-Bench-Macro publishes only CIFAR-10 *test* accuracies of three
    independent trainings per architecture. Run ``i`` becomes the row of seed ``i`` and its
    ``accuracy`` (what a reward sees: the evaluator draws one run per evaluation, ``noise="seed"``
    or ``"sample"``); ``test_accuracy`` (what reports and regret use) is the mean of the 3 runs.
    A search therefore optimises one noisy run and is scored on the 3-run mean, never on the
    number it saw; ``noise="mean"`` (which would reward the scored number) is refused.
    Costs: ``params`` as published, ``flops`` = 2 x the published multiply-accumulates
    (``FlopCounterMode``'s convention, as every other nas_gym cost), ``memory_bytes`` in closed
    form (``nas_gym.models.bench_macro.bench_macro_costs``). No training times are published.
    The conversion is lossless: ``tests/test_bench_macro.py`` recovers every published number.
    """
    from .arch.bench_macro import BenchMacroArchitecture
    from .models.bench_macro import bench_macro_costs
    from .training import get_preset

    data = json.loads(Path(path).read_text())
    archs, rows = [], []
    for key, rec in data.items():
        arch = BenchMacroArchitecture.from_key(key)
        sha = arch.sha256
        archs.append(arch)
        memory = bench_macro_costs(arch, NAS_BENCH_MACRO_INPUT, 10)["memory_bytes"]
        for seed, acc in enumerate(rec["test_acc"]):
            rows.append({"sha256": sha, "seed": seed, "status": "ok", "accuracy": acc / 100.0,
                         "test_accuracy": rec["mean_acc"] / 100.0, "val_loss": None,
                         "train_seconds": None, "epochs": 50, "params": rec["params"],
                         "flops": 2 * rec["flops"], "memory_bytes": memory,
                         "compute_intensity": None, "latency_ms": None, "key": key})
    meta = {"format": FORMAT, "env_id": "MacroNAS-v0",
            "env_kwargs": {"preset": "nas_bench_macro", "dataset": "cifar10",
                           "training": "nas_bench_macro"},
            "seeds": [0, 1, 2], "num_architectures": len(archs),
            "fingerprint": {"data": {"name": "cifar10", "source": "NAS-Bench-Macro"},
                            "training": get_preset("nas_bench_macro").fingerprint()},
            "input_shape": list(NAS_BENCH_MACRO_INPUT), "num_classes": 10,
            "noise_modes": ["seed", "sample"],
            "accuracy": "one CIFAR-10 test run per seed (rewards); test_accuracy = the 3-run "
                        "mean (reports, regret)",
            "source": "NAS-Bench-Macro (Su et al., CVPR 2021), Apache-2.0"}
    return meta, archs, rows
