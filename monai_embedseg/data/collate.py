"""Collate functions for batches whose labels are one-hot stacks with different numbers of objects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data.utils import list_data_collate
from monai.utils import ensure_tuple

__all__ = ["pad_one_hot_collate"]


def _flatten(batch: Sequence) -> list:
    """Flatten the lists (or tuples of dicts) that multi-sample transforms return, keep other items."""
    out = []
    for item in batch:
        if isinstance(item, list) or (isinstance(item, tuple) and item and isinstance(item[0], Mapping)):
            out.extend(item)
        else:
            out.append(item)
    return out


def _pad_channels(x: Any, n: int) -> Any:
    """Append ``n`` all-zero channels to ``x`` ``(N, *spatial)`` -> ``(N + n, *spatial)``, same type/dtype/device."""
    if n == 0:
        return x
    if isinstance(x, torch.Tensor):  # MetaTensor too: torch.cat keeps the first operand's metadata
        return torch.cat([x, x.new_zeros((n, *x.shape[1:]))], dim=0)
    return np.concatenate([x, np.zeros((n, *x.shape[1:]), dtype=x.dtype)], axis=0)


def pad_one_hot_collate(
    batch: Sequence, keys: Sequence[str] | str = ("label",), allow_missing_keys: bool = False
) -> Any:
    """Collate dicts whose ``keys`` hold one-hot stacks ``(N_i, *spatial)`` with different object counts ``N_i``.

    Each stack is padded to ``N = max_i N_i`` channels with empty (all-zero) channels, which the shared convention
    treats as padding, then MONAI's ``list_data_collate`` stacks the batch: ``(B, N, *spatial)`` for the padded keys.
    Lists in ``batch`` (from multi-sample transforms such as ``RandObjectCropd(num_samples=k)``) are flattened first,
    so ``B`` counts samples. Stacks that already agree (e.g. label maps, ``N = 1``) are left untouched. Works with
    MetaTensors (metadata kept), torch tensors and numpy arrays; each item keeps its type and dtype.

    Use in a bundle config with ``{"_target_": "monai_embedseg.data.collate.pad_one_hot_collate", "_mode_":
    "partial", "keys": ["label"]}`` as the ``DataLoader``'s ``collate_fn``.

    Args:
        batch: dicts, or lists of dicts, as produced by a ``Dataset``.
        keys: keys holding one-hot stacks ``(N_i, *spatial)``.
        allow_missing_keys: skip keys absent from every item instead of raising.

    Returns:
        the collated batch (a dict of batched values for dict items).

    Raises:
        KeyError: a key is missing (from some items, or from all unless ``allow_missing_keys``).
        TypeError: a value of a padded key is not a numpy array or torch tensor.
        ValueError: a value has fewer than 2 dims, the stacks differ in spatial shape or ndim, or a stack with one
            channel that must be padded holds values other than 0/1 (a label map, which padding would corrupt).
    """
    data = _flatten(batch)
    if not data or not isinstance(data[0], Mapping):
        return list_data_collate(data)
    data = [dict(d) for d in data]  # shallow copies: the caller's dicts are not modified
    for key in ensure_tuple(keys):
        present = [key in d for d in data]
        if not any(present):
            if allow_missing_keys:
                continue
            raise KeyError(f"key {key!r} not found in the batch items (keys: {sorted(map(str, data[0]))}).")
        if not all(present):
            raise KeyError(f"key {key!r} is missing from {present.count(False)} of {len(data)} batch items.")
        values = [d[key] for d in data]
        for v in values:
            if not isinstance(v, (torch.Tensor, np.ndarray)):
                raise TypeError(
                    f"pad_one_hot_collate: {key!r} must hold numpy arrays or torch tensors, got {type(v).__name__}."
                )
            if v.ndim < 2:
                raise ValueError(f"pad_one_hot_collate: {key!r} must be (N, *spatial), got shape {tuple(v.shape)}.")
        spatial = {tuple(v.shape[1:]) for v in values}
        if len(spatial) > 1:
            raise ValueError(
                f"pad_one_hot_collate: {key!r} stacks differ in spatial shape {sorted(spatial)}; "
                f"crop or pad them to one size first."
            )
        n_max = max(int(v.shape[0]) for v in values)
        for d, v in zip(data, values):
            n = int(v.shape[0])
            if n == n_max:
                continue
            numel = v.size if isinstance(v, np.ndarray) else v.numel()
            if n == 1 and numel and (float(v.max()) > 1 or float(v.min()) < 0):
                raise ValueError(
                    f"pad_one_hot_collate: {key!r} has a 1-channel item with values outside {{0, 1}} (a label "
                    f"map?) in a batch with {n_max} channels; label maps cannot be padded to one-hot stacks."
                )
            d[key] = _pad_channels(v, n_max - n)
    return list_data_collate(data)
