"""The training bundles' first step: check the settings and the data before anything is written, and end an
uncaught error's traceback with the one line that says what is wrong.

``python -m monai.bundle run training`` wraps every error of a config expression in ``RuntimeError: Failed to
evaluate ...``, so the traceback's last line names a config expression, not the problem. :func:`explain_errors`
(the first ``initialize`` expression of every training config) installs a ``sys.excepthook`` that prints the usual
traceback and then, as its last line, the first of our explained errors (``ValueError``, ``FileNotFoundError``,
``FileExistsError``) in the exception's cause chain. ``monai-embedseg train`` prints that line alone.
"""

from __future__ import annotations

import sys
import traceback

__all__ = [
    "EXPLAINED",
    "root_cause",
    "explain_errors",
    "check_training_settings",
    "check_training_data",
    "check_inference_data",
    "load_trained_weights",
]

#: error types whose message is written for the user (one line naming the problem and the file)
EXPLAINED = (ValueError, FileNotFoundError, FileExistsError)


def root_cause(error: BaseException) -> BaseException:
    """The error that says what went wrong: the first of :data:`EXPLAINED` in the ``__cause__`` chain of ``error``
    (MONAI and Ignite wrap it), else the innermost one."""
    while not isinstance(error, EXPLAINED) and error.__cause__ is not None:
        error = error.__cause__
    return error


def _hook(kind, error, tb) -> None:
    traceback.print_exception(kind, error, tb)
    cause = root_cause(error)
    if cause is not error and isinstance(cause, EXPLAINED):
        print(f"error: {type(cause).__name__}: {cause}", file=sys.stderr)


def explain_errors() -> bool:
    """Install the hook (once per process); returns ``True``. See the module docstring."""
    sys.excepthook = _hook
    return True


def check_training_settings(epochs: int, max_minutes: float | None = None) -> bool:
    """Refuse settings that cannot train, before the data is read or anything is written.

    Raises:
        ValueError: ``epochs`` < 1, or ``max_minutes`` neither ``None`` nor a positive number.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"--epochs must be a whole number of at least 1, got {epochs!r}.")
    from monai_embedseg.utils.settings import check_max_minutes

    check_max_minutes(max_minutes)
    return True


def check_training_data(datalists: dict) -> bool:
    """Refuse a dataset without training or validation images, before any output is written.

    Args:
        datalists: ``{"train": [...], "val": [...]}`` as the bundle built them from ``dataset_dir`` (building them
            already checked that images and masks pair up).

    Raises:
        ValueError: no training or validation images.
    """
    for split in ("train", "val"):
        if not datalists.get(split):
            raise ValueError(f"no {split} images: the dataset folder needs {split} images with masks (see the README).")
    return True


def check_inference_data(datalist: list, dataset_dir: str) -> bool:
    """Refuse an inference run without images, before the model runs.

    Raises:
        FileNotFoundError: ``datalist`` is empty (no ``<dataset_dir>/test/images``).
    """
    if not datalist:
        raise FileNotFoundError(
            f"no images to segment: {dataset_dir}/test/images holds none (pass --dataset_dir, or use "
            "monai-embedseg segment IMAGES --bundle BUNDLE)."
        )
    return True


def load_trained_weights(network, ckpt_path: str):
    """Load the trained weights at ``ckpt_path`` into ``network`` (the inference workflow's first step, so that the
    workflow of an untrained bundle can be built and checked). Returns ``network``.

    Raises:
        FileNotFoundError: no trained model at ``ckpt_path``.
        ValueError: the file is not a checkpoint of this network (see :func:`~monai_embedseg.utils.load_weights`).
    """
    from pathlib import Path

    from monai_embedseg.utils import load_weights

    if not Path(ckpt_path).is_file():
        raise FileNotFoundError(
            f"no trained model: {ckpt_path} does not exist. Run the bundle's training first (it writes model.pt and "
            "dataset_properties.json there), or point ckpt_path / --checkpoint at a trained model."
        )
    device = next(iter(network.parameters()), None)
    return load_weights(network, ckpt_path, map_location=device.device if device is not None else "cpu")
