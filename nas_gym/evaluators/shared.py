"""The ``"shared"`` evaluator: ENAS / B-ENAS weight sharing (SPEC §5; B-ENAS §3.1, Algorithms 2-3).

One super-network Omega (:mod:`nas_gym.evaluators.supernet`) lives in the evaluator for its whole life (one per
env; pass the same evaluator object to several envs of a process to share it). Evaluating a child:

1. **TrainChild** (B-ENAS Algorithm 2 with ``b = train_steps``, eq. 1 with M = 1): Omega trains on
   the child for ``train_steps`` mini-batches of the training split, with the env's
   :class:`~nas_gym.training.TrainConfig` through :func:`~nas_gym.training.make_optimizer` (SGD
   Nesterov, weight decay, gradient clipping; B-ENAS Table 2). Only the child's path has gradients
   (``zero_grad(set_to_none=True)``), so nothing else moves. **Decision:** a ``"cosine"`` schedule
   needs a known number of steps, which an open-ended shared network has not; it becomes ENAS's
   cosine with restarts (``restart_epochs``, ``restart_mult`` of the config).
2. **Validate** (Algorithm 3 line 4): accuracy on ``val_batches`` validation mini-batches (taken in
   a seeded running order; None = the whole split).

Any agent, Stable-Baselines3 included, then searches at the cost of a few steps per architecture.
The B-ENAS pipeline (``experiments/benas.py``) switches the phases with :meth:`settings`.

**train_seconds** (B-ENAS Table 5). The seconds per training mini-batch of the child are
measured (its TrainChild steps; with ``train_steps=0`` one timed forward + backward without update)
and projected to the env's training config (``epochs x steps per epoch``), so a budget such as
``{"train_seconds": 5}`` means the same with ``evaluator="train"``. ``extra`` keeps
``step_seconds`` and ``measured_train_seconds``.

**Store-cache decision.** A shared-weight score depends on Omega's training history, so it must
never be served as the result of an architecture: the evaluator says so (``cacheable = False``,
the evaluator contract of :mod:`nas_gym.evaluators`), so the evaluation pipeline runs every
evaluation and never looks it up. Its :meth:`fingerprint` holds a ``"supernet"`` entry (the
super-network's random id and its counts of training steps and evaluations), read afresh for
every key, so each evaluation is recorded under its own key and no other process can serve it
either (``tests/test_supernet.py`` checks it through an env).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..arch.base import Architecture
from ..arch.macro import FILTERS, KERNELS, STRIDES
from ..data import DataSplit, augment_batch
from ..errors import bad_value
from ..training import (
    TrainConfig,
    autocast_for,
    device_layout,
    evaluate,
    free_memory,
    is_oom,
    make_optimizer,
    make_scheduler,
    train_step,
)
from .base import EVALUATORS, EvalResult, Evaluator
from .supernet import build_supernet
from .supernet_base import SharedChild, SuperNet

SETTINGS = ("train_steps", "val_batches", "score_children", "measure_train_seconds")


@dataclass
class ChildSteps:
    """What :meth:`SharedEvaluator.train_child` did."""

    status: str
    steps: int
    seconds: float
    loss: float
    accuracy: float  # on the training mini-batches (before each update)
    message: str = ""


def _count(name: str, value: Any, low: int, allow_none: bool = False) -> None:
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise bad_value(name, value, f"an integer >= {low}" + (" or None" if allow_none else ""))


@EVALUATORS.register("shared")
class SharedEvaluator(Evaluator):
    """ENAS / B-ENAS weight sharing (module doc).

    :param data: the dataset split, on the training device (Omega lives there too).
    :param config: the env's training config (optimizer, lr, schedule, weight decay, batch size).
    :param time_limit: wall-clock seconds of one evaluation's training (``"timeout"`` past it).
    :param train_steps: mini-batches Omega trains on each evaluated child (ENAS: one child per
        mini-batch); 0 = score only.
    :param val_batches: validation mini-batches a child is scored on (B-ENAS: 1); None = all.
    :param batch_size: mini-batch size (default: ``config.batch_size``; B-ENAS: 160).
    :param score_children: False = report the accuracy on the training mini-batches instead of
        validating (B-ENAS TrainChild phase, where the score is not used).
    :param measure_train_seconds: with ``train_steps=0``, time one forward + backward per child
        so ``train_seconds`` is still measured (else 0).
    :param ops, max_blocks: cell space of Omega (``ops`` default: the 5 ENAS ops).
    :param per_input: cell ops hold one weight per input index too (ENAS's code); default one
        per (position, block, slot, op).
    :param filters, kernels, strides, max_layers: macro space of Omega.
    """

    needs_model = False
    #: the pipeline serialises :meth:`fingerprint` at every key (its "supernet" entry moves)
    cacheable = False  # Omega changes with every evaluation (see the module doc)

    def __init__(self, data: DataSplit, config: TrainConfig, *, time_limit: float | None = None,
                 train_steps: int = 1, val_batches: int | None = 1, batch_size: int | None = None,
                 score_children: bool = True, measure_train_seconds: bool = True,
                 ops: str | Sequence[str] | None = None, max_blocks: int = 7,
                 per_input: bool = False,
                 filters: Sequence[int] = FILTERS, kernels: Sequence[int] = KERNELS,
                 strides: Sequence[int] = STRIDES, max_layers: int = 8) -> None:
        self.data, self.config, self.time_limit = data, config.validate(), time_limit
        _count("batch_size", batch_size, 1, allow_none=True)
        _count("max_blocks", max_blocks, 1)
        _count("max_layers", max_layers, 1)
        self.batch_size = min(batch_size or config.batch_size, int(data.train_x.shape[0]))
        self.train_steps, self.val_batches = 1, 1
        self.score_children, self.measure_train_seconds = True, True
        self._set(train_steps=train_steps, val_batches=val_batches, score_children=score_children,
                  measure_train_seconds=measure_train_seconds)
        if not isinstance(per_input, bool):
            raise bad_value("per_input", per_input, "True or False")
        self.space = {"cell": {"max_blocks": max_blocks, "per_input": per_input}
                      | ({"ops": ops} if ops else {}),
                      "macro": {"filters": tuple(filters), "kernels": tuple(kernels),
                                "strides": tuple(strides), "max_layers": max_layers}}
        self.steps_per_epoch = max(1, int(data.train_x.shape[0]) // self.batch_size)
        self.schedule = config.replace(schedule="cosine_restarts") \
            if config.schedule == "cosine" else config
        self.supernet: SuperNet | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: Any = None
        self.gen: torch.Generator | None = None
        self._order: dict[str, tuple[torch.Tensor | None, int]] = {}
        self._child: SharedChild | None = None
        self.state = {"id": uuid.uuid4().hex, "steps": 0, "evaluations": 0}

    # -- configuration ------------------------------------------------------------------------
    def _set(self, **changes: Any) -> None:
        for name in changes:
            if name not in SETTINGS:
                raise bad_value("setting", name, SETTINGS)
        for name, value in changes.items():
            if name == "train_steps":
                _count(name, value, 0)
            elif name == "val_batches":
                _count(name, value, 1, allow_none=True)
            elif not isinstance(value, bool):
                raise bad_value(name, value, "True or False")
            setattr(self, name, value)

    @contextlib.contextmanager
    def settings(self, **changes: Any) -> Iterator[SharedEvaluator]:
        """Temporarily change ``train_steps``, ``val_batches``, ``score_children`` or
        ``measure_train_seconds`` (the B-ENAS phases)."""
        old = {k: getattr(self, k, None) for k in changes}
        self._set(**changes)  # refuses unknown names before anything changes
        try:
            yield self
        finally:
            self._set(**old)

    def fingerprint(self) -> dict[str, Any]:
        return {"evaluator": "shared", "data": self.data.fingerprint,
                "training": self.config.fingerprint(), "batch_size": self.batch_size,
                "time_limit": self.time_limit, "space": self.space,
                "supernet": dict(self.state)}  # a new key per evaluation (module doc)

    @property
    def supernet_params(self) -> int | None:
        """Parameters of Omega (None before the first evaluation builds it)."""
        return None if self.supernet is None else self.supernet.num_params

    @property
    def supernet_memory_bytes(self) -> int | None:
        """Estimated bytes of Omega: weights, gradients, momentum and one batch's activations."""
        return None if self.supernet is None else int(self.supernet.memory_bytes)

    # -- Omega ------------------------------------------------------------------------------------
    def build(self, arch: Architecture, *, seed: int = 0) -> SuperNet:
        """Omega for ``arch``'s space (built at the first call, from ``seed``)."""
        if self.supernet is None:
            self.supernet = build_supernet(
                arch, self.data.input_shape, self.data.num_classes, batch_size=self.batch_size,
                device=self.data.device, seed=seed, **self.space.get(arch.kind, {}))
            self.optimizer = make_optimizer(self.supernet, self.config)
            self.scheduler = make_scheduler(self.optimizer, self.schedule, self.steps_per_epoch)
            self.gen = torch.Generator(device=self.data.device).manual_seed(int(seed))
        return self.supernet

    def child(self, arch: Architecture) -> SharedChild:
        """The child ``arch`` on Omega's weights (raises when it is outside Omega's space)."""
        if self._child is None or self._child.architecture != arch:  # one evaluation: one child
            self._child = self.build(arch).child(arch)
        return self._child

    def _batch(self, split: str) -> torch.Tensor:
        """Indices of the next mini-batch of ``split`` in a seeded running order (reshuffled at
        the end of each pass; the ragged tail is dropped: BN needs more than one sample)."""
        n = int(getattr(self.data, f"{split}_x").shape[0])
        b = min(self.batch_size, n)
        perm, pos = self._order.get(split, (None, n))
        if perm is None or pos + b > n:
            perm, pos = torch.randperm(n, generator=self.gen, device=self.data.device), 0
        self._order[split] = (perm, pos + b)
        return perm[pos:pos + b]

    def _sync(self) -> None:
        if self.data.device.type == "cuda":
            torch.cuda.synchronize(self.data.device)

    def train_child(self, arch: Architecture, steps: int = 1) -> ChildSteps:
        """B-ENAS TrainChild on one child: ``steps`` SGD steps of Omega through its path."""
        child, opt = self.child(arch), self.optimizer
        assert opt is not None and self.gen is not None
        child.train()
        augment = self.data.augment if self.config.augment else "none"
        status, message, done, loss_sum, correct, seen = "ok", "", 0, 0.0, 0, 0
        self._sync()
        start = time.perf_counter()
        try:
            for _ in range(steps):
                idx = self._batch("train")
                # Omega's layout (nas_gym.training.memory_format, shared weights)
                x = device_layout(augment_batch(self.data.train_x[idx], self.gen, augment),
                                  shared_weights=True)
                y = self.data.train_y[idx]
                # no update on a non-finite loss: one bad child must not poison Omega
                loss, logits = train_step(child, x, y, opt, self.scheduler,
                                          self.config.grad_clip, skip_nonfinite=True)
                if not torch.isfinite(loss):
                    status, message = "diverged", f"loss became {float(loss):.4g}"
                    break
                self.state["steps"] += 1
                done += 1
                loss_sum += float(loss)
                correct += int((logits.argmax(1) == y).sum())
                seen += int(y.shape[0])
                if self.time_limit is not None and time.perf_counter() - start > self.time_limit:
                    status, message = "timeout", f"stopped after {done} steps"
                    break
        except Exception as exc:  # noqa: BLE001 - a child's fault must not crash the search
            if not is_oom(exc):
                raise
            status, message = "oom", f"{type(exc).__name__}: {exc}"
            opt.zero_grad(set_to_none=True)
            free_memory(self.data.device)
        self._sync()
        return ChildSteps(status, done, time.perf_counter() - start,
                          loss_sum / done if done else float("nan"),
                          correct / seen if seen else 0.0, message)

    def step_seconds(self, arch: Architecture) -> float:
        """Seconds of one forward + backward of the child on a training mini-batch, with no
        update (the gradients are dropped, Omega is unchanged)."""
        child = self.child(arch)
        child.train()
        b = self.batch_size
        self._sync()
        start = time.perf_counter()
        with autocast_for(self.data.device):
            x = device_layout(self.data.train_x[:b], shared_weights=True)
            loss = F.cross_entropy(child(x).float(), self.data.train_y[:b])
        loss.backward()
        self._sync()
        seconds = time.perf_counter() - start
        assert self.optimizer is not None
        self.optimizer.zero_grad(set_to_none=True)
        return seconds

    def score(self, arch: Architecture, batches: int | None = 1) -> tuple[float, float]:
        """``(accuracy, loss)`` of the child on ``batches`` validation mini-batches (None: all)."""
        child = self.child(arch)
        if batches is None:
            return evaluate(child, self.data.val_x, self.data.val_y, self.config.eval_batch_size)
        idx = torch.cat([self._batch("val") for _ in range(batches)])
        return evaluate(child, self.data.val_x[idx], self.data.val_y[idx], self.batch_size)

    # -- the evaluator interface --------------------------------------------------------------
    def evaluate(self, architecture: Architecture, *, seed: int,
                 model: nn.Module | None = None) -> EvalResult:
        self.build(architecture, seed=seed)
        self.state["evaluations"] += 1
        run = self.train_child(architecture, self.train_steps) if self.train_steps else None
        status = run.status if run is not None else "ok"
        step = None
        if run is not None and run.steps:
            step = run.seconds / run.steps
        elif self.measure_train_seconds and status == "ok":
            step = self.step_seconds(architecture)
        acc, loss = (run.accuracy, run.loss) if run is not None else (0.0, float("nan"))
        if self.score_children and status in ("ok", "timeout"):
            acc, loss = self.score(architecture, self.val_batches)
        projected = 0.0 if step is None else step * self.steps_per_epoch * self.config.epochs
        extra = {"supernet_id": self.state["id"], "supernet_steps": self.state["steps"],
                 "supernet_params": self.supernet_params,
                 "supernet_memory_bytes": self.supernet_memory_bytes,
                 "step_seconds": step, "measured_train_seconds": run.seconds if run else 0.0,
                 "scored_on": "validation" if self.score_children else "train_batches"}
        return EvalResult(accuracy=acc, status=status, train_seconds=projected, val_loss=loss,
                          epochs=(run.steps if run else 0) / self.steps_per_epoch,
                          message=run.message if run else "", extra=extra)
