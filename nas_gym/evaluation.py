"""The one evaluation path every env shares: architecture -> store lookup -> model -> costs ->
evaluator -> store -> reward -> terminal info (STYLE: data flows one way)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .arch.base import Architecture, canonical_json
from .costs import measure_latency, static_costs
from .evaluators import EvalResult
from .models import build_model
from .rewards import Reward
from .store import EvaluationStore, evaluation_key

_HOST = socket.gethostname()


def evaluator_fingerprint(evaluator: Any) -> dict[str, Any]:
    fp = getattr(evaluator, "fingerprint", None)
    if callable(fp):
        return dict(fp())
    return {"evaluator": f"{type(evaluator).__module__}.{type(evaluator).__qualname__}"}


class EvaluationPipeline:
    """Evaluate architectures for an env, through the evaluation store.

    :param evaluator: any object implementing the evaluator interface (``nas_gym.evaluators``).
    :param store: the evaluation store (results keyed by architecture + fingerprint + seed).
    :param reward: the reward (computed on every call, never stored: one store serves any budget).
    :param reject_infeasible: skip training when a pre-training cost breaks the budget
        (``status="infeasible"``, accuracy 0).
    :param measure_latency: measure ``latency_ms`` (batch 1, median, on ``device``).
    """

    def __init__(self, evaluator: Any, store: EvaluationStore, reward: Reward,
                 input_shape: tuple[int, int, int], num_classes: int, *,
                 device: torch.device, reject_infeasible: bool = False,
                 measure_latency: bool = True) -> None:
        self.evaluator, self.store, self.reward = evaluator, store, reward
        self.input_shape, self.num_classes, self.device = input_shape, num_classes, device
        self.reject_infeasible, self.measure_latency = reject_infeasible, measure_latency
        self.fingerprint = evaluator_fingerprint(evaluator)
        self._costs: dict[str, dict[str, float]] = {}  # arch sha256 -> pre-training costs

    def key(self, arch: Architecture, seed: int, lineage: Mapping[str, Any] | None = None) -> str:
        fp = self.fingerprint if lineage is None else {**self.fingerprint, "lineage": lineage}
        return evaluation_key(arch.to_dict(), fp, seed)

    def costs(self, arch: Architecture, model: nn.Module | None = None) -> dict[str, float]:
        """Pre-training costs (cached per architecture for the life of the pipeline)."""
        sha = arch.sha256
        if sha not in self._costs:
            # an evaluator that knows the costs (a table) spares the module and the latency
            # timing, unless the reward needs a metric it lacks
            known = getattr(self.evaluator, "known_costs", None)
            costs = dict(known(arch)) if callable(known) else None
            needed = set(self.reward.metrics) - {"train_seconds"}
            if costs is None or not needed <= set(costs):
                if model is None:
                    model = build_model(arch, self.input_shape, self.num_classes)
                counted = static_costs(model, self.input_shape)
                if self.measure_latency and (costs is None or "latency_ms" in needed):
                    counted["latency_ms"] = measure_latency(_copy_to(model, self.device),
                                                            self.input_shape, self.device)
                costs = {**counted, **(costs or {})}
            self._costs[sha] = costs
        return dict(self._costs[sha])

    def evaluate(self, arch: Architecture, *, seed: int, model: nn.Module | None = None,
                 lineage: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], EvalResult | None]:
        """Terminal info of ``arch`` and the fresh :class:`EvalResult` (None on a cache hit or an
        infeasible child). ``lineage`` ({"parent": key, "transform": ...}) marks a child that
        inherits weights: it joins the key and the store's lineage columns."""
        start = time.perf_counter()
        key = self.key(arch, seed, lineage)
        record = self.store.get(key)
        result: EvalResult | None = None
        if record is not None:
            cache_hit = True
        else:
            cache_hit = False
            needs_model = getattr(self.evaluator, "needs_model", True)
            if model is None and needs_model:
                model = build_model(arch, self.input_shape, self.num_classes, seed=seed)
            costs = self.costs(arch, model)
            if self.reject_infeasible and not self.reward.satisfied(costs):
                record = {"accuracy": 0.0, "status": "infeasible", "train_seconds": 0.0,
                          "message": "pre-training costs break the budget; not trained",
                          "costs": costs}
            else:
                # in flight until put() clears it: a killed search knows what it must redo
                self.store.mark_started(key, worker=f"{_HOST}:{os.getpid()}")
                result = EvalResult.coerce(self.evaluator.evaluate(
                    arch, seed=seed, model=model if needs_model else None))
                costs["train_seconds"] = result.train_seconds
                record = {**result.record(), "costs": costs}
                self.store.put(key, record, architecture=arch.to_dict(),
                               fingerprint=self.fingerprint, seed=seed,
                               parent=(lineage or {}).get("parent"),
                               transform=(lineage or {}).get("transform"))
        costs = dict(record["costs"])
        reward, parts = self.reward(record["accuracy"], _fill(costs, self.reward.metrics))
        info = {
            "accuracy": record["accuracy"],
            "costs": costs,
            "penalty": parts["penalty"],
            "reward_parts": parts,
            "architecture": arch.to_dict(),
            # a simulated evaluator (the table) reports the recorded training time, so benchmarks
            # can account simulated search time
            "eval_seconds": record.get("train_seconds", 0.0)
            if getattr(self.evaluator, "simulated_time", False) else time.perf_counter() - start,
            "cache_hit": cache_hit,
            "status": record["status"],
            "store_key": key,
            "reward": reward,
        }
        return info, result


def _fill(costs: dict[str, float], metrics: tuple[str, ...]) -> dict[str, float]:
    missing = [m for m in metrics if m not in costs]
    if missing:
        raise KeyError(f"the reward needs costs {missing} that were not measured "
                       "(enable measure_latency for latency_ms)")
    return costs


def _on_cpu(model: nn.Module) -> bool:
    p = next(model.parameters(), None)
    return p is None or p.device.type == "cpu"


def _copy_to(model: nn.Module, device: torch.device) -> nn.Module:
    if device.type == "cpu" and _on_cpu(model):
        return model
    import copy

    return copy.deepcopy(model).to(device)


__all__ = ["EvaluationPipeline", "canonical_json"]
