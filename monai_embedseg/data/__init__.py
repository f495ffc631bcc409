"""Data: TIFF I/O for MONAI, release-layout datalists, dataset properties, downloads, synthetic generators."""

from .collate import pad_one_hot_collate
from .crop_pool import CropPoolDataset, split_pool_pipeline
from .crop_size import batch_for_budget, fit_crop_size
from .datalist import release_datalist, split_train_val
from .download import DATASETS, has_release_layout, prepare_dataset
from .io import TiffReader, TiffWriter, read_tiff, register_tiff_io, write_tiff
from .percentiles import volume_percentiles
from .properties import compute_dataset_properties, load_properties, save_properties
from .synthetic import synthetic_cells_3d, synthetic_nuclei_2d, synthetic_worms_2d, write_synthetic_dataset
from .zarr_io import ArrayVolume, LazyVolume, create_ome_zarr, open_volume, write_ome_zarr
