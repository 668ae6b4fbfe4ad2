"""The evaluator interface, the ``EVALUATORS`` registry and ``"train"`` (SPEC §5).

How a child's accuracy is obtained.

The interface is small so users and tests can plug their own (``evaluator=`` of every env takes a
registered name or any object with these two methods):

- ``evaluate(architecture, *, seed, model=None) -> EvalResult | Mapping`` — ``architecture`` is an
  :class:`~nas_gym.arch.Architecture`; ``model`` is the already-built module (a transform env
  passes the network with inherited weights), or None. A Mapping needs at least ``"accuracy"``
  (validation accuracy in [0, 1]) and may carry ``"status"`` and ``"train_seconds"``.
- ``fingerprint() -> dict`` (optional) — everything besides the architecture and the seed that
  changes the result (dataset, training config ...); it goes into the evaluation-store key. Without
  it the store keys on the evaluator's class name.

``needs_model`` (optional attribute, default True): when False the env does not build a module for
the evaluator (its costs are counted from the architecture). ``cacheable`` (optional, default
True): False for an evaluator whose result depends on more than the architecture, the seed and
its fingerprint at construction - the ``"shared"`` evaluator, whose super-network changes with
every evaluation: the pipeline then runs every evaluation and records it, never serves one from
the store, and reads ``fingerprint()`` afresh for each store key.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..arch.base import Architecture
from ..data import DataSplit
from ..errors import ConfigError
from ..models import build_model
from ..registry import Registry
from ..training import TrainConfig, evaluate, train

STATUSES = ("ok", "diverged", "oom", "timeout", "infeasible", "failed")


@dataclass
class EvalResult:
    """Outcome of one evaluation. ``accuracy`` is *validation* accuracy: rewards never see test data."""

    accuracy: float
    status: str = "ok"
    train_seconds: float = 0.0
    val_loss: float = float("nan")
    epochs: float = 0.0
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    model: nn.Module | None = field(default=None, repr=False)

    @classmethod
    def coerce(cls, value: EvalResult | Mapping[str, Any]) -> EvalResult:
        if isinstance(value, EvalResult):
            res = value
        elif isinstance(value, Mapping) and "accuracy" in value:
            known = {k: value[k] for k in ("accuracy", "status", "train_seconds", "val_loss",
                                           "epochs", "message") if k in value}
            res = cls(**known, extra={k: v for k, v in value.items() if k not in known})
        else:
            raise ConfigError(
                "an evaluator must return an EvalResult or a mapping with an 'accuracy' key, "
                f"got {value!r}")
        res.accuracy = float(res.accuracy)
        if res.status not in STATUSES:
            raise ConfigError(f"evaluator status={res.status!r}; expected one of {STATUSES}")
        if not math.isfinite(res.accuracy):  # a child's NaN never reaches a reward
            res.accuracy, res.status = 0.0, "diverged" if res.status == "ok" else res.status
        return res

    def record(self) -> dict[str, Any]:
        """The JSON-able part kept in the evaluation store."""
        return {"accuracy": self.accuracy, "status": self.status,
                "train_seconds": self.train_seconds,
                "val_loss": self.val_loss if math.isfinite(self.val_loss) else None,
                "epochs": self.epochs, "message": self.message, "extra": self.extra}


class Evaluator(ABC):
    """Base class of evaluators (any object with ``evaluate`` works too; see the module doc)."""

    needs_model: bool = True

    def fingerprint(self) -> dict[str, Any]:
        return {"evaluator": type(self).__qualname__}

    @abstractmethod
    def evaluate(self, architecture: Architecture, *, seed: int,
                 model: nn.Module | None = None) -> EvalResult | Mapping[str, Any]:
        """Validation accuracy of ``architecture`` (see the module doc)."""


EvaluatorFactory = Callable[..., Evaluator]
#: name -> factory ``(data=DataSplit, config=TrainConfig, time_limit=float|None, **kw)``.
EVALUATORS: Registry[EvaluatorFactory] = Registry("evaluator")


@EVALUATORS.register("train")
class TrainEvaluator(Evaluator):
    """Train the child from scratch (or from the inherited weights it is handed) and score it on the
    validation split.

    :param data: the dataset split, on the training device.
    :param config: training hyperparameters.
    :param time_limit: wall-clock seconds per child (status ``"timeout"`` past it).
    :param report_test: also record test accuracy in ``extra["test_accuracy"]`` — for final
        reports and benchmark tables only, never read by a reward.
    """

    def __init__(self, data: DataSplit, config: TrainConfig, *, time_limit: float | None = None,
                 report_test: bool = False) -> None:
        self.data, self.config, self.time_limit = data, config.validate(), time_limit
        self.report_test = report_test

    def fingerprint(self) -> dict[str, Any]:
        return {"evaluator": "train", "data": self.data.fingerprint,
                "training": self.config.fingerprint(), "time_limit": self.time_limit}

    def evaluate(self, architecture: Architecture, *, seed: int,
                 model: nn.Module | None = None) -> EvalResult:
        if model is None:
            model = build_model(architecture, self.data.input_shape, self.data.num_classes,
                                seed=seed)
        run = train(model, self.data, self.config, seed=seed, time_limit=self.time_limit)
        acc, loss, extra = 0.0, float("nan"), {}
        if run.status in ("ok", "timeout"):
            acc, loss = evaluate(model, self.data.val_x, self.data.val_y,
                                 self.config.eval_batch_size)
            if self.report_test:
                extra["test_accuracy"] = evaluate(model, self.data.test_x, self.data.test_y,
                                                  self.config.eval_batch_size)[0]
        return EvalResult(accuracy=acc, status=run.status, train_seconds=run.train_seconds,
                          val_loss=loss, epochs=run.epochs, message=run.message, extra=extra,
                          model=model)
