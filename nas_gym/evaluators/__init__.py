"""Evaluators: how a child's accuracy is obtained (SPEC §5).

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

The package, one module per way of obtaining an accuracy; importing it registers them all:

- :mod:`.base` - the interface, :class:`EvalResult`, the ``EVALUATORS`` registry and ``"train"``.
- :mod:`.shared` (+ :mod:`.supernet`) - ``"shared"``: ENAS / B-ENAS weight sharing.
- :mod:`.epnas` (+ :mod:`.param_sharing`) - ``"epnas"``: EPNAS performance prediction.
- :mod:`.table` - ``"table"``: answers from a benchmark table (:mod:`nas_gym.table`).
- :mod:`.remote` - where a registered evaluator runs: worker processes or Ray (``backend=``).
"""

from . import epnas, shared, table  # noqa: F401  (register "epnas", "shared", "table")
from .base import EVALUATORS, STATUSES, EvalResult, Evaluator, EvaluatorFactory, TrainEvaluator

__all__ = ["EVALUATORS", "STATUSES", "EvalResult", "Evaluator", "EvaluatorFactory",
           "TrainEvaluator"]
