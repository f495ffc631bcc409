"""Shared by the bundle tests: build a ``ConfigWorkflow`` of a shipped bundle with overrides."""

from pathlib import Path

from monai.bundle import ConfigWorkflow

from monai_embedseg.bundle.paths import bundle_workflow


def workflow(bundle: str, kind: str, files: list[str], tmp: Path, **overrides) -> ConfigWorkflow:
    """``ConfigWorkflow`` of ``bundles/<bundle>/configs/<files>``; data in ``tmp/data``, outputs in ``tmp/out``."""
    return bundle_workflow(bundle, kind, files, dataset_dir=str(tmp / "data"), output_dir=str(tmp / "out"), **overrides)
