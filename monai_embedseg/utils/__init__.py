"""Utilities: prediction encoding/decoding, oracle predictions."""

# Names are imported lazily (PEP 562) so that importing one component does not import all of them.
from __future__ import annotations

import importlib

_EXPORTS = {
    'OFFSET_SCALE': 'embedding',
    'SIGMA_SCALE': 'embedding',
    'resolve_spacing': 'embedding',
    'pixel_coordinates': 'embedding',
    'n_sigma_of': 'embedding',
    'decode_prediction': 'embedding',
    'encode_prediction': 'embedding',
    'oracle_prediction': 'oracle',
    'load_weights': 'checkpoint',
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
