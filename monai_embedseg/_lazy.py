"""Package faces whose names are imported on first use (PEP 562), so that a command line answers ``--help`` and
argument errors before torch and MONAI are loaded."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable, Callable]:
    """``__getattr__`` and ``__dir__`` for ``package`` that import ``exports[name]`` (a submodule) on first access.

    Example, in a package's ``__init__.py``::

        __getattr__, __dir__ = lazy_exports(__name__, {"load_weights": "checkpoint"})
    """
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        namespace[name] = value  # later lookups find it without this hook
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
