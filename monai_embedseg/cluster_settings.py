"""The clustering's settings as one value.

A trained model's seed and foreground thresholds, minimum object size, border rule, claim rule and pixel spacing
travel together from its files (``thresholds.json``, ``dataset_properties.json``) to the clustering, through
``segment``, the block-wise path, the threshold search and the interactive
:class:`~monai_embedseg.segmenter.Segmenter`. They are declared here once; a new setting is a new field (plus its flat
argument on :func:`~monai_embedseg.transforms.cluster_embeddings` and the MONAI transforms, which bundle configs need).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from monai_embedseg.constants import FG_THRESH, SEED_THRESH

__all__ = ["ClusteringSettings", "TUNED_SETTINGS"]

#: the settings the threshold search chooses on the validation split (``thresholds.json``)
TUNED_SETTINGS = ("seed_thresh", "fg_thresh", "min_object_size", "exclude_border")


@dataclasses.dataclass(frozen=True)
class ClusteringSettings:
    """Settings of the greedy clustering (:func:`~monai_embedseg.transforms.cluster_embeddings`).

    Args:
        seed_thresh: a foreground pixel with seed probability above this can start an object.
        fg_thresh: pixels with seed probability above this are foreground.
        min_object_size: minimum proposal and object size in pixels; smaller ones are rejected / dropped.
        min_unclaimed: a proposal becomes an object only if more than this fraction of it is unclaimed.
        spacing: physical pixel size per spatial axis (``None``: the image's, else 1).
        exclude_border: drop the objects that touch the image border (cut by it), for data whose annotations leave
            them out; the threshold search sets it from the validation split.

    Raises:
        ValueError: a threshold or fraction that is not a finite number in [0, 1], or a negative minimum size.
    """

    seed_thresh: float = SEED_THRESH
    fg_thresh: float = FG_THRESH
    min_object_size: int = 0
    min_unclaimed: float = 0.5
    spacing: tuple[float, ...] | None = None
    exclude_border: bool = False

    def __post_init__(self) -> None:
        for name in ("seed_thresh", "fg_thresh", "min_unclaimed"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or (name == "min_unclaimed" and not 0.0 <= value <= 1.0):
                raise ValueError(f"{name} must be {'in [0, 1]' if name == 'min_unclaimed' else 'finite'}, got {value}.")
            object.__setattr__(self, name, value)
        if int(self.min_object_size) != self.min_object_size or self.min_object_size < 0:
            raise ValueError(f"min_object_size must be an integer >= 0, got {self.min_object_size}.")
        object.__setattr__(self, "min_object_size", int(self.min_object_size))
        if not isinstance(self.exclude_border, (bool, np.bool_)):
            raise ValueError(f"exclude_border must be true or false, got {self.exclude_border!r}.")
        object.__setattr__(self, "exclude_border", bool(self.exclude_border))
        if self.spacing is not None:
            spacing = self.spacing if isinstance(self.spacing, Sequence) else [self.spacing]
            object.__setattr__(self, "spacing", tuple(float(s) for s in spacing))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], **changes: Any) -> ClusteringSettings:
        """The settings named in ``values`` (e.g. :func:`~monai_embedseg.engines.read_thresholds`'s dict; other keys
        are ignored), then ``changes`` (``None`` values are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names}).replace(**changes)

    def replace(self, **changes: Any) -> ClusteringSettings:
        """A copy with ``changes`` applied (``None`` values leave a setting as it is)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def tuned(self) -> dict[str, Any]:
        """The settings the threshold search chooses (:data:`TUNED_SETTINGS`) as a dict."""
        return {k: getattr(self, k) for k in TUNED_SETTINGS}

    def as_dict(self) -> dict[str, Any]:
        """The settings as keyword arguments of :func:`~monai_embedseg.transforms.cluster_embeddings` (and JSON)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
