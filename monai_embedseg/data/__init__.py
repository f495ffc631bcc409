"""Data: TIFF I/O for MONAI, release-layout datalists, dataset properties, downloads, synthetic generators.

The names below are imported on first use (``monai_embedseg.data.CropPoolDataset`` works as usual), so that the
command line's help and argument errors answer before MONAI and torch are loaded.
"""

from __future__ import annotations

from monai_embedseg._lazy import lazy_exports

_EXPORTS = {
    "pad_one_hot_collate": "collate",
    "CropPoolDataset": "crop_pool",
    "split_pool_pipeline": "crop_pool",
    "batch_for_budget": "crop_size",
    "fit_crop_size": "crop_size",
    "release_datalist": "datalist",
    "split_train_val": "datalist",
    "DATASETS": "download",
    "has_release_layout": "download",
    "prepare_dataset": "download",
    "collect_items": "folds",
    "make_folds": "folds",
    "tile_dataset": "folds",
    "tile_volume": "folds",
    "write_fold": "folds",
    "TiffReader": "io",
    "TiffWriter": "io",
    "read_tiff": "io",
    "register_tiff_io": "io",
    "write_tiff": "io",
    "volume_percentiles": "percentiles",
    "compute_dataset_properties": "properties",
    "load_properties": "properties",
    "save_properties": "properties",
    "synthetic_cells_3d": "synthetic",
    "synthetic_nuclei_2d": "synthetic",
    "synthetic_worms_2d": "synthetic",
    "write_synthetic_dataset": "synthetic",
    "ArrayVolume": "zarr_io",
    "LazyVolume": "zarr_io",
    "create_ome_zarr": "zarr_io",
    "open_volume": "zarr_io",
    "write_ome_zarr": "zarr_io",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
