"""What every env builds from its common keyword arguments (SPEC §0), in one place: data,
training config, evaluator, store, reward and the evaluation pipeline. All validation happens here,
at construction (``gym.make`` time), never deep inside training."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..data import DataConfig, DataSplit, load_data
from ..device import resolve_device
from ..errors import bad_value
from ..evaluation import EvaluationPipeline
from ..evaluators import EVALUATORS
from ..evaluators.epnas import PREDICTION_PRESETS
from ..evaluators.remote import (
    EvaluatorSpec,
    ProcessEvaluator,
    RayEvaluator,
    ensure_ray,
)
from ..evaluators.table import load_table, table_data
from ..processes import check_threads, in_worker_process, watch_parent
from ..rewards import Reward
from ..store import EvaluationStore, open_store
from ..table import default_table
from ..training import TrainConfig, import_compiler_stack
from .config import REMOTE_BACKENDS, EnvConfig

INVALID_ACTION_MODES = ("remap", "raise")


@dataclass
class Components:
    data: DataSplit
    train_config: TrainConfig
    evaluator: Any
    store: EvaluationStore
    reward: Reward
    pipeline: EvaluationPipeline
    device: torch.device
    seed: int
    threads: int = 1


def table_defaults(env_id: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``kwargs`` of ``gym.make(env_id, evaluator="table", ...)`` with the table's recorded env
    arguments as defaults: the table is ``evaluator_kwargs["path"]`` (a file or a name of
    ``nas_gym.table.TABLES``) or the one registered for ``env_id`` and ``preset``; an explicit
    argument that differs from the recorded one raises (the table holds no other results)."""
    ek = dict(kwargs.get("evaluator_kwargs") or {})
    name = ek.get("path") or default_table(env_id, kwargs.get("preset"))
    if name is None:
        return dict(kwargs)
    table = load_table(name)
    if table.env_id != env_id:
        raise bad_value("evaluator_kwargs['path']", name,
                        f"a table of {env_id} (this one answers {table.env_id})")
    out = {**kwargs, "evaluator_kwargs": {**ek, "path": str(name)}}
    recorded = table.env_kwargs
    for key, value in recorded.items():
        mine = kwargs.get(key)
        if mine is None:
            out[key] = value
        elif json.loads(json.dumps(mine, default=str)) != json.loads(json.dumps(value)):
            raise bad_value(key, mine, f"{value!r} or nothing: evaluator='table' answers only "
                            f"the configuration table {str(name)!r} recorded, {recorded}")
    return out


def with_table_defaults(env_id: str) -> Callable[[Callable], Callable]:
    """Decorator of an env's ``__init__``: with ``evaluator="table"`` the table's recorded env
    arguments become the defaults (:func:`table_defaults`)."""

    def wrap(init: Callable) -> Callable:
        @functools.wraps(init)
        def wrapper(self: Any, **kwargs: Any) -> None:
            if isinstance(kwargs.get("evaluator"), str) and kwargs["evaluator"] == "table":
                kwargs = table_defaults(env_id, kwargs)
            init(self, **kwargs)
        return wrapper
    return wrap


def build_components(*, default_metric: str = "params", default_penalty: str = "benas",
                     accuracy_transform: str = "identity", **common: Any) -> Components:
    """Validate the common env arguments (:class:`~nas_gym.envs.config.EnvConfig`, each env's
    docstring) and build the shared pieces: reward, training config, data, evaluator, store and
    the evaluation pipeline."""
    cfg = EnvConfig(**common).validate()
    threads = check_threads(cfg.torch_threads)
    if in_worker_process():  # a vector env's copy: exit with the process that started it
        watch_parent()
    reward = cfg.reward(default_metric, default_penalty, accuracy_transform)
    measure_latency = cfg.latency_measured(reward)
    train_config = cfg.train_config()
    dev = resolve_device(cfg.device)
    data = _data(cfg, dev)
    evaluator = _evaluator(cfg, data, train_config, dev, threads)
    if isinstance(evaluator, RayEvaluator):  # connect (or start a local instance) now, here
        ensure_ray(evaluator.address)
    the_store = open_store(cfg.store)
    pipeline = EvaluationPipeline(evaluator, the_store, reward, data.input_shape, data.num_classes,
                                  device=dev, reject_infeasible=bool(cfg.reject_infeasible),
                                  measure_latency=measure_latency, threads=threads)
    return Components(data, train_config, evaluator, the_store, reward, pipeline, dev, cfg.seed,
                      threads)


def _data_config(cfg: EnvConfig) -> DataConfig:
    return DataConfig(name=cfg.dataset, data_root=cfg.data_root, download=cfg.download,
                      train_size=cfg.train_size)


def _data(cfg: EnvConfig, dev: torch.device) -> DataSplit:
    """The dataset on ``dev``; a table that records its input shape and classes answers without
    the dataset on disk."""
    data = (table_data(dict(cfg.evaluator_kwargs or {}).get("path"))
            if isinstance(cfg.evaluator, str) and cfg.evaluator == "table" else None)
    return data if data is not None else load_data(_data_config(cfg), device=dev)


def _evaluator(cfg: EnvConfig, data: DataSplit, config: TrainConfig, dev: torch.device,
               threads: int) -> Any:
    """The evaluator: a registered one built here (wrapped for a remote backend), or the user's."""
    evaluator, kwargs = cfg.evaluator, dict(cfg.evaluator_kwargs or {})
    if not isinstance(evaluator, str):
        if not callable(getattr(evaluator, "evaluate", None)):
            raise bad_value("evaluator", evaluator,
                            f"one of {EVALUATORS.names()} or an object with an evaluate() method")
        return evaluator
    factory = EVALUATORS.get(evaluator, "evaluator")
    if evaluator == "epnas" and isinstance(cfg.training, str) \
            and cfg.training in PREDICTION_PRESETS:  # no second scaling
        kwargs = {"derive": False, **kwargs}
    local = factory(data, config, time_limit=cfg.time_limit, **kwargs)
    remote = REMOTE_BACKENDS.get(cfg.evaluator_backend)
    if remote is None:
        if not getattr(local, "simulated_time", False):
            import_compiler_stack()  # a one-off ~2 s: here, not in the first episode
        return local
    # workers rebuild it near their own copy of the data
    spec = EvaluatorSpec(evaluator, _data_config(cfg), config, cfg.time_limit, kwargs)
    shared = {"fingerprint": local.fingerprint(), "max_retries": cfg.max_retries,
              "needs_model": getattr(local, "needs_model", True)}
    if remote is RayEvaluator:
        resources = cfg.ray_resources if cfg.ray_resources is not None else (
            {"num_cpus": 1, "num_gpus": 1} if dev.type == "cuda" else None)
        return RayEvaluator(spec, address=cfg.ray_address, resources=resources, **shared)
    # a worker process of this machine, on this env's device
    return ProcessEvaluator(spec, device=str(dev), **shared,
                            threads=cfg.worker_threads or threads)
