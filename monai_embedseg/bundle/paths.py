"""Locating bundles and their default folders, and building a workflow of a shipped bundle."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from monai.bundle import ConfigWorkflow

__all__ = ["bundle_path", "bundle_workflow"]


def bundle_path(name: str) -> str:
    """Folder of the bundle ``name`` shipped in this repository (``<repo>/bundles/<name>``).

    Falls back to ``./bundles/<name>`` (relative to the working directory) when the package is installed without the
    repository; pass ``--bundle_root DIR`` to a bundle run to use a copied bundle instead.
    """
    repo_bundle = Path(__file__).resolve().parents[2] / "bundles" / name
    if (repo_bundle / "configs").is_dir():
        return str(repo_bundle)
    return str(Path("bundles") / name)


def bundle_workflow(name: str, workflow_type: str, config_files: Sequence[str], **overrides) -> ConfigWorkflow:
    """MONAI ``ConfigWorkflow`` of the shipped bundle ``name``, as ``python -m monai.bundle run`` would build it.

    Args:
        name: bundle name (see :func:`bundle_path`).
        workflow_type: ``"train"``, ``"eval"`` or ``"infer"``.
        config_files: file names under ``configs/``, merged in order (e.g. ``["train.json", "evaluate.json"]``).
        overrides: config overrides (``epochs=1``, ``**{"validate#tta": False}``).

    Returns:
        the workflow (not yet initialised), with the bundle's ``metadata.json`` and ``logging.conf``.
    """
    configs = Path(bundle_path(name)) / "configs"
    config = [str(configs / f) for f in config_files]
    return ConfigWorkflow(
        config_file=config if len(config) > 1 else config[0],
        meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"),
        workflow_type=workflow_type,
        **overrides,
    )
