"""Train or fine-tune a bundle on images and label maps held in memory (e.g. painted in napari), through the bundle's
own training workflow: the arrays are written as a dataset in the release layout and the bundle's ``train.json``
(with ``train_fast.json`` when the bundle has one) runs on it, exactly as ``python -m monai.bundle run training``.

Sparse annotation: only the region around the painted objects is used (the bounding box of each label map's objects
plus a margin). Inside that region every unpainted pixel is background: paint every object there, or the network
learns to ignore the ones left out.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

__all__ = ["train_on_arrays", "painted_region"]


def painted_region(labels: np.ndarray, margin: int = 32) -> tuple[slice, ...]:
    """The bounding box of the objects of ``labels`` ``(*spatial)`` grown by ``margin`` pixels, cut to the image.

    Raises:
        ValueError: no object is painted.
    """
    where = np.nonzero(labels)
    if not where[0].size:
        raise ValueError("the labels hold no painted object: paint at least one.")
    return tuple(
        slice(max(0, int(w.min()) - margin), min(s, int(w.max()) + 1 + margin)) for w, s in zip(where, labels.shape)
    )


def train_on_arrays(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    bundle: str | os.PathLike,
    output_dir: str | os.PathLike,
    pretrained: str | os.PathLike | None = None,
    margin: int = 32,
    progress: Callable[[str, int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    **overrides,
) -> Path:
    """Train ``bundle`` on ``images`` and their instance ``labels``; the run's outputs go to ``output_dir``.

    Args:
        images: ``(*spatial)`` arrays (or ``(C, *spatial)`` for a multi-channel bundle).
        labels: instance label maps ``(*spatial)``, 0 = background, one per image.
        bundle: bundle folder.
        output_dir: a new folder for the run (``model.pt``, ``dataset_properties.json``, ``thresholds.json``,
            TensorBoard events) and its dataset (``painted_data/``).
        pretrained: start from these weights (a registered model name or a checkpoint), else from scratch.
        margin: pixels kept around the painted objects of each image.
        progress: called as ``progress(message, step, total_steps)`` after every training step and validation.
        should_stop: polled after every step; ``True`` ends training there (the run still leaves a ``model.pt``).
        overrides: more config overrides (``epochs=5``, ``max_minutes=5``).

    Returns:
        ``output_dir``.

    Raises:
        ValueError: no pairs, a shape mismatch, labels that are not integer or hold no object.
        FileExistsError: ``output_dir`` already holds a trained model.
    """
    from ignite.engine import Events

    from monai_embedseg.bundle.paths import bundle_workflow
    from monai_embedseg.data.io import write_tiff
    from monai_embedseg.labels import check_instance_labels

    if not images or len(images) != len(labels):
        raise ValueError(f"need image/label pairs: got {len(images)} image(s) and {len(labels)} label map(s).")
    output_dir, bundle = Path(output_dir), Path(bundle)
    if (output_dir / "model.pt").exists():
        raise FileExistsError(f"{output_dir} already holds a trained model; choose a new folder.")
    data = output_dir / "painted_data"
    pairs = []
    for i, (image, label) in enumerate(zip(images, labels)):
        image, label = np.asarray(image), np.asarray(label)
        if image.shape[-label.ndim :] != label.shape:
            raise ValueError(f"pair {i}: image of shape {image.shape} and labels of shape {label.shape} differ.")
        check_instance_labels(label[None], one_hot=False, source=f"painted labels {i}")
        box = painted_region(label, margin)
        pairs.append((image[(..., *box)], label[box].astype(np.uint16 if label.max() < 2**16 else np.uint32)))
    # with fewer than 3 pairs the validation (checkpoint choice, threshold search) sees the training images
    splits = {"train": pairs[:-1] or pairs, "val": pairs[-1:]} if len(pairs) >= 3 else {"train": pairs, "val": pairs}
    for split, items in splits.items():
        for i, (image, label) in enumerate(items):
            write_tiff(str(data / split / "images" / f"painted_{i:03d}.tif"), image, overwrite=True)
            write_tiff(str(data / split / "masks" / f"painted_{i:03d}.tif"), label, overwrite=True)
    files = [f for f in ("train.json", "train_fast.json") if (bundle / "configs" / f).is_file()]
    workflow = bundle_workflow(
        bundle,
        "train",
        files,
        bundle_root=str(bundle),
        dataset_dir=str(data),
        output_dir=str(output_dir),
        pretrained=None if pretrained is None else str(pretrained),
        **overrides,
    )
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    evaluator = workflow.parser.get_parsed_content("validate#evaluator")
    clock = workflow.parser.get_parsed_content("training_clock") if "training_clock" in workflow.parser else None
    limit = getattr(clock, "max_minutes", None)

    def on_step(engine) -> None:
        if progress is not None:
            total = engine.state.epoch_length * engine.state.max_epochs
            message = f"training: epoch {engine.state.epoch}/{engine.state.max_epochs}"
            step = engine.state.iteration
            if limit is not None:  # a time limit: the bar shows the share of the minutes spent when that is further
                message += f", {clock.elapsed() / 60:.1f} of {limit:g} min"
                step = max(step, int(clock.fraction() * total))
            progress(message, step, total)
        if should_stop is not None and should_stop():
            engine.terminate()

    def on_validation(engine) -> None:
        if progress is not None:
            ap = engine.state.metrics.get("val_ap50")
            text = "n/a" if ap is None else f"{ap:.3f}"
            progress(
                f"validation AP@0.5 {text}",
                trainer.state.iteration,
                trainer.state.epoch_length * trainer.state.max_epochs,
            )

    trainer.add_event_handler(Events.ITERATION_COMPLETED, on_step)
    evaluator.add_event_handler(Events.EPOCH_COMPLETED, on_validation)
    workflow.run()
    workflow.finalize()
    return output_dir
