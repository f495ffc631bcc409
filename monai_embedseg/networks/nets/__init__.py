"""Networks for EmbedSeg."""

# Names are imported lazily (PEP 562) so that importing one component does not import all of them.
from __future__ import annotations

import importlib

_EXPORTS = {
    'BranchedERFNet': 'branched_erfnet',
    'BackboneAdapter': 'branched_erfnet',
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
