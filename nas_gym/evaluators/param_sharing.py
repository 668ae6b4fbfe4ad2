"""EPNAS parameter-sharing dictionary (seed 004, §3.4): weights reused across searched networks.

"The parameters are stored as key-value pairs, where the keys are the combination of the layer
number, operation type ... if there is a clash between keys, the variables for the model with the
highest accuracy is stored. For operations where the layer and operation types match, but the
dimensions do not (e.g., after scaling a layer), the parameters with the closest dimensions are
chosen and the variables are spliced or padded accordingly."

**Keys.** A model exposes ``share_units() -> {key: submodule}`` (the EPNAS builders do, see
:mod:`nas_gym.models.epnas`): ``"{layer index}/{op type}"`` such as ``"3/conv2d"`` (the layer type
only: kernel size, channels and activation are *dimensions*, so a scaled layer finds its old
weights), ``"m1.b2/conv-maxpool"`` for branch 2 of module copy 1, ``"m1/pre"``,
``"stem/conv3x3"`` and ``"head/linear"``. A model without ``share_units`` is keyed by the names
of its top-level children. The value of a key is the unit's whole ``state_dict`` (BN statistics
included).

**Clash rule.** Each key holds at most ``max_variants`` weight sets with different shapes
(default 1, the paper's one value per key). Storing a unit whose shapes equal a stored variant's
replaces it only when the new model is strictly more accurate; otherwise a free slot is used, or
the least accurate variant is replaced when the new model is more accurate than it.

**Loading.** For every unit of a (freshly built) model whose key is stored, the variant with the
closest shapes (L1 distance over all dimensions; ties -> more accurate) is copied in: identical
shapes exactly; a larger stored dimension is cropped (*spliced*), a smaller one *padded*. Kernel
dimensions are cropped / padded around the centre (a 3x3 kernel inside a 5x5 one computes the
same with "same" padding); channel dimensions keep the leading slice. ``pad="zero_inputs"``
(default) zero-pads input channels and kernel taps but leaves the *new output units* (rows of a
weight, entries of 1-D tensors such as BN gamma / running variance) at their fresh initialisation,
so a widened net computes what the stored one did and its new units still receive gradients (zero
rows feeding zero columns never would); ``pad="zeros"`` zero-pads everything.

**Across processes.** With ``path`` the dictionary lives in one SQLite file (``torch.save`` blobs):
every copy of an ``AsyncVectorEnv`` opens the same file, each update is one ``BEGIN IMMEDIATE``
transaction (SQLite's file lock makes read-compare-write atomic between processes), and the object
pickles as its path. Without ``path`` it is in memory, picklable, and :meth:`merge` combines two.
"""

from __future__ import annotations

import io
import json
import math
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import bad_value

PAD_MODES = ("zero_inputs", "zeros")


@dataclass(frozen=True)
class Variant:
    """One stored weight set of a key."""

    accuracy: float
    shapes: str  # canonical JSON {tensor name: shape}
    blob: bytes  # torch.save of {tensor name: tensor}

    def tensors(self) -> dict[str, torch.Tensor]:
        return torch.load(io.BytesIO(self.blob), map_location="cpu", weights_only=True)


def share_units(model: nn.Module) -> dict[str, nn.Module]:
    """The model's parameter-sharing units: ``model.share_units()`` or its top-level children."""
    if callable(getattr(model, "share_units", None)):
        return dict(model.share_units())
    return dict(model.named_children())


def _shapes_json(state: dict[str, torch.Tensor]) -> str:
    return json.dumps({k: list(v.shape) for k, v in state.items()}, sort_keys=True)


def _distance(stored: dict[str, list[int]], target: dict[str, list[int]]) -> float:
    """L1 distance between two units' shapes; a missing tensor or rank mismatch costs 1e6."""
    total = 0.0
    for name in stored.keys() | target.keys():
        a, b = stored.get(name), target.get(name)
        if a is None or b is None or len(a) != len(b):
            total += 1e6
        else:
            total += sum(abs(x - y) for x, y in zip(a, b, strict=True))
    return total


def fit_tensor(stored: torch.Tensor, target: torch.Tensor, pad: str = "zero_inputs"
               ) -> tuple[torch.Tensor, bool, bool]:
    """``stored`` spliced / padded to ``target``'s shape; returns (tensor, cropped, padded).

    ``target`` holds the fresh values kept where ``pad="zero_inputs"`` leaves new output units.
    """
    stored = stored.to(device=target.device, dtype=target.dtype)
    if stored.shape == target.shape:
        return stored.clone(), False, False
    if stored.dim() != target.dim():
        return target.clone(), False, True
    out = torch.zeros_like(target) if pad == "zeros" else target.clone()
    if pad == "zero_inputs" and target.dim() >= 2:
        out[: min(stored.shape[0], target.shape[0])] = 0  # the loaded rows: zero-pad inputs
    src, dst = [], []
    for d, (ns, nt) in enumerate(zip(stored.shape, target.shape, strict=True)):
        n = min(ns, nt)
        centred = target.dim() == 4 and d >= 2  # conv kernel taps
        s0, t0 = ((ns - n) // 2, (nt - n) // 2) if centred else (0, 0)
        src.append(slice(s0, s0 + n))
        dst.append(slice(t0, t0 + n))
    out[tuple(dst)] = stored[tuple(src)]
    cropped = any(ns > nt for ns, nt in zip(stored.shape, target.shape, strict=True))
    padded = any(ns < nt for ns, nt in zip(stored.shape, target.shape, strict=True))
    return out, cropped, padded


def _better(new: Variant, variants: list[Variant], max_variants: int) -> list[Variant] | None:
    """The key's variants after offering ``new`` (the clash rule), or None when nothing changes."""
    for i, old in enumerate(variants):
        if old.shapes == new.shapes:
            return [*variants[:i], new, *variants[i + 1:]] if new.accuracy > old.accuracy else None
    if len(variants) < max_variants:
        return [*variants, new]
    worst = min(range(len(variants)), key=lambda i: variants[i].accuracy)
    if new.accuracy > variants[worst].accuracy:
        return [*variants[:worst], new, *variants[worst + 1:]]
    return None


class ParamShareDict:
    """The global weight dictionary of EPNAS §3.4 (see the module docstring).

    :param path: SQLite file shared by processes; None keeps the dictionary in memory.
    :param max_variants: weight sets kept per key with different shapes (1 = the paper).
    :param pad: ``"zero_inputs"`` or ``"zeros"``: what fills dimensions the stored weights lack.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, max_variants: int = 1,
                 pad: str = "zero_inputs") -> None:
        if not isinstance(max_variants, int) or max_variants < 1:
            raise bad_value("max_variants", max_variants, "an integer >= 1")
        if pad not in PAD_MODES:
            raise bad_value("pad", pad, PAD_MODES)
        self.path = None if path is None else Path(path)
        self.max_variants = max_variants
        self.pad = pad
        self._memory: dict[str, list[Variant]] = {}
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        if self.path is not None:
            self._db()

    # -- storage --------------------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        # a connection must not cross a fork: reopen in every process
        if self._conn is None or self._pid != os.getpid():
            assert self.path is not None
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, timeout=120.0, isolation_level=None)
            self._pid = os.getpid()
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS variants (key TEXT NOT NULL, shapes TEXT NOT NULL, "
                "accuracy REAL NOT NULL, blob BLOB NOT NULL, PRIMARY KEY (key, shapes))")
        return self._conn

    def _read(self, key: str) -> list[Variant]:
        if self.path is None:
            return list(self._memory.get(key, []))
        rows = self._db().execute(
            "SELECT accuracy, shapes, blob FROM variants WHERE key = ? ORDER BY shapes", (key,))
        return [Variant(float(a), s, bytes(b)) for a, s, b in rows]

    def _write(self, key: str, variants: list[Variant]) -> None:
        if self.path is None:
            self._memory[key] = list(variants)
            return
        db = self._db()
        db.execute("DELETE FROM variants WHERE key = ?", (key,))
        db.executemany("INSERT INTO variants VALUES (?, ?, ?, ?)",
                       [(key, v.shapes, v.accuracy, v.blob) for v in variants])

    def _offer(self, offers: dict[str, Variant]) -> dict[str, list[str]]:
        """Apply the clash rule to every offered key in one transaction."""
        report: dict[str, list[str]] = {"stored": [], "kept": []}
        db = self._db() if self.path is not None else None
        if db is not None:
            db.execute("BEGIN IMMEDIATE")  # the write lock, taken before reading
        try:
            for key, new in offers.items():
                variants = _better(new, self._read(key), self.max_variants)
                if variants is None:
                    report["kept"].append(key)
                else:
                    self._write(key, variants)
                    report["stored"].append(key)
        except BaseException:
            if db is not None:
                db.execute("ROLLBACK")
            raise
        if db is not None:
            db.execute("COMMIT")
        return report

    def keys(self) -> list[str]:
        if self.path is None:
            return sorted(self._memory)
        return [k for (k,) in self._db().execute("SELECT DISTINCT key FROM variants ORDER BY key")]

    def variants(self, key: str) -> list[Variant]:
        """The stored weight sets of ``key`` (empty when the key is not stored)."""
        return self._read(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and bool(self._read(key))

    def __len__(self) -> int:
        return len(self.keys())

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_conn"], state["_pid"] = None, -1
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    # -- EPNAS §3.4 -----------------------------------------------------------------------------
    def update_from(self, model: nn.Module, accuracy: float) -> dict[str, list[str]]:
        """Offer every unit of ``model`` (evaluated at ``accuracy``) to the dictionary.

        :return: ``{"stored": keys written, "kept": keys where the stored weights won}``; a
            non-finite accuracy stores nothing.
        """
        units = {k: u.state_dict() for k, u in share_units(model).items()}
        units = {k: s for k, s in units.items() if s}  # parameter-free units (pools) hold nothing
        if not math.isfinite(float(accuracy)):
            return {"stored": [], "kept": sorted(units)}
        offers = {}
        for key, state in units.items():
            tensors = {n: t.detach().to("cpu").clone() for n, t in state.items()}
            buf = io.BytesIO()
            torch.save(tensors, buf)
            offers[key] = Variant(float(accuracy), _shapes_json(tensors), buf.getvalue())
        return self._offer(offers)

    def load_into(self, model: nn.Module) -> dict[str, list[str]]:
        """Copy stored weights into ``model`` (in place), unit by unit.

        :return: ``{"exact": [...], "spliced": [...], "padded": [...], "missing": [...]}``: keys
            loaded with identical shapes, with some dimension cropped, with some dimension padded
            (a tensor the stored unit lacks keeps its fresh value and counts as padded; a key can
            be both spliced and padded), and keys not stored.
        """
        report: dict[str, list[str]] = {"exact": [], "spliced": [], "padded": [], "missing": []}
        for key, unit in share_units(model).items():
            target = unit.state_dict()
            if not target:
                continue
            variants = self._read(key)
            if not variants:
                report["missing"].append(key)
                continue
            shapes = {n: list(t.shape) for n, t in target.items()}
            best = min(variants, key=lambda v: (_distance(json.loads(v.shapes), shapes),
                                                -v.accuracy))
            stored = best.tensors()
            new_state, cropped, padded = {}, False, False
            for name, fresh in target.items():
                if name not in stored:
                    new_state[name], padded = fresh, True
                    continue
                new_state[name], c, p = fit_tensor(stored[name], fresh, self.pad)
                cropped, padded = cropped or c, padded or p
            unit.load_state_dict(new_state)
            if cropped:
                report["spliced"].append(key)
            if padded:
                report["padded"].append(key)
            if not (cropped or padded):
                report["exact"].append(key)
        return report

    def merge(self, other: ParamShareDict) -> dict[str, list[str]]:
        """Offer every variant of ``other`` to this dictionary (the clash rule decides)."""
        report: dict[str, list[str]] = {"stored": [], "kept": []}
        for key in other.keys():
            for variant in other.variants(key):
                part = self._offer({key: variant})
                report["stored"] += part["stored"]
                report["kept"] += part["kept"]
        return report
