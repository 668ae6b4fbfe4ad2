"""What every env builds from its common keyword arguments (SPEC §0), in one place: data,
training config, evaluator, store, reward and the evaluation pipeline. All validation happens here,
at construction (``gym.make`` time), never deep inside training."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import multiprocessing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .. import evaluators_epnas, evaluators_shared  # noqa: F401  (register "epnas", "shared")
from ..data import DataConfig, DataSplit, load_data
from ..device import resolve_device
from ..errors import bad_value
from ..evaluation import EvaluationPipeline
from ..evaluators import EVALUATORS
from ..evaluators_table import load_table, table_data
from ..parallel import (
    EvaluatorSpec,
    ProcessEvaluator,
    RayEvaluator,
    check_backend_kwargs,
    ensure_ray,
)
from ..processes import check_threads, in_worker_process, watch_parent
from ..rewards import PENALTIES, Reward, parse_budget
from ..store import EvaluationStore, open_store
from ..table import default_table
from ..training import PRESETS, TrainConfig, get_preset, import_compiler_stack

INVALID_ACTION_MODES = ("remap", "raise")
PENALTY_KWARGS = ("alpha", "beta", "p", "weights", "references")
STATEFUL_EVALUATORS = ("shared", "epnas")  # hold weights across children: one process only


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


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise bad_value(name, value, "an integer >= 1")
    return value


def build_components(
    *,
    budget: Any = None,
    penalty: str | None = None,
    penalty_kwargs: Mapping[str, Any] | None = None,
    accuracy_transform: str = "identity",
    default_metric: str = "params",
    default_penalty: str = "benas",
    dataset: str = "digits",
    data_root: str | None = None,
    download: bool = False,
    train_size: int | None = None,
    training: str | TrainConfig = "digits",
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    device: str = "auto",
    evaluator: Any = "train",
    evaluator_kwargs: Mapping[str, Any] | None = None,
    store: Any = None,
    seed: int = 0,
    reject_infeasible: bool = False,
    measure_latency: bool | str = "auto",
    time_limit: float | None = None,
    evaluator_backend: str = "local",
    ray_address: str | None = None,
    ray_resources: Mapping[str, Any] | None = None,
    max_retries: int = 2,
    worker_threads: int | None = None,
    torch_threads: int | None = None,
) -> Components:
    """Validate the common env arguments and build the shared pieces (see each env's docstring)."""
    threads = check_threads(torch_threads)
    if in_worker_process():  # a vector env's copy: exit with the process that started it
        watch_parent()
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise bad_value("seed", seed, "an integer >= 0")
    check_backend_kwargs(evaluator_backend, ray_address, ray_resources, max_retries)
    if worker_threads is not None and (isinstance(worker_threads, bool)
                                       or not isinstance(worker_threads, int) or worker_threads < 1):
        raise bad_value("worker_threads", worker_threads, "None or an integer >= 1")
    if evaluator_backend == "process" and multiprocessing.current_process().daemon:
        raise bad_value("evaluator_backend", evaluator_backend,
                        "'local' in a daemonic process (SB3's SubprocVecEnv; each copy is already "
                        "a process), or make the vector env with daemon=False "
                        "(nas_gym.vector.make_vector_env does)")
    if worker_threads is not None and evaluator_backend != "process":
        raise bad_value("evaluator_backend", evaluator_backend,
                        "'process' when worker_threads is given")
    remote = {"ray": RayEvaluator, "process": ProcessEvaluator}.get(evaluator_backend)
    if remote is not None and not (
            isinstance(evaluator, remote)
            or (isinstance(evaluator, str) and evaluator not in STATEFUL_EVALUATORS)):
        raise bad_value("evaluator", evaluator, f"with evaluator_backend={evaluator_backend!r}: "
                        f"a {remote.__name__} or a registered name other than "
                        f"{STATEFUL_EVALUATORS}")
    constraints = parse_budget(budget, default_metric)
    if penalty is None:
        penalty = default_penalty if constraints or default_penalty == "linear" else "none"
    if penalty not in PENALTIES:
        raise bad_value("penalty", penalty, PENALTIES)
    kwargs = dict(penalty_kwargs or {})
    for k in kwargs:
        if k not in PENALTY_KWARGS:
            raise bad_value("penalty_kwargs key", k, PENALTY_KWARGS)
    reward = Reward(penalty=penalty, constraints=constraints,
                    accuracy_transform=accuracy_transform, **kwargs)
    if not (isinstance(measure_latency, bool) or measure_latency == "auto"):
        raise bad_value("measure_latency", measure_latency, "'auto', True or False")
    if measure_latency is False and "latency_ms" in reward.metrics:
        raise bad_value("measure_latency", measure_latency,
                        "True or 'auto' when the budget or penalty uses latency_ms")
    if measure_latency == "auto":  # measured only when the penalty or the budget reads it
        measure_latency = "latency_ms" in reward.metrics or any(
            c.metric == "latency_ms" for c in reward.constraints)

    dev = resolve_device(device)
    data_config = DataConfig(name=dataset, data_root=data_root, download=download,
                             train_size=train_size)
    # a table that records its input shape and classes answers without the dataset on disk
    data = (table_data(dict(evaluator_kwargs or {}).get("path"))
            if isinstance(evaluator, str) and evaluator == "table" else None)
    data = data if data is not None else load_data(data_config, device=dev)

    if isinstance(training, TrainConfig):
        config = training.validate()
    elif isinstance(training, str):
        config = get_preset(training)
    else:
        raise bad_value("training", training, f"a TrainConfig or one of {sorted(PRESETS)}")
    changes = {}
    if epochs is not None:
        changes["epochs"] = _positive_int("epochs", epochs)
    if batch_size is not None:
        changes["batch_size"] = _positive_int("batch_size", batch_size)
    if lr is not None:
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            raise bad_value("lr", lr, "a finite number > 0")
        changes["lr"] = float(lr)
    config = dataclasses.replace(config, **changes).validate() if changes else config
    if time_limit is not None and not (isinstance(time_limit, (int, float)) and time_limit > 0):
        raise bad_value("time_limit", time_limit, "seconds > 0 or None")

    if isinstance(evaluator, str):
        factory = EVALUATORS.get(evaluator, "evaluator")
        name = evaluator
        if evaluator == "epnas" and isinstance(training, str) \
                and training in evaluators_epnas.PREDICTION_PRESETS:  # no second scaling
            evaluator_kwargs = {"derive": False, **dict(evaluator_kwargs or {})}
        local = factory(data, config, time_limit=time_limit, **dict(evaluator_kwargs or {}))
        evaluator = local
        if remote is None and not getattr(local, "simulated_time", False):
            import_compiler_stack()  # a one-off ~2 s: here, not in the first episode
        if remote is not None:  # workers rebuild it near their own copy of the data
            spec = EvaluatorSpec(name, data_config, config, time_limit,
                                 dict(evaluator_kwargs or {}))
            shared = {"fingerprint": local.fingerprint(), "max_retries": max_retries,
                      "needs_model": getattr(local, "needs_model", True)}
            if remote is RayEvaluator:
                resources = ray_resources if ray_resources is not None else (
                    {"num_cpus": 1, "num_gpus": 1} if dev.type == "cuda" else None)
                evaluator = RayEvaluator(spec, address=ray_address, resources=resources, **shared)
            else:  # a worker process of this machine, on this env's device
                evaluator = ProcessEvaluator(spec, device=str(dev), **shared,
                                             threads=worker_threads or threads)
    elif not callable(getattr(evaluator, "evaluate", None)):
        raise bad_value("evaluator", evaluator,
                        f"one of {EVALUATORS.names()} or an object with an evaluate() method")
    if isinstance(evaluator, RayEvaluator):  # connect (or start a local instance) now, here
        ensure_ray(evaluator.address)
    the_store = open_store(store)
    pipeline = EvaluationPipeline(evaluator, the_store, reward, data.input_shape, data.num_classes,
                                  device=dev, reject_infeasible=bool(reject_infeasible),
                                  measure_latency=measure_latency, threads=threads)
    return Components(data, config, evaluator, the_store, reward, pipeline, dev, seed, threads)


