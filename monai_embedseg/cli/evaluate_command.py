"""``monai-embedseg evaluate``: AP_dsb of predicted label images against masks."""

from __future__ import annotations

from pathlib import Path

from monai_embedseg.cli._common import _is_image
from monai_embedseg.data.datalist import file_stem

__all__ = ["evaluate"]


def evaluate(
    pred_dir: str, mask_dir: str, output_dir: str | None = None, suffix: str = "_labels", overwrite: bool = False
) -> dict:
    """AP_dsb of ``<pred_dir>/<name>_labels.tif`` against ``<mask_dir>/<name>.tif`` at IoU 0.5..0.9.

    Naming rule: the prediction of mask ``<name>.tif`` (or ``.tiff``, ``.nii.gz``) is ``<name>_labels.tif``, as
    ``segment`` writes it. Only matched pairs are scored; the counts of matched pairs and of masks without a
    prediction are printed and returned, so a partial prediction folder cannot pass unnoticed.

    Returns:
        ``{"pooled": (T,), "by_image": (T,), "matched": int, "missing_prediction": [names]}``; prints the table;
        writes CSVs to ``output_dir`` if given (``FileExistsError`` if they exist and not ``overwrite``).
    """
    import tempfile

    from monai_embedseg.data.io import read_tiff
    from monai_embedseg.handlers.ap_report import format_ap_table, write_ap_tables
    from monai_embedseg.labels import check_instance_labels

    if output_dir is not None:  # tables never go among the masks or the predictions
        from monai_embedseg.utils.files import check_output_apart

        check_output_apart([pred_dir, mask_dir], output_dir)
    masks = {file_stem(p): p for p in Path(mask_dir).iterdir() if _is_image(p)} if Path(mask_dir).is_dir() else None
    if masks is None:
        raise FileNotFoundError(f"mask folder {mask_dir} does not exist.")
    preds = {file_stem(p)[: -len(suffix)]: p for p in Path(pred_dir).glob(f"*{suffix}.tif*")}
    if not preds:
        raise ValueError(f"no '*{suffix}.tif' predictions in {pred_dir}.")
    unmatched = sorted(set(preds) - set(masks))
    if unmatched:
        raise ValueError(f"predictions without a mask in {mask_dir}: {', '.join(unmatched[:5])}")
    names = sorted(preds)
    missing = sorted(set(masks) - set(preds))
    truth = [read_tiff(str(masks[n])) for n in names]
    pred = [read_tiff(str(preds[n])) for n in names]
    for n, t, p in zip(names, truth, pred):  # checked here, where the files are known: the metric only sees arrays
        check_instance_labels(t[None], one_hot=False, source=str(masks[n]))
        check_instance_labels(p[None], one_hot=False, source=str(preds[n]))
        if t.shape != p.shape:
            raise ValueError(f"{masks[n]}: mask shape {t.shape} differs from its prediction {preds[n]} {p.shape}.")
    with tempfile.TemporaryDirectory() as tmp:
        summary = write_ap_tables(names, truth, pred, output_dir or tmp, overwrite=overwrite or not output_dir)
    print(
        f"scored {len(names)} image(s) with a prediction and a mask; {len(missing)} mask(s) without a prediction"
        + (f" (not scored: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''})" if missing else "")
    )
    print(format_ap_table(summary))
    return {**summary, "matched": len(names), "missing_prediction": missing}
