"""The arguments every env takes (SPEC §0) as one typed, documented value, validated in one place.

``gym.make(env_id, **kwargs)``: an env keeps its own arguments (its space) and passes the rest
here; :meth:`EnvConfig.validate` checks them all before anything is loaded or started, and
:func:`nas_gym.envs.common.build_components` builds the shared pieces from the result.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import bad_value
from ..evaluators.remote import ProcessEvaluator, RayEvaluator, check_backend_kwargs
from ..processes import check_threads
from ..rewards import PENALTIES, Reward, parse_budget
from ..training import PRESETS, TrainConfig, get_preset

PENALTY_KWARGS = ("alpha", "beta", "p", "weights", "references")
STATEFUL_EVALUATORS = ("shared", "epnas")  # hold weights across children: one process only
REMOTE_BACKENDS = {"ray": RayEvaluator, "process": ProcessEvaluator}


@dataclass(frozen=True)
class EnvConfig:
    """The common env arguments (each env's docstring lists them with its own)."""

    budget: Any = None
    """Constraints: ``{"params": 1e5}``, ``{"flops": (lo, hi)}``, ``"params=1e5"`` ... (SPEC §3)."""
    penalty: str | None = None
    """``None`` (the env's default when a budget is given), or one of ``rewards.PENALTIES``."""
    penalty_kwargs: Mapping[str, Any] | None = None
    """The penalty's coefficients: keys of :data:`PENALTY_KWARGS`."""
    dataset: str = "digits"
    """Registered dataset name (``digits`` and ``synthetic`` work offline)."""
    data_root: str | None = None
    """Folder of the torchvision files."""
    download: bool = False
    """Let torchvision download missing files into ``data_root``."""
    train_size: int | None = None
    """Training samples kept (None: all)."""
    training: str | TrainConfig = "digits"
    """A training preset name or a :class:`~nas_gym.training.TrainConfig`."""
    epochs: int | None = None
    """Overrides the preset's epochs."""
    batch_size: int | None = None
    """Overrides the preset's batch size."""
    lr: float | None = None
    """Overrides the preset's learning rate."""
    device: str = "auto"
    """``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ..."""
    evaluator: Any = "train"
    """A registered evaluator name or an object with ``evaluate()``."""
    evaluator_kwargs: Mapping[str, Any] | None = None
    """Keywords of a registered evaluator."""
    store: Any = None
    """Evaluation store: a path, ``":memory:"``, an open store, or None (the default file)."""
    seed: int = 0
    """Seed of every evaluation (weights, data order, augmentation)."""
    reject_infeasible: bool = False
    """Skip training when a pre-training cost breaks the budget."""
    measure_latency: bool | str = "auto"
    """``"auto"``: only when the penalty or the budget reads ``latency_ms``; True / False."""
    time_limit: float | None = None
    """Wall-clock seconds of one child's training (``"timeout"`` past it)."""
    evaluator_backend: str = "local"
    """Where children train: ``"local"``, ``"process"`` or ``"ray"``."""
    ray_address: str | None = None
    """Ray cluster address (``evaluator_backend="ray"``)."""
    ray_resources: Mapping[str, Any] | None = None
    """Ray resources per child."""
    max_retries: int = 2
    """Retries of an evaluation whose worker died."""
    worker_threads: int | None = None
    """Torch threads of a ``"process"`` worker."""
    torch_threads: int | None = None
    """Torch threads of this env's training and cost counting (None: this process's default)."""

    def validate(self) -> EnvConfig:
        """Check every argument (a :class:`~nas_gym.errors.ConfigError` naming the first bad one,
        its value and what is accepted); returns ``self``."""
        check_threads(self.torch_threads)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise bad_value("seed", self.seed, "an integer >= 0")
        self._validate_backend()
        if self.penalty is not None and self.penalty not in PENALTIES:
            raise bad_value("penalty", self.penalty, PENALTIES)
        for k in dict(self.penalty_kwargs or {}):
            if k not in PENALTY_KWARGS:
                raise bad_value("penalty_kwargs key", k, PENALTY_KWARGS)
        if not (isinstance(self.measure_latency, bool) or self.measure_latency == "auto"):
            raise bad_value("measure_latency", self.measure_latency, "'auto', True or False")
        return self

    def _validate_backend(self) -> None:
        backend, workers = self.evaluator_backend, self.worker_threads
        check_backend_kwargs(backend, self.ray_address, self.ray_resources, self.max_retries)
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                    or workers < 1):
            raise bad_value("worker_threads", workers, "None or an integer >= 1")
        if backend == "process" and multiprocessing.current_process().daemon:
            raise bad_value("evaluator_backend", backend,
                            "'local' in a daemonic process (SB3's SubprocVecEnv; each copy is "
                            "already a process), or make the vector env with daemon=False "
                            "(nas_gym.vector.make_vector_env does)")
        if workers is not None and backend != "process":
            raise bad_value("evaluator_backend", backend, "'process' when worker_threads is given")
        remote = REMOTE_BACKENDS.get(backend)
        ev = self.evaluator
        if remote is not None and not (
                isinstance(ev, remote) or (isinstance(ev, str) and ev not in STATEFUL_EVALUATORS)):
            raise bad_value("evaluator", ev, f"with evaluator_backend={backend!r}: a "
                            f"{remote.__name__} or a registered name other than "
                            f"{STATEFUL_EVALUATORS}")

    def reward(self, default_metric: str, default_penalty: str,
               accuracy_transform: str) -> Reward:
        """The reward: the budget's constraints (on ``default_metric`` when a bare number) and the
        penalty (the env's default when a budget is given or the default is ``"linear"``)."""
        constraints = parse_budget(self.budget, default_metric)
        penalty = self.penalty
        if penalty is None:
            penalty = default_penalty if constraints or default_penalty == "linear" else "none"
        return Reward(penalty=penalty, constraints=constraints,
                      accuracy_transform=accuracy_transform, **dict(self.penalty_kwargs or {}))

    def latency_measured(self, reward: Reward) -> bool:
        """``measure_latency`` resolved: ``"auto"`` measures only what the reward reads."""
        reads = "latency_ms" in reward.metrics or any(
            c.metric == "latency_ms" for c in reward.constraints)
        if self.measure_latency is False and "latency_ms" in reward.metrics:
            raise bad_value("measure_latency", self.measure_latency,
                            "True or 'auto' when the budget or penalty uses latency_ms")
        return reads if self.measure_latency == "auto" else bool(self.measure_latency)

    def train_config(self) -> TrainConfig:
        """The training preset (or config) with ``epochs`` / ``batch_size`` / ``lr`` applied."""
        if isinstance(self.training, TrainConfig):
            config = self.training.validate()
        elif isinstance(self.training, str):
            config = get_preset(self.training)
        else:
            raise bad_value("training", self.training,
                            f"a TrainConfig or one of {sorted(PRESETS)}")
        changes: dict[str, Any] = {}
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise bad_value(name, value, "an integer >= 1")
                changes[name] = value
        lr = self.lr
        if lr is not None:
            if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) \
                    or lr <= 0:
                raise bad_value("lr", lr, "a finite number > 0")
            changes["lr"] = float(lr)
        tl = self.time_limit
        if tl is not None and not (isinstance(tl, (int, float)) and tl > 0):
            raise bad_value("time_limit", tl, "seconds > 0 or None")
        return dataclasses.replace(config, **changes).validate() if changes else config
