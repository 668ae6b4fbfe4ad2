"""Child training: plain functions over tensors that live on the device (the airbench way).

``train`` runs SGD-Nesterov (or Adam) with a ``torch.optim.lr_scheduler`` cosine schedule over the
training split held by a :class:`~nas_gym.data.DataSplit`; augmentation runs on the device; on CUDA
it uses bf16 autocast and channels_last. It never raises for a fault of the child: a loss that turns
NaN/inf stops with status ``"diverged"``, an out-of-memory error frees memory and gives ``"oom"``,
the optional wall-clock limit gives ``"timeout"``. On CPU a seed gives bit-identical results.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .data import DataSplit, augment_batch
from .errors import bad_value

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "cosine_restarts", "constant")


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of child training (SPEC §6)."""

    epochs: int = 4
    """Passes over the training split."""
    batch_size: int = 64
    """Mini-batch size (samples)."""
    optimizer: str = "sgd"
    """``"sgd"`` (momentum, Nesterov) or ``"adam"``."""
    lr: float = 0.05
    """Initial learning rate."""
    lr_min: float = 0.001
    """Final learning rate of the cosine schedule."""
    momentum: float = 0.9
    """SGD momentum."""
    nesterov: bool = True
    """Nesterov momentum (ENAS / B-ENAS / EAS)."""
    weight_decay: float = 1e-4
    """L2 weight decay."""
    schedule: str = "cosine"
    """``"cosine"`` (one cycle over all steps), ``"cosine_restarts"`` (SGDR) or ``"constant"``."""
    restart_epochs: int = 10
    """SGDR: first period T0 in epochs (ENAS: 10)."""
    restart_mult: int = 2
    """SGDR: period multiplier Tmul (ENAS: 2)."""
    grad_clip: float | None = 5.0
    """Max gradient norm (ENAS clips at 5); None = off."""
    augment: bool = True
    """Use the dataset's augmentation (pad + crop + flip on 32x32 RGB; none on digits)."""
    early_stop_patience: int | None = None
    """Stop when validation accuracy has not improved for this many epochs (EPNAS prediction)."""
    eval_batch_size: int = 1024
    """Batch size of ``evaluate``."""
    drop_path: float = 0.0
    """ScheduledDropPath (NASNet, lecture 003: "each path in the cell is dropped out with a
    probability that is linearly increased over the course of training"): the probability reached
    at the last step, 0 at the first; 0 = off. Acts on modules with a ``drop_path_prob``."""

    def validate(self) -> TrainConfig:
        for name in ("epochs", "batch_size", "eval_batch_size", "restart_epochs", "restart_mult"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise bad_value(name, v, "an integer >= 1")
        for name in ("lr", "lr_min"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise bad_value(name, v, "a finite number > 0")
        if not 0 <= self.momentum < 1:
            raise bad_value("momentum", self.momentum, "a number in [0, 1)")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise bad_value("weight_decay", self.weight_decay, "a finite number >= 0")
        if self.optimizer not in OPTIMIZERS:
            raise bad_value("optimizer", self.optimizer, OPTIMIZERS)
        if self.schedule not in SCHEDULES:
            raise bad_value("schedule", self.schedule, SCHEDULES)
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise bad_value("grad_clip", self.grad_clip, "a number > 0 or None")
        if not 0 <= self.drop_path < 1:
            raise bad_value("drop_path", self.drop_path, "a probability in [0, 1)")
        if self.early_stop_patience is not None and self.early_stop_patience < 1:
            raise bad_value("early_stop_patience", self.early_stop_patience, "an integer >= 1 or None")
        return self

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes).validate()

    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes the trained child (goes into evaluation-store keys); an unused
        ``drop_path`` is left out, so the keys of runs without it are as before it existed."""
        fp = dataclasses.asdict(self)
        if not self.drop_path:
            del fp["drop_path"]
        return fp


#: Training presets per paper (SPEC §6). "digits" is the quick offline default.
PRESETS: dict[str, TrainConfig] = {
    "digits": TrainConfig(epochs=4),
    "enas": TrainConfig(epochs=150, batch_size=160, lr=0.05, lr_min=0.001,
                        schedule="cosine_restarts", restart_epochs=10, restart_mult=2),
    "benas": TrainConfig(epochs=150, batch_size=160, lr=0.05, lr_min=0.001,
                         schedule="cosine_restarts", restart_epochs=10, restart_mult=2),
    "eas": TrainConfig(epochs=20, batch_size=64, lr=0.02, lr_min=1e-4, grad_clip=None),
    # EPNAS §4: 20 epochs, BZ 128, Nesterov, cosine l_max 0.05, l_min 0.001, T0 10, Tmul 2; with
    # performance prediction LR 0.5, BZ 1024, "early stop at 10 epochs" (one SGDR period)
    "epnas": TrainConfig(epochs=20, batch_size=128, lr=0.05, lr_min=0.001, grad_clip=None,
                         schedule="cosine_restarts", restart_epochs=10, restart_mult=2),
    "epnas_prediction": TrainConfig(epochs=10, batch_size=1024, lr=0.5, lr_min=0.001,
                                    grad_clip=None, schedule="cosine_restarts",
                                    restart_epochs=10, restart_mult=2),
    "seed001": TrainConfig(epochs=50, batch_size=64, optimizer="adam", lr=1e-3, lr_min=1e-3,
                           schedule="constant", weight_decay=0.0, grad_clip=None),
    # NAS-Bench-Macro (Su et al. CVPR 2021): SGD 0.1, momentum 0.9, wd 5e-4, batch 256, 50 epochs,
    # cosine (to ~0), random crop + flip
    "nas_bench_macro": TrainConfig(epochs=50, batch_size=256, lr=0.1, lr_min=1e-6, momentum=0.9,
                                   nesterov=False, weight_decay=5e-4, grad_clip=None),
}


def get_preset(name: str) -> TrainConfig:
    if name not in PRESETS:
        raise bad_value("training", name, sorted(PRESETS))
    return PRESETS[name]


@dataclass
class TrainResult:
    """What one training run did."""

    status: str  # "ok" | "diverged" | "oom" | "timeout"
    epochs: float
    steps: int
    train_seconds: float
    final_loss: float
    message: str = ""


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; nothing elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(device: torch.device, *, shared_weights: bool = False) -> torch.memory_format:
    """The one memory-format rule of the project: channels_last on CUDA (tensor-core friendly),
    and for the shared-weight super-network on every device (its CPU steps measured ~20% faster
    in channels_last: `weight_sharing` 59x vs 44x per env step); a child trained alone on CPU keeps
    the contiguous format, because there oneDNN's channels_last backward of depthwise convs with
    few channels (cells at channels=4) corrupted the heap (torch 2.14.1) - for the 1.6x it gave."""
    if device.type == "cuda" or shared_weights:
        return torch.channels_last
    return torch.contiguous_format


def device_layout(x: torch.Tensor, *, shared_weights: bool = False) -> torch.Tensor:
    """An image batch in :func:`memory_format`'s layout (other tensors unchanged)."""
    fmt = memory_format(x.device, shared_weights=shared_weights)
    if fmt is torch.channels_last and x.dim() == 4:
        return x.contiguous(memory_format=fmt)
    return x


def place_model(model: nn.Module, device: torch.device, *,
                shared_weights: bool = False) -> nn.Module:
    """``model`` on ``device``, in the layout :func:`device_layout` gives its inputs."""
    model.to(device)
    fmt = memory_format(device, shared_weights=shared_weights)
    if fmt is torch.channels_last:
        model.to(memory_format=fmt)
    return model


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               optimizer: torch.optim.Optimizer, scheduler: Any = None,
               grad_clip: float | None = None, *, skip_nonfinite: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """One training step of ``model`` on the batch ``(x, y)`` (already augmented): forward under
    :func:`autocast_for` in :func:`device_layout`, cross-entropy in fp32, backward, gradient
    clipping, the optimizer's and the scheduler's step. Used by :func:`train` and by the
    shared-weight evaluator (a child's path through the super-network).

    :param skip_nonfinite: a non-finite loss makes no update (a shared-weight step must not
        poison the shared weights); this reads the loss on the host (a device sync).
    :returns: ``(loss, logits)``, detached.
    """
    with autocast_for(x.device):
        logits = model(device_layout(x)).float()
    loss = F.cross_entropy(logits, y)
    if skip_nonfinite and not torch.isfinite(loss):
        return loss.detach(), logits.detach()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.detach(), logits.detach()


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is an out-of-memory error (CUDA's, or the CPU allocator's)."""
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    ) or (isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc).lower())


def free_memory(device: torch.device) -> None:
    """Release what an out-of-memory child left (garbage, and CUDA's cached blocks)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """The learning-rate schedule of ``cfg`` (stepped once per training step)."""
    sched = torch.optim.lr_scheduler
    if cfg.schedule == "cosine":
        return sched.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch, eta_min=cfg.lr_min)
    if cfg.schedule == "cosine_restarts":
        return sched.CosineAnnealingWarmRestarts(
            opt, T_0=cfg.restart_epochs * steps_per_epoch, T_mult=cfg.restart_mult,
            eta_min=cfg.lr_min)
    return sched.LambdaLR(opt, lambda _step: 1.0)


def import_compiler_stack() -> None:
    """Import ``torch._dynamo`` now (~2 s of CPU, once per process). The first optimizer imports
    it anyway (``torch.optim``'s ``add_param_group`` is wrapped by ``torch._disable_dynamo``), so
    an env that trains pays it at ``gym.make`` instead of inside its first episode."""
    import torch._dynamo  # noqa: F401


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           weight_decay=cfg.weight_decay)


@dataclass
class _Run:
    """One :func:`train` call: what its helpers share (settings, optimizer, progress)."""

    model: nn.Module
    data: DataSplit
    config: TrainConfig
    gen: torch.Generator  # draws the shuffles, the augmentation and the drop-path masks
    batch: int
    steps_per_epoch: int
    start: float
    time_limit: float | None
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None
    paths: list[nn.Module] = field(default_factory=list)  # modules with a drop_path_prob
    steps: int = 0
    best_val: float = -1.0
    stale: int = 0


def train(model: nn.Module, data: DataSplit, config: TrainConfig, *, seed: int = 0,
          time_limit: float | None = None) -> TrainResult:
    """Train ``model`` in place on ``data``'s training split, on ``data``'s device.

    :param seed: seeds shuffling and augmentation (the weights were seeded by ``build_model``).
    :param time_limit: wall-clock seconds; when exceeded, training stops with ``"timeout"``.
    """
    device = data.device
    start = time.perf_counter()
    n = data.train_x.shape[0]
    batch = min(config.batch_size, n)
    steps_per_epoch = max(1, n // batch)  # drop the ragged tail: BN needs > 1 sample
    gen = torch.Generator(device=device).manual_seed(int(seed))
    run = _Run(model, data, config, gen, batch, steps_per_epoch, start, time_limit)
    status, message, loss_value = "ok", "", float("nan")
    try:
        _prepare(run)
        for epoch in range(config.epochs):
            loss_value = _train_epoch(run)  # one sync per epoch
            if not math.isfinite(loss_value) or not _weights_finite(model):
                status, message = "diverged", f"loss became {loss_value} in epoch {epoch + 1}"
                break
            if config.early_stop_patience is not None and _patience_spent(run):
                break
    except _Diverged as exc:
        status, message = "diverged", str(exc)
    except _Timeout as exc:
        status, message = "timeout", str(exc)
    except Exception as exc:  # noqa: BLE001 - a child's fault must not crash the search
        if not is_oom(exc):
            raise
        status, message = "oom", f"{type(exc).__name__}: {exc}"
        run.optimizer = run.scheduler = None
        free_memory(device)
    for m in run.paths:  # the trained model is deterministic again (and holds no generator)
        m.drop_path_prob, m.drop_path_gen = 0.0, None
    return TrainResult(status=status, epochs=run.steps / steps_per_epoch, steps=run.steps,
                       train_seconds=time.perf_counter() - start, final_loss=loss_value,
                       message=message)


def _prepare(run: _Run) -> None:
    """Put the model on the data's device in training mode; make the optimizer, the schedule and
    (with ``drop_path``) hand the run's generator to the drop-path modules."""
    model, config = run.model, run.config
    place_model(model, run.data.device)
    model.train()
    run.optimizer = make_optimizer(model, config)
    run.scheduler = make_scheduler(run.optimizer, config, run.steps_per_epoch)
    run.paths = [m for m in model.modules() if hasattr(m, "drop_path_prob")] \
        if config.drop_path else []
    for m in run.paths:
        m.drop_path_gen = run.gen


def _train_epoch(run: _Run) -> float:
    """One pass over a fresh permutation of the training split; the epoch's mean loss (one sync).

    :raises _Diverged: a non-finite loss (checked every step on CPU, every 20 on CUDA).
    :raises _Timeout: ``time_limit`` exceeded.
    """
    config, data, gen, batch = run.config, run.data, run.gen, run.batch
    device = data.device
    augment = data.augment if config.augment else "none"
    total_steps = config.epochs * run.steps_per_epoch
    perm = torch.randperm(data.train_x.shape[0], generator=gen, device=device)
    running = torch.zeros((), device=device)
    for i in range(run.steps_per_epoch):
        idx = perm[i * batch:(i + 1) * batch]
        x = augment_batch(data.train_x[idx], gen, augment)
        for m in run.paths:  # ScheduledDropPath: linear from 0 to config.drop_path
            m.drop_path_prob = config.drop_path * run.steps / max(1, total_steps - 1)
        loss, _ = train_step(run.model, x, data.train_y[idx], run.optimizer, run.scheduler,
                             config.grad_clip)
        running += loss
        run.steps += 1
        # CPU: a check per step is free; CUDA: every 20 steps to avoid a sync per step
        if (device.type != "cuda" or run.steps % 20 == 0) and not torch.isfinite(loss):
            raise _Diverged(f"loss became {loss.item():.4g} at step {run.steps}")
        if run.time_limit is not None and time.perf_counter() - run.start > run.time_limit:
            raise _Timeout(f"stopped after {run.steps} steps ({run.time_limit}s limit)")
    return float(running) / run.steps_per_epoch


def _patience_spent(run: _Run) -> bool:
    """Score the validation split after an epoch (early stopping); whether it has not improved
    for ``early_stop_patience`` epochs."""
    acc, _ = evaluate(run.model, run.data.val_x, run.data.val_y, run.config.eval_batch_size)
    run.model.train()
    if acc > run.best_val:
        run.best_val, run.stale = acc, 0
        return False
    run.stale += 1
    return run.stale >= run.config.early_stop_patience


class _Diverged(Exception):
    pass


class _Timeout(Exception):
    pass


def _weights_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             batch_size: int = 1024) -> tuple[float, float]:
    """``(accuracy, mean cross-entropy)`` of ``model`` in eval mode on ``(x, y)``."""
    model.eval()
    device = x.device
    correct = torch.zeros((), device=device, dtype=torch.long)
    loss = torch.zeros((), device=device)
    for i in range(0, x.shape[0], batch_size):
        xb, yb = device_layout(x[i:i + batch_size]), y[i:i + batch_size]
        with autocast_for(device):
            logits = model(xb).float()
        loss += F.cross_entropy(logits, yb, reduction="sum")
        correct += (logits.argmax(1) == yb).sum()
    n = max(1, x.shape[0])
    return float(correct) / n, float(loss) / n
