"""``monai-embedseg export``: a trained model as a bioimage.io model package."""

from __future__ import annotations

from pathlib import Path

from monai_embedseg.cli._common import _check_readable

__all__ = ["export"]


def export(
    output: str,
    bundle: str | None = None,
    checkpoint: str | None = None,
    model: str | None = None,
    properties: str | None = None,
    image: str | None = None,
    name: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a trained model as a bioimage.io model package (``.zip``, spec 0.5): state-dict, TorchScript and ONNX
    weights, the preprocessing, test tensors, documentation (the ``MODEL_CARD.md`` beside the weights, if any), and
    the clustering settings; see :func:`monai_embedseg.pretrained.bioimageio.export_bioimageio`.

    Args:
        output: the ``.zip`` to write.
        bundle, checkpoint, model, properties: the trained model, as for :func:`segment` (``model``: a pretrained
            model name or a package).
        image: a raw image file for the test tensors and the cover, ``(*spatial)`` or ``(C, *spatial)`` (default: a
            generated one).
        name: the package's name.
        overwrite: replace an existing ``output``.

    Returns:
        the written path.
    """
    import json

    from monai_embedseg.bundle.paths import trained_model_files
    from monai_embedseg.constants import THRESHOLDS_FILE
    from monai_embedseg.utils.files import check_output_apart

    if not str(output).lower().endswith(".zip"):
        raise ValueError(f"--output {output}: a bioimage.io model package is a .zip file.")
    resolved = trained_model_files(bundle, checkpoint, properties, model)
    if resolved.exported:
        raise ValueError(
            f"--model {model}: export takes a checkpoint, a pretrained model or a package, not a .ts/.onnx."
        )
    check_output_apart([resolved.weights, *([image] if image else [])], output)
    if Path(output).exists() and not overwrite:
        raise FileExistsError(f"{output} exists; pass --overwrite to replace it.")
    from monai_embedseg.bundle.paths import inference_parser
    from monai_embedseg.data.io import read_tiff
    from monai_embedseg.data.properties import load_properties
    from monai_embedseg.pretrained.bioimageio import export_bioimageio
    from monai_embedseg.utils import load_weights

    network = load_weights(inference_parser(resolved.bundle).get_parsed_content("network_def"), resolved.weights)
    thresholds_file = resolved.weights.parent / THRESHOLDS_FILE
    card = resolved.weights.parent / "MODEL_CARD.md"
    if image is not None:
        _check_readable(Path(image))
    return export_bioimageio(
        network,
        output,
        bundle=resolved.bundle.resolve().name,
        properties=load_properties(str(resolved.properties)),
        thresholds=json.loads(thresholds_file.read_text()) if thresholds_file.is_file() else None,
        test_image=read_tiff(image) if image else None,
        name=name,
        model_card=card.read_text() if card.is_file() else None,
        overwrite=overwrite,
    )
