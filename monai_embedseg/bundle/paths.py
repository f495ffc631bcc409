"""Locating bundles and their default folders, and building a workflow of a shipped bundle."""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "BUNDLES_DIR",
    "bundle_root",
    "bundle_path",
    "bundle_workflow",
    "inference_parser",
    "trained_model_files",
    "TrainedModel",
    "trust_notice",
]

#: the repository's ``bundles/`` folder (``./bundles`` when the package is installed without the repository)
BUNDLES_DIR = Path(__file__).resolve().parents[2] / "bundles"
if not BUNDLES_DIR.is_dir():
    BUNDLES_DIR = Path("bundles")


def bundle_root() -> str:
    """Folder of the bundle whose config is running: the parent of its ``configs/`` folder (absolute path).

    The bundles' ``"bundle_root"`` calls this, so a bundle copied anywhere writes its ``models/`` and ``data/`` under
    itself, whatever the working directory. The running MONAI ``ConfigWorkflow`` (``python -m monai.bundle run``,
    ``ConfigWorkflow(...)``) is found on the call stack; its ``config_root_path`` is the folder of the first config
    file, the same folder MONAI itself treats as the bundle's (``ConfigWorkflow.run`` puts its parent on
    ``sys.path``). Without a workflow (a bare ``ConfigParser``), the working directory. ``--bundle_root DIR``
    overrides it.
    """
    from monai.bundle import ConfigWorkflow

    frame = inspect.currentframe()
    try:
        while frame is not None:
            workflow = frame.f_locals.get("self")
            if isinstance(workflow, ConfigWorkflow):
                configs = Path(workflow.config_root_path)
                return str((configs.parent if configs.name == "configs" else configs).resolve())
            frame = frame.f_back
    finally:
        del frame  # a frame kept in a local would form a reference cycle with this function's frame
    return os.getcwd()


def bundle_path(name: str) -> str:
    """Folder of the bundle ``name`` shipped in this repository (``<repo>/bundles/<name>``).

    Falls back to ``./bundles/<name>`` (relative to the working directory) when the package is installed without the
    repository. A copied bundle needs nothing from here: its ``bundle_root`` is its own folder (:func:`bundle_root`).
    """
    return str(BUNDLES_DIR / name)


def resolve_bundle(bundle: str | os.PathLike, config: str = "inference.json") -> Path:
    """The bundle folder meant by ``bundle``: a folder holding ``configs/<config>``, else a shipped bundle of that name
    (``dsb2018`` for ``bundles/dsb2018``).

    Raises:
        FileNotFoundError: neither, naming the missing file and the shipped bundles.
    """
    folder = Path(bundle)
    if (folder / "configs" / config).is_file():
        return folder
    shipped = Path(bundle_path(str(bundle)))
    if folder.name == str(bundle) and (shipped / "configs" / config).is_file():
        return shipped
    names = sorted(p.name for p in BUNDLES_DIR.iterdir() if (p / "configs").is_dir()) if BUNDLES_DIR.is_dir() else []
    raise FileNotFoundError(
        f"{bundle} is not a bundle folder: {folder / 'configs' / config} does not exist"
        + (f" (shipped bundles: {', '.join(names)})." if names else ".")
    )


def bundle_workflow(bundle: str | os.PathLike, workflow_type: str, config_files: Sequence[str], **overrides):
    """MONAI ``ConfigWorkflow`` of a bundle, as ``python -m monai.bundle run`` would build it.

    Args:
        bundle: a bundle folder (holding ``configs/``), or the name of a shipped bundle (see :func:`bundle_path`).
        workflow_type: ``"train"``, ``"eval"`` or ``"infer"``.
        config_files: file names under ``configs/``, merged in order (e.g. ``["train.json", "evaluate.json"]``).
        overrides: config overrides (``epochs=1``, ``**{"validate#tta": False}``).

    Returns:
        the MONAI ``ConfigWorkflow`` (not yet initialised), with the bundle's ``metadata.json`` and ``logging.conf``.
    """
    from monai.bundle import ConfigWorkflow

    configs = resolve_bundle(bundle, config_files[0]) / "configs"
    config = [str(configs / f) for f in config_files]
    return ConfigWorkflow(
        config_file=config if len(config) > 1 else config[0],
        meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"),
        workflow_type=workflow_type,
        **overrides,
    )


def inference_parser(bundle: str | os.PathLike):
    """MONAI ``ConfigParser`` of a bundle folder's ``configs/inference.json``, with ``bundle_root`` set to the folder
    (nothing evaluated yet): for code that takes pieces of the inference config (network, inferer, preprocessing)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(Path(bundle) / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    return parser


class TrainedModel(NamedTuple):
    """What a segmentation runs: the bundle (its ``configs/inference.json``), the weights and the training outputs.

    ``weights`` is a state dict (``exported`` False) or an exported TorchScript / ONNX network (``exported`` True);
    ``thresholds.json``, if any, is read from ``weights.parent``.
    """

    bundle: Path
    weights: Path
    properties: Path
    exported: bool


def trained_model_files(
    bundle: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    properties: str | os.PathLike | None = None,
    model: str | os.PathLike | None = None,
) -> TrainedModel:
    """Resolve what a segmentation runs, in one place for ``segment``, block-wise segmentation and the Python API.

    Args:
        bundle: bundle folder; optional when ``model`` names a pretrained model or a bioimage.io package (their
            bundle is recorded with them).
        weights: checkpoint (default ``<bundle>/models/model.pt``; for a shipped bundle without one, the registered
            pretrained model of that bundle, e.g. ``bundles/dsb2018`` -> ``nuclei-2d``).
        properties: dataset properties (default: ``dataset_properties.json`` beside the weights).
        model: a registered pretrained model name (``nuclei-2d``), a bioimage.io package exported by this package
            (``.zip``), or an exported TorchScript (``.ts``) / ONNX (``.onnx``) network (then ``bundle`` is needed).

    Returns:
        a :class:`TrainedModel` whose files all exist.

    Raises:
        FileNotFoundError: a file is missing; the message says how to make or find it.
        ValueError: both ``model`` and ``weights``, an unknown model name, or a package not made by this package.
    """
    from monai_embedseg.constants import PROPERTIES_FILE
    from monai_embedseg.pretrained.registry import MODELS, default_model_for, model_folder

    if model is not None and weights is not None:
        raise ValueError("pass either --model or --checkpoint, not both.")
    exported = False
    if model is not None and str(model) in MODELS:
        folder, bundle = model_folder(str(model)), bundle or bundle_path(MODELS[str(model)].bundle)
        weights = folder / "model.pt"
    elif model is not None and str(model).lower().endswith(".zip"):
        from monai_embedseg.pretrained.bioimageio import unpack_package

        folder, name = unpack_package(model)
        bundle, weights = bundle or bundle_path(name), folder / "model.pt"
    elif model is not None:
        if not Path(model).is_file():
            raise FileNotFoundError(
                f"--model {model}: no such file, and not a pretrained model (known: {', '.join(sorted(MODELS))})."
            )
        weights, exported = Path(model), True
    if bundle is None:
        raise ValueError("--bundle is needed (the bundle folder whose configs/inference.json runs the model).")
    bundle_dir = resolve_bundle(bundle)
    trust_notice(bundle_dir)
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(f"checkpoint {weights} does not exist.")
    own = bundle_dir / "models" / "model.pt"
    pretrained = default_model_for(bundle_dir) if weights is None and not own.is_file() else None
    if pretrained is not None:
        print(
            f"bundle '{bundle_dir.name}' has no trained models/model.pt: using the pretrained model "
            f"'{pretrained.name}' (--checkpoint to use your own).",
            file=sys.stderr,
        )
        weights = model_folder(pretrained.name) / "model.pt"
    weights = Path(weights or own)
    if not weights.is_file():
        raise FileNotFoundError(
            f"no trained model at {weights}: bundle '{bundle_dir.name}' ships untrained. Train it first "
            f"(python -m monai.bundle run training --config_file {bundle_dir / 'configs' / 'train.json'} "
            "--dataset_dir DATA --output_dir OUT), then pass --checkpoint OUT/model.pt."
        )
    props = Path(properties) if properties else weights.parent / PROPERTIES_FILE
    if not props.is_file():
        raise FileNotFoundError(
            f"{props} not found: training writes it beside model.pt; pass --properties FILE if you moved it."
        )
    return TrainedModel(bundle_dir, weights, props, exported)


_NOTICED: set[str] = set()


def trust_notice(bundle_dir: str | os.PathLike) -> bool:
    """Say once per process and bundle that a bundle not shipped with the package is run as code.

    A bundle's configs hold ``_target_`` callables and ``$`` Python expressions, which MONAI's config parser runs
    (``python -m monai.bundle run`` prints its own notice). The shipped bundles are ours; a copy or a downloaded
    bundle gets this one-line warning before anything of it runs.

    Returns:
        whether the notice was given now.
    """
    where = Path(bundle_dir).resolve()
    if where == BUNDLES_DIR or BUNDLES_DIR in where.parents or str(where) in _NOTICED:
        return False
    _NOTICED.add(str(where))
    # stderr, not logging: a bundle's logging.conf (loaded by an earlier run in the process) disables other loggers
    print(
        f"notice: bundle {bundle_dir} is not one shipped with monai_embedseg: its configs run as Python code "
        "(_target_ callables, $ expressions); use only bundles you trust.",
        file=sys.stderr,
    )
    return True
