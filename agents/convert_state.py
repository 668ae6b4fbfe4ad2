"""Convert an agent state written by an older nas_gym (a pickle) to the safe format.

``python -m nas_gym.agents.convert_state runs/NAME/agent_state.pt`` loads the old file **with pickle**
(``weights_only=False``: it may run code, so only for a file you trust), rewrites it as tensors and
plain values (:func:`nas_gym.agents.state_file.plain_state`, read back with ``weights_only=True``) and
keeps the original as ``agent_state.pt.pickle``. An old SB3 state's ``model.save`` zip is loaded
with SB3 and re-saved as its parameters.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
from typing import Any

import torch

from .state_file import STATE_FORMAT, plain_state


def _sb3_model(blob: bytes, algorithm: str) -> dict[str, Any]:
    from .sb3 import _COUNTERS, ALGORITHMS, space_to_json

    model = ALGORITHMS[algorithm][0].load(io.BytesIO(blob), device="cpu")
    return {"spaces": [space_to_json(model.observation_space), space_to_json(model.action_space)],
            "parameters": model.get_parameters(),
            "counters": {k: int(getattr(model, k)) for k in _COUNTERS}}


def convert(path: str | os.PathLike) -> str:
    """Rewrite ``path`` in the safe format; returns where the original was kept."""
    path = os.fspath(path)
    state = torch.load(path, map_location="cpu", weights_only=False)  # trusted by the caller
    if isinstance(state, dict) and state.get("format") == STATE_FORMAT:
        raise SystemExit(f"{path} is already in the {STATE_FORMAT} format")
    if isinstance(state.get("model"), (bytes, bytearray)):
        state = {**state, "model": _sb3_model(bytes(state["model"]), state["algorithm"])}
    backup = f"{path}.pickle"
    shutil.copy2(path, backup)
    buffer = io.BytesIO()
    torch.save({"format": STATE_FORMAT, "state": plain_state(state)}, buffer)
    with open(path, "wb") as f:
        f.write(buffer.getvalue())
    return backup


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="agent_state.pt files you trust")
    for path in parser.parse_args(argv).paths:
        print(f"{path}: converted (original kept as {convert(path)})")


if __name__ == "__main__":
    main()
