"""The ``"epnas"`` evaluator: EPNAS performance prediction (seed 004, §3.4; SPEC §5).

"By scaling up the batch size, we can use a large learning rate with an aggressive decay, which
enables accurate ranking with much fewer training epochs ... we also allow the generated networks
to partially share parameters across steps ... a global dictionary that is shared by all models
within a batch of searched models."

Two parts, both reused from below, never copied:

1. **Short aggressive training** (:func:`prediction_config`), EPNAS §4 "Training details": "With
   performance prediction (p.p.), we increase LR to 0.5 and BZ to 1024, and do early stop at 10
   epochs" (of 20, on the cosine schedule with warm restarts T0 = 10, Tmul = 2). The env's training
   config with the batch ``batch_scale`` times larger (EPNAS: 128 -> 1024, x8), capped so an epoch
   keeps at least ``min_steps_per_epoch`` steps (EPNAS keeps 44 at batch 1024 on CIFAR-10's 45k
   images); the learning rate grows as ``(batch ratio) ** lr_power`` with ``lr_power = ln 10 / ln 8``
   (EPNAS: x8 batch, x10 lr, 0.05 -> 0.5: "learning rate and batch size ratio can be increased";
   1.0 is the linear rule of Smith et al., EPNAS [38]); training stops after ``epochs_fraction`` of
   the env's ``epochs`` (EPNAS: 10 of 20). The schedule is the env's when it is SGDR
   (``"cosine_restarts"``: EPNAS's T0 = 10 makes the 10 epochs one full period), else one cosine
   cycle over the shortened run. ``patience`` (default None, EPNAS stops at a fixed epoch) adds
   early stopping once validation accuracy has not improved for that many epochs.
   Training itself is :class:`~nas_gym.evaluators.TrainEvaluator` / :func:`nas_gym.training.train`.
   With ``training="epnas_prediction"`` (already this schedule) the env passes ``derive=False``
   and the config is used as given (no second scaling).

   **Decision (small datasets):** with the default floor of 32 steps per epoch the batch of
   CIFAR-10 grows as in the paper (128 -> 1024) but digits' (1079 images, batch 64 = 6% of the set,
   already a larger share than EPNAS's 1024 / 45k = 2.3%) stays as it is. Measured on CPU
   (``experiments/benchmarks/epnas_speed.py``, linear lr rule): batch 134 or 269 with the scaled lr trained no
   faster per epoch and lost 20-30 points of validation accuracy in the short run, so on digits
   the prediction is "half the epochs + shared weights". ``min_steps_per_epoch=8`` restores the
   large batch there.
2. **Parameter sharing** (:class:`~nas_gym.evaluators.param_sharing.ParamShareDict`, keyed by (layer index,
   op type)): before training ``load_into(model)`` (exact, spliced or padded weights of matching
   units), after it ``update_from(model, accuracy)`` (on a key clash the more accurate model
   wins). With a file (``share_path``) every process of a vector env shares one dictionary; the
   processes' updates then interleave in time order, so such a run is not bit-reproducible (one
   process with a fresh dictionary is).

**Store-cache decision.** A prediction depends on the dictionary's state, which no store key can
capture (it is the history of the search). The evaluator *accepts* the evaluation store's cache:
an architecture already predicted under the same dictionary is answered from the store, untrained,
and leaves the dictionary as it is. Two reasons: a step that keeps the network unchanged (EPNAS
"keep" with no scaling) would otherwise be re-trained from its own stored weights and score higher
each time, rewarding doing nothing; and a killed search resumes without retraining. To keep
different dictionaries apart, :meth:`EpnasEvaluator.fingerprint` holds the dictionary's identity
(``"file:<absolute path>"``, or ``"memory:<random id>"`` for an in-memory one, whose cached results
are then only reused by this evaluator), plus ``"depends_on": "share_state"`` saying results are
not a function of the architecture alone.
"""

from __future__ import annotations

import math
import os
import uuid
from pathlib import Path
from typing import Any

from torch import nn

from ..arch.base import Architecture
from ..data import DataSplit
from ..errors import bad_value
from ..models import build_model
from ..store import EvaluationStore, default_store_path
from ..training import TrainConfig
from .base import EVALUATORS, EvalResult, TrainEvaluator
from .param_sharing import ParamShareDict

SHARE_SUFFIX = ".epnas_share.sqlite"


#: EPNAS's learning-rate growth per batch growth: x8 batch (128 -> 1024), x10 lr (0.05 -> 0.5).
EPNAS_LR_POWER = math.log(10) / math.log(8)
#: Training presets that already are a prediction schedule (the "epnas" evaluator uses them as given).
PREDICTION_PRESETS = ("epnas_prediction",)


def prediction_config(config: TrainConfig, n_train: int, *, batch_scale: int = 8,
                      min_steps_per_epoch: int = 32, epochs_fraction: float = 0.5,
                      patience: int | None = None, lr_power: float = EPNAS_LR_POWER
                      ) -> TrainConfig:
    """EPNAS §3.4 "performance prediction" training derived from ``config`` for ``n_train``
    training samples (see the module docstring): larger batch, learning rate times
    ``(batch ratio) ** lr_power``, a stop after ``ceil(epochs * epochs_fraction)`` epochs of the
    SGDR schedule (or of one cosine cycle), early stopping after ``patience`` epochs without
    improvement when given. EPNAS's 20-epoch config on CIFAR-10 gives batch 1024, lr 0.5, 10 epochs."""
    for name, v in (("batch_scale", batch_scale), ("min_steps_per_epoch", min_steps_per_epoch)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise bad_value(name, v, "an integer >= 1")
    if isinstance(epochs_fraction, bool) or not isinstance(epochs_fraction, (int, float)) \
            or not 0 < epochs_fraction <= 1:
        raise bad_value("epochs_fraction", epochs_fraction, "a number in (0, 1]")
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int)
                                 or patience < 1):
        raise bad_value("patience", patience, "an integer >= 1 or None")
    if isinstance(lr_power, bool) or not isinstance(lr_power, (int, float)) \
            or not 0 <= lr_power <= 2:
        raise bad_value("lr_power", lr_power, "a number in [0, 2] (1: linear scaling)")
    base = config.batch_size
    batch = max(base, min(base * batch_scale, n_train // min_steps_per_epoch))
    epochs = max(1, math.ceil(config.epochs * epochs_fraction))
    if patience is not None and patience >= epochs:
        patience = None  # it could never stop early: skip the per-epoch validation passes
    schedule = "cosine_restarts" if config.schedule == "cosine_restarts" else "cosine"
    return config.replace(batch_size=batch, lr=config.lr * (batch / base) ** lr_power,
                          schedule=schedule, epochs=epochs, early_stop_patience=patience)


def default_share_path(store: Any) -> str | None:
    """The sharing dictionary's file next to an env's evaluation store (``store=`` argument):
    ``evaluations.sqlite`` -> ``evaluations.epnas_share.sqlite``; None for ``":memory:"``."""
    if isinstance(store, EvaluationStore):
        store = store.path
    elif store is None:
        store = default_store_path()
    path = os.fspath(store) if isinstance(store, (str, os.PathLike)) else None
    if path is None or path == ":memory:":
        return None
    p = Path(path).expanduser().resolve()
    return str(p.with_name(p.stem + SHARE_SUFFIX))


@EVALUATORS.register("epnas")
class EpnasEvaluator(TrainEvaluator):
    """EPNAS performance prediction: aggressive short training from shared weights (module doc).

    :param data: the dataset split, on the training device.
    :param config: the env's training config; :func:`prediction_config` derives the one used
        (``derive=False``: used as given - the env's choice for ``training="epnas_prediction"``).
    :param time_limit: wall-clock seconds per child (status ``"timeout"`` past it).
    :param share_path: SQLite file of the sharing dictionary (shared by processes); None keeps it
        in memory (one process). ``ProgressiveNAS-v0`` defaults it to a file next to its store.
    :param share: False turns parameter sharing off (aggressive training only); a
        :class:`ParamShareDict` is used as given (several evaluators of one process).
    :param batch_scale: batch multiplier (EPNAS: 1024 / 128 = 8); 1 keeps ``config``'s batch.
    :param min_steps_per_epoch: the enlarged batch keeps at least this many steps per epoch.
    :param epochs_fraction: share of the env's ``epochs`` trained (EPNAS: 10 / 20 = 0.5).
    :param patience: early-stopping patience in epochs (None = train all those epochs, EPNAS).
    :param lr_power: learning rate x ``(batch ratio) ** lr_power`` (EPNAS: ln 10 / ln 8).
    :param derive: False: ``config`` already is the prediction schedule; use it unchanged.
    :param max_variants: weight sets per key with different shapes (1 = EPNAS).
    :param pad: what fills dimensions the stored weights lack (``ParamShareDict``).
    :param report_test: also record test accuracy in ``extra`` (reports only, never rewards).
    """

    def __init__(self, data: DataSplit, config: TrainConfig, *, time_limit: float | None = None,
                 share_path: str | os.PathLike[str] | None = None,
                 share: bool | ParamShareDict = True, batch_scale: int = 8,
                 min_steps_per_epoch: int = 32, epochs_fraction: float = 0.5,
                 patience: int | None = None, max_variants: int = 1, pad: str = "zero_inputs",
                 report_test: bool = False, lr_power: float = EPNAS_LR_POWER,
                 derive: bool = True) -> None:
        n_train = int(data.train_x.shape[0])
        if not isinstance(derive, bool):
            raise bad_value("derive", derive, "True or False")
        predicted = prediction_config(
            config.validate(), n_train, batch_scale=batch_scale,
            min_steps_per_epoch=min_steps_per_epoch, epochs_fraction=epochs_fraction,
            patience=patience, lr_power=lr_power)  # validates the arguments either way
        super().__init__(data, predicted if derive else config, time_limit=time_limit,
                         report_test=report_test)
        if share_path is not None and not isinstance(share_path, (str, os.PathLike)):
            raise bad_value("share_path", share_path, "a file path or None")
        self.share: ParamShareDict | None
        if isinstance(share, ParamShareDict):
            self.share = share
        elif isinstance(share, bool):
            self.share = ParamShareDict(share_path, max_variants=max_variants, pad=pad) \
                if share else None
        else:
            raise bad_value("share", share, "True, False or a ParamShareDict")
        if self.share is None:
            self.share_id = None
        elif self.share.path is not None:
            self.share_id = f"file:{Path(self.share.path).expanduser().resolve()}"
        else:
            self.share_id = f"memory:{uuid.uuid4().hex}"  # in-memory: cache hits only here

    def fingerprint(self) -> dict[str, Any]:
        fp = {**super().fingerprint(), "evaluator": "epnas", "share": self.share_id}
        if self.share is not None:
            fp.update(depends_on="share_state", share_pad=self.share.pad,
                      share_max_variants=self.share.max_variants)
        return fp

    def evaluate(self, architecture: Architecture, *, seed: int,
                 model: nn.Module | None = None) -> EvalResult:
        if model is None:
            model = build_model(architecture, self.data.input_shape, self.data.num_classes,
                                seed=seed)
        loaded = self.share.load_into(model) if self.share is not None else None
        result = super().evaluate(architecture, seed=seed, model=model)
        stored: list[str] = []
        if self.share is not None and result.status in ("ok", "timeout"):
            stored = self.share.update_from(result.model or model, result.accuracy)["stored"]
        result.extra.update(share_loaded=loaded, share_stored=stored,
                            batch_size=self.config.batch_size, lr=self.config.lr)
        return result
