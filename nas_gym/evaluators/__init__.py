"""Evaluators: how a child's accuracy is obtained (SPEC §5).

``evaluator=`` of every env takes a registered name or any object with the interface of
:mod:`.base` (``evaluate``, optional ``fingerprint``, ``needs_model``, ``cacheable``).

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
