"""Files written so that a kill never leaves a torn one: the one atomic write of the project."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(path: str | os.PathLike, data: bytes | str, *, fsync: bool = False) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` through a temporary file next to it and
    ``os.replace``: readers see the old file or the new one, never part of one. ``fsync``: also
    flush the data to the disk before the rename (for a state a resume must find intact after a
    power loss, not only after a kill)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    raw = data.encode() if isinstance(data, str) else data
    with open(tmp, "wb") as f:
        f.write(raw)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    return path
