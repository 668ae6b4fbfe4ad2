"""One ``nas-gym bench`` job: an agent searching a benchmark table's env for one seed under the
search budget, every evaluation recorded to ``runs/<env>/<agent>/seed<k>.jsonl``; and
:class:`BenchConfig`, what a bench (and each of its jobs) is given."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym

import nas_gym  # noqa: F401  (registers the env ids)
from nas_gym.arch.base import architecture_from_dict
from nas_gym.errors import ConfigError, bad_value
from nas_gym.evaluators.table import load_table
from nas_gym.files import atomic_write
from nas_gym.table import DEFAULT_TABLE, TABLES, table_path

from .options import make_agent_spec

__all__ = ["DEFAULT_AGENTS", "BenchConfig", "JobLog", "job_path", "make_bench_agent",
           "make_bench_env", "resolve_table", "run_job"]

#: The default bench's agents: one per family (policy gradient, evolution, SB3, PNAS's surrogate)
#: and random search, the reference. SB3's per-step overhead dominates table episodes (per
#: 200-evaluation job: random / evolution ~1 s, reinforce ~7 s, ppo ~14 s, a2c ~13 s, maskable_ppo
#: ~25 s, dqn ~35 s on the loaded 2-core machine), so 20 seeds of all of them cannot fit 5 minutes
#: on 2 cores; the others join with ``--agents``.
DEFAULT_AGENTS = ("reinforce", "evolution", "pnas", "random", "ppo")


@dataclass
class BenchConfig:
    agents: tuple[str, ...] = DEFAULT_AGENTS
    """Registered agent names or ``module:Class`` import paths."""
    envs: tuple[str, ...] = ("nas-bench-macro",)
    """Benchmark tables by name (``nas_gym.table.TABLES``: ``nas-bench-macro``, ``macro-digits``)
    or file (each names its env id and configuration); an env id picks the committed digits
    table."""
    seeds: int = 20
    """Seeds 0..N-1 per (agent, env)."""
    evaluations: int = 200
    """Search budget: evaluated architectures (episodes) per job."""
    time_budget: float | None = None
    """Optional search budget in simulated training seconds (the tables' recorded times)."""
    budget: dict[str, float] = field(default_factory=lambda: {"params": 1_000_000})
    """Cost budget of the envs (B-ENAS penalty); also defines "meets the budget" in the report."""
    noise: str = "sample"
    """Table noise: "sample" (a recorded seed drawn per query), "seed" or "mean"."""
    agent_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Keyword arguments per agent name."""
    workers: int = 2
    """Parallel processes."""
    out: str = "bench"
    """Output folder."""
    tensorboard: str | None = None
    """Also log every job's evaluations to TensorBoard runs ``DIR/<table>/<agent>/seed<k>``."""


def resolve_table(env: str) -> Path:
    """The file of a table given by name (``nas_gym.table.TABLES``), file, or env id (the
    committed digits table)."""
    if env in nas_gym.ENV_IDS:
        table = load_table(DEFAULT_TABLE)
        if table.env_id != env:
            raise bad_value("envs", env, f"a table file, or {table.env_id!r} (committed table)")
        return table.path
    path = table_path(env)
    if not path.is_file():
        raise bad_value("envs", env, f"a table name {sorted(TABLES)}, a table file, or "
                        f"{load_table(DEFAULT_TABLE).env_id!r}")
    return path


def make_bench_env(table_path: str | os.PathLike, cfg: BenchConfig, seed: int) -> gym.Env:
    """The table-backed env of a job (the table's configuration, the bench's cost budget)."""
    table = load_table(table_path)
    return gym.make(table.env_id, **{
        **table.env_kwargs, "evaluator": "table", "seed": seed, "device": "cpu",
        "evaluator_kwargs": {"path": str(table_path), "noise": cfg.noise},
        "budget": dict(cfg.budget) or None, "penalty": "benas" if cfg.budget else "none",
        "store": ":memory:", "measure_latency": False})


def make_bench_agent(spec: str, seed: int, kwargs: dict[str, Any]) -> Any:
    """A registered agent, an agent class by import path, or a plain SB3 algorithm class."""
    return make_agent_spec(spec, seed, kwargs, arg="--agents")


class JobLog(gym.Wrapper):
    """Records every finished episode of a job from the public API (terminal ``info``), whether
    or not the agent calls its callback."""

    def __init__(self, env: gym.Env, on_episode: Any) -> None:
        super().__init__(env)
        self.on_episode, self._return = on_episode, 0.0

    def reset(self, **kwargs: Any):
        self._return = 0.0
        return self.env.reset(**kwargs)

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._return += float(reward)
        if terminated or truncated:
            self.on_episode(self._return, info)
        return obs, reward, terminated, truncated, info


def job_path(out: Path, env: str, agent: str, seed: int) -> Path:
    tag = agent.replace(":", "_").replace(".", "_")
    return out / "runs" / Path(env).stem / tag / f"seed{seed}.jsonl"


def run_job(job: tuple[str, str, int, dict[str, Any]]) -> str:
    """Run one (table, agent, seed) job; writes its JSONL atomically and returns its path."""
    table_path, agent_spec, seed, cfg_dict = job
    cfg = BenchConfig(**cfg_dict)
    path = job_path(Path(cfg.out), table_path, agent_spec, seed)
    if path.exists():
        return str(path)
    agent = make_bench_agent(agent_spec, seed, dict(cfg.agent_kwargs.get(agent_spec, {})))
    lines: list[dict[str, Any]] = []
    sim = [0.0]
    live = None
    if cfg.tensorboard:
        from .live import TensorBoardLog

        live = TensorBoardLog(str(Path(cfg.tensorboard) / Path(table_path).stem
                                  / agent_spec.replace(":", "_") / f"seed{seed}"),
                              budget=cfg.budget)

    def record(reward: float, info: dict[str, Any]) -> None:
        costs = info.get("costs", {})
        sim[0] += float(costs.get("train_seconds", 0.0))
        lines.append({"evaluation": len(lines), "reward": float(reward),
                      "sha256": architecture_from_dict(info["architecture"]).sha256,
                      "val_accuracy": float(info["accuracy"]), "status": info.get("status"),
                      "train_seconds": float(costs.get("train_seconds", 0.0)),
                      "sim_seconds": sim[0], "params": costs.get("params")})
        if live is not None:
            live.log({"reward": float(reward), "accuracy": info.get("accuracy"),
                      "penalty": info.get("penalty"), "costs": dict(costs)})

    def on_episode(episode: Any) -> bool:
        stop = len(lines) >= cfg.evaluations
        return not (stop or (cfg.time_budget is not None and sim[0] >= cfg.time_budget))

    env = JobLog(make_bench_env(table_path, cfg, seed), record)
    try:
        agent.learn(env, total_episodes=cfg.evaluations, callback=on_episode)
    finally:
        if live is not None:
            live.close()
    if not lines:
        raise ConfigError(f"agent {agent_spec!r} finished without evaluating an architecture on "
                          f"{table_path} (seed {seed})")
    if cfg.time_budget is not None:  # an agent deaf to the callback may run past the budget
        over = [i for i, r in enumerate(lines) if r["sim_seconds"] >= cfg.time_budget]
        lines = lines[: over[0] + 1] if over else lines
    env.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, "".join(json.dumps(r) + "\n" for r in lines[: cfg.evaluations]))
    return str(path)
