"""The evaluation store: every child-network evaluation, recorded in one SQLite file (SPEC §5).

A record is keyed by :func:`evaluation_key`, the sha256 of the canonical JSON of (architecture,
evaluator/data/training fingerprint, training seed), so a repeated architecture is answered from the
store without training (SPEC §5, "001's lookup"), and a search killed mid-way resumes
without retraining anything it finished: every :meth:`EvaluationStore.put` is its own committed
transaction. Several processes (vector env copies, Ray workers, a table builder) share one file:
WAL journal mode lets readers run beside the one writer, and writers wait on a busy timeout.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .arch.base import sha256_of
from .errors import ConfigError, bad_value

__all__ = ["SCHEMA_VERSION", "EvaluationStore", "default_store_path", "evaluation_key", "open_store"]

SCHEMA_VERSION = 1
MEMORY = ":memory:"
# SQLite handles inherited through fork(): kept alive, never closed by the child, whose close could
# disturb the parent's locks and WAL (sqlite.org/howtocorrupt.html, "across a fork()").
_INHERITED: list[sqlite3.Connection] = []

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS evaluations (
    key TEXT PRIMARY KEY, architecture TEXT NOT NULL, fingerprint TEXT, seed INTEGER,
    result TEXT NOT NULL, status TEXT, accuracy REAL, parent TEXT, transform TEXT,
    created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS evaluations_status ON evaluations (status);
CREATE TABLE IF NOT EXISTS weights (key TEXT PRIMARY KEY, state BLOB NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS in_flight (key TEXT PRIMARY KEY, worker TEXT NOT NULL, started REAL NOT NULL);
"""


def evaluation_key(architecture: dict, fingerprint: dict, seed: int) -> str:
    """sha256 hex of the canonical JSON of (architecture, fingerprint, seed): the same in every process."""
    return sha256_of({"architecture": architecture, "fingerprint": fingerprint, "seed": seed})


def _json(value: dict | str) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def default_store_path() -> str:
    """``$NAS_GYM_STORE`` when set, else ``~/.cache/nas_gym/evaluations.sqlite``."""
    env = os.environ.get("NAS_GYM_STORE")
    return env if env else str(Path.home() / ".cache" / "nas_gym" / "evaluations.sqlite")


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class EvaluationStore:
    """One SQLite evaluation store, safe to share between threads and processes.

    :param path: a file (parent folders are created) or ``":memory:"`` (tests; cannot be pickled).
    :param timeout: seconds a reader or writer waits for another process's lock before failing.
    """

    def __init__(self, path: str | os.PathLike = MEMORY, *, timeout: float = 60.0) -> None:
        path = os.fspath(path) if isinstance(path, os.PathLike) else path
        if not isinstance(path, str) or not path:
            raise bad_value("path", path, "a file path or ':memory:'")
        if path != MEMORY:
            path = os.path.abspath(os.path.expanduser(path))  # a worker may run in another cwd
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
            except OSError as exc:
                raise _unwritable(path, exc) from None
            _check_file(path)
        self.path: str = path
        self.timeout = float(timeout)
        self._conn: sqlite3.Connection | None = None
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            self.close()
            text = str(exc).lower()
            if "readonly" in text or "unable to open" in text or "read-only" in text:
                raise _unwritable(path, exc) from None
            raise ConfigError(f"store={path!r} cannot be read as an evaluation store ({exc}); "
                              f"{_UNTOUCHED}") from None

    # -- connection -----------------------------------------------------------------------------
    def _open(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._conn = sqlite3.connect(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        tables = {r[0] for r in self._read("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and "meta" not in tables:  # checked before anything is written to the file
            raise ConfigError(f"store={self.path!r} is an SQLite file of something else (tables "
                              f"{sorted(tables)[:5]}); {_UNTOUCHED}")
        if self.path != MEMORY:
            # Switching to WAL needs a brief exclusive lock; several processes may open at once.
            self._retry(lambda: self._conn.execute("PRAGMA journal_mode=WAL").fetchone())

        def create(conn: sqlite3.Connection) -> None:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                         (str(SCHEMA_VERSION),))

        self._write(create)
        found = self._read("SELECT value FROM meta WHERE name = 'schema_version'")[0][0]
        if int(found) != SCHEMA_VERSION:
            self.close()
            raise ConfigError(
                f"store={self.path!r} has schema_version={found}; this nas_gym reads {SCHEMA_VERSION}")

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ConfigError(f"the evaluation store {self.path!r} is closed")
        if self._pid != os.getpid() and self.path != MEMORY:
            _INHERITED.append(self._conn)
            self._open()
        return self._conn  # type: ignore[return-value]

    def _retry(self, fn: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + self.timeout
        delay = 0.005
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _write(self, body: Callable[[sqlite3.Connection], Any]) -> None:
        """Run ``body`` in one ``BEGIN IMMEDIATE ... COMMIT``, retried while another writer holds the lock."""

        def attempt() -> None:
            conn = self._connection()
            with self._lock:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    body(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise

        self._retry(attempt)

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        def attempt() -> list[tuple]:
            conn = self._connection()
            with self._lock:
                return conn.execute(sql, args).fetchall()

        return self._retry(attempt)

    def close(self) -> None:
        if self._conn is not None:
            with self._lock:
                self._conn.close()
            self._conn = None

    def __enter__(self) -> EvaluationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        if self.path == MEMORY:
            raise bad_value(
                "store", MEMORY, "a file path: an in-memory store cannot travel to another process")
        return {"path": self.path, "timeout": self.timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self.timeout = state["path"], state["timeout"]
        self._conn = None
        self._open()

    def __repr__(self) -> str:
        return f"EvaluationStore({self.path!r})"

    # -- evaluations ----------------------------------------------------------------------------
    def get(self, key: str) -> dict | None:
        """The stored result record of ``key``, or ``None``."""
        rows = self._read("SELECT result FROM evaluations WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else None

    def put(
        self,
        key: str,
        result: dict,
        *,
        architecture: dict | str,
        fingerprint: dict | str | None = None,
        seed: int | None = None,
        parent: str | None = None,
        transform: dict | None = None,
    ) -> None:
        """Insert or replace the record of ``key``, committed before returning; clears its in-flight row.
        ``architecture`` and ``fingerprint`` may come as their JSON text already."""
        if not isinstance(result, dict):
            raise bad_value("result", result, "a dict (the evaluation record)")
        accuracy = result.get("accuracy")
        accuracy = float(accuracy) if isinstance(accuracy, (int, float)) else None
        if accuracy is not None and not math.isfinite(accuracy):
            accuracy = None  # the query column only; the result JSON keeps the value as given
        status = result.get("status")
        row = (
            key, _json(architecture), None if fingerprint is None else _json(fingerprint),
            None if seed is None else int(seed), json.dumps(result),
            None if status is None else str(status), accuracy, parent,
            None if transform is None else json.dumps(transform), time.time(),
        )

        def body(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO evaluations VALUES (?,?,?,?,?,?,?,?,?,?)", row)
            conn.execute("DELETE FROM in_flight WHERE key = ?", (key,))

        self._write(body)

    def __len__(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM evaluations")[0][0])

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        return bool(self._read("SELECT 1 FROM evaluations WHERE key = ?", (key,)))

    def records(self, *, status: str | None = None) -> Iterator[dict]:
        """Every record (optionally only those with ``result["status"] == status``), oldest first."""
        sql = ("SELECT key, architecture, result, parent, transform, seed, created, fingerprint "
               "FROM evaluations")
        args: tuple = ()
        if status is not None:
            sql, args = sql + " WHERE status = ?", (status,)
        # fetched at once so the connection lock is not held while the caller iterates
        for key, arch, result, parent, transform, seed, created, fp in self._read(
                sql + " ORDER BY created, key", args):
            yield {
                "key": key, "architecture": json.loads(arch), "result": json.loads(result),
                "parent": parent, "transform": None if transform is None else json.loads(transform),
                "seed": seed, "created": created, "fingerprint": None if fp is None else json.loads(fp),
            }

    def lineage(self, key: str) -> list[dict]:
        """The chain of ``{"key", "parent", "transform", "architecture"}`` from the root net to ``key``
        (Net2Net weight lineage: each link is the transform that produced the net from its parent).
        Empty when ``key`` is not stored; stops at a parent that is not stored."""
        chain: list[dict] = []
        seen: set[str] = set()
        current: str | None = key
        while current is not None and current not in seen:  # `seen` guards a corrupt cycle
            seen.add(current)
            rows = self._read(
                "SELECT parent, transform, architecture FROM evaluations WHERE key = ?", (current,))
            if not rows:
                break
            parent, transform, arch = rows[0]
            chain.append({
                "key": current, "parent": parent, "architecture": json.loads(arch),
                "transform": None if transform is None else json.loads(transform),
            })
            current = parent
        return chain[::-1]

    # -- weights ----------------------------------------------------------------------------------
    def put_weights(self, key: str, state: bytes) -> None:
        """Store the trained weights of ``key`` (``torch.save`` bytes made by the caller)."""
        if not isinstance(state, (bytes, bytearray, memoryview)):
            raise bad_value("state", type(state).__name__, "bytes (torch.save output)")
        blob = (key, sqlite3.Binary(bytes(state)), time.time())
        self._write(lambda c: c.execute("INSERT OR REPLACE INTO weights VALUES (?,?,?)", blob))

    def get_weights(self, key: str) -> bytes | None:
        rows = self._read("SELECT state FROM weights WHERE key = ?", (key,))
        return bytes(rows[0][0]) if rows else None

    # -- in-flight bookkeeping (resuming a killed search) -----------------------------------------
    def mark_started(self, key: str, *, worker: str) -> None:
        """Record that ``worker`` began evaluating ``key``; :meth:`put` clears the row."""
        row = (key, str(worker), time.time())
        self._write(lambda c: c.execute("INSERT OR REPLACE INTO in_flight VALUES (?,?,?)", row))

    def in_flight(self) -> list[dict]:
        """Evaluations started but not finished: ``{"key", "worker", "started"}``, oldest first."""
        rows = self._read("SELECT key, worker, started FROM in_flight ORDER BY started, key")
        return [{"key": k, "worker": w, "started": s} for k, w, s in rows]


_UNTOUCHED = ("the file was left untouched: restore it from a copy, or move it away (or pass "
              "another store=) to start a new store")


def _unwritable(path: str, exc: BaseException) -> ConfigError:
    return ConfigError(f"store={path!r} cannot be written ({exc}): the store writes the file and its "
                       f"-wal / -shm journals in {os.path.dirname(path)!r}, which must be a "
                       "writable folder; pass store= a path in a writable folder, or ':memory:'")


def _check_file(path: str) -> None:
    """Refuse a file that is not an intact SQLite database before SQLite opens it, so a corrupted
    or truncated store is reported at ``gym.make`` and never written over."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return
    if size == 0:
        return  # an empty file is an empty database
    with open(path, "rb") as f:
        head = f.read(100)
    if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        raise ConfigError(f"store={path!r} is not an SQLite evaluation store (it starts with "
                          f"{head[:16]!r}, {size} bytes); {_UNTOUCHED}")
    page = int.from_bytes(head[16:18], "big")
    page = 65536 if page == 1 else page
    pages = int.from_bytes(head[28:32], "big")
    wal = f"{path}-wal"
    pending = os.path.exists(wal) and os.path.getsize(wal) > 0  # a checkpoint may be mid-way
    if head[92:96] == head[96:100] and not pending and size < page * pages:
        raise ConfigError(f"store={path!r} is truncated: its header counts {pages} pages of {page} "
                          f"bytes ({page * pages} bytes) but the file holds {size}; {_UNTOUCHED}")


def open_store(store: str | os.PathLike | EvaluationStore | None) -> EvaluationStore:
    """Resolve an env's ``store=`` argument: ``None`` -> :func:`default_store_path`, a path -> that
    file (``":memory:"`` allowed), an :class:`EvaluationStore` -> itself."""
    if isinstance(store, EvaluationStore):
        return store
    if store is None:
        return EvaluationStore(default_store_path())
    path = os.fspath(store) if isinstance(store, os.PathLike) else store
    if isinstance(path, str) and path:
        return EvaluationStore(path)
    raise bad_value("store", store, "None, a file path, ':memory:' or an EvaluationStore")
