"""The NAS-Bench-Macro space (Su et al., "Prioritized Architecture Sampling with Monte-Carlo Tree
Search", CVPR 2021): a MobileNetV2-style macro network with 8 searched layers, 3 ops each, so
3^8 = 6,561 architectures, every one trained 3 times on CIFAR-10 (the table shipped as
``nas_gym/tables/nas-bench-macro_cifar10.json``).

An architecture is the op code of each searched layer, bottom to top (:data:`OPS`): 0 identity,
1 MobileNetV2 inverted residual block kernel 3 expansion 3 (``MB3_K3``), 2 kernel 5 expansion 6
(``MB6_K5``); its table key is the codes as a string (``"02012100"``). The network (built by
``nas_gym.models.bench_macro``): stem conv3x3 (-> 32) + BN + ReLU; stages of :data:`STAGES`
layers, the first layer of each with stride 2 and twice the channels (an identity there becomes
conv1x1 + BN); conv1x1 -> 1280 + BN + ReLU, global average pool, linear.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .base import Architecture, register_architecture, require

#: Op codes of a searched layer: (name, expansion ratio, kernel); code k = OPS[k].
OPS: tuple[tuple[str, int, int], ...] = (("identity", 0, 0), ("mb3_k3", 3, 3), ("mb6_k5", 6, 5))
#: Searched layers per stage (each stage halves the map and doubles the channels first).
STAGES: tuple[int, ...] = (2, 3, 3)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_LAYERS = sum(STAGES)


def layer_plan(in_channels: int = STEM_CHANNELS) -> list[tuple[int, int, int]]:
    """(in channels, out channels, stride) of every searched layer, bottom to top."""
    plan, c = [], in_channels
    for n in STAGES:
        for i in range(n):
            plan.append((c, 2 * c, 2) if i == 0 else (c, c, 1))
            c = 2 * c if i == 0 else c
    return plan


@register_architecture
@dataclass(frozen=True)
class BenchMacroArchitecture(Architecture):
    """One NAS-Bench-Macro network: ``ops[i]`` is the op code of searched layer ``i``.

    :param ops: :data:`NUM_LAYERS` codes in ``range(len(OPS))``.
    """

    kind = "nas_bench_macro"
    ops: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        # the generic dataclasses.asdict (deep copies) dominated a table episode's time
        return {"kind": self.kind, "ops": list(self.ops)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchMacroArchitecture:
        return cls(ops=tuple(data["ops"]))

    @classmethod
    def from_key(cls, key: str) -> BenchMacroArchitecture:
        """The architecture of a table key (``"02012100"``)."""
        require(isinstance(key, str) and len(key) == NUM_LAYERS and key.isdigit(),
                f"key={key!r} must be {NUM_LAYERS} digits in 0..{len(OPS) - 1}")
        arch = cls(ops=tuple(int(c) for c in key))
        arch.validate()
        return arch

    @property
    def key(self) -> str:
        return "".join(str(op) for op in self.ops)

    def validate(self) -> None:
        require(isinstance(self.ops, tuple) and len(self.ops) == NUM_LAYERS,
                f"ops={self.ops!r} must be a tuple of {NUM_LAYERS} op codes")
        require(all(isinstance(o, int) and not isinstance(o, bool) and 0 <= o < len(OPS)
                    for o in self.ops),
                f"ops={self.ops!r}: every code must be an integer in 0..{len(OPS) - 1} "
                f"({', '.join(f'{k} {n}' for k, (n, _, _) in enumerate(OPS))})")
