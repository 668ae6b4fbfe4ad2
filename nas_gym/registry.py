"""A registry is a dict plus a decorator that refuses duplicates (the timm / torchvision way)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import ConfigError, bad_value

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind (ops, penalties, datasets, evaluators, agents, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T | None = None) -> Callable[[T], T] | T:
        """``@registry.register("name")`` or ``registry.register("name", obj)``."""

        def add(obj: T) -> T:
            if name in self._entries:
                raise ConfigError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return add(entry) if entry is not None else add

    def get(self, name: str, arg: str | None = None) -> T:
        """The entry called ``name``; an unknown name raises ``ConfigError`` listing the valid ones."""
        if not isinstance(name, str) or name not in self._entries:
            raise bad_value(arg or self.kind, name, sorted(self._entries))
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)
