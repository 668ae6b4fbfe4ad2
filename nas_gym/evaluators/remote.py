"""Evaluator backends: where a child network is trained (SPEC §5, "Parallel evaluation").

- ``"local"``: in the env's own process (the default; a vector env gives one process per copy).
- ``"process"``: every evaluation runs in a worker process of this machine (a persistent spawned
  worker per env, started at the first evaluation), so a crash in training (segfault, kill, OOM
  kill) cannot take the env or the search down. Several env copies driven by one agent
  (:func:`nas_gym.vector.make_env_copies`) train their children in parallel, one worker each.
- ``"ray"``: every evaluation is a Ray task with its own CPU / GPU request.

In both, the worker loads the dataset itself from the :class:`~nas_gym.data.DataConfig` (cached
per worker process), so no tensors travel; the result comes back to the driver, whose pipeline
writes the evaluation store, so the store file never needs to be reachable from the workers.

Faults: an evaluation whose worker dies (killed, segfault, node lost) is retried ``max_retries``
times (by Ray itself, or here with a fresh worker process); when it still dies the evaluation is
recorded with ``status="failed"`` and accuracy 0 (so the reward is defined and the search goes
on); one that runs past ``task_timeout`` is cancelled and recorded as ``"timeout"``. An exception
raised by the evaluator's own code is a bug, not a fault: it is raised in the driver, as with the
local backend.

Ray is an optional extra (``pip install nas_gym[ray]``) imported only here, only when used.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import threading
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..arch.base import Architecture
from ..data import DataConfig, load_data
from ..errors import ConfigError, bad_value
from ..processes import watch_parent
from ..training import TrainConfig
from .base import EVALUATORS, EvalResult

BACKENDS = ("local", "process", "ray")
RESOURCE_KEYS = ("num_cpus", "num_gpus", "memory", "resources", "accelerator_type")

__all__ = ["BACKENDS", "EvaluatorSpec", "ProcessEvaluator", "RayEvaluator", "check_backend_kwargs",
           "ensure_ray", "worker_name"]


def worker_name() -> str:
    """``host:pid``: who evaluates (the store's in-flight rows)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:  # pragma: no cover - exercised only without the extra
        raise ConfigError("evaluator_backend='ray' needs Ray: pip install 'nas_gym[ray]'") from None
    return ray


_INIT_LOCK = threading.Lock()


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None) -> Any:
    """The ``ray`` module, connected: to ``address`` when given (``"auto"``, ``"ray://host:10001"``
    ...), else to the running instance of this process, else to a fresh local instance."""
    ray = _import_ray()
    with _INIT_LOCK:
        if not ray.is_initialized():
            if threading.current_thread() is not threading.main_thread():
                # Ray's processes die with the thread that started them (Linux PDEATHSIG)
                raise ConfigError("Ray must be started from the main thread: make the env "
                                  "(evaluator_backend='ray' connects at gym.make) or call "
                                  "nas_gym.evaluators.remote.ensure_ray() before starting threads")
            if address is not None:
                ray.init(address=address, ignore_reinit_error=True)
            else:
                ray.init(num_cpus=num_cpus, include_dashboard=False, ignore_reinit_error=True)
    return ray


@dataclass(frozen=True)
class EvaluatorSpec:
    """What a worker needs to rebuild an evaluator near its own data.

    :param factory: a registered evaluator name (``EVALUATORS``) or a picklable callable
        ``(data, config, *, time_limit, **kwargs) -> evaluator``.
    """

    factory: str | Callable[..., Any]
    data_config: DataConfig
    train_config: TrainConfig
    time_limit: float | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def build(self, device: str | torch.device) -> Any:
        data = load_data(self.data_config, device=device)  # cached per process and device
        make = EVALUATORS.get(self.factory, "evaluator") if isinstance(self.factory, str) \
            else self.factory
        return make(data, self.train_config, time_limit=self.time_limit, **dict(self.kwargs))


# -- worker side ---------------------------------------------------------------------------------
_WORKER_EVALUATORS: dict[tuple[str, str], Any] = {}


def _run_task(spec: EvaluatorSpec, spec_id: str, arch: Architecture, seed: int,
              model: nn.Module | None, return_model: bool, threads: int) -> EvalResult:
    """Body of the Ray task: run the evaluator on this worker's device (a GPU when Ray gave one)."""
    import ray

    device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
    return _evaluate_here(spec, spec_id, arch, seed, model, return_model, threads, device)


def _evaluate_here(spec: EvaluatorSpec, spec_id: str, arch: Architecture, seed: int,
                   model: nn.Module | None, return_model: bool, threads: int,
                   device: str) -> EvalResult:
    """Build the evaluator (once per worker process and device) and evaluate ``arch``."""
    torch.set_num_threads(max(1, threads))
    key = (spec_id, device)
    if key not in _WORKER_EVALUATORS:
        _WORKER_EVALUATORS.clear()  # one search's evaluator per worker: bounded memory
        _WORKER_EVALUATORS[key] = spec.build(device)
    evaluator = _WORKER_EVALUATORS[key]
    if model is not None:
        model = model.to(device)
    result = EvalResult.coerce(evaluator.evaluate(arch, seed=seed, model=model))
    result.extra.setdefault("worker", worker_name())  # provenance, kept in the store
    # Trained weights go back only when the env keeps them (Net2Net lineage), and on the CPU.
    result.model = result.model.cpu() if return_model and result.model is not None else None
    return result


# -- driver side ---------------------------------------------------------------------------------
class _RemoteEvaluator:
    """What the remote evaluators share: the spec workers build from, the wrapped evaluator's
    fingerprint (so store keys do not depend on the backend), bounded retries and a timeout."""

    def __init__(self, spec: EvaluatorSpec, fingerprint: Mapping[str, Any] | None,
                 needs_model: bool, max_retries: int, task_timeout: float | None) -> None:
        self.spec = spec
        self._fingerprint = dict(fingerprint) if fingerprint is not None else None
        self.needs_model = bool(needs_model)
        self.max_retries = check_retries(max_retries)
        if task_timeout is not None and not (isinstance(task_timeout, (int, float))
                                             and task_timeout > 0):
            raise bad_value("task_timeout", task_timeout, "seconds > 0 or None")
        self.task_timeout = task_timeout
        self._uid = uuid.uuid4().hex  # names this spec in the workers' caches
        self.failures = 0  # evaluations recorded as "failed" by this driver

    def fingerprint(self) -> dict[str, Any]:
        if self._fingerprint is None:
            self._fingerprint = dict(self.spec.build("cpu").fingerprint())
        return dict(self._fingerprint)

    def _fault(self, status: str, message: str) -> EvalResult:
        """The defined result of an evaluation lost to a fault (the reward stays finite)."""
        if status != "timeout":
            self.failures += 1
        return EvalResult(accuracy=0.0, status=status, message=message[:500])


class RayEvaluator(_RemoteEvaluator):
    """An evaluator whose ``evaluate`` runs the wrapped evaluator in a Ray task.

    Its :meth:`fingerprint` is the wrapped evaluator's, so the store keys of a search do not depend
    on the backend (a search started locally resumes on a cluster and back).

    :param spec: how workers build the evaluator.
    :param fingerprint: the wrapped evaluator's fingerprint (computed by the driver).
    :param needs_model: the wrapped evaluator's ``needs_model``; the module the env hands over (a
        transform env's inherited weights) is shipped to the worker, and the trained module comes
        back.
    :param address: the Ray cluster (None: this process's instance, else a fresh local one).
    :param resources: Ray task options, e.g. ``{"num_cpus": 1, "num_gpus": 1}``.
    :param max_retries: retries of a task whose worker died, before ``status="failed"``.
    :param task_timeout: seconds to wait for one task (None: no limit) before ``"timeout"``.
    """

    def __init__(self, spec: EvaluatorSpec, *, fingerprint: Mapping[str, Any] | None = None,
                 needs_model: bool = True, address: str | None = None,
                 resources: Mapping[str, Any] | None = None, max_retries: int = 2,
                 task_timeout: float | None = None) -> None:
        super().__init__(spec, fingerprint, needs_model, max_retries, task_timeout)
        self.address = address
        self.resources = check_resources(resources)
        self._spec_ref: Any = None
        self._fn: Any = None

    def submit(self, arch: Architecture, *, seed: int, model: nn.Module | None = None) -> Any:
        """Start one evaluation; returns the Ray object ref (see :meth:`result`)."""
        ray = ensure_ray(self.address)
        if self._spec_ref is None:  # once per evaluator (a Ray session of its own), not per task
            self._spec_ref, self._fn = ray.put(self.spec), ray.remote(_run_task)
        if model is not None and self.needs_model:
            model = model.cpu()
        else:
            model = None
        options = {"max_retries": self.max_retries, **self.resources}
        threads = int(max(1, options.get("num_cpus", 1) or 1))
        return self._fn.options(**options).remote(
            self._spec_ref, self._uid, arch, int(seed), model, self.needs_model, threads)

    def result(self, ref: Any) -> EvalResult:
        """Wait for a submitted evaluation; dead workers and hangs become defined results."""
        ray = ensure_ray(self.address)
        from ray import exceptions as rex

        try:
            return ray.get(ref, timeout=self.task_timeout)
        except rex.GetTimeoutError:
            ray.cancel(ref, force=True)
            return self._fault("timeout", f"the Ray task ran past task_timeout="
                                          f"{self.task_timeout} s and was cancelled")
        except rex.RayTaskError as exc:
            cause = exc.as_instanceof_cause()
            if isinstance(exc.cause, rex.RayError) or isinstance(exc.cause, MemoryError):
                return self._failed(exc)
            raise cause from None  # the evaluator's own bug: raised as with the local backend
        except (rex.WorkerCrashedError, rex.NodeDiedError, rex.ObjectLostError,
                rex.OutOfMemoryError, rex.TaskCancelledError, rex.RayError) as exc:
            return self._failed(exc)

    def _failed(self, exc: BaseException) -> EvalResult:
        text = str(exc).strip().splitlines()
        return self._fault("oom" if "OutOfMemory" in type(exc).__name__ else "failed",
                           f"{type(exc).__name__} after {self.max_retries} retries: "
                           f"{text[0] if text else ''}")

    def evaluate(self, architecture: Architecture, *, seed: int,
                 model: nn.Module | None = None) -> EvalResult:
        return self.result(self.submit(architecture, seed=seed, model=model))

    def __repr__(self) -> str:
        return (f"RayEvaluator({self.spec.factory!r}, resources={self.resources}, "
                f"max_retries={self.max_retries})")


class ProcessEvaluator(_RemoteEvaluator):
    """An evaluator whose ``evaluate`` runs the wrapped evaluator in a worker process of this
    machine (``evaluator_backend="process"``).

    The worker is spawned at the first evaluation and kept (it loads torch and the data once).
    A worker that dies mid-evaluation is replaced by a fresh one and the evaluation retried, up to
    ``max_retries`` times, then recorded as ``status="failed"``; past ``task_timeout`` the worker
    is killed and the evaluation recorded as ``"timeout"``. Thread-safe: the env copies of
    :func:`nas_gym.vector.make_env_copies` each own one, and an agent steps them from threads.

    :param spec: how the worker builds the evaluator.
    :param fingerprint: the wrapped evaluator's fingerprint (store keys do not depend on backend).
    :param needs_model: the wrapped evaluator's ``needs_model`` (the env's module is shipped).
    :param device: the worker's device (``"cpu"``, ``"cuda:1"``, ...).
    :param threads: torch threads of the worker (default 1).
    :param max_retries: fresh workers tried after a dead one, before ``status="failed"``.
    :param task_timeout: seconds to wait for one evaluation (None: no limit).
    :param context: multiprocessing start method (``"spawn"``: safe with threads and CUDA).
    """

    def __init__(self, spec: EvaluatorSpec, *, fingerprint: Mapping[str, Any] | None = None,
                 needs_model: bool = True, device: str | torch.device = "cpu", threads: int = 1,
                 max_retries: int = 2, task_timeout: float | None = None,
                 context: str = "spawn") -> None:
        super().__init__(spec, fingerprint, needs_model, max_retries, task_timeout)
        self.device = str(device)
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise bad_value("threads", threads, "an integer >= 1")
        self.threads = threads
        if context not in multiprocessing.get_all_start_methods():
            raise bad_value("context", context, multiprocessing.get_all_start_methods())
        self.context = context
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:  # picklable into a vector env copy: no live pool
        state = dict(self.__dict__)
        state["_pool"], state["_lock"] = None, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _get_pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    1, mp_context=multiprocessing.get_context(self.context),
                    initializer=watch_parent)
            return self._pool

    def _drop_pool(self, pool: ProcessPoolExecutor, *, kill: bool = False) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        if kill:  # a hung worker: shutdown() alone would wait for it
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    def evaluate(self, architecture: Architecture, *, seed: int,
                 model: nn.Module | None = None) -> EvalResult:
        model = model.cpu() if model is not None and self.needs_model else None
        args = (_evaluate_here, self.spec, self._uid, architecture, int(seed), model,
                self.needs_model, self.threads, self.device)
        attempt = 0
        while True:
            pool = self._get_pool()
            future = pool.submit(*args)
            try:
                return future.result(timeout=self.task_timeout)
            except FutureTimeout:
                self._drop_pool(pool, kill=True)
                return self._fault("timeout", f"the worker ran past task_timeout="
                                              f"{self.task_timeout} s and was killed")
            except BrokenProcessPool as exc:  # the worker died: a fresh one, or "failed"
                self._drop_pool(pool)
                if attempt >= self.max_retries:
                    return self._fault("failed", f"the worker process died {attempt + 1} times "
                                                 f"({attempt} retries): {exc}")
                attempt += 1

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __del__(self) -> None:  # pragma: no cover - interpreter-dependent timing
        pool = self.__dict__.get("_pool")
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def __repr__(self) -> str:
        return (f"ProcessEvaluator({self.spec.factory!r}, device={self.device!r}, "
                f"max_retries={self.max_retries})")


def check_resources(resources: Mapping[str, Any] | None) -> dict[str, Any]:
    if resources is None:
        return {"num_cpus": 1}
    if not isinstance(resources, Mapping):
        raise bad_value("ray_resources", resources, f"a dict with keys from {RESOURCE_KEYS}")
    out = dict(resources)
    for k, v in out.items():
        if k not in RESOURCE_KEYS:
            raise bad_value("ray_resources key", k, RESOURCE_KEYS)
        if k in ("num_cpus", "num_gpus", "memory") and (
                isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
            raise bad_value(f"ray_resources[{k!r}]", v, "a number >= 0")
    out.setdefault("num_cpus", 1)
    return out


def check_retries(max_retries: Any) -> int:
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise bad_value("max_retries", max_retries, "an integer >= 0")
    return max_retries


def check_backend_kwargs(backend: Any, ray_address: Any, ray_resources: Any,
                         max_retries: Any) -> None:
    """Validation of the env's backend arguments at ``gym.make`` time."""
    if backend not in BACKENDS:
        raise bad_value("evaluator_backend", backend, BACKENDS)
    if ray_address is not None and not (isinstance(ray_address, str) and ray_address):
        raise bad_value("ray_address", ray_address, "None or a Ray address string")
    check_resources(ray_resources)
    check_retries(max_retries)
    if backend != "ray" and (ray_address is not None or ray_resources is not None):
        raise bad_value("evaluator_backend", backend,
                        "'ray' when ray_address or ray_resources is given")
