"""``nas_gym.files.atomic_write``: the one atomic write (checkpoints, agent states, search logs)."""

from __future__ import annotations

import os

import pytest

from nas_gym.files import atomic_write


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path) -> None:
    path = tmp_path / "state.json"
    path.write_text("old")
    atomic_write(path, "néw\n")
    assert path.read_bytes() == "néw\n".encode()
    atomic_write(path, b"\x00bytes", fsync=True)
    assert path.read_bytes() == b"\x00bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "best.json"
    path.write_text("old")

    def no_rename(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, "new")
    assert path.read_text() == "old"
