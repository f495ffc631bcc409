"""Choose the clustering thresholds of a trained model on the validation split (like StarDist's
``optimize_thresholds``), and save them beside the model so inference uses them by default."""

from __future__ import annotations

import copy
import itertools
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from monai_embedseg.cluster_settings import TUNED_SETTINGS, ClusteringSettings
from monai_embedseg.constants import PAPER_THRESHOLDS, THRESHOLDS_FILE
from monai_embedseg.metrics.matching import ap_from_counts, image_match_counts
from monai_embedseg.transforms.cluster import cluster_embeddings
from monai_embedseg.utils.checkpoint import load_weights
from monai_embedseg.utils.files import atomic_output

__all__ = ["ThresholdSearch", "read_thresholds", "tuned_thresholds", "PAPER_THRESHOLDS", "THRESHOLDS_FILE"]

logger = logging.getLogger(__name__)


def read_thresholds(output_dir: str, min_object_size: int, use_tuned: bool = True, tta: bool = True) -> dict:
    """Clustering thresholds for inference: the tuned ones saved by :class:`ThresholdSearch`, else the paper's.

    Args:
        output_dir: the training output folder (holding ``model.pt`` and, after tuning, ``thresholds.json``).
        min_object_size: the fallback minimum object size (from the dataset properties).
        use_tuned: ``False`` ignores a tuned file (the paper's 0.9 / 0.5 and ``min_object_size``).
        tta: whether inference averages test-time augmentations (see :func:`tuned_thresholds`).

    Returns:
        :func:`tuned_thresholds` of the file, plus ``"source"`` (the file, or ``"paper"``).
    """
    path = Path(output_dir) / THRESHOLDS_FILE
    if use_tuned and path.is_file():
        with open(path) as f:
            saved = json.load(f)
        try:
            plain = not tta and saved.get("without_tta") is not None
            return {
                **tuned_thresholds(saved, min_object_size, tta),
                "source": f"{path} (without TTA)" if plain else str(path),
            }
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: not a thresholds file written by ThresholdSearch ({e}).") from None
    return {**tuned_thresholds(None, min_object_size), "source": "paper"}


def tuned_thresholds(saved: Mapping | None, min_object_size: int, tta: bool = True) -> dict:
    """The clustering settings of a ``thresholds.json`` content (checked by
    :class:`~monai_embedseg.cluster_settings.ClusteringSettings`), or the paper's for ``None``.

    Args:
        saved: what :class:`ThresholdSearch` wrote, or ``None``.
        min_object_size: the minimum object size without a tuned one (from the dataset properties).
        tta: whether inference averages test-time augmentations; ``False`` takes the ``without_tta`` setting where
            the search made one (a single prediction's seed map peaks higher than an average).

    Returns:
        ``{"seed_thresh", "fg_thresh", "min_object_size", "exclude_border"}`` (``exclude_border`` is ``False`` for a
        file written before the search chose it).

    Raises:
        AttributeError, KeyError, TypeError, ValueError: not a mapping, or a missing or invalid setting.
    """
    if saved is None:
        return ClusteringSettings(**PAPER_THRESHOLDS, min_object_size=int(min_object_size)).tuned()
    values = saved["without_tta"] if not tta and saved.get("without_tta") is not None else saved
    return ClusteringSettings(  # checks every value
        values["seed_thresh"],
        values["fg_thresh"],
        values["min_object_size"],
        exclude_border=values.get("exclude_border", False),
    ).tuned()


def _copy_state(module: torch.nn.Module) -> dict:
    """A detached copy of ``module``'s state dict (parameters and buffers)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class ThresholdSearch:
    """Predict the validation images once, then search seed / foreground thresholds and the minimum object size.

    The search maximises AP_dsb at ``iou`` averaged over images (EmbedSeg's convention), first over the grid of
    ``seed_threshs x fg_threshs`` at the dataset's minimum object size, then over ``min_size_factors`` (multiples of
    the mean object size, plus the dataset minimum) at the best pair, then (``search_border``) whether dropping the
    objects that touch the image border scores higher, for annotations that leave out the objects the border cuts;
    ties go to the paper's values and to keeping every object. The network
    runs once per image (the prediction is kept), so the search costs clusterings only. The result, with the
    validation AP of the paper's thresholds beside it, is written atomically to ``output_file``.

    Args:
        network: the network (or its ``FastForward`` runner) to predict with.
        inferer: e.g. an ``EmbedSegInferer`` with the same TTA setting as inference.
        dataloader: validation batches (batch size 1) with ``image_key`` and ``label_key`` (label map or one-hot).
        output_file: where to write the JSON (replaced if present: it belongs to the run).
        min_object_size: the dataset's minimum object size (pixels), the default of the search.
        mean_object_size: the dataset's mean object size, scale of ``min_size_factors``.
        checkpoint: weights to load into ``load_into`` first (e.g. the best ``model.pt``); skipped if missing.
        load_into: the bare network whose weights ``checkpoint`` holds (default: ``network``).
        spacing: pixel size for the clustering.
        device: device of the network input.
        tta: if given, predict with a copy of ``inferer`` whose ``tta`` is set to this (e.g. the bundle's validation
            inferer without TTA during training, with TTA here as at inference).
        iou: the IoU threshold of the objective.
        search_border: also try ``exclude_border`` (drop objects touching the image border) at the best setting.
        search_without_tta: when the search predicts with TTA, search the predictions without TTA too and store
            that setting as ``"without_tta"`` (inference without TTA reads it, :func:`read_thresholds`).
        compare_final: also search with the weights ``load_into`` holds when the search starts (the last training
            step) and keep whichever of them and ``checkpoint`` scores better on the validation split with its own
            tuned thresholds (ties: the last step); if the last step wins, it is written to ``checkpoint``. During
            training the best model is chosen at the paper's thresholds, which a model still learning to reach
            seed 0.9 fails although it separates the objects well at 0.6.
        max_min_object_size: the largest minimum size the search may choose (e.g. the 5th percentile of the
            training objects' sizes, ``small_object_size`` of the dataset properties): a few validation images can
            reward dropping objects as large as many seen in training, a setting that fits those images only.
            ``None``: no bound.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        inferer: Callable,
        dataloader: Iterable,
        output_file: str,
        min_object_size: int = 0,
        mean_object_size: float | None = None,
        checkpoint: str | None = None,
        load_into: torch.nn.Module | None = None,
        spacing: Sequence[float] | None = None,
        device: str | torch.device = "cpu",
        tta: bool | None = None,
        seed_threshs: Sequence[float] = (0.5, 0.6, 0.7, 0.8, 0.9),
        fg_threshs: Sequence[float] = (0.3, 0.4, 0.5, 0.6),
        min_size_factors: Sequence[float] = (0.05, 0.1, 0.2, 0.3),
        iou: float = 0.5,
        image_key: str = "image",
        label_key: str = "label",
        compare_final: bool = False,
        search_border: bool = True,
        search_without_tta: bool = True,
        max_min_object_size: int | None = None,
    ) -> None:
        self.network = network
        self.search_border = bool(search_border)
        self.search_without_tta = bool(search_without_tta)
        self.compare_final = bool(compare_final)
        if tta is not None and hasattr(inferer, "tta"):
            inferer = copy.copy(inferer)
            inferer.tta = bool(tta)
        self.inferer = inferer
        self.dataloader = dataloader
        self.output_file = output_file
        self.min_object_size = int(min_object_size)
        self.mean_object_size = mean_object_size
        self.max_min_object_size = None if max_min_object_size is None else int(max_min_object_size)
        self.checkpoint = checkpoint
        self.load_into = load_into if load_into is not None else network
        self.spacing = spacing
        self.device = torch.device(device)
        self.seed_threshs = sorted(float(t) for t in seed_threshs)
        self.fg_threshs = sorted(float(t) for t in fg_threshs)
        self.min_size_factors = tuple(float(f) for f in min_size_factors)
        self.iou = float(iou)
        self.image_key = image_key
        self.label_key = label_key

    def predict(self, inferer: Callable | None = None) -> list[tuple[torch.Tensor, np.ndarray]]:
        """Raw predictions ``(C, *spatial)`` (CPU float32) and labels of every validation image (with ``inferer``,
        default the search's)."""
        inferer = self.inferer if inferer is None else inferer
        self.network.eval()
        out = []
        with torch.inference_mode():
            for batch in self.dataloader:
                image = torch.as_tensor(batch[self.image_key]).to(self.device)
                pred = inferer(image, self.network)
                label = torch.as_tensor(batch[self.label_key])
                for p, y in zip(pred, label):
                    out.append((torch.as_tensor(p).float().cpu(), np.asarray(y.cpu())))
        return out

    def score(
        self, preds: list, seed_thresh: float, fg_thresh: float, min_object_size: int, exclude_border: bool = False
    ) -> float:
        """Validation AP_dsb at ``iou`` (mean over images) of one setting."""
        settings = ClusteringSettings(
            seed_thresh, fg_thresh, min_object_size, spacing=self.spacing, exclude_border=exclude_border
        )
        counts = []
        for pred, label in preds:
            labels, _ = cluster_embeddings(pred, **settings.as_dict())
            counts.append(image_match_counts(label, labels.numpy(), (self.iou,))[:, :3])
        return float(ap_from_counts(np.stack(counts), by_image=True)[0])

    def run(self) -> dict:
        """Search, write ``output_file`` and return the chosen setting with its validation AP."""
        have_checkpoint = self.checkpoint is not None and Path(self.checkpoint).is_file()
        final_state = None
        if self.compare_final and have_checkpoint:
            final_state = _copy_state(self.load_into)
        if have_checkpoint:
            load_weights(self.load_into, self.checkpoint, map_location=self.device)
        result = self._search()
        key = f"val_ap{int(self.iou * 100)}_by_image"
        if final_state is not None:
            best_state = self.load_into.state_dict()
            if all(torch.equal(v, best_state[k]) for k, v in final_state.items()):  # one model: searched once
                result["model"] = "last training step"
            else:
                result["model"] = "best validation AP at the paper's thresholds"
                best_state = _copy_state(self.load_into)
                self.load_into.load_state_dict(final_state)
                final = self._search()
                final["model"] = "last training step"
                if final[key] >= result[key]:
                    logger.info(
                        f"the last training step scores {final[key]:.3f} on the validation split with its tuned "
                        f"thresholds, the best model of training {result[key]:.3f}: {self.checkpoint} is now the last "
                        "step"
                    )
                    with atomic_output(str(self.checkpoint), overwrite=True) as tmp:
                        torch.save(final_state, tmp)
                    result = final
                else:
                    self.load_into.load_state_dict(best_state)
        if self.search_without_tta and getattr(self.inferer, "tta", False):
            result["without_tta"] = self._search_without_tta()
        with atomic_output(self.output_file, overwrite=True) as tmp:
            with open(tmp, "w") as f:
                json.dump(result, f, indent=2)
        logger.info(
            f"thresholds tuned on {result['n_val_images']} validation images: seed {result['seed_thresh']}, "
            f"foreground {result['fg_thresh']}, min size {result['min_object_size']}"
            + (
                f", objects touching the image border dropped (val AP {result[key + '_border_objects_kept']:.3f} with "
                "them)"
                if result["exclude_border"]
                else ""
            )
            + f": val AP@{self.iou} "
            f"{result[key]:.3f} (paper thresholds {result[key + '_paper_thresholds']:.3f}) -> {self.output_file}"
        )
        if "without_tta" in result:
            plain = result["without_tta"]
            logger.info(
                f"without TTA: seed {plain['seed_thresh']}, foreground {plain['fg_thresh']}, min size "
                f"{plain['min_object_size']}{', border objects dropped' if plain['exclude_border'] else ''}: val "
                f"AP@{self.iou} {plain[key]:.3f}"
            )
        return result

    def _search_without_tta(self) -> dict:
        """The best setting for predictions without TTA (same weights, same search)."""
        key = f"val_ap{int(self.iou * 100)}_by_image"
        plain = copy.copy(self.inferer)
        plain.tta = False
        found = self._search(plain)
        return {k: found[k] for k in (*TUNED_SETTINGS, key, key + "_paper_thresholds")}

    def _search(self, inferer: Callable | None = None) -> dict:
        """The best setting for the weights the network holds now, with its validation AP (predicting with
        ``inferer``, default the search's)."""
        preds = self.predict(inferer)
        if not preds:
            raise ValueError("threshold search: the validation dataloader is empty.")
        paper = (PAPER_THRESHOLDS["seed_thresh"], PAPER_THRESHOLDS["fg_thresh"])
        pairs = [(s, f) for s, f in itertools.product(self.seed_threshs, self.fg_threshs) if s >= f]
        if paper not in pairs:
            pairs.append(paper)
        scores = {pair: self.score(preds, *pair, self.min_object_size) for pair in pairs}
        paper_ap = scores[paper]
        best = max(pairs, key=lambda p: (round(scores[p], 6), p == paper))
        sizes = {self.min_object_size}
        if self.mean_object_size:
            sizes |= {max(self.min_object_size, int(round(f * self.mean_object_size))) for f in self.min_size_factors}
        if self.max_min_object_size is not None:
            sizes = {m for m in sizes if m <= max(self.max_min_object_size, self.min_object_size)}
        size_scores = {m: (scores[best] if m == self.min_object_size else self.score(preds, *best, m)) for m in sizes}
        min_size = max(sorted(sizes), key=lambda m: (round(size_scores[m], 6), m == self.min_object_size))
        ap = size_scores[min_size]
        exclude_border = False
        if self.search_border:
            without_border = self.score(preds, *best, min_size, exclude_border=True)
            exclude_border = round(without_border, 6) > round(ap, 6)
            if exclude_border:
                ap = without_border
        result = {
            "seed_thresh": best[0],
            "fg_thresh": best[1],
            "min_object_size": int(min_size),
            "exclude_border": exclude_border,
            f"val_ap{int(self.iou * 100)}_by_image": ap,
            f"val_ap{int(self.iou * 100)}_by_image_border_objects_kept": size_scores[min_size],
            f"val_ap{int(self.iou * 100)}_by_image_paper_thresholds": paper_ap,
            "n_val_images": len(preds),
            "checkpoint": None if self.checkpoint is None else str(self.checkpoint),
        }
        return result
