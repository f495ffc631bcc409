"""``monai-embedseg train`` (a bundle's training workflow with one-line errors) and ``monai-embedseg demo``."""

from __future__ import annotations

from pathlib import Path

from monai_embedseg.cli._common import _check_device

__all__ = ["train", "demo"]


def train(
    bundle: str,
    dataset_dir: str | None = None,
    output_dir: str | None = None,
    fast: bool = False,
    overrides: dict | None = None,
) -> Path:
    """Train a bundle: its ``configs/train.json`` (with ``train_fast.json`` when ``fast``) run by MONAI's
    ``ConfigWorkflow`` as ``python -m monai.bundle run training`` runs it, with errors reduced to their cause.

    Args:
        bundle: bundle folder.
        dataset_dir: data in the release layout (default: the bundle's ``data/``).
        output_dir: the run's folder (default: the bundle's ``models/``).
        fast: merge the bundle's CPU profile ``configs/train_fast.json``.
        overrides: more config overrides (``{"epochs": 5, "max_minutes": 5, "pretrained": "nuclei-2d"}``).

    Returns:
        the output folder (``model.pt``, ``dataset_properties.json``, ``thresholds.json``, TensorBoard events).

    Raises:
        FileNotFoundError, FileExistsError, ValueError: one line naming the problem (and the file).
    """
    from monai_embedseg.bundle.checks import EXPLAINED, check_training_settings, root_cause
    from monai_embedseg.bundle.paths import bundle_workflow, resolve_bundle, trust_notice

    bundle = resolve_bundle(bundle, "train.json")
    configs = bundle / "configs"
    files = [configs / "train.json", *([configs / "train_fast.json"] if fast else [])]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{bundle} is not a trainable bundle folder: {missing[0]} does not exist.")
    if {"epochs", "max_minutes"} & set(overrides or {}):  # the bundle's own first step, here before MONAI loads
        check_training_settings(overrides.get("epochs", 1), overrides.get("max_minutes"))
    trust_notice(bundle)
    settings = dict(overrides or {})
    for key, value in (("dataset_dir", dataset_dir), ("output_dir", output_dir)):
        if value is not None:
            settings[key] = str(value)
    try:
        workflow = bundle_workflow(bundle, "train", [f.name for f in files], **settings)
        workflow.initialize()
        workflow.run()
        workflow.finalize()
        out = Path(workflow.parser.get_parsed_content("output_dir"))
    except Exception as e:  # MONAI wraps a failing config expression; the cause says what is wrong
        cause = root_cause(e)
        if isinstance(cause, EXPLAINED):
            raise cause from None
        raise
    return out


def demo(
    bundle: str | None = None,
    epochs: int | None = None,
    output_dir: str | None = None,
    dataset_dir: str | None = None,
    device: str | None = None,
    resume: bool = False,
) -> None:
    """Train, evaluate and run inference with the offline ``synthetic_2d`` bundle (data generated on first run).

    The demo's outputs are its own: a new demo run replaces the previous one's checkpoints and predictions in
    ``output_dir`` (``resume=True`` continues a killed one instead).

    Raises:
        ValueError: ``epochs`` < 1, or a CUDA ``device`` without CUDA.
    """
    from monai.bundle import run

    from monai_embedseg.bundle.paths import bundle_path

    if epochs is not None and epochs < 1:
        raise ValueError(f"--epochs must be at least 1, got {epochs}.")
    if device is not None:
        _check_device(device)
    root = Path(bundle or bundle_path("synthetic_2d"))
    configs = root / "configs"
    overrides: dict = {"bundle_root": str(root)}
    for key, value in (("output_dir", output_dir), ("dataset_dir", dataset_dir)):
        if value:
            overrides[key] = value
    if device:
        overrides["device"] = f"$torch.device('{device}')"
    train_overrides = dict(
        overrides, resume=resume, overwrite=not resume, **({"epochs": epochs} if epochs is not None else {})
    )
    run(
        "training",
        config_file=str(configs / "train.json"),
        logging_file=str(configs / "logging.conf"),
        meta_file=str(configs / "metadata.json"),
        **train_overrides,
    )
    run(
        "evaluating",
        config_file=[str(configs / "train.json"), str(configs / "evaluate.json")],
        logging_file=str(configs / "logging.conf"),
        meta_file=str(configs / "metadata.json"),
        **overrides,
    )
    run(
        "inference",
        config_file=str(configs / "inference.json"),
        logging_file=str(configs / "logging.conf"),
        meta_file=str(configs / "metadata.json"),
        **dict(overrides, overwrite=True),
    )
