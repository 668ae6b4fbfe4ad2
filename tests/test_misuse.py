"""Misuse gives a clear error at once, not a traceback from deep inside (issue 19): a corrupted,
truncated or foreign store file (detected at ``gym.make``, never written over), a store folder
that is read-only; an unknown ``render_mode`` warns as Gymnasium does (SB3's ``make_vec_env``)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import gymnasium as gym
import pytest

import nas_gym  # noqa: F401  (registers the env ids)
from nas_gym.errors import ConfigError
from nas_gym.store import EvaluationStore, open_store

CHEAP = {"evaluator": "table", "max_layers": 2, "epochs": 1, "measure_latency": False}


def _make(store) -> gym.Env:
    return gym.make("MacroNAS-v0", store=store, **CHEAP)


def _unchanged_after_make(path: Path, match: str) -> None:
    before = path.read_bytes()
    with pytest.raises(ConfigError, match=match) as err:
        _make(str(path))
    assert str(path) in str(err.value) and "left untouched" in str(err.value)
    assert path.read_bytes() == before
    assert not os.path.exists(f"{path}-wal")


def test_garbage_store_file_is_refused_and_kept(tmp_path) -> None:
    path = tmp_path / "evals.sqlite"
    path.write_bytes(b"these are not the evaluations you are looking for\n" * 40)
    _unchanged_after_make(path, "not an SQLite evaluation store")


def test_truncated_store_file_is_refused_and_kept(tmp_path) -> None:
    path = tmp_path / "evals.sqlite"
    with EvaluationStore(path) as store:  # a real store with enough records for many pages
        for i in range(200):
            store.put(f"k{i}", {"accuracy": 0.5, "status": "ok", "pad": "x" * 500},
                      architecture={"kind": "test", "i": i})
    assert not os.path.exists(f"{path}-wal")  # the last close checkpointed the journal
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a copy cut short
    _unchanged_after_make(path, "truncated")


def test_foreign_sqlite_file_is_refused_and_kept(tmp_path) -> None:
    path = tmp_path / "other.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE songs (title TEXT)")
    conn.commit()
    conn.close()
    _unchanged_after_make(path, "something else")


def _open_as_other_user(paths: list[str]) -> list[str]:
    """Open each store in a forked child that drops root (root writes anywhere; the check must
    run as a user the permissions apply to), reporting "opened" or "refused <message>"."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)  # nobody
            lines = []
            for path in paths:
                try:
                    open_store(path).close()
                    lines.append(f"opened {path}")
                except ConfigError as exc:
                    lines.append(f"refused {exc}")
            os.write(write, "\n".join(lines).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        text = f.read()
    os.waitpid(pid, 0)
    return text.splitlines()


def test_read_only_store_folder_is_a_clear_error(tmp_path) -> None:
    """A new store in a read-only folder, an existing store there (SQLite's journals need the
    folder) and a store whose folder cannot be created are refused at open, the folder named."""
    base = Path(os.environ.get("TMPDIR", "/tmp")) / f"nas_gym_ro_{os.getpid()}"
    folder = base / "ro"
    folder.mkdir(parents=True)
    try:
        with EvaluationStore(folder / "old.sqlite") as store:
            store.put("k", {"accuracy": 0.5, "status": "ok"}, architecture={"kind": "test"})
        os.chmod(base, 0o755)
        os.chmod(folder / "old.sqlite", 0o644)
        os.chmod(folder, 0o555)
        lines = _open_as_other_user([str(folder / "new.sqlite"), str(folder / "old.sqlite"),
                                     str(folder / "sub" / "x.sqlite")])
        assert len(lines) == 3, lines
        assert all(line.startswith("refused") and "writable folder" in line for line in lines), lines
        assert str(folder) in lines[0]
    finally:
        os.chmod(folder, 0o755)
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()
        base.rmdir()


def test_unknown_render_mode_warns_and_sb3_make_vec_env_works() -> None:
    from stable_baselines3.common.env_util import make_vec_env

    with pytest.warns(UserWarning, match="render_mode='rgb_array'"):
        env = gym.make("MacroNAS-v0", store=":memory:", render_mode="rgb_array", **CHEAP)
    env.reset(seed=0)
    assert env.render() is None
    vec = make_vec_env("MacroNAS-v0", n_envs=2, env_kwargs={"store": ":memory:", **CHEAP})
    try:
        vec.reset()
        _, rewards, dones, _ = vec.step([0, 0])
        assert len(rewards) == 2
    finally:
        vec.close()
