"""Public names a package imports at their first use (PEP 562 ``__getattr__``)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, MutableMapping
from typing import Any, Callable

__all__ = ["lazy_names"]


def lazy_names(
    namespace: MutableMapping[str, Any], modules: Mapping[str, str]
) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports each name from its module when first asked.

    The value found is kept in ``namespace`` (the module's ``globals()``), so
    the next look-up does not come here.

    Args:
        namespace: The module's ``globals()``.
        modules: Public name -> the module that defines it.

    Returns:
        The function to bind to ``__getattr__``.
    """

    def __getattr__(name: str) -> Any:  # pylint: disable=invalid-name  # PEP 562's name
        module = modules.get(name)
        if module is None:
            raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
