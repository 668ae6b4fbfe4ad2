"""The agent state file (:meth:`nas_gym.agents.base.Agent.save` / :meth:`nas_gym.agents.base.Agent.load`): the
state dict as tensors and plain values, written atomically and read with ``weights_only=True``,
so a resumed search continues exactly where it was and loading a file never runs code from it."""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
import torch

from nas_gym.errors import ConfigError
from nas_gym.files import atomic_write

#: The format tag of an agent state file (tensors + plain values, ``weights_only``-readable).
STATE_FORMAT = "nas_gym.agent_state.v2"
_CONVERT = ("written by an older nas_gym, whose agent states were pickles that can run code when "
            "loaded. If you trust the file, convert it once: python -m nas_gym.agents.convert_state {path}")


def plain_state(value: Any, where: str = "state") -> Any:
    """``value`` as the types ``torch.load(weights_only=True)`` reads: dicts (str / int keys),
    lists, tuples, str, int, float, bool, None, bytes and tensors; numpy arrays become lists and
    numpy scalars Python numbers. Anything else (an object that would need code to rebuild) is
    refused with its place in the state."""
    if value is None or isinstance(value, (bool, int, float, str, bytes, torch.Tensor)):
        return value.detach().cpu() if isinstance(value, torch.Tensor) else value
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        for k in value:
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where} has a key {k!r} of type {type(k).__name__}: agent "
                                "states take str or int keys")
        return {k: plain_state(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        out = [plain_state(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if isinstance(value, tuple) else out
    raise TypeError(f"{where} is a {type(value).__module__}.{type(value).__qualname__}: agent "
                    "states hold tensors and plain values only (no pickled objects)")


def read_state(path: str | os.PathLike) -> dict[str, Any]:
    """The state dict of an agent state file, read without running any code from it."""
    import pickle

    path = os.fspath(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"agent state {path!r} holds pickled objects, which are not loaded "
                          f"({first[:200]}); it was {_CONVERT.format(path=path)}") from None
    except (RuntimeError, EOFError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ConfigError(f"agent state {path!r} is not a readable torch file ({exc}); "
                          "delete it to start the agent afresh") from None
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        raise ConfigError(f"agent state {path!r} has no {STATE_FORMAT!r} format tag; it was "
                          f"{_CONVERT.format(path=path)}")
    return data["state"]


def write_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temporary file + ``os.replace``), so a kill during
    the write leaves the previous state intact. The file holds tensors and plain values only
    (:func:`plain_state`): :func:`read_state` reads it with ``weights_only=True``."""
    path = os.fspath(path)
    buffer = io.BytesIO()
    torch.save({"format": STATE_FORMAT, "state": plain_state(state)}, buffer)
    atomic_write(path, buffer.getvalue(), fsync=True)
