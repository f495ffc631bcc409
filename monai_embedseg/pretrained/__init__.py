"""Pretrained models: a small registry of named, checksummed models that ``segment --model NAME`` and training's
``--pretrained NAME`` use, shipped in the package or downloaded once (see :mod:`.registry`)."""

from monai_embedseg.pretrained.registry import (
    MODELS,
    PretrainedModel,
    default_model_for,
    init_weights,
    model_folder,
    sha256_of,
)

__all__ = ["MODELS", "PretrainedModel", "default_model_for", "init_weights", "model_folder", "sha256_of"]
