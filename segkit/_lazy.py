"""Packages whose public names are imported on first use (PEP 562 module ``__getattr__``).

``segkit``, ``segkit.data`` and ``segkit.data.formats`` name what they offer without importing
it: ``from segkit.data import CarvanaDataset`` imports ``segkit.data.carvana`` (and pandas) then,
and ``segkit predict``, which needs none of the data set readers, never does.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(
    package: str, names: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of a package whose public names load lazily.

    Args:
        package: the package's ``__name__`` (named in the AttributeError).
        names: public name -> the module that defines it.
        namespace: the package's ``globals()``; a name is cached there once imported.

    Example::

        __getattr__, __dir__ = lazy_names(__name__, {"read_image": "segkit.data.io"}, globals())
    """
    public = sorted({*names, *(n for n in namespace.get("__all__", ()))})

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return public

    return __getattr__, __dir__
