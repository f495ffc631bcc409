"""MONAI transforms for EmbedSeg: centre targets, label hygiene, object crops, clustering."""

# Names are imported lazily (PEP 562) so that importing one component does not import all of them.
from __future__ import annotations

import importlib

_EXPORTS = {
    'exact_medoid': 'medoid',
    'object_centers': 'medoid',
    'GenerateCenterImage': 'center',
    'GenerateCenterImaged': 'center',
    'GenerateCenterImageD': 'center',
    'GenerateCenterImageDict': 'center',
    'RelabelConsecutive': 'labels',
    'RelabelConsecutived': 'labels',
    'FillHolesPerObject': 'labels',
    'FillHolesPerObjectd': 'labels',
    'RemoveSmallObjects': 'labels',
    'RemoveSmallObjectsd': 'labels',
    'ValidateInstanceLabels': 'labels',
    'ValidateInstanceLabelsd': 'labels',
    'OneHotToLabel': 'labels',
    'OneHotToLabeld': 'labels',
    'LabelToOneHot': 'labels',
    'LabelToOneHotd': 'labels',
    'RandObjectCrop': 'crop',
    'RandObjectCropd': 'crop',
    'RandObjectCropD': 'crop',
    'RandObjectCropDict': 'crop',
    'EmbedSegCluster': 'cluster',
    'EmbedSegClusterd': 'cluster',
    'EmbedSegClusterD': 'cluster',
    'EmbedSegClusterDict': 'cluster',
    'cluster_embeddings': 'cluster',
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
