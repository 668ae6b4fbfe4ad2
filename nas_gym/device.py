"""Device resolution: the device is a parameter everywhere; ``"auto"`` = CUDA when present."""

from __future__ import annotations

import torch

from .errors import bad_value


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/None -> ``cuda`` when available else ``cpu``; otherwise ``torch.device(device)``."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise bad_value("device", device, "'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise bad_value("device", device, "'auto' or 'cpu' (no CUDA device is visible)")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise bad_value("device", device, "'auto', 'cpu', 'cuda' or 'cuda:N'")
    return dev
