"""The start net of ``Net2Net-v0`` (see :class:`~nas_gym.envs.net2net.Net2NetEnv`, "Starting
State"): the accepted forms of ``start_net``, and the evaluator that scores a loaded checkpoint."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torch import nn

from ..arch.plain import DIGITS_START_NET, EAS_START_NET, PlainCNN
from ..data import DataSplit
from ..errors import ArchitectureError, bad_value
from ..evaluators import EvalResult
from ..lineage import load_checkpoint, model_from_checkpoint
from ..models import build_model
from ..training import evaluate


class CheckpointEvaluator:
    """Evaluator of a loaded checkpoint: validation accuracy of the given weights, no training."""

    needs_model = True

    def __init__(self, data: DataSplit, weights: str) -> None:
        self.data, self.weights = data, weights

    def fingerprint(self) -> dict[str, Any]:
        return {"evaluator": "checkpoint", "weights": self.weights, "data": self.data.fingerprint}

    def evaluate(self, architecture: Any, *, seed: int, model: nn.Module | None = None):
        acc, loss = evaluate(model.to(self.data.device), self.data.val_x, self.data.val_y)
        return EvalResult(accuracy=acc, val_loss=loss, model=model)


def parse_start_net(start_net: Any, input_shape: tuple[int, int, int], num_classes: int
                    ) -> tuple[PlainCNN, dict[str, Any] | None]:
    """The start architecture and, for a trained net, its checkpoint (see the ``start_net``
    argument); ``None``: ``EAS_START_NET`` for images of at least 32x32, else
    ``DIGITS_START_NET``."""
    ckpt = None
    if start_net is None:
        _, h, w = input_shape
        start_net = EAS_START_NET if min(h, w) >= 32 else DIGITS_START_NET
    elif isinstance(start_net, (str, os.PathLike, bytes, bytearray)) or (
            isinstance(start_net, Mapping) and "state_dict" in start_net):
        ckpt = load_checkpoint(start_net, arg="start_net")
        start_net = ckpt["architecture"]
    try:
        model = build_model(start_net, input_shape, num_classes)
    except ArchitectureError as exc:
        raise bad_value("start_net", start_net, f"a plain CNN that fits the data ({exc})") \
            from None
    if not isinstance(model.architecture, PlainCNN):
        raise bad_value("start_net", start_net, "an architecture of kind 'plain'")
    if ckpt is not None:  # fail at make time on weights that do not fit
        model_from_checkpoint(ckpt, input_shape, num_classes)
    return model.architecture, ckpt
