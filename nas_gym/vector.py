"""Several copies of a nas_gym env, all sharing one evaluation store file (SPEC §5, "Parallel
evaluation: vector envs on one machine").

- ``make_vector_env("CellNAS-v0", 4, store="runs/evals.sqlite", epochs=1)`` gives a Gymnasium
  ``AsyncVectorEnv`` (each copy steps, and trains its children, in its own process);
  :func:`make_env_fns` gives the picklable per-copy factories SB3's ``SubprocVecEnv`` takes.
- ``make_env_copies("CellNAS-v0", 4, store=...)`` gives a list of copies in this process for the
  agents that evaluate a batch concurrently (``agent.learn(copies, ...)``, see :mod:`nas_gym.agents.base`):
  each copy trains its children in its own worker process (``evaluator_backend="process"``, the
  default here; a worker that dies is replaced and the evaluation retried) or in Ray tasks
  (``evaluator_backend="ray"``).

On a machine with several GPUs copy ``i`` uses ``devices[i % k]`` (all visible GPUs by default),
and every copy caps its torch threads so copies do not oversubscribe the cores.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import torch

from .errors import bad_value
from .processes import default_threads, in_forked_child

VECTOR_BACKENDS = ("async", "sync")

__all__ = ["VECTOR_BACKENDS", "copy_devices", "make_env_copies", "make_env_fns", "make_vector_env"]


def copy_devices(n: int, devices: Sequence[str] | str | None = None) -> list[str | None]:
    """The device of each of ``n`` copies: round-robin over ``devices``; by default over the visible
    GPUs (``cuda:0`` ... ``cuda:k-1``), or None for every copy (the env's own ``device``) without."""
    if isinstance(devices, str):
        devices = [devices]
    if devices is None:
        k = torch.cuda.device_count() if torch.cuda.is_available() else 0
        devices = [f"cuda:{i}" for i in range(k)]
        if not devices:
            return [None] * n
    devices = list(devices)
    if not devices or not all(isinstance(d, str) and d for d in devices):
        raise bad_value("devices", devices, "None or a non-empty list of device strings")
    return [devices[i % len(devices)] for i in range(n)]


def _make_copy(env_id: str, index: int, device: str | None, threads: int, explicit: bool,
               kwargs: dict[str, Any]) -> gym.Env:
    """Build copy ``index`` (runs in the copy's own process for the async / SubprocVecEnv case)."""
    import nas_gym  # noqa: F401  (registers the env ids in a spawned process)

    if not explicit and in_forked_child():
        threads = 1  # a forked copy runs on one thread (see nas_gym.processes); spawn may use more
    kwargs = {**kwargs, "torch_threads": threads}
    if device is not None:
        kwargs["device"] = device
    return gym.make(env_id, **kwargs)


def make_env_fns(env_id: str, n: int, *, devices: Sequence[str] | str | None = None,
                 torch_threads: int | None = None, **kwargs: Any) -> list[Callable[[], gym.Env]]:
    """``n`` picklable env factories (``functools.partial``) for ``AsyncVectorEnv`` / SB3's
    ``SubprocVecEnv``. ``torch_threads`` (default: the cores divided among the ``n`` copies; 1 in
    a copy started by ``fork``) is each copy's env argument.
    The ``store`` must be a file (``":memory:"`` cannot be shared between processes)."""
    explicit = torch_threads is not None
    devs, torch_threads = _plan_copies(n, devices, torch_threads, kwargs)
    return [functools.partial(_make_copy, env_id, i, devs[i], torch_threads, explicit,
                              dict(kwargs)) for i in range(n)]


def _plan_copies(n: int, devices: Sequence[str] | str | None, torch_threads: int | None,
                 kwargs: dict[str, Any]) -> tuple[list[str | None], int]:
    """Validate the copy arguments; the device of each copy and the torch threads per copy."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise bad_value("n", n, "an integer >= 1")
    if kwargs.get("store") == ":memory:" and n > 1:
        raise bad_value("store", ":memory:", "a file path shared by the copies")
    if "device" in kwargs and devices is not None:
        raise bad_value("devices", devices, "None when device= is given (one device for all)")
    if torch_threads is None:
        torch_threads = default_threads(n)
    elif isinstance(torch_threads, bool) or not isinstance(torch_threads, int) or torch_threads < 1:
        raise bad_value("torch_threads", torch_threads, "None or an integer >= 1")
    return ([None] * n if "device" in kwargs else copy_devices(n, devices)), torch_threads


def make_vector_env(env_id: str, n: int, *, backend: str = "async",
                    devices: Sequence[str] | str | None = None, torch_threads: int | None = None,
                    context: str | None = None, **kwargs: Any) -> gym.vector.VectorEnv:
    """``n`` copies of ``env_id`` as a Gymnasium vector env.

    :param backend: ``"async"`` (one process per copy: children train in parallel) or ``"sync"``
        (one process; for debugging).
    :param devices: per-copy devices, round-robin (default: the visible GPUs; see
        :func:`copy_devices`).
    :param torch_threads: torch threads per copy (default: the cores divided among the copies; 1
        with the ``fork`` start method, see :mod:`nas_gym.processes`).
    :param context: multiprocessing start method of the async copies (default: the platform's).
        With ``evaluator_backend="process"`` (a copy survives the crash of its child's training:
        the worker is replaced and the evaluation retried) the copies are not daemonic, so that
        they may start their workers.
    :param kwargs: the env's own arguments (``store`` should be a file every copy opens).
    """
    if backend not in VECTOR_BACKENDS:
        raise bad_value("backend", backend, VECTOR_BACKENDS)
    fns = make_env_fns(env_id, n, devices=devices, torch_threads=torch_threads, **kwargs)
    if backend == "sync":
        return gym.vector.SyncVectorEnv(fns)
    # a copy whose children train in worker processes must be allowed children of its own
    daemon = kwargs.get("evaluator_backend") != "process"
    return gym.vector.AsyncVectorEnv(fns, context=context, daemon=daemon)


def make_env_copies(env_id: str, n: int, *, devices: Sequence[str] | str | None = None,
                    torch_threads: int | None = None, **kwargs: Any) -> list[gym.Env]:
    """``n`` copies of ``env_id`` in this process, for ``agent.learn(copies, ...)``.

    :param devices: per-copy devices, round-robin (default: the visible GPUs; see
        :func:`copy_devices`).
    :param torch_threads: torch threads of each copy (default: the cores divided among them).
    :param kwargs: the env's own arguments; ``evaluator_backend`` defaults to ``"process"`` (one
        worker process per copy) - ``"ray"`` sends the children to Ray, ``"local"`` trains them
        in the agent's threads. ``store`` (default: the default store file) must not be
        ``":memory:"`` when ``n > 1``: the copies share it.
    """
    devs, torch_threads = _plan_copies(n, devices, torch_threads, kwargs)
    kwargs.setdefault("evaluator_backend", "process")
    if kwargs["evaluator_backend"] == "process":
        kwargs.setdefault("worker_threads", torch_threads)
    kwargs["torch_threads"] = torch_threads
    copies: list[gym.Env] = []
    try:
        for i in range(n):
            copies.append(gym.make(env_id, **kwargs, **({} if devs[i] is None
                                                        else {"device": devs[i]})))
    except BaseException:
        for env in copies:
            env.close()
        raise
    return copies
