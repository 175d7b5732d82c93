"""One small registry type used for fusion strategies, encoders, modality kinds and
datasets: register by name, list, create by name (the timm pattern).

:func:`builtin` finds the registries of the built-in encoders, fusions and modality
kinds by name, for a layer below the packages that fill them: the spec checks every name
and option against them when it loads, and never imports those packages itself.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from holomed.errors import RegistryError

T = TypeVar("T")


class Registry(Generic[T]):
    """``loader``: called once, before the first lookup or listing, to import the
    modules that register the built-in entries (so importing the package is cheap)."""

    def __init__(self, what: str, loader: Callable[[], None] | None = None) -> None:
        self.what = what
        self._items: dict[str, T] = {}
        self._loader = loader

    def _load(self) -> None:
        if self._loader is not None:
            loader, self._loader = self._loader, None
            loader()

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise RegistryError(f"{self.what} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        self._load()
        try:
            return self._items[name]
        except KeyError:
            raise RegistryError(
                f"unknown {self.what} {name!r}; expected one of {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def items(self) -> list[tuple[str, Any]]:
        self._load()
        return sorted(self._items.items())


# what a registry holds -> (the module that defines it, its name there); importing the
# module registers the built-in entries (the one place a low layer names these packages)
BUILTIN: dict[str, tuple[str, str]] = {
    "encoder": ("holomed.encoders.base", "ENCODERS"),
    "fusion": ("holomed.fusion", "FUSIONS"),
    "modality kind": ("holomed.modalities", "MODALITIES"),
    "candidate": ("holomed.candidates", "CANDIDATES"),
}


def builtin(what: str) -> Any:
    """The registry of ``what`` (``encoder``, ``fusion``, ``modality kind``,
    ``candidate``) with its
    built-in entries registered: the package that fills it is imported on first use."""
    module, name = BUILTIN[what]
    return getattr(importlib.import_module(module), name)
