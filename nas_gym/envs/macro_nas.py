"""``MacroNAS-v0``: the macro layer space of Zoph & Le (2017) and seed 001 (SPEC §1.2)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from numbers import Integral
from typing import Any

import numpy as np

from ..arch.bench_macro import NUM_LAYERS, OPS, BenchMacroArchitecture
from ..arch.macro import FILTERS, HEADS, KERNELS, STRIDES, MacroArchitecture
from ..errors import ConfigError, bad_value
from ..models.bench_macro import bench_macro_costs
from ..models.macro import macro_costs
from ..rewards import RELATIVE_WEIGHT_SETS
from .base import TokenEnv
from .common import with_table_defaults
from .macro_grammar import (
    COMPLETION_RULES,
    STOP,
    GrammarState,
    MacroGrammar,
    OpGrammar,
    reference_costs,
)
from .masking import HardBudget

#: Seed 001's defaults (its method section) and the simplified space it reports (§4.3).
DEFAULTS: dict[str, Any] = {"filters": FILTERS, "kernels": KERNELS, "strides": STRIDES,
                            "min_layers": 1, "max_layers": 8, "skip_connections": False,
                            "head": "flatten"}
PRESETS: dict[str, dict[str, Any]] = {
    "seed001": {**DEFAULTS, "strides": (1,), "min_layers": 5, "max_layers": 5},
}
#: NAS-Bench-Macro's space (Su et al. CVPR 2021): one op token per layer, its own grammar.
BENCH_PRESET = "nas_bench_macro"


def _default_weights(common: dict[str, Any]) -> dict[str, Any]:
    """MacroNAS-v0's default linear weights: the calibrated set (SPEC §3.2 Decision)."""
    kwargs = common.get("penalty_kwargs")
    if kwargs is None or (isinstance(kwargs, Mapping) and "weights" not in kwargs):
        common = {**common, "penalty_kwargs": {**(kwargs or {}), "weights": "calibrated"}}
    return common


def _choices(name: str, value: Any, *, odd: bool = False, with_one: bool = False
             ) -> tuple[int, ...]:
    what = "a non-empty sequence of distinct integers >= 1"
    if odd:
        what += ", all odd ('same' padding)"
    if with_one:
        what += ", containing 1 (so a 1x1 map can always take one more layer)"
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise bad_value(name, value, what)
    vals = tuple(value)
    if (not vals or len(set(vals)) != len(vals)
            or any(isinstance(v, bool) or not isinstance(v, Integral) or v < 1 for v in vals)
            or (odd and any(v % 2 == 0 for v in vals)) or (with_one and 1 not in vals)):
        raise bad_value(name, value, what)
    return tuple(int(v) for v in vals)


def _layers(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise bad_value(name, value, "an integer >= 1")
    return int(value)


class MacroNASEnv(TokenEnv):
    """Design a plain CNN layer by layer (Zoph & Le 2017; seed 001); the episode reward trains it.

    ## Description
    Each layer is conv(filters, kernel, stride, "same" padding) -> BN -> ReLU; a head
    (``"flatten"`` -> linear, as seed 001, or ``"gap"`` -> linear) follows the last layer. With skip
    connections (Zoph & Le's anchor points) a layer reads any set of earlier layers, concatenated
    on channels after average-pooling them to the trunk size (the previous layer's output size);
    a layer that picks no skip reads the previous layer; layers no later layer reads (loose ends)
    are concatenated into the head, as in Zoph & Le. See ``nas_gym.arch.macro``.

    ## Action Space
    ``Discrete(n)``, ``n = max(len(filters), len(kernels), len(strides), 2)``, masked per token.
    Tokens of layer ``i``: ``"filters"`` (action k = ``filters[k]``), ``"kernel"``, ``"stride"``
    (each emitted only when it has more than one choice), with skip connections one ``"skip"``
    per earlier layer ``j = 0 .. i-1`` (1 = layer j feeds layer i; ``info["skip_from"]`` = j), then
    ``"stop"`` (0 = continue, 1 = stop; emitted only when ``min_layers <= i + 1 < max_layers``).
    A stride larger than the trunk's height or width (the map would shrink below 1x1) is masked.
    ``info["token_type"]`` names the next decision and ``info["layer"]`` its layer.

    ## Observation Space
    ``MultiDiscrete([n + 1] * max_tokens)``: emitted tokens + 1, zero padded.

    ## Rewards
    0 on every token but the last; then seed 001's linear reward (eq. 4), calibrated (SPEC §3.2
    Decision): ``accuracy - 0.05 * params / ref_params - 0.05 * flops / ref_flops``, where
    ``ref_m`` is the median cost of 256 architectures of this env's space sampled with uniformly
    random legal tokens from seed 0 at ``gym.make`` (closed-form costs; ``env.reference_costs``),
    so the median architecture loses 5 points per term.

    Derivation: the paper prints ``lambda_1 = 10e-9`` per parameter and ``lambda_2 = 2.5 * 10e-7``
    per FLOP "so as to bring num_params and FLOPs in the scale of accuracy", yet with them its own
    model 1 (90,800,128 FLOPs) loses ~227 to the FLOPs term against an accuracy below 1, so a search
    only minimises FLOPs. Relative to the space's median the two terms are on the scale of accuracy
    whatever the input size. Check against the paper's claim (tests/test_macro_nas.py): in the
    seed-001 space on 32x32x3 inputs the medians are 165,568 params and 32,808,960 FLOPs; model 2
    (161,346 params, ~10% fewer FLOPs, accuracy 0.717) then out-scores model 1 (239,642 params,
    0.7245) by ~0.03, so the >= 30%-fewer-params-for-< 1-point trade is what the reward prefers,
    while the accuracy-only reward prefers model 1.
    ``penalty_kwargs={"weights": "printed"}`` restores the literal print (absolute weights);
    ``{"weights": {...}, "references": {...}}`` sets both by hand (``nas_gym.rewards``). Any other
    ``penalty`` of SPEC §3 (``"benas"``, ``"epnas"``, ``"none"``) works with ``budget``.

    ## Starting State
    An empty token sequence (layers without any decision are filled in at once).

    ## Episode End
    Terminates after the stop token or the last token of layer ``max_layers``. Never truncates.

    ## Arguments
    - ``preset``: None or ``"seed001"`` (the simplified space seed 001 reports: five layers, stride
      1, filters {4, 8, 16, 32}, kernels {1, 3, 5, 7}; train with ``training="seed001"`` for its
      Adam schedule). Explicit arguments override the preset. Or ``"nas_bench_macro"``:
      NAS-Bench-Macro's space (Su et al. CVPR 2021; ``nas_gym.arch.bench_macro``), 8 ``"op"``
      tokens (``Discrete(3)``: 0 identity, 1 MB3_K3, 2 MB6_K5; the actions spell the table key),
      defaults ``dataset="cifar10"``, ``training="nas_bench_macro"`` (the paper's recipe);
      ``evaluator="table"`` answers from the shipped table with no CIFAR-10 on disk. The space
      arguments below are refused with it.
    - ``filters`` ((4, 8, 16, 32)), ``kernels`` ((1, 3, 5, 7), odd), ``strides`` ((1, 2, 4),
      must contain 1): the choice sets (seed 001); ``min_layers`` (1), ``max_layers`` (8).
    - ``skip_connections`` (False, as seed 001): emit Zoph & Le's skip tokens.
    - ``head``: ``"flatten"`` (seed 001, default) or ``"gap"``.
    - ``hard_budget`` (False): mask actions after which none of the env's cheap completions meets
      the budget's upper bounds on params / flops / memory_bytes (SPEC §3.5; costs in closed form,
      ``nas_gym.models.macro.macro_costs``), so every finished architecture meets them.
    - the common arguments of every env (SPEC §0): ``budget``, ``penalty``, ``penalty_kwargs``,
      ``accuracy_transform``, ``dataset``, ``data_root``, ``download``, ``train_size``,
      ``training``, ``epochs``, ``batch_size``, ``lr``, ``device``, ``evaluator``,
      ``evaluator_kwargs``, ``store``, ``seed``, ``reject_infeasible``, ``measure_latency``,
      ``time_limit``, ``invalid_action``; where children train (SPEC §5): ``evaluator_backend``
      (``"local"`` / ``"process"`` / ``"ray"``), ``worker_threads``, ``ray_address``,
      ``ray_resources``, ``max_retries`` (see :mod:`nas_gym.evaluators.remote`).

    ## Version History
    - v0: initial version.
    - v0 (issue 16): the default linear weights are the calibrated set relative to the space's
      median costs (SPEC §3.2 Decision); the printed weights stay as ``weights="printed"``.
    """

    default_metric = "params"
    default_penalty = "linear"
    supports_hard_budget = True

    @with_table_defaults("MacroNAS-v0")
    def __init__(self, *, preset: str | None = None, filters: Sequence[int] | None = None,
                 kernels: Sequence[int] | None = None, strides: Sequence[int] | None = None,
                 min_layers: int | None = None, max_layers: int | None = None,
                 skip_connections: bool | None = None, head: str | None = None,
                 **common: Any) -> None:
        if preset is not None and preset not in (*PRESETS, BENCH_PRESET):
            raise bad_value("preset", preset, sorted((*PRESETS, BENCH_PRESET)))
        given = {"filters": filters, "kernels": kernels, "strides": strides,
                 "min_layers": min_layers, "max_layers": max_layers,
                 "skip_connections": skip_connections, "head": head}
        if preset == BENCH_PRESET:
            self._init_bench(given, common)
            return
        cfg = {**(PRESETS[preset] if preset else DEFAULTS),
               **{k: v for k, v in given.items() if v is not None}}
        self.filters = _choices("filters", cfg["filters"])
        self.kernels = _choices("kernels", cfg["kernels"], odd=True)
        self.strides = _choices("strides", cfg["strides"], with_one=True)
        self.min_layers = _layers("min_layers", cfg["min_layers"])
        self.max_layers = _layers("max_layers", cfg["max_layers"])
        if self.max_layers < self.min_layers:
            raise bad_value("max_layers", self.max_layers,
                            f"an integer >= min_layers={self.min_layers}")
        if not isinstance(cfg["skip_connections"], bool):
            raise bad_value("skip_connections", cfg["skip_connections"], "True or False")
        if cfg["head"] not in HEADS:
            raise bad_value("head", cfg["head"], HEADS)
        self.skip_connections, self.head, self.preset = cfg["skip_connections"], cfg["head"], preset
        super().__init__(**_default_weights(common))
        self.grammar = MacroGrammar(self.filters, self.kernels, self.strides, self.min_layers,
                                    self.max_layers, self.skip_connections, self.input_shape[1:],
                                    self.head)
        self._calibrate(macro_costs)
        self.max_tokens = sum(len(d) for d in self.grammar.decisions)
        if self.max_tokens == 0:
            raise ConfigError(
                f"filters={self.filters}, kernels={self.kernels}, strides={self.strides}, "
                f"min_layers=max_layers={self.max_layers} and skip_connections=False leave one "
                "architecture: nothing to search")
        self._init_spaces()
        self._init_budget(macro_costs)

    def _init_bench(self, given: dict[str, Any], common: dict[str, Any]) -> None:
        """``preset="nas_bench_macro"``: NAS-Bench-Macro's fixed space (see the class doc)."""
        for name, value in given.items():
            if value is not None:
                raise bad_value(name, value, f"not given with preset={BENCH_PRESET!r} (its space "
                                f"is fixed: {NUM_LAYERS} layers x {[n for n, _, _ in OPS]})")
        common.setdefault("dataset", "cifar10")
        common.setdefault("training", BENCH_PRESET)
        self.preset, self.head, self.skip_connections = BENCH_PRESET, None, False
        super().__init__(**_default_weights(common))
        self.grammar = OpGrammar()
        self._calibrate(bench_macro_costs)
        self.max_tokens = NUM_LAYERS
        self._init_spaces()
        self._init_budget(bench_macro_costs)

    def _calibrate(self, cost_fn: Any) -> None:
        """The calibrated linear reward's references: the space's median costs (SPEC §3.2)."""
        self.reference_costs: dict[str, float] | None = None
        reward = self.components.reward
        if reward.references is None and reward.weight_set in RELATIVE_WEIGHT_SETS:
            self.reference_costs = reference_costs(
                self.grammar,
                lambda layers: cost_fn(self.grammar.architecture_of(layers), self.input_shape,
                                      self.num_classes))
            reward = dataclasses.replace(reward, weights=reward.weight_set, references={
                m: self.reference_costs[m] for m in reward.weights})
            self.components.reward = self.components.pipeline.reward = reward

    def _init_budget(self, cost_fn: Any) -> None:
        self.hard_budget_rule: HardBudget | None = None
        if self.hard_budget:
            self.hard_budget_rule = HardBudget.for_space(
                self.components.reward.constraints, self.input_shape, self.num_classes,
                cost_fn=lambda arch: cost_fn(arch, self.input_shape, self.num_classes))
            self.hard_budget_rule.check_start(self._completions(self.grammar.start()))

    def _describe(self) -> list[str]:
        """``render_mode="ansi"``: each layer in words, then the open layer's decisions."""
        if self.preset == BENCH_PRESET:
            return [f"layer {i}: {OPS[op][0]}" for i, op in enumerate(self._state.layers)]
        lines = []
        for i, layer in enumerate(self._state.layers):
            reads = ", ".join(f"layer {j}" for j in layer.inputs) or "the image"
            lines.append(f"layer {i}: {layer.filters} filters {layer.kernel}x{layer.kernel} "
                         f"stride {layer.stride}, reads {reads}")
        if self._state.picks:
            i, words = len(self._state.layers), []
            for (kind, j), a in zip(self.grammar.decisions[i], self._state.picks, strict=False):
                words.append(self._word(kind, j, a))
            lines.append(f"layer {i} (open): {', '.join(words)}")
        return lines or ["no layer yet"]

    def _word(self, kind: str, j: int, a: int) -> str:
        g = self.grammar
        if kind == "filters":
            return f"{g.filters[a]} filters"
        if kind == "kernel":
            return f"{g.kernels[a]}x{g.kernels[a]}"
        if kind == "stride":
            return f"stride {g.strides[a]}"
        if kind == "skip":
            return f"{'reads' if a else 'skips'} layer {j}"
        return "stop" if a == STOP else "continue"

    def _step_info(self, invalid: bool) -> dict[str, Any]:
        info = super()._step_info(invalid)
        info["layer"] = len(self._state.layers)
        info["skip_from"] = -1 if self._done else self.grammar.next(self._state)[1]
        return info

    # -- hard budget (SPEC §3.5) ----------------------------------------------------------------
    def _completions(self, st: GrammarState) -> list[MacroArchitecture | BenchMacroArchitecture]:
        layers = dict.fromkeys(self.grammar.complete(st, rule) for rule in COMPLETION_RULES)
        return [self.grammar.architecture_of(ls) for ls in layers]

    def _extra_mask(self, state: GrammarState, valid: np.ndarray) -> np.ndarray:
        if self.hard_budget_rule is None:
            return valid
        return self.hard_budget_rule.mask(
            valid, lambda a: self._completions(self.grammar.apply(state, a)))
