"""``ProgressiveNAS-v0``: EPNAS progressive scale / insert search (seed 004; SPEC §1.4).

The decisions of a transform (layout, masks, applying one) live in
:mod:`nas_gym.envs.progressive_decisions`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium import spaces

from ..arch import epnas_ops as E
from ..arch.base import Architecture, architecture_from_dict
from ..arch.epnas import LayerNet, ModuleNet
from ..errors import ArchitectureError, bad_value
from ..evaluators.epnas import default_share_path
from .base import NasEnv
from .progressive_decisions import TransformDecisions

PATTERNS = ("layer", "module")
ACTION_MODES = ("token", "multidiscrete")
DEFAULT_TRANSFORMS = {"layer": 10, "module": 5}  # EPNAS §4.1: episode steps 10 / 5
DEFAULT_START_SIZE = {"layer": 4, "module": 3}


def _int_arg(name: str, value: Any, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (
            high is not None and value > high):
        raise bad_value(name, value, f"an integer in [{low}, {high}]" if high is not None
                        else f"an integer >= {low}")
    return value


class ProgressiveNASEnv(NasEnv):
    """Transform a network one EPNAS scale + insert action per transform; reward every transform.

    ## Description
    EPNAS (Zhou et al., seed 004, §3.2-3.3): the state is a network of the layer-by-layer space
    (Table 2, ``pattern="layer"``) or of the module space (Table 3, ``pattern="module"``: one
    module of branches stacked ``num_modules`` times). One transform = a **scale action** (the
    entries are split into ``num_parts`` = F contiguous parts; each part moves the channels, then
    the filter width, of its conv entries one level down / stays / one level up the scale table)
    followed by an **insert action** (keep / insert / remove at a position; for insert the new
    layer's or branch's fields, with its ``src2`` skip or none). The transforms, masks and the
    check-table position prior (``L + 5`` values) are :mod:`nas_gym.arch.epnas_ops`.

    ## Action Space
    A transform has these decisions (``F`` per scale field):
    ``scale_channels`` x F and ``scale_filter_width`` x F (size 3: move -1 / 0 / +1), ``op``
    (3: keep / insert / remove), ``position`` (``MAX + 5``; the check table), then for ``insert``
    only the new entry's fields: ``type``, ``filter_width``, ``pool_width``, ``channels``,
    ``activation``, ``src1``, ``src2`` (layer; src2 index 0 = -1, no skip) or ``type``,
    ``filter_width``, ``pool_width``, ``channels``, ``src1``, ``src2``, ``propagate`` (module).

    - ``action_mode="token"`` (default): ``Discrete(MAX + 5)``, one decision per step in the order
      above (keep / remove end the transform after ``position``). ``info["token_type"]`` names the
      next decision, ``info["action_mask"]`` / ``action_masks()`` mask it exactly (they depend on
      the net and the earlier decisions of the transform). Invalid actions follow the rule of
      :class:`~nas_gym.envs.base.NasEnv` (``valid[a % len(valid)]``).
    - ``action_mode="multidiscrete"``: ``MultiDiscrete`` of all the decisions, one transform per
      step. Masks cannot depend on sibling decisions, so ``action_masks()`` (flat concatenation,
      sb3-contrib MaskablePPO) and ``info["action_mask"]`` (a tuple per dimension,
      ``MultiDiscrete.sample(mask=)``) allow the *union*: ``position`` legal for some legal op,
      fields legal for some type at the last position. The step then reads the decisions in order
      and maps each illegal value to the nearest legal one given the earlier ones
      (:func:`~nas_gym.arch.epnas_ops.nearest_legal`, ties to the lower), flagging
      ``info["invalid_action"]``; decisions that are not read (position of ``keep``, fields of
      keep / remove, fields the chosen type ignores) are never invalid.

    ## Observation Space
    ``MultiDiscrete``: for each of the ``MAX`` entry slots (``MAX_LAYERS`` = 20 /
    ``MAX_BRANCHES`` = 8) its fields as indices into the tables above (type + 1, 0 = empty slot;
    ``src2`` of a layer: index 0 = -1), then the number of transforms done; in token mode also the
    decision index within the transform and the decisions taken so far in it (value + 1, 0 = not
    yet). ``info["architecture"]`` holds the exact current network.

    ## Rewards
    Per transform (EPNAS eq. 3): ``r_t = P_t * prod_i V(U_i)``, ``V(U) = p ** max(max(0, U/C_u - 1),
    max(0, C_l/U - 1))`` over every constraint of ``budget`` (e.g. ``{"params": (None, 2e6),
    "compute_intensity": (80, None), "flops": (None, 200e6)}``), ``p = 0.9`` (``penalty="epnas"``,
    the default; SPEC §3.3), ``P_t`` the validation accuracy of the transformed network (through
    the shared evaluation pipeline and store). Token sub-steps that do not complete a transform
    give 0. A transform's ``info`` holds ``accuracy``, ``costs``, ``penalty``, ``reward_parts``
    (with ``violation/<metric>``), ``architecture``, ``status``, ``store_key`` and ``transform``
    (the decoded decisions): functions of the seed and the actions only, so a step repeated after
    a seeded reset returns the same info (Gymnasium's determinism contract, checked by
    ``check_env``), even though the repeat is answered by the store.

    The *measurements* of the search (how long an evaluation took, whether the store answered it)
    are not functions of the actions; they come once, in the terminal ``info`` (where SPEC §0 puts
    them for every env): ``eval_seconds`` (the episode's evaluation seconds, summed over its
    transforms), ``cache_hit`` (True when every transform of the episode was answered by the
    store, i.e. the episode trained nothing) and ``evaluations`` (one ``{"store_key", "status",
    "cache_hit", "eval_seconds"}`` per transform, in order).

    ## Starting State
    ``start_net=None``: a random network drawn from ``self.np_random`` at every reset
    (``random_layer_net`` / ``random_module_net`` with ``start_size`` entries; EPNAS starts from
    a random network). Else the given ``LayerNet`` / ``ModuleNet`` or its dict. ``reset(options=
    {"start_net": ...})`` overrides it for one episode (EPNAS seeds the next episode with the best
    networks of the last).

    ## Episode End
    Terminates after ``max_transforms`` transforms (T; EPNAS: 10 layer-by-layer, 5 module).
    Never truncates.

    ## Arguments
    - ``pattern``: ``"layer"`` or ``"module"``; default: the start net's, else ``"layer"``.
    - ``action_mode``: ``"token"`` (default) or ``"multidiscrete"``.
    - ``max_transforms``: T (default 10 / 5). ``num_parts``: F (default 4).
    - ``scale_fields``: the scaled fields, in order (default ``("channels", "filter_width")``).
    - ``start_net``, ``start_size`` (4 layers / 3 branches), ``num_modules`` (3),
      ``stem_channels`` (32 / 16): the start network.
    - ``evaluator="epnas"``: EPNAS performance prediction (:mod:`nas_gym.evaluators.epnas`);
      unless ``evaluator_kwargs`` names ``share_path``, its sharing dictionary is the file next to
      the store (``*.epnas_share.sqlite``), so the copies of a vector env share it (in memory with
      ``store=":memory:"``).
    - the common arguments of every env (SPEC §0): ``budget``, ``penalty`` (default ``"epnas"``),
      ``penalty_kwargs`` (``p``), ``accuracy_transform``, ``dataset``, ``data_root``,
      ``download``, ``train_size``, ``training``, ``epochs``, ``batch_size``, ``lr``, ``device``,
      ``evaluator``, ``evaluator_kwargs``, ``store``, ``seed``, ``reject_infeasible``,
      ``measure_latency``, ``time_limit``, ``invalid_action``; where children train (SPEC §5):
      ``evaluator_backend`` (``"local"`` / ``"process"`` / ``"ray"``), ``worker_threads``,
      ``ray_address``, ``ray_resources``, ``max_retries`` (see :mod:`nas_gym.evaluators.remote`).

    ## Version History
    - v0: initial version.
    """

    default_metric = "params"
    default_penalty = "epnas"

    def __init__(self, *, pattern: str | None = None, action_mode: str = "token",
                 max_transforms: int | None = None, num_parts: int = 4,
                 scale_fields: tuple[str, ...] | list[str] = ("channels", "filter_width"),
                 start_net: Any = None, start_size: int | None = None, num_modules: int = 3,
                 stem_channels: int | None = None, **common: Any) -> None:
        if start_net is not None:
            start_net = self._parse_net(start_net, "start_net")
            pattern = pattern or ("layer" if isinstance(start_net, LayerNet) else "module")
        pattern = pattern or "layer"
        if pattern not in PATTERNS:
            raise bad_value("pattern", pattern, PATTERNS)
        if start_net is not None and isinstance(start_net, LayerNet) != (pattern == "layer"):
            raise bad_value("start_net", start_net.kind, f"an epnas_{pattern} network "
                            f"(pattern={pattern!r})")
        if action_mode not in ACTION_MODES:
            raise bad_value("action_mode", action_mode, ACTION_MODES)
        fields = tuple(scale_fields) if isinstance(scale_fields, (tuple, list)) else ()
        if not fields or len(set(fields)) != len(fields) or set(fields) - set(E.SCALE_FIELDS):
            raise bad_value("scale_fields", scale_fields,
                            f"a non-empty sequence of distinct names from {E.SCALE_FIELDS}")
        self.pattern, self.action_mode, self.scale_fields = pattern, action_mode, fields
        self.max_transforms = _int_arg("max_transforms", DEFAULT_TRANSFORMS[pattern]
                                       if max_transforms is None else max_transforms, 1)
        self.num_parts = _int_arg("num_parts", num_parts, 1)
        self.layer = pattern == "layer"
        self._decisions = TransformDecisions(self.layer, fields, self.num_parts)
        self.max_entries = self._decisions.max_entries
        self.start_size = _int_arg("start_size", DEFAULT_START_SIZE[pattern]
                                   if start_size is None else start_size, 1, self.max_entries)
        self.num_modules = _int_arg("num_modules", num_modules, 1, 6)
        self.stem_channels = _int_arg("stem_channels", (32 if self.layer else 16)
                                      if stem_channels is None else stem_channels, 1, 1024)
        if common.get("evaluator") == "epnas":  # one sharing dictionary per store (all copies)
            kwargs = dict(common.get("evaluator_kwargs") or {})
            kwargs.setdefault("share_path", default_share_path(common.get("store")))
            common["evaluator_kwargs"] = kwargs
        super().__init__(**common)
        self.start_net = start_net
        self.fields = self._decisions.fields
        sizes = self._decisions.sizes
        slot = [len(self.fields["type"]) + 1, *(len(v) for n, v in self.fields.items()
                                               if n != "type")]
        nvec = [*slot * self.max_entries, self.max_transforms + 1]
        if action_mode == "token":
            self.action_space = spaces.Discrete(max(sizes))
            nvec += [len(sizes), *(s + 1 for s in sizes)]
        else:
            self.action_space = spaces.MultiDiscrete(np.array(sizes, dtype=np.int64))
        self.observation_space = spaces.MultiDiscrete(np.array(nvec, dtype=np.int64))
        self._arch: LayerNet | ModuleNet = start_net or self._random_net(np.random.default_rng(0))
        self._pending: list[int] = []
        self._t, self._done = 0, True
        self._evaluations: list[dict[str, Any]] = []  # this episode's, for the terminal info
        self._refresh_mask()  # all ones until reset

    # -- networks ---------------------------------------------------------------------------------
    @staticmethod
    def _parse_net(net: Any, arg: str) -> LayerNet | ModuleNet:
        try:
            arch = net if isinstance(net, Architecture) else architecture_from_dict(net)
            arch.validate()
        except (ArchitectureError, TypeError, KeyError) as exc:
            raise bad_value(arg, net, f"a LayerNet / ModuleNet or its dict ({exc})") from None
        if not isinstance(arch, (LayerNet, ModuleNet)):
            raise bad_value(arg, arch.kind, "an architecture of kind 'epnas_layer' or "
                                            "'epnas_module'")
        return arch

    def _random_net(self, rng: np.random.Generator) -> LayerNet | ModuleNet:
        if self.layer:
            return E.random_layer_net(rng, self.start_size, stem_channels=self.stem_channels)
        return E.random_module_net(rng, self.start_size, num_modules=self.num_modules,
                                   stem_channels=self.stem_channels)

    # -- masks -------------------------------------------------------------------------------------
    def _next_mask(self) -> np.ndarray:
        k = len(self._pending)
        mask = np.zeros(self.action_space.n, dtype=bool)
        legal = self._decisions.mask(self._arch, k, self._pending)
        mask[: legal.size] = legal
        return mask

    def action_masks(self) -> np.ndarray:
        """np.int8 0/1: the next decision's mask (token mode) or the per-dimension union masks
        concatenated (multidiscrete mode, the layout sb3-contrib MaskablePPO reads)."""
        if self.action_mode == "token":
            return self._mask.astype(np.int8)
        return np.concatenate(self._mask).astype(np.int8)

    # -- observation and info ---------------------------------------------------------------------
    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.observation_space.shape, dtype=np.int64)
        width = len(self.fields)
        for i, entry in enumerate(E.entries(self._arch)):
            codes = [self.fields[n].index(getattr(entry, n)) for n in self.fields]
            codes[0] += 1  # type 0 = empty slot
            obs[i * width:(i + 1) * width] = codes
        base = self.max_entries * width
        obs[base] = self._t
        if self.action_mode == "token":
            obs[base + 1] = len(self._pending)
            obs[base + 2: base + 2 + len(self._pending)] = np.asarray(self._pending) + 1
        return obs

    def _token_type(self) -> str:
        if self._done:
            return "done"
        return self._decisions.kind(len(self._pending)) if self.action_mode == "token" \
            else "transform"

    def _info(self, invalid: bool) -> dict[str, Any]:
        mask = self._mask.astype(np.int8) if self.action_mode == "token" \
            else tuple(m.astype(np.int8) for m in self._mask)
        return {"action_mask": mask, "token_type": self._token_type(), "invalid_action": invalid,
                "num_transforms": self._t, "architecture": self._arch.to_dict()}

    def _refresh_mask(self) -> None:
        if self._done:
            self._mask = np.ones(self.action_space.n, dtype=bool) \
                if self.action_mode == "token" else [np.ones(int(n), dtype=bool)
                                                     for n in self.action_space.nvec]
        elif self.action_mode == "token":
            self._mask = self._next_mask()
        else:
            self._mask = [self._decisions.union_mask(self._arch, k)
                          for k in range(len(self._decisions))]

    def _decision(self) -> str:
        return f"transform {self._t}, decision {len(self._pending)}: {self._token_type()}"

    # -- gymnasium API ----------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: Mapping[str, Any] | None = None):
        super().reset(seed=seed)
        start = (options or {}).get("start_net", self.start_net)
        if start is None:
            self._arch = self._random_net(self.np_random)
        else:
            self._arch = self._parse_net(start, "options['start_net']")
            if isinstance(self._arch, LayerNet) != self.layer:
                raise bad_value("options['start_net']", self._arch.kind,
                                f"an epnas_{self.pattern} network")
        self._pending, self._t, self._done = [], 0, False
        self._evaluations = []
        self._refresh_mask()
        return self._obs(), self._info(False)

    def step(self, action: Any):
        self._check_can_step(self._done)
        if self.action_mode == "token":
            a, invalid = self._check_action(action, self._mask)
            self._pending.append(a)
            complete = len(self._pending) == self._decisions.count(self._pending)
            choice = self._pending
        else:
            choice, invalid = self._decisions.resolve(self._arch, action, self.invalid_action)
            complete = True
        reward, terminal = 0.0, None
        if complete:
            self._arch, record = self._decisions.apply(self._arch, choice)
            self._pending, self._t = [], self._t + 1
            self._done = self._t >= self.max_transforms
            terminal = self.evaluate_architecture(self._arch)
            reward = terminal.pop("reward")
            terminal["transform"] = record
            # measurements leave the per-step info (see the class docstring, "Rewards")
            self._evaluations.append({"store_key": terminal["store_key"],
                                      "status": terminal["status"],
                                      "cache_hit": terminal.pop("cache_hit"),
                                      "eval_seconds": terminal.pop("eval_seconds")})
            if self._done:  # reset() starts a new list, so the episode's can be handed out
                evals = self._evaluations
                terminal["eval_seconds"] = float(sum(e["eval_seconds"] for e in evals))
                terminal["cache_hit"] = all(e["cache_hit"] for e in evals)
                terminal["evaluations"] = evals
        self._refresh_mask()
        info = self._info(invalid)
        if terminal is not None:
            info.update(terminal)
            self.last_info = info
        return self._obs(), float(reward), self._done, False, info

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            return (f"{self.pattern} net of {len(E.entries(self._arch))} entries, transform "
                    f"{self._t}/{self.max_transforms}, next={self._token_type()}")
        return None
