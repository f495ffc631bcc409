"""Data: TIFF I/O, release-layout datalists, dataset properties, synthetic generators."""

# Names are imported lazily (PEP 562) so that importing one component does not import all of them.
from __future__ import annotations

import importlib

_EXPORTS = {
    'TiffReader': 'io',
    'TiffWriter': 'io',
    'read_tiff': 'io',
    'write_tiff': 'io',
    'register_tiff_io': 'io',
    'release_datalist': 'datalist',
    'split_train_val': 'datalist',
    'compute_dataset_properties': 'properties',
    'save_properties': 'properties',
    'load_properties': 'properties',
    'synthetic_nuclei_2d': 'synthetic',
    'synthetic_worms_2d': 'synthetic',
    'synthetic_cells_3d': 'synthetic',
    'write_synthetic_dataset': 'synthetic',
    'prepare_dataset': 'download',
    'has_release_layout': 'download',
    'DATASETS': 'download',
    'pad_one_hot_collate': 'collate',
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
