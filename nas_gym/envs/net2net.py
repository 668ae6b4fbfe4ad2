"""``Net2Net-v0``: grow a trained plain CNN by function-preserving transforms (EAS; SPEC §1.3).

The checkpoint format and the replayable transform records live in :mod:`nas_gym.lineage`; the
action and observation encoding in :mod:`nas_gym.envs.net2net_encoding`, the start net's forms in
:mod:`nas_gym.envs.net2net_start`.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from gymnasium import spaces
from torch import nn

from ..arch.base import sha256_of
from ..errors import ConfigError, bad_value
from ..evaluation import EvaluationPipeline
from ..evaluators import TrainEvaluator
from ..lineage import apply_transform, checkpoint_bytes, model_from_checkpoint, weights_sha256
from ..models.net2net import legal_widen_layers
from .base import NasEnv
from .net2net_encoding import SLOT_NVEC, allow_deepen, decode_action, encode_observation
from .net2net_start import CheckpointEvaluator, parse_start_net

REWARD_MODES = ("episode", "step")
PROTOCOLS = ("free", "eas")


class Net2NetEnv(NasEnv):
    """Grow a trained network one function-preserving transform per step (EAS).

    ## Description
    EAS (Cai et al. 2018): the state is the current network *with its weights*; each step applies
    Net2Wider (the layer's filters / units go to the next level of ``CONV_WIDTHS`` / ``FC_UNITS``,
    EAS eq. 1-3) or Net2Deeper (an identity conv + BN + ReLU, or an identity fc) -- both from
    :mod:`nas_gym.models.net2net`, so the network's function is unchanged -- or stops. The final child
    inherits the transformed weights and is fine-tuned ``epochs`` epochs (EAS: 20, lr 0.02 --
    ``training="eas"``); its validation accuracy gives the reward.

    ## Action Space
    ``Discrete(L + 4 (L + 1) + 1)`` with ``L = max_layers``, masked:

    - ``l`` (``0 <= l < L``): widen layer ``l``;
    - ``L + 3 p + j`` (``0 <= p <= L``, ``j`` indexes ``CONV_KERNELS = (1, 3, 5)``): insert a conv
      with kernel ``CONV_KERNELS[j]`` so that it becomes layer ``p`` (after the first conv, before
      the global pool);
    - ``L + 3 (L + 1) + p``: insert an fc so that it becomes layer ``p`` (after the global pool);
    - ``L + 4 (L + 1)`` (the last action, ``env.unwrapped.stop_action``): stop.

    Widening is allowed while widen steps remain and the layer is below the top level; deepening
    while deepen steps remain and the net has fewer than ``L`` layers; stop always.
    ``info["token_type"]`` is ``"transform"`` (``"done"`` after the last step).

    ``protocol="eas"`` (EAS §"Start with Small Network": "5 steps of Net2Deeper action and 4 steps
    of Net2Wider action"; the Net2Wider actor "simultaneously determines whether each layer should
    be extended"): the episode is exactly ``max_wider`` wider steps, then ``max_deeper`` deeper
    steps (the order of the EAS authors' released search script), never stopped early. A wider step
    is one binary decision per widenable layer (below the top level), one sub-step each in layer
    order (``info["token_type"] = "widen_layer"``, ``info["layer"] = l``; legal actions: ``l`` =
    widen it, the last action = keep it); the network, so the observation, stays as it was until
    the step's last decision, then every selected layer is widened. A deeper step
    (``"deepen"``) allows only the deepen actions. A step whose decisions have no legal choice is
    skipped (counted as taken).

    ## Observation Space
    ``MultiDiscrete([5, 12, 4] * L + [max_deeper + 1, max_wider + 1])``: per layer slot its type
    (0 empty, 1 conv, 2 max pool, 3 avg pool, 4 fc), width level (number of ``CONV_WIDTHS`` /
    ``FC_UNITS`` levels <= its width; 0 for pools) and kernel code (conv ``min(k // 2, 3)``, pool
    ``min(size - 1, 3)``); then the deepen and widen steps left. ``info["architecture"]`` holds the
    exact current network.

    ## Rewards
    ``reward_mode="episode"`` (default, EAS): 0 per transform, then ``tan(acc * pi / 2)`` of the
    fine-tuned child (accuracy clipped below 1; ``accuracy_transform="tan"``) combined with the
    penalty of ``budget`` (default ``"epnas"``, multiplicative, so scale-free under tan; no budget,
    no penalty). ``"step"`` (EAS leaves the per-step variant open): after each transform the net so
    far is fine-tuned ``epochs`` like a final child (a copy: later transforms act on the inherited
    weights, as in episode mode) and the reward is the change of that reward; the first change is
    taken against the start net fine-tuned the same way. The return telescopes to
    ``R(final) - R(start)``: the episode reward minus a constant. Intermediate nets are store
    entries, so shared prefixes of episodes cost no training.

    ## Starting State
    The start net with trained weights. ``start_net=None``: ``EAS_START_NET`` (EAS Table 1) when the
    images are at least 32x32, else ``DIGITS_START_NET``. A start net without weights is trained
    once, ``start_epochs`` epochs with the env's training config and ``seed``; its record and
    weights go to the store, so later resets (and other processes) load them.

    ## Episode End
    Terminates on stop, when the ``max_deeper`` deepen and ``max_wider`` widen steps are used up
    (EAS: 5 and 4), or when no transform is legal. Never truncates. Terminal ``info`` holds the
    SPEC §0 keys plus ``transforms`` (the records of :func:`nas_gym.lineage.apply_transform`),
    ``parent`` (the start net's store key) and ``store_key``; the store records ``parent`` and
    ``transform`` of the child (weight lineage) and, with ``save_weights``, its fine-tuned weights.

    ## Arguments
    - ``start_net``: None, a ``PlainCNN``, its dict, or a trained net: a path written by
      :func:`nas_gym.checkpoint.save_model` (e.g. by :func:`nas_gym.lineage.export_model`), or a
      dict ``{"architecture", "state_dict"[, "key"]}`` (:func:`nas_gym.lineage.next_stage_start`
      makes one from the best net of a stage). A ``key`` / sidecar ``store_key`` found in the
      store becomes the children's parent, so the lineage runs across stages.
    - ``max_deeper`` (5), ``max_wider`` (4): transforms per episode (EAS).
    - ``max_layers``: layer slots of the action / observation spaces; default start layers +
      ``max_deeper``.
    - ``start_epochs``: training of a start net without weights; default ``5 * epochs``.
    - ``reward_mode``: ``"episode"`` or ``"step"`` (see Rewards; in ``protocol="eas"`` a step
      reward follows each complete wider or deeper step, sub-steps get 0).
    - ``protocol``: ``"free"`` (default: any transform or stop per step) or ``"eas"`` (see
      Action Space).
    - ``widen_noise`` (0.0): Net2Wider symmetry-breaking noise (relative std). With 0 the
      function is kept exactly, but a replicated unit and its original get identical gradients
      and stay copies through fine-tuning (measured), so widening adds parameters, not capacity;
      Net2Net adds a little noise for this reason.
    - ``save_weights`` (True): keep each child's fine-tuned weights in the store.
    - the common arguments of every env (SPEC §0): ``budget``, ``penalty``, ``penalty_kwargs``,
      ``accuracy_transform`` (default ``"tan"``), ``dataset``, ``data_root``, ``download``,
      ``train_size``, ``training``, ``epochs``, ``batch_size``, ``lr``, ``device``, ``evaluator``,
      ``evaluator_kwargs``, ``store``, ``seed`` (training seed, and the seed of every transform's
      draws), ``reject_infeasible``, ``measure_latency``, ``time_limit``, ``invalid_action``;
      where children train (SPEC §5): ``evaluator_backend`` (``"local"`` / ``"process"`` /
      ``"ray"``), ``worker_threads``, ``ray_address``, ``ray_resources``, ``max_retries`` (see
      :mod:`nas_gym.evaluators.remote`).

    Transform draws are seeded by ``(seed, start net, transforms so far)``, not by ``reset(seed)``:
    a transform path then always gives the same weights, so its evaluation is a deterministic store
    entry (as an architecture is in the other envs) and repeated paths cost no training.

    ## Version History
    - v0: initial version.
    - v0 (issue 16): ``protocol="eas"`` added; the default protocol is unchanged.
    """

    default_metric = "params"
    default_penalty = "epnas"
    default_accuracy_transform = "tan"

    def __init__(self, *, start_net: Any = None, max_deeper: int = 5, max_wider: int = 4,
                 max_layers: int | None = None, start_epochs: int | None = None,
                 reward_mode: str = "episode", widen_noise: float = 0.0,
                 save_weights: bool = True, protocol: str = "free", **common: Any) -> None:
        if protocol not in PROTOCOLS:
            raise bad_value("protocol", protocol, PROTOCOLS)
        self.protocol = protocol
        for name, v in (("max_deeper", max_deeper), ("max_wider", max_wider)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise bad_value(name, v, "an integer >= 0")
        if max_deeper + max_wider < 1:
            raise bad_value("max_deeper", max_deeper, "max_deeper + max_wider >= 1")
        if reward_mode not in REWARD_MODES:
            raise bad_value("reward_mode", reward_mode, REWARD_MODES)
        if isinstance(widen_noise, bool) or not isinstance(widen_noise, (int, float)) \
                or not 0 <= widen_noise < float("inf"):
            raise bad_value("widen_noise", widen_noise, "a finite number >= 0")
        if start_epochs is not None and (isinstance(start_epochs, bool)
                                         or not isinstance(start_epochs, int) or start_epochs < 1):
            raise bad_value("start_epochs", start_epochs, "None or an integer >= 1")
        super().__init__(**common)
        self.max_deeper, self.max_wider, self.reward_mode = max_deeper, max_wider, reward_mode
        self.widen_noise, self.save_weights = float(widen_noise), bool(save_weights)
        self.start_epochs = start_epochs or 5 * self.components.train_config.epochs
        self.start_arch, self._start_ckpt = parse_start_net(start_net, self.input_shape,
                                                            self.num_classes)
        n_start = len(self.start_arch.layers)
        if max_layers is None:
            max_layers = n_start + max_deeper
        if isinstance(max_layers, bool) or not isinstance(max_layers, int) or max_layers < n_start:
            raise bad_value("max_layers", max_layers,
                            f"an integer >= the start net's {n_start} layers")
        self.max_layers = L = max_layers
        self.stop_action = L + 4 * (L + 1)
        self.action_space = spaces.Discrete(self.stop_action + 1)
        self.observation_space = spaces.MultiDiscrete(
            np.array([*SLOT_NVEC * L, max_deeper + 1, max_wider + 1], dtype=np.int64))
        self.start_key: str | None = None
        self._start_model: nn.Module | None = None
        self._start_reward: float | None = None
        self._arch, self._model = self.start_arch, None
        self._transforms: list[dict[str, Any]] = []
        self._mask = np.zeros(self.action_space.n, dtype=bool)
        self._done = True

    # -- start net ---------------------------------------------------------------------------------
    def _prepare_start(self) -> None:
        """Load (or train once, then store) the start net's weights; set ``start_key``."""
        if self._start_model is not None:
            return
        c, seed = self.components, self.components.seed
        if self._start_ckpt is None:
            evaluator = TrainEvaluator(self.data, c.train_config.replace(epochs=self.start_epochs),
                                       time_limit=getattr(c.evaluator, "time_limit", None))
            info, result = self._pipeline(evaluator).evaluate(self.start_arch, seed=seed)
            key, blob = info["store_key"], self.store.get_weights(info["store_key"])
            if blob is None:  # first time (or a record without weights): train, deterministic
                result = result or evaluator.evaluate(self.start_arch, seed=seed)
                if result.status not in ("ok", "timeout"):
                    raise ConfigError(f"training the start net ended with status={result.status!r}"
                                      f" ({result.message}); lower lr or pass trained weights")
                blob = checkpoint_bytes(result.model, key=key)
                self.store.put_weights(key, blob)
        else:
            key, blob = self._start_ckpt.get("key"), self._start_ckpt
            if not (isinstance(key, str) and key in self.store):  # make it a lineage root
                model = model_from_checkpoint(blob, self.input_shape, self.num_classes)
                evaluator = CheckpointEvaluator(self.data, weights_sha256(model.state_dict()))
                key = self._pipeline(evaluator).evaluate(self.start_arch, seed=seed,
                                                         model=model)[0]["store_key"]
                if self.store.get_weights(key) is None:
                    self.store.put_weights(key, checkpoint_bytes(model, key=key))
        # always rebuilt from the checkpoint: the same tensors and layout in every process
        model = model_from_checkpoint(blob, self.input_shape, self.num_classes)
        self._start_model, self.start_key = model.to(c.device).eval(), key

    def _pipeline(self, evaluator: Any) -> EvaluationPipeline:
        p = self.components.pipeline
        return EvaluationPipeline(evaluator, self.store, self.reward_fn, self.input_shape,
                                  self.num_classes, device=p.device,
                                  measure_latency=p.measure_latency)

    # -- actions -----------------------------------------------------------------------------------
    def _decode(self, a: int) -> dict[str, Any]:
        """The transform record of action ``a`` (without its seed)."""
        return decode_action(a, self._arch, self.max_layers, noise=self.widen_noise,
                             batch_size=self.components.train_config.batch_size)

    def _valid(self) -> np.ndarray:
        mask = np.zeros(self.action_space.n, dtype=bool)
        if self.protocol == "eas":
            return self._eas_valid(mask)
        mask[self.stop_action] = True
        if self._wider_left > 0:
            mask[legal_widen_layers(self._arch)] = True
        allow_deepen(mask, self._arch, self.max_layers, self._deeper_left)
        return mask

    def action_masks(self) -> np.ndarray:
        """The mask of the next action as ``np.int8`` 0/1 (sb3-contrib MaskablePPO reads it)."""
        return self._mask.astype(np.int8)

    def _obs(self) -> np.ndarray:
        return encode_observation(self._arch, self.observation_space.shape, self._deeper_left,
                                  self._wider_left)

    def _info(self, invalid: bool) -> dict[str, Any]:
        token = "transform"
        if self.protocol == "eas":
            token = "widen_layer" if self._queue else "deepen"
        info = {"action_mask": self._mask.astype(np.int8),
                "token_type": "done" if self._done else token, "invalid_action": invalid,
                "num_transforms": len(self._transforms), "architecture": self._arch.to_dict()}
        if self.protocol == "eas":
            info["layer"] = self._queue[0] if self._queue and not self._done else -1
        return info

    # -- EAS protocol (see Action Space) ---------------------------------------------------------
    def _eas_valid(self, mask: np.ndarray) -> np.ndarray:
        """The next decision's mask; opens the next wider step's layer queue when due."""
        while self._wider_left > 0 and not self._queue:  # a new wider step
            self._queue, self._picks = list(legal_widen_layers(self._arch)), []
            if not self._queue:  # nothing to widen: the step is taken, empty
                self._wider_left -= 1
        if self._queue:
            mask[[self._queue[0], self.stop_action]] = True
        else:
            allow_deepen(mask, self._arch, self.max_layers, self._deeper_left)
        return mask

    def _eas_records(self, a: int) -> list[dict[str, Any]]:
        """The transform records a decision completes (none inside a wider step)."""
        if not self._queue:
            self._deeper_left -= 1
            return [self._decode(a)]
        layer = self._queue.pop(0)
        if a != self.stop_action:
            self._picks.append(layer)
        if self._queue:
            return []
        self._wider_left -= 1
        return [{**self._decode(la), "layer": la} for la in self._picks]

    def _apply(self, record: dict[str, Any]) -> None:
        record["seed"] = int(sha256_of({"seed": self.components.seed, "parent": self.start_key,
                                        "path": [*self._transforms, record]})[:15], 16)
        self._model = apply_transform(self._model, record, self.data)
        self._transforms.append(record)

    # -- evaluation ------------------------------------------------------------------------------
    def _evaluate(self, model: nn.Module, transforms: list[dict[str, Any]]) -> dict[str, Any]:
        """Fine-tune a copy of ``model`` through the shared pipeline (store key: the lineage)."""
        child = copy.deepcopy(model)
        info, result = self.components.pipeline.evaluate(
            child.architecture, seed=self.components.seed, model=child,
            lineage={"parent": self.start_key, "transform": transforms})
        if self.save_weights and result is not None and result.status in ("ok", "timeout"):
            trained = result.model if result.model is not None else child
            self.store.put_weights(info["store_key"],
                                   checkpoint_bytes(trained, key=info["store_key"]))
        return {**info, "transforms": copy.deepcopy(transforms), "parent": self.start_key}

    # -- gymnasium API -----------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._prepare_start()
        self._arch, self._model, self._transforms = self.start_arch, self._start_model, []
        self._deeper_left, self._wider_left = self.max_deeper, self.max_wider
        self._queue, self._picks = [], []
        self._last_reward: float | None = None
        self._done = False
        self._mask = self._valid()
        return self._obs(), self._info(False)

    def step(self, action: Any):
        self._check_can_step(self._done)
        a, invalid = self._check_action(action, self._mask)
        reward, terminal = 0.0, None
        stop = a == self.stop_action and self.protocol == "free"
        if self.protocol == "eas":
            records = self._eas_records(a)
            for record in records:
                self._apply(record)
            self._arch = self._model.architecture
            if records and self.reward_mode == "step":
                terminal, reward = self._step_reward()
            self._mask = self._valid()
        elif not stop:
            record = self._decode(a)
            self._apply(record)
            self._arch = self._model.architecture
            if record["op"] == "widen":
                self._wider_left -= 1
            else:
                self._deeper_left -= 1
            if self.reward_mode == "step":
                terminal, reward = self._step_reward()
            self._mask = self._valid()
        self._done = stop or not self._mask[:-1].any()
        if self._done:
            self._mask = np.ones(self.action_space.n, dtype=bool)
        info = self._info(invalid)
        if self._done:
            if terminal is None:  # episode mode, or stop (step mode: a store hit, reward 0)
                terminal = self._evaluate(self._model, self._transforms)
                reward = terminal["reward"] if self.reward_mode == "episode" else 0.0
            terminal.pop("reward")
            info.update(terminal)
            self.last_info = info
        return self._obs(), float(reward), self._done, False, info

    def _step_reward(self) -> tuple[dict[str, Any], float]:
        """``reward_mode="step"``: the fine-tuned net so far and the change of its reward."""
        if self._start_reward is None:
            self._start_reward = self._evaluate(self._start_model, [])["reward"]
        before = self._start_reward if self._last_reward is None else self._last_reward
        terminal = self._evaluate(self._model, self._transforms)
        self._last_reward = terminal["reward"]
        return terminal, self._last_reward - before

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            return f"{self._arch.to_dict()['layers']} transforms={len(self._transforms)}"
        return None

    def _decision(self) -> str:
        return f"transform {len(self._transforms)}"
