"""``nas-gym table build``: train every architecture of a small space with several seeds and export
the benchmark table (``nas_gym.table``) that ``evaluator="table"`` answers from.

Every evaluation goes through the env's own pipeline and the evaluation store (``--store``), so a
build killed at any point resumes without retraining a finished (architecture, seed): the store
commits each result before the next starts, and a restarted build skips every key it holds.
Workers are processes (``--workers``, default: the CPU count), each with its own env; both seeds
of an architecture go to the same worker so its costs are measured once.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
from tqdm import tqdm

import nas_gym  # noqa: F401  (registers the env ids)
from nas_gym.arch.base import architecture_from_dict
from nas_gym.table import enumerate_architectures, write_table

#: The default digits space: MacroNAS-v0 with the seed-001 choice sets (filters {4, 8, 16, 32},
#: kernels {1, 3, 5, 7}, strides {1, 2, 4}) and 1-2 layers = 2,096 architectures; one epoch on
#: the full digits training split (about 0.2 s per child on one CPU core).
DEFAULT_ENV_KWARGS: dict[str, Any] = {"max_layers": 2, "dataset": "digits", "epochs": 1}


@dataclass
class BuildConfig:
    env: str = "MacroNAS-v0"
    """Env id whose space is enumerated."""
    env_kwargs: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_ENV_KWARGS))
    """``gym.make`` kwargs: the space plus data and training (saved in the table's metadata)."""
    seeds: tuple[int, ...] = (0, 1)
    """Training seeds per architecture."""
    out: str = "macro_digits.sqlite"
    """The exported table file (default: in the current folder, never inside the installed
    package; the committed table is ``nas_gym/tables/macro_digits.sqlite``)."""
    store: str | None = None
    """Evaluation store (resume point); default ``<out>.store.sqlite``."""
    workers: int = 0
    """Processes (0: ``os.cpu_count()``)."""
    limit: int | None = None
    """Evaluate only the first ``limit`` architectures (a partial table; for tests)."""
    progress: bool = True
    """Show a tqdm progress bar."""


_ENV: Any = None  # the worker's env (one per process)


def _env_kwargs(cfg: BuildConfig, store: str) -> dict[str, Any]:
    return {**cfg.env_kwargs, "store": store, "device": "cpu", "evaluator": "train",
            "evaluator_kwargs": {"report_test": True}, "penalty": "none", "budget": None,
            "measure_latency": True}  # a table records every cost column


def _init_worker(env_id: str, kwargs: dict[str, Any]) -> None:
    global _ENV
    import torch

    torch.set_num_threads(1)
    _ENV = gym.make(env_id, **kwargs).unwrapped


def _evaluate(task: tuple[dict[str, Any], tuple[int, ...]]) -> int:
    arch_dict, seeds = task
    arch = architecture_from_dict(arch_dict)
    for seed in seeds:
        _ENV.components.pipeline.evaluate(arch, seed=seed)
    return len(seeds)


def _run_pool(todo: list, workers: int, env_id: str, kwargs: dict[str, Any], bar: tqdm) -> None:
    """Evaluate ``todo`` on ``workers`` processes; a crashed worker loses only its task in
    flight: the pool is restarted on what the store does not hold yet (at most 3 times)."""
    ctx = mp.get_context("spawn")  # a fresh interpreter per worker: no forked torch state
    for attempt in range(4):
        done: set[int] = set()
        try:
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                     initargs=(env_id, kwargs)) as pool:
                futures = {pool.submit(_evaluate, t): i for i, t in enumerate(todo)}
                for fut in as_completed(futures):
                    bar.update(fut.result())
                    done.add(futures[fut])
            return
        except BrokenProcessPool:
            todo = [t for i, t in enumerate(todo) if i not in done]
            if attempt == 3:
                raise
            bar.write(f"a worker died; restarting the pool on {len(todo)} architectures")


def build_table(cfg: BuildConfig) -> dict[str, Any]:
    """Build (or resume) the table of ``cfg``; returns a summary (sizes, seconds, path)."""
    start = time.perf_counter()
    store = cfg.store or f"{cfg.out}.store.sqlite"
    Path(store).parent.mkdir(parents=True, exist_ok=True)
    kwargs = _env_kwargs(cfg, store)
    env = gym.make(cfg.env, **kwargs).unwrapped
    archs = enumerate_architectures(env)
    space_size = len(archs)
    if cfg.limit is not None:
        archs = archs[: cfg.limit]
    pipeline, the_store = env.components.pipeline, env.components.store
    keys = {(a.sha256, s): pipeline.key(a, s) for a in archs for s in cfg.seeds}
    todo = [(a.to_dict(), tuple(s for s in cfg.seeds if keys[a.sha256, s] not in the_store))
            for a in archs]
    todo = [t for t in todo if t[1]]
    skipped = len(keys) - sum(len(t[1]) for t in todo)
    workers = cfg.workers or os.cpu_count() or 1
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per worker: no oversubscription
    bar = tqdm(total=len(keys), initial=skipped, desc="table build", unit="eval",
               disable=not cfg.progress)
    if todo and workers == 1:
        _init_worker(cfg.env, kwargs)
        for task in todo:
            bar.update(_evaluate(task))
    elif todo:
        _run_pool(todo, workers, cfg.env, kwargs, bar)
    bar.close()
    build_seconds = time.perf_counter() - start
    rows = []
    for a in archs:
        for s in cfg.seeds:
            rec = the_store.get(keys[a.sha256, s])
            costs = rec.get("costs", {})
            rows.append({"sha256": a.sha256, "seed": s, **costs, "status": rec["status"],
                         "accuracy": rec["accuracy"], "val_loss": rec.get("val_loss"),
                         "test_accuracy": (rec.get("extra") or {}).get("test_accuracy"),
                         "train_seconds": rec.get("train_seconds"), "epochs": rec.get("epochs")})
    meta = {"env_id": cfg.env, "env_kwargs": cfg.env_kwargs, "seeds": list(cfg.seeds),
            "fingerprint": pipeline.fingerprint, "num_architectures": len(archs),
            "space_size": space_size, "build_seconds_this_run": build_seconds,
            "train_seconds_total": sum(r["train_seconds"] or 0.0 for r in rows)}
    path = write_table(cfg.out, meta, archs, rows)
    env.close()
    return {"path": str(path), "architectures": len(archs), "space_size": space_size,
            "evaluations": len(rows), "reused": skipped, "seconds": build_seconds,
            "size_bytes": path.stat().st_size}


def add_table_command(sub: argparse._SubParsersAction) -> None:
    """``nas-gym table build ...`` (registered in ``nas_gym.experiments.cli.COMMANDS``)."""
    p = sub.add_parser("table", help="benchmark tables (evaluator='table')")
    actions = p.add_subparsers(dest="table_action", required=True)
    b = actions.add_parser("build", help="train every architecture of a small space, export a table")
    d = BuildConfig()
    b.add_argument("--env", default=d.env, help="env id (default %(default)s)")
    b.add_argument("--env-kwargs", default=json.dumps(d.env_kwargs),
                   help="JSON gym.make kwargs: the space, data and training (default %(default)s)")
    b.add_argument("--seeds", type=int, default=len(d.seeds), help="seeds 0..N-1 (default 2)")
    b.add_argument("--out", default=d.out,
                   help="table file (default: %(default)s in the current folder)")
    b.add_argument("--store", default=None, help="evaluation store (default <out>.store.sqlite)")
    b.add_argument("--workers", type=int, default=0, help="processes (default: CPU count)")
    b.add_argument("--limit", type=int, default=None, help="only the first N architectures")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(func=_run_build)


def _run_build(args: argparse.Namespace) -> int:
    cfg = BuildConfig(env=args.env, env_kwargs=json.loads(args.env_kwargs),
                      seeds=tuple(range(args.seeds)), out=args.out, store=args.store,
                      workers=args.workers, limit=args.limit, progress=not args.no_progress)
    summary = build_table(cfg)
    print(json.dumps({"config": asdict(cfg), **summary}, indent=2))
    return 0
