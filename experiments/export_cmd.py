"""``nas-gym export RUN --format onnx|torchscript``: ship the final model of a search (or any store
entry of it, ``--key``) as an ONNX or TorchScript file, checked against the PyTorch model.

- without ``--key``: ``RUN/final/model.pt`` (written by ``nas-gym search --final-epochs K``);
- ``--key KEY``: the store entry ``KEY`` of ``RUN/store.sqlite`` (``store_key`` of an
  ``evaluations.jsonl`` line) with its trained weights when the store holds them (Net2Net-v0's
  ``save_weights``), else its architecture with the initial weights of the search's seed (the
  store keeps results, not weights, of the other envs); the message says which.

The file goes to ``--output`` (default ``RUN/export/model.onnx`` / ``RUN/export/KEY.pt``); see
:mod:`nas_gym.export` for how it is made and checked.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from nas_gym.errors import ConfigError, bad_value
from nas_gym.export import FORMATS, SUFFIX, export


def add_export_command(sub: Any) -> None:
    p = sub.add_parser("export", help="export a search's final model as ONNX or TorchScript",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("run", metavar="RUN", help="the --out folder of a search")
    p.add_argument("--format", default="onnx", choices=FORMATS, help="onnx or torchscript "
                   "[default: onnx]")
    p.add_argument("--key", default=None, help="a store key of the run instead of final/model.pt")
    p.add_argument("--output", default=None, help="file to write [default: RUN/export/...]")
    p.set_defaults(func=cmd_export)


def _run_config(run: Path) -> dict[str, Any]:
    path = run / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _shape(run: Path, saved: dict[str, Any]) -> tuple[tuple[int, int, int], int]:
    """Input shape and classes: from the final model's JSON, else from the run's dataset."""
    meta = run / "final" / "model.json"
    if meta.is_file():
        data = json.loads(meta.read_text())
        return tuple(data["input_shape"]), int(data["num_classes"])  # type: ignore[return-value]
    from nas_gym.data import DataConfig, load_data

    kwargs = saved.get("env_kwargs", {})
    data = load_data(DataConfig(name=kwargs.get("dataset", "digits"),
                                data_root=kwargs.get("data_root")), device="cpu")
    return data.input_shape, data.num_classes


def _store_model(run: Path, key: str, saved: dict[str, Any]) -> tuple[Any, tuple, str]:
    from nas_gym import build_model
    from nas_gym.lineage import load_weights
    from nas_gym.store import open_store

    store_path = saved.get("env_kwargs", {}).get("store") or str(run / "store.sqlite")
    if not Path(store_path).is_file():
        raise bad_value("RUN", str(run), f"a search folder with a store ({store_path} is missing)")
    store = open_store(store_path)
    try:
        record = next((r for r in store.records() if r["key"] == key), None)
        if record is None:
            raise bad_value("--key", key, f"a key of {store_path} (store_key in "
                            "evaluations.jsonl)")
        shape, classes = _shape(run, saved)
        if store.get_weights(key) is not None:
            return load_weights(store, key, shape, classes), shape, "its trained weights"
        seed = int(saved.get("config", {}).get("seed", 0))
        model = build_model(record["architecture"], shape, classes, seed=seed)
        return model, shape, f"initial weights (seed {seed}: the store holds no trained weights)"
    finally:
        store.close()


def cmd_export(args: argparse.Namespace) -> int:
    run = Path(args.run)
    if not run.is_dir():
        raise bad_value("RUN", args.run, "an existing search folder (the --out of nas-gym search)")
    saved = _run_config(run)
    if args.key is None:
        from nas_gym.checkpoint import load_model

        final = run / "final" / "model.pt"
        if not final.is_file():
            raise ConfigError(f"{final} does not exist: run the search with --final-epochs K, or "
                              "pass --key STORE_KEY")
        model = load_model(final)
        shape, _ = _shape(run, saved)
        name, weights = "model", "the final model's trained weights"
    else:
        model, shape, weights = _store_model(run, args.key, saved)
        name = args.key
    output = Path(args.output) if args.output else \
        run / "export" / f"{name}{SUFFIX[args.format]}"
    path = export(model, shape, output, fmt=args.format)
    print(f"exported {args.format} ({weights}) -> {path}; outputs checked against PyTorch")
    return 0
