"""The final model: a searched architecture retrained from scratch, the only read of the test split.

:func:`train_final` is the one final retraining of the project: ``nas-gym search``
(:func:`retrain_final`, the best architecture at full size, saved to ``OUT/final/model.pt``) and
the B-ENAS pipeline (:meth:`nas_gym.experiments.benas.BenasSearch.retrain`, the cell at ``final_n`` with
its costs) both train through it. It builds the model from ``seed``, trains it with the env's
training config for ``epochs`` epochs on the env's training split (``train_size`` applies) and
scores it on the validation and test splits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import torch.nn as nn

import nas_gym
from nas_gym.arch.base import Architecture, architecture_from_dict
from nas_gym.checkpoint import save_model
from nas_gym.costs import count_params, static_costs
from nas_gym.errors import ConfigError
from nas_gym.registry import Registry
from nas_gym.training import TrainConfig, TrainResult, evaluate, train

if TYPE_CHECKING:
    from nas_gym.data import DataSplit

__all__ = ["FULL_SIZE", "FinalRun", "full_size", "retrain_final", "train_final"]

#: kind -> the architecture at full size for the final retraining (identity when not registered).
FULL_SIZE: Registry[Callable[[Architecture], Architecture]] = Registry("full-size rule")
FULL_SIZE.register("cell", lambda arch: arch.with_size(3))  # B-ENAS: the N=3 ("11-layer") model


def full_size(arch: Architecture) -> Architecture:
    """The architecture the final model uses (B-ENAS retrains the N=3 cell network)."""
    return FULL_SIZE.get(arch.kind)(arch) if arch.kind in FULL_SIZE else arch


@dataclass
class FinalRun:
    """What :func:`train_final` trained and measured."""

    architecture: Architecture
    model: nn.Module
    config: TrainConfig
    run: TrainResult
    val_accuracy: float
    test_accuracy: float
    costs: dict[str, float] | None = None
    """With ``measure_costs``: the static costs of the untrained model and ``train_seconds``."""


def train_final(arch: Architecture, data: DataSplit, train_config: TrainConfig, epochs: int, *,
                seed: int, drop_path: float | None = None,
                measure_costs: bool = False) -> FinalRun:
    """Train ``arch`` (already at its final size) from scratch with ``train_config`` (the env's)
    for ``epochs`` epochs (and ``drop_path``, when given) on ``data``'s training split (the env's),
    and score it on the validation and **test** splits. ``measure_costs``: also count the static
    costs of the built model before training (params, flops, memory_bytes, ...) and add its
    ``train_seconds``."""
    changes: dict[str, Any] = {"epochs": epochs}
    if drop_path is not None:
        changes["drop_path"] = drop_path
    config = train_config.replace(**changes)
    model = nas_gym.build_model(arch, data.input_shape, data.num_classes, seed=seed)
    costs = static_costs(model, data.input_shape) if measure_costs else None
    run = train(model, data, config, seed=seed)
    if costs is not None:
        costs["train_seconds"] = run.train_seconds
    val_acc, _ = evaluate(model, data.val_x, data.val_y, config.eval_batch_size)
    test_acc, _ = evaluate(model, data.test_x, data.test_y, config.eval_batch_size)
    return FinalRun(arch, model, config, run, val_acc, test_acc, costs)


def retrain_final(architecture: dict[str, Any], env: gym.Env, epochs: int, out: Path,
                  seed: int = 0) -> dict[str, Any]:
    """Train the full-size best architecture from scratch on the search's training split (the
    env's data: ``train_size`` applies) with the env's training config for ``epochs`` epochs, and
    report its validation and **test** accuracy (the only place the test split is read)."""
    base = env.unwrapped
    components = getattr(base, "components", None)
    if components is None:
        raise ConfigError(f"the final retraining needs a nas_gym env, got {type(base).__name__}")
    data = components.data
    final = train_final(full_size(architecture_from_dict(architecture)), data,
                        components.train_config, epochs, seed=seed)
    model = final.model
    report = {"architecture": final.architecture.to_dict(), "searched_architecture": architecture,
              "epochs": epochs, "status": final.run.status,
              "train_seconds": final.run.train_seconds,
              "val_accuracy": final.val_accuracy, "test_accuracy": final.test_accuracy,
              "params": count_params(model),
              "model": "final/model.pt"}
    save_model(model.cpu(), out / "final" / "model.pt", input_shape=data.input_shape,
               num_classes=data.num_classes, extra={"report": report})
    return report
