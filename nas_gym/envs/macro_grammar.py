"""The token grammars of ``MacroNAS-v0`` (:class:`MacroGrammar`: Zoph & Le / seed 001 layers;
:class:`OpGrammar`: NAS-Bench-Macro's op per layer) as pure functions of a frozen
:class:`GrammarState` (the :class:`~nas_gym.envs.grammar.TokenGrammar` API), their cheap
completions for the hard budget, and the space's reference costs for the calibrated reward."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..arch.bench_macro import NUM_LAYERS, OPS, BenchMacroArchitecture
from ..arch.macro import MacroArchitecture, MacroLayer, conv_out

CONTINUE, STOP = 0, 1
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
                 input_hw: tuple[int, int], head: str = "flatten") -> None:
        self.filters, self.kernels, self.strides, self.head = filters, kernels, strides, head
        self.n_actions = max(len(filters), len(kernels), len(strides), 2)
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

    def token_type(self, st: GrammarState) -> str:
        return self.next(st)[0]

    def done(self, st: GrammarState) -> bool:
        return st.done

    def architecture(self, st: GrammarState) -> MacroArchitecture:
        return self.architecture_of(st.layers)

    def architecture_of(self, layers: tuple[MacroLayer, ...]) -> MacroArchitecture:
        return MacroArchitecture(layers=layers, head=self.head)

    def valid_actions(self, st: GrammarState) -> list[int]:
        """Allowed actions: a stride that would shrink the trunk below 1x1 (s > min(h, w)) is out."""
        kind, _ = self.next(st)
        if kind == "filters":
            return list(range(len(self.filters)))
        if kind == "kernel":
            return list(range(len(self.kernels)))
        if kind == "stride":
            return self.valid_strides(st.hw)
        return [0, 1]

    def valid(self, st: GrammarState) -> np.ndarray:
        """:meth:`valid_actions` as a read-only boolean mask of :attr:`n_actions`, built once per
        (decision kind, trunk size), all that :meth:`valid_actions` reads (a hot path)."""
        key = (self.next(st)[0], st.hw)
        mask = self._masks.get(key)
        if mask is None:
            mask = np.zeros(self.n_actions, dtype=bool)
            mask[self.valid_actions(st)] = True
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

    # -- completions for the hard budget (nas_gym.envs.masking) ---------------------------------
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
            return max(self.valid_actions(st), key=self.strides.__getitem__)
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
    n_actions = len(OPS)
    #: every op at every layer (a table episode's hot path: one shared read-only mask)
    _ALL = np.ones(len(OPS), dtype=bool)
    _ALL.flags.writeable = False

    def start(self) -> GrammarState:
        return GrammarState((), (), (0, 0))

    def next(self, st: GrammarState) -> tuple[str, int]:
        return ("op", -1)

    def token_type(self, st: GrammarState) -> str:
        return "op"

    def valid_actions(self, st: GrammarState) -> list[int]:
        return list(range(len(OPS)))

    def valid(self, st: GrammarState) -> np.ndarray:
        return self._ALL

    def apply(self, st: GrammarState, action: int) -> GrammarState:
        layers = (*st.layers, int(action))
        return GrammarState(layers, (), st.hw, len(layers) == NUM_LAYERS)

    def done(self, st: GrammarState) -> bool:
        return st.done

    def architecture(self, st: GrammarState) -> BenchMacroArchitecture:
        return self.architecture_of(st.layers)

    @staticmethod
    def architecture_of(layers: tuple[int, ...]) -> BenchMacroArchitecture:
        return BenchMacroArchitecture(ops=layers)

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
            st = grammar.apply(st, int(rng.choice(grammar.valid_actions(st))))
        samples.append(costs_of(st.layers))
    return {m: float(np.median([c[m] for c in samples])) for m in samples[0]}
