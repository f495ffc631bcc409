"""Data: TIFF I/O for MONAI, release-layout datalists, dataset properties, downloads, synthetic generators."""

from .io import TiffReader, TiffWriter, read_tiff, write_tiff, register_tiff_io
from .datalist import release_datalist, split_train_val
from .properties import compute_dataset_properties, save_properties, load_properties
from .synthetic import synthetic_nuclei_2d, synthetic_worms_2d, synthetic_cells_3d, write_synthetic_dataset
from .download import DATASETS, prepare_dataset, has_release_layout
from .collate import pad_one_hot_collate
from .zarr_io import ArrayVolume, LazyVolume, create_ome_zarr, open_volume, write_ome_zarr
from .percentiles import volume_percentiles
