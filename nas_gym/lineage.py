"""Weight lineage of ``Net2Net-v0``: checkpoints, replayable transforms, export and EAS stages.

- Checkpoints: in memory ``{"architecture", "state_dict", "input_shape", "key"}`` (``key``: the
  net's store key); the store's weights table holds them as ``torch.save`` bytes
  (:func:`checkpoint_bytes`, read with ``weights_only=True``); on disk the project's format of
  :mod:`nas_gym.checkpoint` (:func:`export_model`). All three are valid ``start_net=``.
- :func:`apply_transform` applies one transform record (as the env writes them into the store's
  ``transform`` column) exactly; :func:`replay` rebuilds a stored child from its parent.
- Stages (EAS §"Start with Small Network"): :func:`best_child`, :func:`next_stage_start`,
  :func:`stage_checkpoint`; the stage runner (any agent, the stage's best retrained) is
  :func:`nas_gym.experiments.eas_stages.run_eas_stages` (``nas-gym reproduce eas``).

EAS searches in stages: each stage allows 5 deepen and 4 widen transforms from a start net; the best
net of a stage becomes the start point of the next. The evaluation store makes this a few lines:
every child is stored with its ``parent`` (the start net's key) and its ``transform`` records
(weight lineage), and, with ``save_weights=True`` (the env's default), its fine-tuned weights.

With an agent of your own, the loop is yours and only :func:`next_stage_start` is needed::

    start = next_stage_start(env.unwrapped.store, env.unwrapped.start_key)
    env = gym.make("Net2Net-v0", start_net=start, ...)

EAS retrains the stage's best net longer (100 epochs) before the next stage
(:func:`nas_gym.experiments.eas_stages.retrain`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .arch.plain import PlainCNN
from .checkpoint import load_model, save_model, sidecar_path
from .data import DataSplit
from .errors import ConfigError, bad_value
from .models import build_model
from .models.net2net import deepen, widen
from .rewards import Reward
from .store import EvaluationStore
from .training import TrainConfig, train

__all__ = ["apply_transform", "best_child", "checkpoint_bytes", "export_model", "load_checkpoint",
           "load_weights", "model_from_checkpoint", "next_stage_start", "replay",
           "stage_checkpoint"]


# -- checkpoints ----------------------------------------------------------------------------------
def checkpoint_dict(model: nn.Module, *, key: str | None = None) -> dict[str, Any]:
    """The checkpoint of a plain-CNN model: ``{"architecture", "state_dict", "input_shape",
    "key"}`` (``key``: the model's evaluation-store key, when it has one). Loadable with
    ``torch.load(..., weights_only=True)``."""
    arch = getattr(model, "architecture", None)
    if not isinstance(arch, PlainCNN):
        raise bad_value("model", type(model).__name__, "a model built from a PlainCNN")
    return {"architecture": arch.to_dict(), "input_shape": list(getattr(model, "input_shape", ())),
            "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "key": key}


def checkpoint_bytes(model: nn.Module, *, key: str | None = None) -> bytes:
    """``torch.save`` bytes of :func:`checkpoint_dict` (what the store's weights table holds)."""
    buf = io.BytesIO()
    torch.save(checkpoint_dict(model, key=key), buf)
    return buf.getvalue()


def export_model(store: EvaluationStore, key: str, path: str | os.PathLike, *,
                 input_shape: tuple[int, int, int], num_classes: int) -> Path:
    """Write the stored weights of ``key`` with :func:`nas_gym.checkpoint.save_model` (``model.pt``
    + ``model.json``, whose extra field ``store_key`` keeps the lineage when the file is used as a
    ``start_net=``); returns the state-dict path."""
    model = load_weights(store, key, input_shape, num_classes)
    record = store.get(key) or {}
    return save_model(model, path, input_shape=input_shape, num_classes=num_classes,
                      extra={"store_key": key, "accuracy": record.get("accuracy")})


def load_checkpoint(source: Any, *, arg: str = "checkpoint") -> dict[str, Any]:
    """A checkpoint dict ``{"architecture", "state_dict", "key"}`` from a file written by
    :func:`nas_gym.checkpoint.save_model` (the ``model.pt``, its ``model.json`` or their folder;
    ``key`` from the sidecar's ``store_key``), from :func:`checkpoint_bytes` output, or from an
    already loaded dict (validated keys). ``arg`` names the argument in error messages."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = torch.load(io.BytesIO(bytes(source)), map_location="cpu", weights_only=True)
    elif isinstance(source, (str, os.PathLike)):
        try:
            model = load_model(source)
        except (ConfigError, OSError) as exc:
            raise bad_value(arg, source, "a model saved by nas_gym.checkpoint.save_model "
                                         f"(model.pt + model.json) [{exc}]") from None
        meta = json.loads(sidecar_path(Path(source) / "model.pt" if Path(source).is_dir()
                                       else source).read_text())
        return {"architecture": model.architecture.to_dict(), "state_dict": model.state_dict(),
                "key": meta.get("store_key")}
    if not isinstance(source, Mapping) or not {"architecture", "state_dict"} <= set(source):
        raise bad_value(arg, type(source).__name__,
                        "a dict with 'architecture' and 'state_dict', bytes from checkpoint_bytes, "
                        "or a path written by nas_gym.checkpoint.save_model")
    return dict(source)


def model_from_checkpoint(ckpt: Any, input_shape: tuple[int, int, int],
                          num_classes: int) -> nn.Module:
    """Build the checkpoint's architecture for the data and load its weights (strict)."""
    ckpt = load_checkpoint(ckpt)
    model = build_model(ckpt["architecture"], input_shape, num_classes)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise ConfigError(f"checkpoint weights do not fit input_shape={tuple(input_shape)}, "
                          f"num_classes={num_classes}: {exc}") from None
    return model


def weights_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


# -- transforms as replayable records -------------------------------------------------------------
def apply_transform(model: nn.Module, record: Mapping[str, Any], data: DataSplit | None) -> nn.Module:
    """Apply one recorded transform (``{"op": "widen", "layer", "width", "noise", "seed"}`` or
    ``{"op": "deepen", "position", "kernel", "layer_type", "batch", "seed"}``) to a copy of
    ``model``. Every random draw -- Net2Wider's remapping G, the noise, the training batch whose
    statistics set a new BN -- comes from ``np.random.default_rng(record["seed"])``, so the same
    record on the same weights gives the same weights."""
    rng = np.random.default_rng(int(record["seed"]))
    if record["op"] == "widen":
        return widen(model, int(record["layer"]), int(record["width"]), rng=rng,
                     noise=float(record.get("noise", 0.0)))
    if record["op"] != "deepen":
        raise bad_value("record['op']", record["op"], ("widen", "deepen"))
    batch = None
    if record["layer_type"] == "conv" and data is not None and record.get("batch"):
        n = data.train_x.shape[0]
        idx = torch.from_numpy(rng.choice(n, size=min(int(record["batch"]), n), replace=False))
        batch = data.train_x[idx.to(data.device)]
    return deepen(model, int(record["position"]), int(record["kernel"]), rng=rng,
                  layer_type=record["layer_type"], data=batch)


# -- lineage, export, stages ---------------------------------------------------------------------
def _record(store: EvaluationStore, key: str) -> dict[str, Any]:
    for rec in store.records():
        if rec["key"] == key:
            return rec
    raise ConfigError(f"key={key!r} is not in the evaluation store {store.path!r}")


def load_weights(store: EvaluationStore, key: str, input_shape: tuple[int, int, int],
                 num_classes: int) -> nn.Module:
    """The stored (trained) network of ``key``; :func:`replay` rebuilds one that has none."""
    blob = store.get_weights(key)
    if blob is None:
        raise ConfigError(f"no weights stored for key={key!r}; evaluate with save_weights=True "
                          "or rebuild them with nas_gym.lineage.replay")
    return model_from_checkpoint(blob, input_shape, num_classes)


def replay(store: EvaluationStore, key: str, data: DataSplit, *, finetune: bool = True
           ) -> nn.Module:
    """Rebuild the network of ``key`` from its lineage: the parent's stored weights, then the
    recorded transforms (:func:`~nas_gym.envs.net2net.apply_transform`), then -- with
    ``finetune`` -- the fine-tuning recorded in the key's fingerprint (training config and seed),
    which on CPU reproduces the stored weights bit for bit. ``finetune=False`` gives the weights the
    child inherited, before any training."""
    rec = _record(store, key)
    if rec["parent"] is None:
        return load_weights(store, key, data.input_shape, data.num_classes)
    model = load_weights(store, rec["parent"], data.input_shape, data.num_classes)
    model = model.to(data.device).eval()
    for transform in rec["transform"] or []:
        model = apply_transform(model, transform, data)
    if finetune:
        fp = rec["fingerprint"] or {}
        if "training" not in fp:
            raise ConfigError(f"key={key!r} was not evaluated by the 'train' evaluator; its "
                              "fine-tuning cannot be replayed (use finetune=False)")
        train(model, data, TrainConfig(**fp["training"]), seed=int(rec["seed"]),
              time_limit=fp.get("time_limit"))
    return model


def best_child(store: EvaluationStore, parent: str, *, reward: Reward | None = None,
               with_weights: bool = True) -> dict[str, Any]:
    """The best stored child of ``parent`` (a stage's start key) with status ``"ok"``, by
    ``reward(accuracy, costs)`` (an env's ``reward_fn``) or, without one, by accuracy.
    ``with_weights``: only children whose weights are stored."""
    def score(rec: dict[str, Any]) -> float:
        res = rec["result"]
        if reward is None:
            return float(res["accuracy"])
        return reward(res["accuracy"], res["costs"])[0]

    children = [r for r in store.records(status="ok") if r["parent"] == parent
                and (not with_weights or store.get_weights(r["key"]) is not None)]
    if not children:
        raise ConfigError(f"no evaluated child of parent={parent!r} with status 'ok'"
                          f"{' and stored weights' if with_weights else ''} in {store.path!r}")
    return max(children, key=score)  # ties: the oldest (records come oldest first)


def next_stage_start(store: EvaluationStore, parent: str, *, reward: Reward | None = None
                     ) -> dict[str, Any]:
    """The checkpoint (``start_net=`` of ``Net2Net-v0``) of the best child of ``parent``: its
    architecture, fine-tuned weights and store key, so the next stage's children record it as
    their parent and the lineage runs across stages (when the next env uses the same store)."""
    return stage_checkpoint(store, best_child(store, parent, reward=reward)["key"])


def stage_checkpoint(store: EvaluationStore, key: str) -> dict[str, Any]:
    """The checkpoint of the stored net ``key`` (weights and key), a valid ``start_net=``."""
    blob = store.get_weights(key)
    if blob is None:
        raise ConfigError(f"no weights stored for key={key!r}")
    return {**load_checkpoint(blob), "key": key}
