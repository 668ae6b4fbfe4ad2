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
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import nas_gym
from agents import AGENTS
from agents.base import Agent
from agents.callbacks import Callback
from agents.env_api import check_discrete
from agents.episode import Episode
from nas_gym.arch.base import Architecture, architecture_from_dict
from nas_gym.checkpoint import save_model
from nas_gym.costs import COST_METRICS
from nas_gym.errors import ConfigError, bad_value
from nas_gym.registry import Registry
from nas_gym.rewards import parse_budget
from nas_gym.training import evaluate, train
from nas_gym.vector import make_env_copies

from .live import TensorBoardLog
from .options import agent_class, check_agent_env, make_agent_spec
from .plots import pareto_front, plot_search

__all__ = ["SearchConfig", "pareto_front", "plot_search", "read_evaluations", "run_search"]

#: Files of a search folder.
CONFIG, EVALUATIONS, BEST, STATE, STORE = ("config.json", "evaluations.jsonl", "best.json",
                                           "agent_state.pt", "store.sqlite")
#: ``--backend`` values (``auto``: local for one worker, else process).
SEARCH_BACKENDS = ("auto", "local", "process", "ray")
#: Fields that must match to resume a search in the same folder (not the backend or the worker
#: count: store keys do not depend on them, so a search may resume on a cluster and back).
IDENTITY = ("env", "agent", "env_kwargs", "agent_kwargs", "budget", "seed")


@dataclass
class SearchConfig:
    """One search (``nas-gym search``); every field is a command-line option of the same name."""

    env: str = "CellNAS-v0"
    """Env id (one of ``nas_gym.ENV_IDS``)."""
    agent: str = "reinforce"
    """Agent name (one of ``agents.AGENTS``) or a class by import path ``module:Class`` (the agent
    interface, or a plain SB3 algorithm class; the current folder is importable)."""
    episodes: int = 20
    """Total episodes (= evaluated architectures, cache hits included); a resume continues to it."""
    budget: Any = field(default_factory=lambda: {"params": 30_000})
    """Cost budget passed to the env: ``{metric: upper}`` / ``{metric: [lower, upper]}``, a number
    (upper bound on the env's default metric) or None."""
    env_kwargs: dict[str, Any] = field(default_factory=lambda: {"dataset": "digits", "epochs": 2})
    """Every other keyword of the env (dataset, epochs, penalty, channels, ...)."""
    agent_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keywords of the agent (e.g. ``batch_episodes``, ``prob_floor``, ``n_steps``)."""
    seed: int = 0
    """Seed of the agent and of child training (the env's ``seed`` unless env_kwargs sets it)."""
    final_epochs: int = 8
    """Retrain the best architecture at full size for this many epochs and report its test
    accuracy (0: skip)."""
    threads: int = 1
    """torch threads of this process (tiny children train fastest on one; parallel searches must
    not oversubscribe the cores)."""
    workers: int = 1
    """Children trained at the same time: the agent plays its batch (REINFORCE's
    batch_episodes, EAS's 10, EPNAS's branches) on this many env copies, each training in its own
    worker process (or Ray task)."""
    backend: str = "auto"
    """Where children train: auto (in this process for 1 worker, else worker processes),
    local, process (worker processes of this machine) or ray (tasks on a Ray cluster)."""
    address: str | None = None
    """Ray cluster address with --backend ray (e.g. auto, ray://head:10001); none: a local Ray
    instance is started."""
    out: str = "runs/search"
    """Output folder (a folder holding a search is resumed)."""
    progress: bool = True
    """Show a progress bar (on stderr)."""
    tensorboard: str | None = None
    """Also log every evaluation, the accuracy-vs-cost scatter and this config to a TensorBoard
    run in this folder (SB3 agents log their training curves there too); needs tensorboard."""

    def validate(self) -> SearchConfig:
        if self.env not in nas_gym.ENV_IDS:
            raise bad_value("--env", self.env, sorted(nas_gym.ENV_IDS))
        agent_cls = agent_class(self.agent)
        for name, low in (("episodes", 1), ("final_epochs", 0), ("threads", 1), ("seed", 0),
                          ("workers", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise bad_value(f"--{name.replace('_', '-')}", v, f"an integer >= {low}")
        for name in ("env_kwargs", "agent_kwargs"):
            if not isinstance(getattr(self, name), dict):
                raise bad_value(f"--{name.replace('_', '-')}", getattr(self, name), "a mapping")
        if isinstance(self.budget, dict):
            for metric in self.budget:
                if metric not in COST_METRICS:
                    raise bad_value("--budget metric", metric, COST_METRICS)
        parse_budget(self.budget)
        if not isinstance(self.out, str) or not self.out:
            raise bad_value("--out", self.out, "a folder path")
        if self.backend not in SEARCH_BACKENDS:
            raise bad_value("--backend", self.backend, SEARCH_BACKENDS)
        if self.address is not None and self.backend != "ray":
            raise bad_value("--backend", self.backend, "ray when --address is given")
        if self.workers > 1 and not getattr(agent_cls, "concurrent_batches", False):
            batched = sorted(n for n in AGENTS.names()
                             if getattr(AGENTS.get(n, "--agent"), "concurrent_batches", False))
            raise bad_value("--workers", self.workers,
                            f"1 for agent {self.agent!r} (it plays one episode at a time); "
                            f"agents that evaluate a batch concurrently: {batched}")
        for key in ("evaluator_backend", "ray_address"):
            if key in self.env_kwargs:
                raise bad_value(f"--env-kwargs {key}", self.env_kwargs[key],
                                "no value: use --backend / --address")
        return self

    def evaluator_backend(self) -> str:
        """The env's ``evaluator_backend`` for this search."""
        if self.backend == "auto":
            return "local" if self.workers == 1 else "process"
        return self.backend


#: kind -> the architecture at full size for the final retraining (identity when not registered).
FULL_SIZE: Registry[Callable[[Architecture], Architecture]] = Registry("full-size rule")
FULL_SIZE.register("cell", lambda arch: arch.with_size(3))  # B-ENAS: the N=3 ("11-layer") model


def full_size(arch: Architecture) -> Architecture:
    """The architecture the final model uses (B-ENAS retrains the N=3 cell network)."""
    return FULL_SIZE.get(arch.kind)(arch) if arch.kind in FULL_SIZE else arch


# -- outputs ------------------------------------------------------------------------------------
def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def read_evaluations(out: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of ``evaluations.jsonl`` (a torn last line from a kill is skipped)."""
    path = Path(out) / EVALUATIONS
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows


def _truncate_evaluations(out: Path, keep: int) -> None:
    rows = [r for r in read_evaluations(out) if r.get("episode", keep) < keep]
    tmp = out / f"{EVALUATIONS}.tmp"
    tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    os.replace(tmp, out / EVALUATIONS)


def _record(episode: Episode) -> dict[str, Any]:
    row = episode.summary()
    for key in [k for k in row if "test" in k]:  # rewards and records never see the test split
        del row[key]
    return row


# -- the final model ------------------------------------------------------------------------------
def retrain_final(architecture: dict[str, Any], env: gym.Env, epochs: int, out: Path,
                  seed: int = 0) -> dict[str, Any]:
    """Train the full-size best architecture from scratch on the search's training split (the
    env's data: ``train_size`` applies) with the env's training config for ``epochs`` epochs, and
    report its validation and **test** accuracy (the only place the test split is read)."""
    base = env.unwrapped
    components = getattr(base, "components", None)
    if components is None:
        raise ConfigError(f"the final retraining needs a nas_gym env, got {type(base).__name__}")
    data = components.data
    config = components.train_config.replace(epochs=epochs)
    arch = full_size(architecture_from_dict(architecture))
    model = nas_gym.build_model(arch, data.input_shape, data.num_classes, seed=seed)
    run = train(model, data, config, seed=seed)
    val_acc, _ = evaluate(model, data.val_x, data.val_y, config.eval_batch_size)
    test_acc, _ = evaluate(model, data.test_x, data.test_y, config.eval_batch_size)
    report = {"architecture": arch.to_dict(), "searched_architecture": architecture,
              "epochs": epochs, "status": run.status, "train_seconds": run.train_seconds,
              "val_accuracy": val_acc, "test_accuracy": test_acc,
              "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
              "model": "final/model.pt"}
    save_model(model.cpu(), out / "final" / "model.pt", input_shape=data.input_shape,
               num_classes=data.num_classes, extra={"report": report})
    return report


# -- the loop -------------------------------------------------------------------------------------
class _LogSink:
    """The outputs every copy's :class:`_EvaluationLog` writes to: ``evaluations.jsonl`` (line
    ``i`` is episode ``i``), ``best.json`` and the progress bar. Thread-safe; with several copies
    an episode's place is taken at its reset (the agents reset copies in episode order), rows
    finished out of order wait for the earlier ones, and a reset whose episode never ends (the
    copy is reset again: a PNAS walk) gives its place back (:meth:`abandon`)."""

    def __init__(self, out: Path, start: int, rows: list[dict[str, Any]], bar: Any,
                 live: TensorBoardLog | None = None) -> None:
        self.out, self.bar, self.live = out, bar, live
        self.best = max(rows, key=lambda r: r["reward"]) if rows else None
        self.file = open(out / EVALUATIONS, "a")  # noqa: SIM115 - closed by run_search
        self.lock = threading.Lock()
        self.next_index, self.next_write = start, start  # places, and the next row's number
        self.next_place = start  # the place written next
        self.pending: dict[int, Episode | None] = {}  # None: abandoned

    def begin(self) -> int:
        with self.lock:
            self.next_index += 1
            return self.next_index - 1

    def abandon(self, place: int) -> None:
        with self.lock:
            self.pending[place] = None
            self._flush()

    def finish(self, place: int, episode: Episode) -> None:
        with self.lock:
            self.pending[place] = episode
            self._flush()

    def _flush(self) -> None:
        while self.next_place in self.pending:
            episode = self.pending.pop(self.next_place)
            self.next_place += 1
            if episode is not None:
                self._write(_record(dataclasses.replace(episode, index=self.next_write)))
                self.next_write += 1

    def _write(self, row: dict[str, Any]) -> None:
        self.file.write(json.dumps(row, sort_keys=True) + "\n")
        self.file.flush()
        if self.best is None or row["reward"] > self.best["reward"]:
            self.best = row
            _write_json(self.out / BEST, {"best": row})
        if self.live is not None:
            self.live.log(row)
        if self.bar is not None:
            self.bar.set_postfix(best_reward=f"{self.best['reward']:.4f}",
                                 best_acc=f"{self.best.get('accuracy') or 0:.4f}", refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        with self.lock:  # a place still open at the end was abandoned
            while self.pending:
                self.pending.setdefault(self.next_place, None)
                self._flush()
        self.file.close()


class _EvaluationLog(gym.Wrapper):
    """Writes every finished episode to the sink (JSONL, ``best.json``, progress bar).

    It sits between the agent and the env and reads only what every agent sees (actions, rewards,
    terminal ``info``), so the outputs do not depend on which agent runs, third-party ones included.
    With one env an episode is numbered when it ends; with several copies, at its reset.
    """

    def __init__(self, env: gym.Env, sink: _LogSink, *, number_at_reset: bool = False) -> None:
        super().__init__(env)
        self.sink, self.number_at_reset = sink, number_at_reset
        self._actions: list[int] = []
        self._return = 0.0
        self._index: int | None = None

    def reset(self, **kwargs: Any):
        self._actions, self._return = [], 0.0
        if self._index is not None:  # the previous episode of this copy never ended
            self.sink.abandon(self._index)
        self._index = self.sink.begin() if self.number_at_reset else None
        return self.env.reset(**kwargs)

    def step(self, action: Any):
        self._actions.append(int(np.asarray(action).reshape(())))
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._return += float(reward)
        if terminated or truncated:
            index = self._index if self._index is not None else self.sink.begin()
            self.sink.finish(index, Episode(index, self._return, self._actions, [], [],
                                            dict(info)))
            self._index = None
        return obs, reward, terminated, truncated, info


class _Checkpoint(Callback):
    """Saves the agent after every policy update (its state is consistent there)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_update(self, agent: Agent) -> None:
        agent.save(self.path)


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
    before = set(out.iterdir()) if out.is_dir() else None
    out.mkdir(parents=True, exist_ok=True)
    envs: list[gym.Env] = []
    try:  # a start that fails leaves --out as it was, so the corrected command is not refused
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
    env = envs[0]
    resuming = (out / CONFIG).is_file()
    _truncate_evaluations(out, resumed)
    previous = read_evaluations(out)
    if resuming:
        print(f"resuming the search in {out} at episode {resumed} of {config.episodes} (the "
              f"agent's saved state; episodes replayed after it are answered by the store)",
              file=sys.stderr)
    _write_json(out / CONFIG, {"config": dataclasses.asdict(config), "env_kwargs": env_kwargs,
                               "agent_class": f"{type(agent).__module__}.{type(agent).__name__}",
                               "resumed_at_episode": resumed, "nas_gym": nas_gym.__version__})
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
    sink = _LogSink(out, resumed, previous, bar, live)
    logged = [_EvaluationLog(e, sink, number_at_reset=len(envs) > 1) for e in envs]
    try:
        agent.learn(logged[0] if len(logged) == 1 else logged, config.episodes,
                    callback=_Checkpoint(out / STATE) if resumable else None)
    finally:
        sink.close()
        if bar is not None:
            bar.close()
        if live is not None:
            live.close()
        for extra in envs[1:]:  # the first copy serves the final retraining below
            extra.close()
    try:
        rows = read_evaluations(out)
        if not rows:
            raise ConfigError("the search finished without a single episode")
        best = max(rows, key=lambda r: r["reward"])
        result: dict[str, Any] = {"best": best, "episodes": len(rows), "out": str(out)}
        plot_search(out, rows, config.budget, getattr(env.unwrapped, "default_metric", "params"))
        if config.final_epochs > 0:
            result["final"] = _final(out, best["architecture"], env, config)
        _write_json(out / BEST, result)
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
