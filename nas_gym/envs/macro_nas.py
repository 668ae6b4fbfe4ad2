"""``MacroNAS-v0``: the macro layer space of Zoph & Le (2017) and seed 001 (SPEC §1.2)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any

import numpy as np

from ..arch.bench_macro import NUM_LAYERS, OPS, BenchMacroArchitecture
from ..arch.macro import FILTERS, HEADS, KERNELS, STRIDES, MacroArchitecture, MacroLayer, conv_out
from ..errors import ConfigError, bad_value
from ..hard_budget import HardBudget
from ..models.bench_macro import bench_macro_costs
from ..models.macro import macro_costs
from ..rewards import RELATIVE_WEIGHT_SETS
from .base import TokenEnv
from .common import with_table_defaults

CONTINUE, STOP = 0, 1
#: Seed 001's defaults (its method section) and the simplified space it reports (§4.3).
DEFAULTS: dict[str, Any] = {"filters": FILTERS, "kernels": KERNELS, "strides": STRIDES,
                            "min_layers": 1, "max_layers": 8, "skip_connections": False,
                            "head": "flatten"}
PRESETS: dict[str, dict[str, Any]] = {
    "seed001": {**DEFAULTS, "strides": (1,), "min_layers": 5, "max_layers": 5},
}
#: NAS-Bench-Macro's space (Su et al. CVPR 2021): one op token per layer, its own grammar.
BENCH_PRESET = "nas_bench_macro"
#: Cheap-token rules whose completions the hard budget checks (see ``MacroGrammar.cheap``).
COMPLETION_RULES = ("early", "thin", "one", "shrink")
#: The fixed-seed sample of the space whose median costs are the calibrated reward's references.
REFERENCE_SAMPLES, REFERENCE_SEED = 256, 0


@dataclass(frozen=True)
class GrammarState:
    """Layers closed so far, the actions of the open layer, and the trunk size it reads."""

    layers: tuple[MacroLayer, ...]
    picks: tuple[int, ...]
    hw: tuple[int, int]
    done: bool = False


class MacroGrammar:
    """The token grammar of MacroNAS-v0 as pure functions of a :class:`GrammarState`.

    Layer ``i`` emits, in order: ``filters``, ``kernel``, ``stride`` (each only when it has more
    than one choice), one ``skip`` per earlier layer ``j = 0 .. i-1`` (1 = "layer j feeds layer
    i"; only with skip connections), and ``stop`` (1 = stop after this layer; only when
    ``min_layers <= i + 1 < max_layers``).
    """

    def __init__(self, filters: tuple[int, ...], kernels: tuple[int, ...],
                 strides: tuple[int, ...], min_layers: int, max_layers: int, skip: bool,
                 input_hw: tuple[int, int]) -> None:
        self.filters, self.kernels, self.strides = filters, kernels, strides
        self.min_layers, self.max_layers, self.input_hw = min_layers, max_layers, input_hw
        self.decisions: list[tuple[tuple[str, int], ...]] = []
        for i in range(max_layers):
            d = [(name, -1) for name, c in (("filters", filters), ("kernel", kernels),
                                            ("stride", strides)) if len(c) > 1]
            d += [("skip", j) for j in range(i)] if skip else []
            d += [("stop", -1)] if min_layers <= i + 1 < max_layers else []
            self.decisions.append(tuple(d))
        self._fmin = filters.index(min(filters))
        self._masks: dict[tuple[str, tuple[int, int], int], np.ndarray] = {}
        self._kmin = kernels.index(min(kernels))

    def start(self) -> GrammarState:
        return self._settle(GrammarState((), (), self.input_hw))

    def next(self, st: GrammarState) -> tuple[str, int]:
        """(token type, earlier layer j for a skip token else -1) of the next decision."""
        return self.decisions[len(st.layers)][len(st.picks)]

    def valid(self, st: GrammarState) -> list[int]:
        """Allowed actions: a stride that would shrink the trunk below 1x1 (s > min(h, w)) is out."""
        kind, _ = self.next(st)
        if kind == "filters":
            return list(range(len(self.filters)))
        if kind == "kernel":
            return list(range(len(self.kernels)))
        if kind == "stride":
            return self.valid_strides(st.hw)
        return [0, 1]

    def valid_mask(self, st: GrammarState, size: int) -> np.ndarray:
        """:meth:`valid` as a read-only boolean mask of ``size`` actions, built once per (decision
        kind, trunk size), all that :meth:`valid` reads (a table episode's hot path)."""
        key = (self.next(st)[0], st.hw, size)
        mask = self._masks.get(key)
        if mask is None:
            mask = np.zeros(size, dtype=bool)
            mask[self.valid(st)] = True
            mask.flags.writeable = False
            self._masks[key] = mask
        return mask

    def apply(self, st: GrammarState, action: int) -> GrammarState:
        return self._settle(GrammarState(st.layers, (*st.picks, action), st.hw))

    def layer(self, i: int, picks: Sequence[int]) -> MacroLayer:
        """Layer ``i`` from its decisions so far (single-choice fields implied; no skip chosen
        means the previous layer, or the image for layer 0)."""
        f, k, s = self.filters[0], self.kernels[0], self.strides[0]
        chosen = []
        for (kind, j), a in zip(self.decisions[i], picks, strict=False):
            if kind == "filters":
                f = self.filters[a]
            elif kind == "kernel":
                k = self.kernels[a]
            elif kind == "stride":
                s = self.strides[a]
            elif kind == "skip" and a == 1:
                chosen.append(j)
        return MacroLayer(f, k, s, tuple(chosen) or (() if i == 0 else (i - 1,)))

    def _settle(self, st: GrammarState) -> GrammarState:
        """Close the open layer once all its decisions are made (repeat for decision-free ones)."""
        while not st.done and len(st.picks) == len(self.decisions[len(st.layers)]):
            i = len(st.layers)
            d = self.decisions[i]
            layer = self.layer(i, st.picks)
            stop = st.picks[-1] == STOP if d and d[-1][0] == "stop" else i + 1 >= self.max_layers
            hw = (conv_out(st.hw[0], layer.kernel, layer.stride),
                  conv_out(st.hw[1], layer.kernel, layer.stride))
            st = GrammarState((*st.layers, layer), (), hw, stop)
        return st

    # -- completions for the hard budget (nas_gym.hard_budget) ---------------------------------
    def cheap(self, st: GrammarState, rule: str) -> int:
        """The next token of a cheap completion (a deterministic function of the state).

        Every rule takes the smallest filters and kernel and the largest allowed stride.
        ``"early"`` reads no skip (so the previous layer) and stops as soon as allowed;
        ``"thin"`` reads only the narrowest earlier layer (the latest of equals) and stops as soon
        as allowed; ``"one"`` reads every loose end and stops once the open layer is such a cheap
        layer (so it adds at most one after the agent's layers); ``"shrink"`` also keeps adding
        cheap layers while a stride > 1 fits.
        """
        kind, j = self.next(st)
        if kind == "filters":
            return self._fmin
        if kind == "kernel":
            return self._kmin
        if kind == "stride":
            return max(self.valid(st), key=self.strides.__getitem__)
        if kind == "skip":
            if rule == "thin":
                narrow = min(range(len(st.layers)), key=lambda m: (st.layers[m].filters, -m))
                return int(j == narrow)
            return int(rule != "early" and j in self._loose(st.layers))
        if rule in ("early", "thin"):
            return STOP
        i = len(st.layers)
        layer = self.layer(i, st.picks)
        cheap = (layer.filters == self.filters[self._fmin]
                 and layer.kernel == self.kernels[self._kmin]
                 and layer.stride == max(self.strides[a] for a in self.valid_strides(st.hw))
                 and (i == 0 or layer.inputs == self._loose(st.layers)))
        if rule == "shrink" and cheap:
            hw = (conv_out(st.hw[0], layer.kernel, layer.stride),
                  conv_out(st.hw[1], layer.kernel, layer.stride))
            cheap = max(self.strides[a] for a in self.valid_strides(hw)) == 1
        return STOP if cheap else CONTINUE

    def valid_strides(self, hw: tuple[int, int]) -> list[int]:
        return [a for a, s in enumerate(self.strides) if s <= min(hw)]

    @staticmethod
    def _loose(layers: tuple[MacroLayer, ...]) -> tuple[int, ...]:
        return MacroArchitecture(layers).loose_ends()

    def complete(self, st: GrammarState, rule: str) -> tuple[MacroLayer, ...]:
        while not st.done:
            st = self.apply(st, self.cheap(st, rule))
        return st.layers


class OpGrammar:
    """NAS-Bench-Macro's grammar (``preset="nas_bench_macro"``): one ``"op"`` token per searched
    layer, action k = op code k (``nas_gym.arch.bench_macro.OPS``), so the 8 actions of an episode
    spell the table key. ``GrammarState.layers`` holds the codes chosen so far."""

    decisions = [(("op", -1),)] * NUM_LAYERS

    def start(self) -> GrammarState:
        return GrammarState((), (), (0, 0))

    def next(self, st: GrammarState) -> tuple[str, int]:
        return ("op", -1)

    def valid(self, st: GrammarState) -> list[int]:
        return list(range(len(OPS)))

    def valid_mask(self, st: GrammarState, size: int) -> np.ndarray:
        """:meth:`valid` as a read-only boolean mask of ``size`` actions, built once per (decision
        kind, trunk size), all that :meth:`valid` reads (a table episode's hot path)."""
        key = (self.next(st)[0], st.hw, size)
        mask = self._masks.get(key)
        if mask is None:
            mask = np.zeros(size, dtype=bool)
            mask[self.valid(st)] = True
            mask.flags.writeable = False
            self._masks[key] = mask
        return mask

    def apply(self, st: GrammarState, action: int) -> GrammarState:
        layers = (*st.layers, int(action))
        return GrammarState(layers, (), st.hw, len(layers) == NUM_LAYERS)

    def complete(self, st: GrammarState, rule: str) -> tuple[int, ...]:
        """Identity for every open layer, whatever the rule: the costs add up layer by layer and
        identity is the cheapest op of each (params, FLOPs, memory), so the hard budget's mask is
        exact on this space."""
        return (*st.layers, *(0,) * (NUM_LAYERS - len(st.layers)))


def reference_costs(grammar: Any, costs_of: Callable[[tuple], dict[str, float]],
                    n: int = REFERENCE_SAMPLES, seed: int = REFERENCE_SEED) -> dict[str, float]:
    """Median ``params``, ``flops`` and ``memory_bytes`` of ``n`` architectures of the space,
    sampled with uniformly random legal tokens (what random search and a fresh controller play)
    from ``np.random.default_rng(seed)``; ``costs_of(layers)`` gives an architecture's costs in
    closed form (:func:`macro_costs`, :func:`bench_macro_costs`)."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n):
        st = grammar.start()
        while not st.done:
            st = grammar.apply(st, int(rng.choice(grammar.valid(st))))
        samples.append(costs_of(st.layers))
    return {m: float(np.median([c[m] for c in samples])) for m in samples[0]}


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
      ``ray_resources``, ``max_retries`` (see :mod:`nas_gym.parallel`).

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
                                    self.max_layers, self.skip_connections, self.input_shape[1:])
        self._calibrate(macro_costs)
        self.n_actions = max(len(self.filters), len(self.kernels), len(self.strides), 2)
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
        self.n_actions, self.max_tokens = len(OPS), NUM_LAYERS
        self._init_spaces()
        self._init_budget(bench_macro_costs)

    def _calibrate(self, cost_fn: Any) -> None:
        """The calibrated linear reward's references: the space's median costs (SPEC §3.2)."""
        self.reference_costs: dict[str, float] | None = None
        reward = self.components.reward
        if reward.references is None and reward.weight_set in RELATIVE_WEIGHT_SETS:
            self.reference_costs = reference_costs(
                self.grammar,
                lambda layers: cost_fn(self._arch_of(layers), self.input_shape, self.num_classes))
            reward = dataclasses.replace(reward, weights=reward.weight_set, references={
                m: self.reference_costs[m] for m in reward.weights})
            self.components.reward = self.components.pipeline.reward = reward

    def _init_budget(self, cost_fn: Any) -> None:
        self._state = self.grammar.start()
        self._budget: HardBudget | None = None
        if self.hard_budget:
            self._budget = HardBudget.for_space(
                self.components.reward.constraints, self.input_shape, self.num_classes,
                cost_fn=lambda arch: cost_fn(arch, self.input_shape, self.num_classes))
            self._budget.check_start(self._completions(self._state))

    # -- grammar ---------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self._state = self.grammar.start()
        return super().reset(seed=seed, options=options)

    def _token_type(self) -> str:
        return self.grammar.next(self._state)[0]

    def _valid(self) -> np.ndarray:
        if self.preset == BENCH_PRESET:  # every op at every layer (a table episode's hot path)
            return np.ones(self.n_actions, dtype=bool)
        return self.grammar.valid_mask(self._state, self.n_actions)

    def _on_token(self, action: int) -> None:
        self._state = self.grammar.apply(self._state, action)

    def _finished(self) -> bool:
        return self._state.done

    def _architecture(self) -> MacroArchitecture | BenchMacroArchitecture:
        return self._arch_of(self._state.layers)

    def _arch_of(self, layers: tuple) -> MacroArchitecture | BenchMacroArchitecture:
        if self.preset == BENCH_PRESET:
            return BenchMacroArchitecture(ops=layers)
        return MacroArchitecture(layers=layers, head=self.head)

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
        return [self._arch_of(ls) for ls in layers]

    def _extra_mask(self, valid: np.ndarray) -> np.ndarray:
        if self._budget is None:
            return valid
        return self._budget.mask(
            valid, lambda a: self._completions(self.grammar.apply(self._state, a)))
