"""Dataset preparation for bundles: generate or check the data, build train/val/test lists, deduce properties."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from monai_embedseg.constants import PROPERTIES_FILE
from monai_embedseg.data.datalist import release_datalist, split_train_val
from monai_embedseg.data.properties import compute_dataset_properties, load_properties, save_properties

__all__ = [
    "prepare_data",
    "ensure_dataset",
    "training_datalists",
    "test_datalist",
    "prepare_properties",
    "training_intensity_peak",
    "read_properties",
]

#: where ``compute_dataset_properties`` took the spacing from (``props["spacing_source"]``), in words
SPACING_SOURCES = {
    "argument": "from the spacing setting",
    "metadata": "recorded in the masks",
    "default": "the bundle's default_spacing: the masks record none",
    "unit": "1 per axis: the masks record none",
}
logger = logging.getLogger(__name__)


def prepare_data(dataset_dir: str, release: str | None = None, synthetic: str | None = None, **synthetic_kwargs) -> str:
    """The bundles' ``prepare`` step: download the EmbedSeg release ``release``, or generate the synthetic data.

    Args:
        dataset_dir: the dataset folder.
        release: key of :data:`monai_embedseg.data.download.DATASETS` (e.g. ``"dsb2018"``), downloaded and unpacked
            into ``dataset_dir`` unless already there; ``None`` for bundles without a release archive.
        synthetic, synthetic_kwargs: used when ``release`` is ``None``, see :func:`ensure_dataset`.

    Returns:
        ``dataset_dir``.
    """
    if release is not None:
        from monai_embedseg.data.download import prepare_dataset

        return prepare_dataset(release, dataset_dir)
    return ensure_dataset(dataset_dir, synthetic, **synthetic_kwargs)


def ensure_dataset(dataset_dir: str, synthetic: str | None = None, **synthetic_kwargs) -> str:
    """Return ``dataset_dir`` once it holds a release-layout dataset (``train/images``, ``train/masks``).

    Args:
        dataset_dir: the dataset folder.
        synthetic: if given (``"nuclei_2d"``, ``"worms_2d"``, ``"cells_3d"``) and the folder is empty or missing,
            generate that synthetic dataset there (seeded, offline) with ``write_synthetic_dataset``.
        synthetic_kwargs: passed to ``write_synthetic_dataset`` (``n_train``, ``n_test``, ``shape``, ``seed``).

    Raises:
        FileNotFoundError: no data and nothing to generate (the message says how to get the data).
    """
    import torch.distributed as dist

    root = Path(dataset_dir)
    distributed = dist.is_available() and dist.is_initialized()
    if not (root / "train" / "images").is_dir() and synthetic is not None:
        if not distributed or dist.get_rank() == 0:  # under torchrun one process writes, the others wait
            from monai_embedseg.data.synthetic import write_synthetic_dataset

            logger.info(f"generating the synthetic '{synthetic}' dataset in {root}")
            write_synthetic_dataset(str(root), kind=synthetic, **synthetic_kwargs)
    if distributed:
        dist.barrier()
    if (root / "train" / "images").is_dir():
        return str(root)
    raise FileNotFoundError(
        f"no dataset in {root} (expected {root}/train/images and {root}/train/masks); run the bundle's 'prepare' "
        "step to download it, or pass --dataset_dir pointing at a folder in the EmbedSeg release layout."
    )


def training_datalists(dataset_dir: str, val_fraction: float = 0.15, seed: int = 1000, one_hot: str | bool = "auto"):
    """Train and validation lists: ``<dataset_dir>/val`` when present, else a seeded split of ``train``.

    Returns:
        ``{"train": [...], "val": [...]}``, each a list of dicts with ``image``, ``label`` (and ``label_onehot``).
    """
    train = release_datalist(dataset_dir, "train", one_hot=one_hot)
    if (Path(dataset_dir) / "val" / "images").is_dir():
        return {"train": train, "val": release_datalist(dataset_dir, "val", one_hot=one_hot)}
    train, val = split_train_val(train, val_fraction=val_fraction, seed=seed)
    return {"train": train, "val": val}


def test_datalist(dataset_dir: str, one_hot: str | bool = "auto", missing_ok: bool = False) -> list[dict]:
    """The ``test`` split of a release-layout dataset (``missing_ok``: an empty list when there is none, so that an
    inference workflow can be built before its data exists; running it then refuses the empty list)."""
    if missing_ok and not (Path(dataset_dir) / "test" / "images").is_dir():
        return []
    return release_datalist(dataset_dir, "test", one_hot=one_hot)


def prepare_properties(
    datalists: dict,
    output_dir: str,
    spacing: Sequence[float] | None = None,
    label_key: str = "label",
    default_spacing: Sequence[float] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    image_key: str | None = "image",
    image_channel_dim: int | str | None = None,
) -> dict:
    """Deduce the dataset properties from the train + val masks (:func:`save_run_properties` writes them as JSON in
    ``output_dir`` once the run starts), and ``intensity_peak`` from their images (:func:`training_intensity_peak`;
    ``image_key=None`` skips it).

    ``label_key="label_onehot"`` (the release layout's ``masks_onehot``) reads one-hot stacks ``(N, *spatial)``.
    The file (``dataset_properties.json``) sits beside the checkpoints so inference uses the same crop size,
    minimum object size and spacing. It belongs to the run: a fresh run writes it, but never over a trained run's.

    Checked before anything is written: a fresh run (neither ``resume`` nor ``overwrite``) in a folder holding another
    run's epoch checkpoints is refused (the properties of that run's model stay as they are); a resumed run keeps its
    properties file, and is refused when the data now gives another spacing, crop size, minimum object size or
    foreground weight (the model was trained for those).

    The spacing (``props["spacing"]``, the one the bundles' loss, medoids, inferer and clustering read) is the first
    of: ``spacing`` (the user's ``--spacing``), the spacing recorded in the masks' metadata, ``default_spacing``
    (the bundle's published voxel size for data whose files record none), 1 per axis. It is logged with its source.
    """
    files = [item[label_key] for split in ("train", "val") for item in datalists.get(split, [])]
    props = compute_dataset_properties(
        files, spacing=spacing, one_hot=label_key == "label_onehot", default_spacing=default_spacing
    )
    path = Path(output_dir) / PROPERTIES_FILE
    _check_run_folder(output_dir, path, props, resume, overwrite)
    if image_key is not None and not (resume and path.is_file()):
        images = [item[image_key] for split in ("train", "val") for item in datalists.get(split, [])]
        props["intensity_peak"] = training_intensity_peak(images, image_channel_dim)
    source = props["spacing_source"]
    logger.info(f"spacing {props['spacing']} ({SPACING_SOURCES[source]}); --spacing '[...]' overrides it")
    if source == "metadata" and default_spacing is not None and list(default_spacing) != props["spacing"]:
        logger.warning(
            f"the masks record spacing {props['spacing']}, which differs from the bundle's default_spacing "
            f"{list(default_spacing)}; using the masks' (pass --spacing '{list(default_spacing)}' to use the default)."
        )
    if resume and path.is_file():
        return load_properties(str(path))
    return props


def training_intensity_peak(images: Sequence, channel_dim: int | str | None = None) -> float | None:
    """The highest scaled intensity peak (:func:`monai_embedseg.intensity.image_peak`) of the training images, as the
    training pipeline loads them (``channel_dim`` as its reader's); inference takes an image peaking far above it for
    a mostly empty one (:func:`monai_embedseg.intensity.model_sparse_ratio`). ``None`` when no image has a spread.

    Args:
        images: image files (TIFF or NIfTI) or arrays ``(C, *spatial)``.
        channel_dim: the channel axis of the files (``None``: a ``C`` axis in the TIFF metadata, else none).
    """
    from monai.transforms import LoadImage
    from tqdm import tqdm

    from monai_embedseg.constants import NORMALIZE_PERCENTILES
    from monai_embedseg.data.io import TiffReader
    from monai_embedseg.intensity import image_peak

    load = LoadImage(reader=TiffReader(channel_dim=channel_dim), ensure_channel_first=True, image_only=True)
    peaks = []
    for image in tqdm(images, desc="intensity peaks", leave=False, disable=len(images) < 20):
        array = np.asarray(image if not isinstance(image, (str, Path)) else load(image))
        peaks.append(image_peak(array, *NORMALIZE_PERCENTILES))
    found = [p for p in peaks if p is not None]
    peak = max(found) if found else None
    if peak is not None:
        logger.info(f"intensity peak of the training images: {peak:.2f} x their 1 - 99.8 % percentile range")
    return peak


#: properties a trained model depends on: a resumed run must see the same
RUN_PROPERTIES = ("spacing", "crop_size", "min_object_size", "foreground_weight")


def _check_run_folder(output_dir: str, path: Path, props: dict, resume: bool, overwrite: bool) -> None:
    """Refuse, before any file is written, a run that would change the properties of another run's model."""
    from monai_embedseg.handlers.resume import refuse_earlier_run

    refuse_earlier_run(output_dir, resume, overwrite)  # the same check ResumeHandler makes later, made first
    if resume and path.is_file():
        old = load_properties(str(path))
        changed = [k for k in RUN_PROPERTIES if k in old and not _same(old[k], props[k])]
        if changed:
            detail = ", ".join(f"{k} {old[k]} -> {props[k]}" for k in changed)
            raise ValueError(
                f"cannot resume the run in {output_dir}: the data and settings now give other properties than the "
                f"run was trained with ({detail}; {path}). Resume with the same --dataset_dir and --spacing, or "
                "start a new run in another --output_dir."
            )


def _same(a, b) -> bool:
    return bool(np.allclose(np.asarray(a, float), np.asarray(b, float), rtol=1e-6))


#: the properties an inference workflow is built with before training has run (running it is then refused)
UNTRAINED_PROPERTIES = {"min_object_size": 0, "spacing": None, "untrained": True}


def read_properties(output_dir: str, missing_ok: bool = False) -> dict:
    """Load ``dataset_properties.json`` written by training into ``output_dir`` (clear error when missing).

    ``missing_ok``: when ``output_dir`` holds no trained model either (no ``model.pt``), return
    :data:`UNTRAINED_PROPERTIES`, so that the workflow of an untrained bundle can be built and checked
    (MONAI's ``check_properties``); the first step of running it refuses the missing model.
    """
    path = Path(output_dir) / PROPERTIES_FILE
    if missing_ok and not path.is_file() and not (Path(output_dir) / "model.pt").is_file():
        return dict(UNTRAINED_PROPERTIES)
    return load_properties(str(path))


def save_run_properties(props: dict, output_dir: str, resume: bool = False) -> bool:
    """Write the run's ``dataset_properties.json`` (the training workflow's step after its checks; a resumed run
    keeps its file). Returns ``True``."""
    path = Path(output_dir) / PROPERTIES_FILE
    if not (resume and path.is_file()):
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        save_properties(props, str(path), overwrite=True)
    return True
