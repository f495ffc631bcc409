"""Shared by the bundle tests: build a ``ConfigWorkflow`` of a shipped bundle with overrides."""

from pathlib import Path

from monai.bundle import ConfigWorkflow

from monai_embedseg.bundle.paths import bundle_path


def workflow(bundle: str, kind: str, files: list[str], tmp: Path, **overrides) -> ConfigWorkflow:
    """``ConfigWorkflow`` of ``bundles/<bundle>/configs/<files>`` with data in ``tmp/data`` and outputs in ``tmp/out``."""
    configs = Path(bundle_path(bundle)) / "configs"
    config = [str(configs / f) for f in files]
    return ConfigWorkflow(
        config_file=config if len(config) > 1 else config[0],
        meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"),
        workflow_type=kind,
        dataset_dir=str(tmp / "data"),
        output_dir=str(tmp / "out"),
        **overrides,
    )
