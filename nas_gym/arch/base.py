"""Architecture values: frozen, typed, with a canonical JSON form and a stable sha256.

Every search space defines a frozen dataclass subclassing :class:`Architecture` and registers it
with :func:`register_architecture` under a ``kind`` name. ``to_dict()`` gives a JSON-able dict whose
``"kind"`` key says which class reads it back; :func:`architecture_from_dict` is the one parser.
Never ``hash()`` (per-process) and never a string to re-parse.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, ClassVar

from ..errors import ArchitectureError
from ..registry import Registry

ARCHITECTURES: Registry[type[Architecture]] = Registry("architecture kind")


def canonical_json(obj: Any) -> str:
    """Sorted keys, no spaces: the same value gives the same string in every process."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def sha256_of(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


class Architecture:
    """Base of every architecture value (subclasses are ``@dataclass(frozen=True)``)."""

    kind: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (tuples become lists) with the ``kind`` key."""
        return {"kind": self.kind, **_plain(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Architecture:
        """Parse ``to_dict()`` output; subclasses override for nested values and validation."""
        raise NotImplementedError

    def validate(self) -> None:
        """Raise :class:`ArchitectureError` when the value is inconsistent."""

    def to_json(self) -> str:
        """Canonical JSON of :meth:`to_dict` (computed once per value: it is frozen)."""
        text = self.__dict__.get("_json")
        if text is None:
            text = canonical_json(self.to_dict())
            object.__setattr__(self, "_json", text)  # not a field: no effect on ==, hash, repr
        return text

    @property
    def sha256(self) -> str:
        """sha256 hex of :meth:`to_json` (computed once per value)."""
        sha = self.__dict__.get("_sha256")
        if sha is None:
            sha = hashlib.sha256(self.to_json().encode()).hexdigest()
            object.__setattr__(self, "_sha256", sha)
        return sha


def _plain(obj: Any) -> Any:
    """``dataclasses.asdict`` with tuples as lists and string keys, without its deep copies (an
    architecture holds only dataclasses, tuples, lists, dicts and immutable scalars)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def register_architecture(cls: type[Architecture]) -> type[Architecture]:
    """Class decorator: make ``cls`` readable by :func:`architecture_from_dict`."""
    if not cls.kind:
        raise TypeError(f"{cls.__name__} needs a non-empty `kind`")
    ARCHITECTURES.register(cls.kind, cls)
    return cls


def architecture_from_dict(data: dict[str, Any] | Architecture) -> Architecture:
    """The architecture value described by ``data`` (an env's ``info["architecture"]``)."""
    if isinstance(data, Architecture):
        return data
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise ArchitectureError(f"architecture is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ArchitectureError(
            f"architecture must be a dict with a 'kind' key, got {type(data).__name__}"
        )
    kind = data.get("kind")
    if kind not in ARCHITECTURES:
        raise ArchitectureError(
            f"architecture['kind']={kind!r} is not accepted; expected one of {ARCHITECTURES.names()}"
        )
    cls = ARCHITECTURES.get(kind)
    try:
        arch = cls.from_dict(data)
    except ArchitectureError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ArchitectureError(f"malformed {kind!r} architecture: {exc!r}") from None
    arch.validate()
    return arch


def require(cond: bool, message: str) -> None:
    """Validation helper for ``Architecture.validate``."""
    if not cond:
        raise ArchitectureError(message)
