"""The one evaluation path every env shares: architecture -> store lookup -> model -> costs ->
evaluator -> store -> reward -> terminal info (STYLE: data flows one way)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .arch.base import Architecture, canonical_json
from .costs import architecture_costs, measure_latency, static_costs
from .evaluators import EvalResult
from .models import build_model
from .processes import use_threads
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
    :param measure_latency: measure ``latency_ms`` (batch 1, median, on ``device``); the envs
        resolve their ``measure_latency="auto"`` to whether the reward or the budget reads it.
    :param threads: torch threads of training and cost counting (the env's ``torch_threads``).
    """

    def __init__(self, evaluator: Any, store: EvaluationStore, reward: Reward,
                 input_shape: tuple[int, int, int], num_classes: int, *,
                 device: torch.device, reject_infeasible: bool = False,
                 measure_latency: bool = True, threads: int | None = None) -> None:
        self.evaluator, self.store, self.reward = evaluator, store, reward
        self.threads = threads or torch.get_num_threads()
        self.input_shape, self.num_classes, self.device = input_shape, num_classes, device
        self.reject_infeasible, self.measure_latency = reject_infeasible, measure_latency
        #: False for an evaluator whose results depend on more than the architecture and seed
        #: (``cacheable = False``: the shared-weight evaluator): every evaluation runs and is
        #: recorded, none is served from the store, and its fingerprint is read afresh each time
        self.cacheable = bool(getattr(evaluator, "cacheable", True))
        self._fingerprint = evaluator_fingerprint(evaluator)
        self._costs: dict[str, dict[str, float]] = {}  # arch sha256 -> pre-training costs
        self._arch_json: dict[Architecture, tuple[str, str]] = {}  # arch -> (sha256, JSON)
        self._fp_json: str | None = None

    @property
    def fingerprint(self) -> dict[str, Any]:
        """What besides the architecture and the seed decides a result (the store key's part):
        computed once, or at every read for an evaluator that is not :attr:`cacheable`."""
        if self.cacheable:
            return self._fingerprint
        return evaluator_fingerprint(self.evaluator)

    def key(self, arch: Architecture, seed: int, lineage: Mapping[str, Any] | None = None) -> str:
        fp = self.fingerprint if lineage is None else {**self.fingerprint, "lineage": lineage}
        return evaluation_key(arch.to_dict(), fp, seed)

    def _described(self, arch: Architecture) -> tuple[str, str]:
        """``(sha256, canonical JSON)`` of ``arch`` (cached on the value, and here per value)."""
        known = self._arch_json.get(arch)
        if known is None:
            known = self._arch_json[arch] = (arch.sha256, arch.to_json())
        return known

    def _fingerprint_json(self) -> str:
        """Canonical JSON of :attr:`fingerprint`: serialised once, or at every call for an
        evaluator that is not :attr:`cacheable`."""
        if not self.cacheable:
            return canonical_json(self.fingerprint)
        if self._fp_json is None:
            self._fp_json = canonical_json(self._fingerprint)
        return self._fp_json

    def _key(self, arch_json: str, seed: int, lineage: Mapping[str, Any] | None) -> str:
        """:meth:`key` from the architecture's canonical JSON: the canonical JSON of
        ``{"architecture", "fingerprint", "seed"}`` (keys in this, sorted, order) put together
        from its parts (``tests/test_evaluation.py`` checks it against ``evaluation_key``)."""
        fp = self._fingerprint_json() if lineage is None else canonical_json(
            {**self.fingerprint, "lineage": lineage})
        text = f'{{"architecture":{arch_json},"fingerprint":{fp},"seed":{canonical_json(seed)}}}'
        return hashlib.sha256(text.encode()).hexdigest()

    def costs(self, arch: Architecture, model: nn.Module | None = None) -> dict[str, float]:
        """Pre-training costs (cached per architecture for the life of the pipeline): counted on
        ``model`` when given (a transform env's child), else from the architecture
        (:func:`~nas_gym.costs.architecture_costs`: no module is built), plus ``latency_ms``
        when :attr:`measure_latency` (on ``model``, or a module built for it)."""
        sha = self._described(arch)[0]
        if sha not in self._costs:
            # an evaluator that knows the costs (a table) spares the counting and the latency
            # timing, unless the reward needs a metric it lacks
            known = getattr(self.evaluator, "known_costs", None)
            costs = dict(known(arch)) if callable(known) else None
            needed = set(self.reward.metrics) - {"train_seconds"}
            if costs is None or not needed <= set(costs):
                with use_threads(self.threads):
                    if model is not None:
                        counted = static_costs(model, self.input_shape)
                    else:
                        counted = architecture_costs(arch, self.input_shape, self.num_classes)
                    if self.measure_latency and (costs is None or "latency_ms" in needed):
                        if model is None:
                            model = build_model(arch, self.input_shape, self.num_classes)
                        counted["latency_ms"] = measure_latency(_copy_to(model, self.device),
                                                                self.input_shape, self.device)
                costs = {**counted, **(costs or {})}
            self._costs[sha] = costs
        return dict(self._costs[sha])

    def clear_cost_cache(self) -> None:
        """Forget the costs cached by :meth:`costs` (a benchmark timing a first count)."""
        self._costs.clear()

    def evaluate(self, arch: Architecture, *, seed: int, model: nn.Module | None = None,
                 lineage: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], EvalResult | None]:
        """Terminal info of ``arch`` and the fresh :class:`EvalResult` (None on a cache hit or an
        infeasible child). ``lineage`` ({"parent": key, "transform": ...}) marks a child that
        inherits weights: it joins the key and the store's lineage columns."""
        start = time.perf_counter()
        simulated = getattr(self.evaluator, "simulated_time", False)
        arch_json = self._described(arch)[1]
        key = self._key(arch_json, seed, lineage)
        record = self.store.get(key) if self.cacheable else None
        result: EvalResult | None = None
        if record is not None:
            cache_hit = True
        else:
            cache_hit = False
            needs_model = getattr(self.evaluator, "needs_model", True)
            costs = self.costs(arch, model)  # before any build: an infeasible child needs none
            if self.reject_infeasible and not self.reward.satisfied(costs):
                record = {"accuracy": 0.0, "status": "infeasible", "train_seconds": 0.0,
                          "message": "pre-training costs break the budget; not trained",
                          "costs": costs}
            else:
                if model is None and needs_model:
                    model = build_model(arch, self.input_shape, self.num_classes, seed=seed)
                if not simulated:  # in flight until put() clears it: a killed search knows
                    # what it must redo (a lookup has nothing to redo)
                    self.store.mark_started(key, worker=f"{_HOST}:{os.getpid()}")
                with use_threads(self.threads):
                    result = EvalResult.coerce(self.evaluator.evaluate(
                        arch, seed=seed, model=model if needs_model else None))
                costs["train_seconds"] = result.train_seconds
                record = {**result.record(), "costs": costs}
                self.store.put(key, record, architecture=arch_json,
                               fingerprint=self._fingerprint_json(), seed=seed,
                               parent=(lineage or {}).get("parent"),
                               transform=(lineage or {}).get("transform"))
        costs = dict(record["costs"])
        reward, parts = self.reward(record["accuracy"], _fill(costs, self.reward.metrics))
        info = {
            "accuracy": record["accuracy"],
            "costs": costs,
            "penalty": parts["penalty"],
            "reward_parts": parts,
            "architecture": json.loads(arch_json),
            # a simulated evaluator (the table) reports the recorded training time, so benchmarks
            # can account simulated search time
            "eval_seconds": record.get("train_seconds", 0.0) if simulated
            else time.perf_counter() - start,
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
