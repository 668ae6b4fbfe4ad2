"""A trained network on disk: its state dict plus the architecture JSON that rebuilds it.

``save_model(model, "runs/x/final/model.pt", input_shape=(1, 8, 8), num_classes=10)`` writes
``model.pt`` (``torch.save(model.state_dict())``) and ``model.json`` (architecture, input shape,
class count and any extra report fields). One call loads it back::

    model = nas_gym.checkpoint.load_model("runs/x/final/model.pt")   # eval mode, on CPU

The state dict alone is loaded with ``weights_only=True`` (no pickled code runs); the architecture
goes through :func:`nas_gym.build_model`, so a file written by another space is rebuilt the same way.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .arch.base import Architecture, architecture_from_dict
from .errors import ConfigError
from .files import atomic_write
from .models import build_model

__all__ = ["load_model", "save_model", "sidecar_path"]


def sidecar_path(path: str | os.PathLike) -> Path:
    """The architecture JSON that goes with a state-dict file: same name, ``.json`` suffix."""
    return Path(path).with_suffix(".json")


def save_model(model: nn.Module, path: str | os.PathLike, *, input_shape: Sequence[int],
               num_classes: int, architecture: Architecture | Mapping[str, Any] | None = None,
               extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``path`` (state dict) and its sidecar JSON; returns the state-dict path.

    :param architecture: defaults to ``model.architecture`` (set by :func:`nas_gym.build_model`).
    :param extra: JSON-able fields stored beside the architecture (e.g. test accuracy).
    """
    arch = architecture if architecture is not None else getattr(model, "architecture", None)
    if arch is None:
        raise ConfigError("save_model needs the architecture (model.architecture is not set)")
    arch_dict = arch.to_dict() if isinstance(arch, Architecture) else dict(arch)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, buffer.getvalue())
    meta = {"architecture": arch_dict, "input_shape": [int(s) for s in input_shape],
            "num_classes": int(num_classes), "state_dict": path.name, **dict(extra or {})}
    atomic_write(sidecar_path(path), json.dumps(meta, indent=2, sort_keys=True).encode())
    return path


def load_model(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the network saved by :func:`save_model` and load its weights (eval mode).

    :param path: the state-dict file (``model.pt``), its sidecar ``model.json``, or the folder
        holding ``model.pt``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if path.suffix == ".json":
        meta_path = path
    else:
        meta_path = sidecar_path(path)
    if not meta_path.is_file():
        raise ConfigError(f"load_model: {meta_path} (the architecture JSON) does not exist")
    meta = json.loads(meta_path.read_text())
    weights = meta_path.with_name(meta.get("state_dict", "model.pt"))
    if not weights.is_file():
        raise ConfigError(f"load_model: {weights} (the state dict) does not exist")
    arch = architecture_from_dict(meta["architecture"])
    model = build_model(arch, tuple(meta["input_shape"]), int(meta["num_classes"]))
    model.load_state_dict(torch.load(weights, map_location=map_location, weights_only=True))
    return model.to(map_location).eval()
