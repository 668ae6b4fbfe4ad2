"""The main job: run an agent on an env, record every evaluation, plot, resume, retrain the best.

``run_search(SearchConfig(...))`` is what ``nas-gym search`` calls. Everything goes to ``out``:

- ``config.json``: the resolved configuration (and the env kwargs actually passed to ``gym.make``);
- ``evaluations.jsonl``: one line per episode (episode, reward, accuracy, costs, penalty, reward
  parts, status, cache hit, store key, architecture, actions) - validation accuracy only, never
  test accuracy;
- ``best.json``: the best episode (highest reward) and, after ``final_epochs``, the final report;
- ``best_so_far.png`` and ``accuracy_vs_<metric>.png`` (one per constrained cost, with the budget
  line and the Pareto front);
- ``store.sqlite``: the evaluation store (the env's ``store=``), ``agent_state.pt``: the agent's
  state after its last update (atomic writes);
- ``final/model.pt`` + ``final/model.json``: the best architecture retrained from scratch at full
  size, loadable with ``nas_gym.checkpoint.load_model("OUT/final/model.pt")``.

**Resume.** Started again with the same ``out``, a search reloads the agent state and continues
to the same episode total; the episodes run after the last saved update are replayed by the
restored agent (same generator state, same architectures) and answered by the store, so no
finished evaluation is trained twice. ``evaluations.jsonl`` is cut back to the saved episode count
first, so line ``i`` is always episode ``i``.

The configuration is :mod:`nas_gym.experiments.search_config`, the folder's files and their writers
:mod:`nas_gym.experiments.search_log`, the final retraining :mod:`nas_gym.experiments.final_model`.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

import nas_gym
from nas_gym.agents.base import Agent
from nas_gym.agents.env_api import check_discrete
from nas_gym.errors import ConfigError, bad_value
from nas_gym.vector import make_env_copies

from .final_model import retrain_final
from .live import TensorBoardLog
from .options import check_agent_env, make_agent_spec
from .plots import pareto_front, plot_search
from .search_config import IDENTITY, SearchConfig
from .search_log import (
    BEST,
    CONFIG,
    STATE,
    STORE,
    Checkpoint,
    EvaluationLog,
    LogSink,
    read_evaluations,
    truncate_evaluations,
    write_json,
)

__all__ = ["SearchConfig", "pareto_front", "plot_search", "read_evaluations", "run_search"]


def _remove_new(out: Path, before: set[Path] | None) -> None:
    """Remove what a failed start created in ``out`` (the folder itself when it was new)."""
    import shutil

    if before is None:
        shutil.rmtree(out, ignore_errors=True)
        return
    for path in set(out.iterdir()) - before:
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def _check_resume(out: Path, config: SearchConfig) -> None:
    path = out / CONFIG
    if not path.is_file():
        return
    saved = json.loads(path.read_text()).get("config", {})
    for key in IDENTITY:
        now = json.loads(json.dumps(getattr(config, key), default=str))
        if key in saved and saved[key] != now:
            raise ConfigError(f"--out {str(out)!r} holds a search with {key}={saved[key]!r} "
                              f"(now {now!r}); use another --out to start a new search")


def make_env(config: SearchConfig, out: Path) -> tuple[list[gym.Env], dict[str, Any]]:
    """The env copies of the search (``config.workers`` of them) and the env kwargs used."""
    kwargs = {"seed": config.seed, **config.env_kwargs, "budget": config.budget}
    kwargs.setdefault("store", str(out / STORE))
    kwargs["evaluator_backend"] = config.evaluator_backend()
    if config.address is not None:
        kwargs["ray_address"] = config.address
    try:
        return make_env_copies(config.env, config.workers, torch_threads=config.threads,
                               **kwargs), kwargs
    except TypeError as exc:  # an unknown env keyword
        found = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
        name = repr(found.group(1)) if found else f"one of {sorted(config.env_kwargs)}"
        raise ConfigError(f"--env-kwargs: {config.env} does not accept the keyword {name}") \
            from None


def run_search(config: SearchConfig, *, agent: Any | None = None) -> dict[str, Any]:
    """Run (or resume) the search described by ``config``; returns ``best.json``'s content.

    :param agent: an agent object to use instead of ``config.agent``: anything with
        ``learn(env, total_episodes, callback=None)`` (third-party agents included); with
        ``save`` / ``load`` / ``num_episodes`` too it is checkpointed and resumed.
    """
    config.validate()
    if agent is not None and config.workers > 1 and not getattr(agent, "concurrent_batches",
                                                                 False):
        raise bad_value("workers", config.workers,
                        f"1 for {type(agent).__name__} (its learn() takes one env; an agent with "
                        "concurrent_batches = True takes the copies)")
    torch.set_num_threads(config.threads)
    out = Path(config.out)
    _check_resume(out, config)
    if agent is None:
        agent = make_agent_spec(config.agent, config.seed, dict(config.agent_kwargs))
    check_agent_env(agent, config.env)
    envs, env_kwargs, resumable, resumed = _start(config, agent, out)
    resuming = (out / CONFIG).is_file()
    truncate_evaluations(out, resumed)
    previous = read_evaluations(out)
    if resuming:
        print(f"resuming the search in {out} at episode {resumed} of {config.episodes} (the "
              f"agent's saved state; episodes replayed after it are answered by the store)",
              file=sys.stderr)
    write_json(out / CONFIG, {"config": dataclasses.asdict(config), "env_kwargs": env_kwargs,
                              "agent_class": f"{type(agent).__module__}.{type(agent).__name__}",
                              "resumed_at_episode": resumed, "nas_gym": nas_gym.__version__})
    _learn(config, agent, envs, out, resumed, previous, resumable)
    return _finish(config, out, envs[0])


def _start(config: SearchConfig, agent: Any, out: Path
           ) -> tuple[list[gym.Env], dict[str, Any], bool, int]:
    """Make the env copies and restore a saved agent: ``(envs, env kwargs, resumable, episodes
    already done)``. A start that fails leaves ``out`` as it was, so the corrected command is not
    refused."""
    before = set(out.iterdir()) if out.is_dir() else None
    out.mkdir(parents=True, exist_ok=True)
    envs: list[gym.Env] = []
    try:
        envs, env_kwargs = make_env(config, out)
        if isinstance(agent, Agent):
            check_discrete(envs[0], agent.name or type(agent).__name__)
        resumable = all(hasattr(agent, a) for a in ("save", "load", "num_episodes"))
        resumed = 0
        if resumable and (out / STATE).is_file():
            agent.load(out / STATE)
            resumed = int(agent.num_episodes)
    except BaseException:
        for e in envs:
            e.close()
        _remove_new(out, before)
        raise
    return envs, env_kwargs, resumable, resumed


def _learn(config: SearchConfig, agent: Any, envs: list[gym.Env], out: Path, resumed: int,
           previous: list[dict[str, Any]], resumable: bool) -> None:
    """The agent's search on the logged env copies, up to ``config.episodes``; closes every copy
    but the first (it serves the final retraining)."""
    env = envs[0]
    live = None
    if config.tensorboard:
        live = TensorBoardLog(config.tensorboard, budget=config.budget,
                              default_metric=getattr(env.unwrapped, "default_metric", "params"),
                              hparams=dataclasses.asdict(config), start=previous)
        log_to = getattr(agent, "log_to", None)
        if callable(log_to):  # SB3 agents: their training curves go to the same run
            log_to(config.tensorboard)
    bar = None
    if config.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.episodes, initial=min(resumed, config.episodes), unit="arch",
                   desc=f"{config.agent} on {config.env}", file=sys.stderr, dynamic_ncols=True)
    sink = LogSink(out, resumed, previous, bar, live)
    logged = [EvaluationLog(e, sink, number_at_reset=len(envs) > 1) for e in envs]
    try:
        agent.learn(logged[0] if len(logged) == 1 else logged, config.episodes,
                    callback=Checkpoint(out / STATE) if resumable else None)
    finally:
        sink.close()
        if bar is not None:
            bar.close()
        if live is not None:
            live.close()
        for extra in envs[1:]:  # the first copy serves the final retraining
            extra.close()


def _finish(config: SearchConfig, out: Path, env: gym.Env) -> dict[str, Any]:
    """The best episode, the plots and the final model; writes ``best.json`` and closes ``env``."""
    try:
        rows = read_evaluations(out)
        if not rows:
            raise ConfigError("the search finished without a single episode")
        best = max(rows, key=lambda r: r["reward"])
        result: dict[str, Any] = {"best": best, "episodes": len(rows), "out": str(out)}
        plot_search(out, rows, config.budget, getattr(env.unwrapped, "default_metric", "params"))
        if config.final_epochs > 0:
            result["final"] = _final(out, best["architecture"], env, config)
        write_json(out / BEST, result)
    finally:
        env.close()
    return result


def _final(out: Path, architecture: dict[str, Any], env: gym.Env,
           config: SearchConfig) -> dict[str, Any]:
    """The final report, reused when a previous run of this folder already made it."""
    path = out / BEST
    if path.is_file() and (out / "final" / "model.pt").is_file():
        done = json.loads(path.read_text()).get("final")
        if done and done.get("searched_architecture") == architecture \
                and done.get("epochs") == config.final_epochs:
            return done
    return retrain_final(architecture, env, config.final_epochs, out, seed=config.seed)
