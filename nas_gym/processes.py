"""Processes and threads: what keeps an env safe inside a vector env's worker process.

- **fork and OpenMP.** torch's CPU kernels run on GNU OpenMP (libgomp), whose thread pool does not
  survive ``fork()``: a forked child that enters a parallel region waits forever at a barrier for
  threads that were never copied (the hang of ``gym.vector.AsyncVectorEnv`` with the Linux default
  start method, seen inside a convolution, also under ``FlopCounterMode``). torch's own DataLoader
  runs its forked workers on one thread for the same reason. Importing nas_gym registers an
  ``os.register_at_fork`` hook that sets one torch thread in every forked child, and an env made
  in a forked child refuses ``torch_threads > 1`` with an error that names the start method.
- **Threads.** ``torch_threads`` (an env argument) is applied around training and cost counting
  (:func:`use_threads`); its default is :func:`default_threads`.
- **Orphans.** A worker process (a vector env's copy, a ``"process"`` evaluator) exits when the
  process that started it is gone (:func:`watch_parent`), even when that parent was killed.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
from collections.abc import Iterator

import torch

from .errors import bad_value

__all__ = ["available_cores", "check_threads", "default_threads", "in_forked_child",
           "in_worker_process", "use_threads", "watch_parent"]

_STATE = {"forked": False, "watching": False}
_LOCK = threading.Lock()
_ACTIVE = {"depth": 0, "previous": 0}


def _after_fork_in_child() -> None:
    _STATE["forked"], _STATE["watching"] = True, False  # the watch thread was not copied
    _ACTIVE["depth"] = 0
    torch.set_num_threads(1)  # libgomp's pool is gone in this child: never enter a parallel region


os.register_at_fork(after_in_child=_after_fork_in_child)


def in_forked_child() -> bool:
    """Whether this process was made by ``fork()`` (the ``"fork"`` start method, SB3's
    ``start_method="fork"``, a ``forkserver``'s children after it imported nas_gym)."""
    return _STATE["forked"]


def in_worker_process() -> bool:
    """Whether this process is a ``multiprocessing`` child (any start method): a vector env copy."""
    return multiprocessing.parent_process() is not None


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def default_threads(copies: int = 1) -> int:
    """The cores this process may use divided among ``copies`` env copies, at most torch's current
    thread count (a cap set by the caller stays); 1 in a worker process (a vector env's copy cannot
    know how many siblings share the cores)."""
    if in_worker_process() or in_forked_child():
        return 1
    return max(1, min(torch.get_num_threads(), available_cores() // max(1, copies)))


def check_threads(value: object, name: str = "torch_threads") -> int:
    """``value`` (None = :func:`default_threads`) validated for this process."""
    if value is None:
        return default_threads()
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise bad_value(name, value, "None or an integer >= 1")
    if value > 1 and in_forked_child():
        raise bad_value(name, value,
                        "1 in a process started with the 'fork' start method (GNU OpenMP's thread "
                        "pool does not survive fork(): a convolution would wait forever); for more "
                        "threads per copy start the copies with the 'spawn' or 'forkserver' start "
                        "method (AsyncVectorEnv(context='spawn'), SubprocVecEnv(start_method="
                        "'forkserver'))")
    return value


@contextlib.contextmanager
def use_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads, then restore the previous count. Nested or
    concurrent blocks (env copies in threads of one process) keep the first block's count until
    the last one leaves: the count is one per process."""
    with _LOCK:
        if _ACTIVE["depth"] == 0:
            _ACTIVE["previous"] = torch.get_num_threads()
            if _ACTIVE["previous"] != n:
                torch.set_num_threads(n)
        _ACTIVE["depth"] += 1
    try:
        yield
    finally:
        with _LOCK:
            _ACTIVE["depth"] -= 1
            if _ACTIVE["depth"] == 0 and torch.get_num_threads() != _ACTIVE["previous"]:
                torch.set_num_threads(_ACTIVE["previous"])


def watch_parent(period: float = 0.5) -> None:
    """In a worker process: exit (status 1) as soon as the process that started it is gone, so a
    killed driver leaves no worker behind blocked on a pipe or in a training. Idempotent; a no-op
    outside a ``multiprocessing`` child."""
    parent = multiprocessing.parent_process()
    with _LOCK:
        if parent is None or _STATE["watching"]:
            return
        _STATE["watching"] = True
    ppid = os.getppid()

    def watch() -> None:
        # os.getppid() changes when the direct parent dies (fork, spawn); parent.is_alive() sees
        # the requesting process (forkserver: the server is the direct parent)
        while os.getppid() == ppid and parent.is_alive():
            threading.Event().wait(period)
        os._exit(1)

    threading.Thread(target=watch, name="nas-gym-parent-watch", daemon=True).start()
