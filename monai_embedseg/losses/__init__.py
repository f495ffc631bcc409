"""EmbedSeg losses."""

# Names are imported lazily (PEP 562) so that importing one component does not import all of them.
from __future__ import annotations

import importlib

_EXPORTS = {
    'SpatialEmbeddingLoss': 'spatial_embedding',
    'lovasz_hinge': 'lovasz',
    'lovasz_hinge_flat': 'lovasz',
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
