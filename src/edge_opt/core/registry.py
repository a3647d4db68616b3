"""One registry idiom for everything users extend (models, datasets, backends).

A registry is a typed dict filled by a decorator; ``names()`` lists the keys and
``get`` fails with an error naming the unknown key and the known ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["Registry", "UnknownNameError"]

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """Raised for a name that is not registered. Subclasses both KeyError and ValueError."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """A named collection of factories of one kind.

    Args:
        kind: what is registered, used in error messages ("model", "backend").
        param: the config key that selects an entry, used in error messages.
    """

    def __init__(self, kind: str, param: str) -> None:
        self.kind = kind
        self.param = param
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``; a duplicate name is an error."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"A {self.kind} named {name!r} is already registered.")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """Return the entry registered under ``name``.

        Raises:
            UnknownNameError: naming the parameter, the known names and the value given.
        """
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise UnknownNameError(
                f"The {self.param!r} parameter must be one of {self.names()}. Got {name!r} instead."
            ) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
