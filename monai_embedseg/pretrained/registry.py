"""Named pretrained models: where each one's files are, which bundle runs it, and the checksum of its weights.

A pretrained model is a trained output folder: ``model.pt`` (state dict), ``dataset_properties.json`` (spacing, crop
size, minimum object size), ``thresholds.json`` (clustering thresholds tuned on a validation split) and
``MODEL_CARD.md``. It is either shipped in this package (``source`` is a folder name under
``monai_embedseg/pretrained/``) or hosted elsewhere (``source`` is an ``https://`` URL of a ``.zip`` of that folder,
downloaded once into the cache folder). Either way ``model.pt`` is checked against the registered SHA-256 before
it is used, and loaded through :func:`monai_embedseg.utils.load_weights` like any checkpoint. Adding a model is one
entry in :data:`MODELS`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PretrainedModel", "MODELS", "model_folder", "default_model_for", "init_weights", "sha256_of", "CACHE_DIR"]

_HERE = Path(__file__).resolve().parent

#: where models hosted elsewhere are unpacked (``MONAI_EMBEDSEG_CACHE`` overrides it)
CACHE_DIR = Path(os.environ.get("MONAI_EMBEDSEG_CACHE", Path.home() / ".cache" / "monai_embedseg")) / "models"


@dataclass(frozen=True)
class PretrainedModel:
    """One registered model.

    Attributes:
        name: what users type (``--model nuclei-2d``).
        bundle: the shipped bundle whose ``configs/inference.json`` runs it (its network and transforms).
        sha256: SHA-256 of its ``model.pt``.
        source: a folder under ``monai_embedseg/pretrained/`` (or an absolute folder path), or an ``https://`` URL of
            a ``.zip`` of the folder.
        description: one line for listings.
    """

    name: str
    bundle: str
    sha256: str
    source: str
    description: str = ""


MODELS: dict[str, PretrainedModel] = {
    m.name: m
    for m in (
        PretrainedModel(
            name="nuclei-2d",
            bundle="dsb2018",
            sha256="1dd11f64173490d5b1f0c58b01ede3cf782fbac4ce26c5bfede83cf64ba36590",
            source="nuclei-2d",
            description="2D fluorescent nuclei (DSB 2018 stage 1 test images, 43 train / 10 test), grayscale",
        ),
    )
}


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _lookup(name: str) -> PretrainedModel:
    if name not in MODELS:
        raise ValueError(f"no pretrained model named {name!r}; known: {', '.join(sorted(MODELS))}.")
    return MODELS[name]


def model_folder(name: str) -> Path:
    """Folder of the registered model ``name`` (``model.pt``, ``dataset_properties.json``, ``thresholds.json``),
    downloaded first if it is hosted elsewhere; its ``model.pt`` checked against the registered SHA-256.

    Raises:
        ValueError: unknown name, or the weights do not match their checksum (a corrupt or replaced file).
        FileNotFoundError: a shipped model's files are missing from this installation.
    """
    entry = _lookup(name)
    if entry.source.startswith(("https://", "http://")):
        folder = CACHE_DIR / entry.name
        if not (folder / "model.pt").is_file() or sha256_of(folder / "model.pt") != entry.sha256:
            from monai.apps import download_and_extract

            archive = CACHE_DIR / f"{entry.name}.zip"
            download_and_extract(entry.source, filepath=str(archive), output_dir=str(folder), progress=True)
            archive.unlink(missing_ok=True)
    else:
        folder = _HERE / entry.source  # an absolute path stays itself (a model kept in a local folder)
    weights = folder / "model.pt"
    if not weights.is_file():
        raise FileNotFoundError(f"pretrained model {name!r}: {weights} is missing from this installation.")
    found = sha256_of(weights)
    if found != entry.sha256:
        raise ValueError(
            f"pretrained model {name!r}: {weights} has SHA-256 {found}, the registry says {entry.sha256} "
            "(a corrupt or replaced file); reinstall the package or delete it to download it again."
        )
    return folder


def default_model_for(bundle_dir: str | os.PathLike) -> PretrainedModel | None:
    """The registered model that a bundle named like ``bundle_dir`` (e.g. ``bundles/dsb2018``) runs when it has no
    trained ``models/model.pt`` of its own, or ``None``."""
    name = Path(bundle_dir).resolve().name
    return next((m for m in MODELS.values() if m.bundle == name), None)


def init_weights(network, pretrained: str | os.PathLike | None = None):
    """Start training from pretrained weights: ``network`` with the weights of a registered model (by name) or of a
    checkpoint file loaded into it; unchanged when ``pretrained`` is ``None``.

    This is the bundles' ``"network"`` at training (``--pretrained nuclei-2d`` fine-tunes the shipped model). A
    resumed run then loads its own checkpoint over these weights.

    Args:
        network: the bundle's network (``torch.nn.Module``).
        pretrained: a name in :data:`MODELS`, a ``model.pt``/checkpoint path, or ``None``.

    Raises:
        ValueError: unknown name, or weights of another network (see ``load_weights``).
    """
    if pretrained is None or pretrained == "":
        return network
    from monai_embedseg.utils import load_weights

    path = Path(pretrained)
    if not path.is_file():
        if str(pretrained) not in MODELS:
            raise ValueError(
                f"--pretrained {pretrained}: neither a checkpoint file nor a pretrained model "
                f"(known: {', '.join(sorted(MODELS))})."
            )
        path = model_folder(str(pretrained)) / "model.pt"
    return load_weights(network, path)
