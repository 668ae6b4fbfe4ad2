"""The evaluation store (SPEC §5): stable keys, durable puts, several processes on one file."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from nas_gym.errors import ConfigError
from nas_gym.store import EvaluationStore, evaluation_key, open_store

ARCH = {"kind": "cell", "ops": ["conv3x3", "maxpool"], "edges": [[0, 1], [1, 2]]}
FP = {"dataset": "digits", "epochs": 2, "lr": 0.05, "evaluator": "train"}


def _result(accuracy: float, status: str = "ok") -> dict:
    return {"accuracy": accuracy, "status": status, "params": 1234, "train_seconds": 0.5}


def _env() -> dict:
    # children import nas_gym the way this process did (an editable install or a PYTHONPATH)
    env = dict(os.environ)
    root = str(Path(sys.modules["nas_gym"].__file__).parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


# -- keys ---------------------------------------------------------------------------------------
def test_key_is_stable_across_processes_and_dict_order():
    key = evaluation_key(ARCH, FP, 3)
    assert len(key) == 64 and int(key, 16) >= 0
    assert evaluation_key(dict(reversed(list(ARCH.items()))), dict(reversed(list(FP.items()))), 3) == key
    code = (
        "from nas_gym.store import evaluation_key;"
        f"print(evaluation_key({ARCH!r}, {FP!r}, 3))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=_env()).stdout.strip()
    assert out == key


@pytest.mark.parametrize("change", ["architecture", "fingerprint", "seed"])
def test_key_changes_with_every_input(change):
    arch, fp, seed = dict(ARCH), dict(FP), 3
    if change == "architecture":
        arch["ops"] = ["conv3x3", "avgpool"]
    elif change == "fingerprint":
        fp["epochs"] = 3
    else:
        seed = 4
    assert evaluation_key(arch, fp, seed) != evaluation_key(ARCH, FP, 3)


# -- one process ----------------------------------------------------------------------------------
def test_put_get_upsert_and_queries(tmp_path):
    path = tmp_path / "a" / "b" / "store.sqlite"  # parent folders are created
    key = evaluation_key(ARCH, FP, 0)
    with EvaluationStore(path) as store:
        assert store.path == str(path) and store.get(key) is None and key not in store
        store.put(key, _result(0.5), architecture=ARCH, fingerprint=FP, seed=0)
        assert store.get(key) == _result(0.5) and key in store and len(store) == 1
        store.put(key, _result(0.75), architecture=ARCH, fingerprint=FP, seed=0)  # upsert
        assert store.get(key) == _result(0.75) and len(store) == 1
        other = evaluation_key(ARCH, FP, 1)
        store.put(other, _result(float("nan"), "diverged"), architecture=ARCH, seed=1)
        assert 1 not in store
    with EvaluationStore(path) as store:  # reopened: everything is on disk
        assert len(store) == 2
        (rec,) = store.records(status="ok")
        assert rec["key"] == key and rec["architecture"] == ARCH and rec["seed"] == 0
        assert rec["result"] == _result(0.75) and rec["parent"] is None and rec["created"] > 0
        assert [r["key"] for r in store.records(status="diverged")] == [other]
        assert {r["key"] for r in store.records()} == {key, other}
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone() == ("1",)
        assert conn.execute("SELECT accuracy FROM evaluations WHERE key=?", (key,)).fetchone() == (0.75,)


def test_get_of_stored_keys_returns_each_record(tmp_path):
    """(How fast: ``python -m nas_gym.experiments.benchmarks.store_speed``.)"""
    with EvaluationStore(tmp_path / "store.sqlite") as store:
        keys = [evaluation_key(ARCH, FP, s) for s in range(500)]
        for s, key in enumerate(keys):
            store.put(key, _result(s / 500), architecture=ARCH, fingerprint=FP, seed=s)
        for s in range(0, 500, 10):
            assert store.get(keys[s])["accuracy"] == s / 500


def test_lineage_weights_and_in_flight():
    store = EvaluationStore()  # ":memory:"
    a, b, c = (evaluation_key({**ARCH, "width": w}, FP, 0) for w in (1, 2, 3))
    store.put(a, _result(0.1), architecture={"width": 1})
    store.put(b, _result(0.2), architecture={"width": 2}, parent=a, transform={"op": "wider", "to": 2})
    store.put(c, _result(0.3), architecture={"width": 3}, parent=b, transform={"op": "deeper"})
    chain = store.lineage(c)
    assert [link["key"] for link in chain] == [a, b, c]
    assert chain[0]["parent"] is None and chain[0]["transform"] is None
    assert chain[1] == {"key": b, "parent": a, "transform": {"op": "wider", "to": 2},
                        "architecture": {"width": 2}}
    assert store.lineage("missing") == []

    blob = bytes(range(256)) * 100
    assert store.get_weights(a) is None
    store.put_weights(a, blob)
    assert store.get_weights(a) == blob
    with pytest.raises(ConfigError, match="state"):
        store.put_weights(a, "not bytes")  # type: ignore[arg-type]

    d = evaluation_key(ARCH, FP, 9)
    store.mark_started(d, worker="env-0")
    assert [(r["key"], r["worker"]) for r in store.in_flight()] == [(d, "env-0")]
    store.put(d, _result(0.4), architecture=ARCH)
    assert store.in_flight() == []
    store.close()
    store.close()  # idempotent
    with pytest.raises(ConfigError, match="closed"):
        store.get(a)


def test_open_store_and_memory_pickling(tmp_path, monkeypatch):
    store = EvaluationStore()
    assert open_store(store) is store
    assert open_store(":memory:").path == ":memory:"
    assert open_store(tmp_path / "x.sqlite").path == str(tmp_path / "x.sqlite")
    monkeypatch.setenv("NAS_GYM_STORE", str(tmp_path / "env.sqlite"))
    assert open_store(None).path == str(tmp_path / "env.sqlite")
    for bad in (3, "", b"x.sqlite", ["x"]):
        with pytest.raises(ConfigError, match="store="):
            open_store(bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="in-memory"):
        pickle.dumps(store)


# -- several processes ------------------------------------------------------------------------------
def _writer(store: str | EvaluationStore, worker: int, count: int, barrier) -> None:
    # half the workers open the file by path, half receive the parent's store pickled by spawn
    store = EvaluationStore(store) if isinstance(store, str) else store
    assert store.get("parent") == _result(0.5)  # what the parent put before spawning is visible
    barrier.wait(60)  # all four write at once, not one after another as their imports finish
    for i in range(count):
        key = evaluation_key(ARCH, FP, worker * 1000 + i)
        store.mark_started(key, worker=f"w{worker}")
        store.put(key, _result(i / count), architecture=ARCH, fingerprint=FP, seed=worker * 1000 + i)
    store.close()


def test_four_spawned_processes_write_one_file_concurrently(tmp_path):
    store = EvaluationStore(tmp_path / "shared.sqlite")
    store.put("parent", _result(0.5), architecture=ARCH)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [
        ctx.Process(target=_writer, args=(store.path if w % 2 else store, w, 50, barrier))
        for w in range(4)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    assert [proc.exitcode for proc in procs] == [0, 0, 0, 0]
    assert len(store) == 201 and store.in_flight() == []
    expected = {evaluation_key(ARCH, FP, w * 1000 + i) for w in range(4) for i in range(50)}
    assert {r["key"] for r in store.records()} == expected | {"parent"}
    store.close()


def test_file_store_pickles_by_path(tmp_path):
    store = EvaluationStore(tmp_path / "store.sqlite")
    store.put("k", _result(0.5), architecture=ARCH)
    copy = pickle.loads(pickle.dumps(store))
    assert copy is not store and copy.path == store.path and copy.get("k") == _result(0.5)
    copy.put("k2", _result(0.25), architecture=ARCH)  # its own connection, same file
    assert store.get("k2") == _result(0.25)


KILLED_WRITER = """
import sys, time
from nas_gym.store import EvaluationStore
store = EvaluationStore(sys.argv[1])
for i in range(100000):
    key = f"key-{i}"
    store.mark_started(key, worker="killed")
    time.sleep(0.002)  # "training"
    store.put(key, {"accuracy": 0.5, "status": "ok", "blob": "x" * 2000}, architecture={"i": i})
    print(key, flush=True)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_killed_writer_loses_no_finished_record(tmp_path):
    path = str(tmp_path / "killed.sqlite")
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, path], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    done = []
    while len(done) < 40:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        done.append(line.strip())
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done += out.split()
    with EvaluationStore(path) as store:
        assert all(key in store for key in done)
        assert len(store) >= len(done)
        unfinished = store.in_flight()  # what a resumed search redoes: started, never put
        assert len(unfinished) <= 1 and all(r["key"] not in store for r in unfinished)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
