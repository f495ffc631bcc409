"""EmbedSeg inference: optional sliding windows and the paper's fixed 8-fold (2D) / 16-fold (3D) test-time augmentation.

A raw EmbedSeg prediction (layout in :mod:`monai_embedseg.embedding`) holds *vectors*: offsets and per-axis
bandwidths. When the input is flipped or rotated, an equivariant network returns the flipped/rotated field whose
vector components are flipped/rotated too, so un-transforming a prediction must also transform the channels:

* after un-flipping spatial axis ``d`` the raw offset channel ``d`` is negated;
* after un-rotating by 90 degrees in the (y, x) plane the y/x offset channels are swapped (one of them negated)
  and the y/x sigma channels are swapped;
* the seed channel is only moved back.

MONAI's ``TestTimeAugmentation`` knows nothing about this, hence this ``Inferer``.

All augmentations are *signed axis permutations* of the spatial axes (``out = flip(permute(x, perm), flips)``):
in 2D the 8 elements of the dihedral group of the square (4 rotations by 90 degrees x optional flip), in 3D those 8
acting on (y, x) times an optional z flip (16). Rotations (permutations swapping y and x) need equal y and x pixel
sizes: the raw offsets are in units of ``offset_scale * min(spacing)`` and a network does not see a rotated
anisotropic image as a rotated copy of the same scene. With ``spacing[-2] != spacing[-1]`` only the flips are used
(4 in 2D, 8 in 3D; flipping both y and x, the 180 degree rotation, is kept).

Averaging, in the raw layout: offsets linearly, sigmas in raw log space (geometric mean of the bandwidths), seeds as
**probabilities** (``sigmoid``, averaged, turned back into a logit clamped to ``[1e-6, 1 - 1e-6]``), the usual way to
ensemble classifiers; ``seed_average="logit"`` averages the logits instead.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer, SlidingWindowInferer
from monai.utils import convert_to_dst_type, ensure_tuple_rep, fall_back_tuple

from monai_embedseg.embedding import n_sigma_of, resolve_spacing

__all__ = ["EmbedSegInferer", "tta_transforms", "AxisOp"]

_SEED_EPS = 1e-6
#: most voxels per network call when TTA copies are batched on a CPU (``tta_batch_size=None``)
CPU_TTA_VOXELS = 2**17


class AxisOp:
    """A signed permutation of the spatial axes: ``forward(x) = flip(permute(x, perm), flips)``.

    Output spatial axis ``d`` is input axis ``perm[d]``, then flipped if ``flips[d]``. A vector field transforms as
    ``v_out[d] = (-1 if flips[d] else 1) * v_in[perm[d]]``; :meth:`inverse` undoes this on a raw prediction.

    Args:
        perm: permutation of ``range(D)``.
        flips: one bool per output spatial axis.
    """

    def __init__(self, perm: Sequence[int], flips: Sequence[bool]) -> None:
        self.perm = tuple(int(p) for p in perm)
        self.flips = tuple(bool(f) for f in flips)
        if sorted(self.perm) != list(range(len(self.perm))) or len(self.flips) != len(self.perm):
            raise ValueError(f"invalid axis op perm={perm}, flips={flips}.")
        self.inv_perm = tuple(self.perm.index(d) for d in range(len(self.perm)))

    @property
    def spatial_dims(self) -> int:
        return len(self.perm)

    @property
    def swaps_axes(self) -> bool:
        """Whether the op permutes axes (a rotation by +-90 degrees or a transposition)."""
        return self.perm != tuple(range(len(self.perm)))

    def _lead(self, x: torch.Tensor) -> int:
        lead = x.ndim - self.spatial_dims
        if lead < 0:
            raise ValueError(f"expected a tensor with {self.spatial_dims} trailing spatial dims, got {tuple(x.shape)}.")
        return lead

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Transform an image ``(..., *spatial)`` (channels untouched); spatial shape becomes ``spatial[perm]``."""
        lead = self._lead(x)
        if self.swaps_axes:
            x = x.permute(*range(lead), *(lead + p for p in self.perm))
        dims = [lead + d for d, f in enumerate(self.flips) if f]
        return x.flip(dims) if dims else x

    def inverse_image(self, x: torch.Tensor) -> torch.Tensor:
        """Undo :meth:`forward` on an image ``(..., *spatial)`` (channels untouched)."""
        lead = self._lead(x)
        dims = [lead + d for d, f in enumerate(self.flips) if f]
        x = x.flip(dims) if dims else x
        if self.swaps_axes:
            x = x.permute(*range(lead), *(lead + p for p in self.inv_perm))
        return x

    def inverse(self, pred: torch.Tensor) -> torch.Tensor:
        """Map a raw prediction made on ``forward(image)`` back to the frame of ``image``, correcting vector channels.

        Args:
            pred: raw prediction ``(B, 2D+1 or D+2, *spatial_transformed)``.

        Returns:
            raw prediction ``(B, C, *spatial)`` in the original frame.
        """
        d = self.spatial_dims
        if pred.ndim != d + 2:
            raise ValueError(
                f"expected a raw prediction (B, C, *spatial) with {d} spatial dims, got {tuple(pred.shape)}."
            )
        index, scale = self.channel_map(pred.shape[1])
        scale_t = torch.tensor(scale, dtype=pred.dtype, device=pred.device).view(1, -1, *([1] * d))
        # reorder/negate the vector channels on the contiguous network output, then move the pixels back
        return self.inverse_image(pred[:, index] * scale_t)

    def channel_map(self, num_channels: int) -> tuple[list[int], list[float]]:
        """How :meth:`inverse` corrects the channels of a raw prediction with ``num_channels`` channels.

        Returns:
            ``(index, scale)``: original-frame channel ``k`` is ``scale[k]`` (+-1) times the transformed-frame channel
            ``index[k]`` (before the pixels are moved back with :meth:`inverse_image`).

        Raises:
            ValueError: ``num_channels`` is not ``2D+1`` or ``D+2``.
        """
        d = self.spatial_dims
        n_sigma = n_sigma_of(num_channels, d)
        src = [self.perm.index(k) for k in range(d)]  # channel of the transformed frame holding component k
        index = src + ([d + j for j in src] if n_sigma == d else [d]) + [d + n_sigma]
        scale = [-1.0 if self.flips[j] else 1.0 for j in src] + [1.0] * (n_sigma + 1)
        return index, scale

    def __repr__(self) -> str:
        return f"AxisOp(perm={self.perm}, flips={self.flips})"


def _axis_ops(spatial_dims: int, rotations: bool = True) -> list[AxisOp]:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
    ops = []
    in_plane_perms = [(0, 1), (1, 0)] if rotations else [(0, 1)]
    z_flips = [False, True] if spatial_dims == 3 else [None]
    for zf, perm, fy, fx in itertools.product(z_flips, in_plane_perms, (False, True), (False, True)):
        if spatial_dims == 2:
            ops.append(AxisOp(perm, (fy, fx)))
        else:
            ops.append(AxisOp((0, perm[0] + 1, perm[1] + 1), (zf, fy, fx)))
    return ops


def tta_transforms(spatial_dims: int, rotations: bool = True) -> list[tuple[Callable, Callable]]:
    """The fixed test-time augmentations: ``(forward, inverse)`` pairs, identity first.

    ``forward`` maps an image ``(B, C_in, *spatial)`` to the augmented image; ``inverse`` maps the raw prediction
    ``(B, 2D+1 or D+2, *spatial')`` of the augmented image back to the original frame, negating/swapping the offset
    and sigma channels (see the module docstring). 2D: the 8 rotations-by-90-degrees x optional flip;
    3D: those 8 in the (y, x) plane x optional z flip = 16. With ``rotations=False`` only flips: 4 (2D) / 8 (3D).

    Args:
        spatial_dims: 2 or 3.
        rotations: include the ops that swap y and x.

    Returns:
        list of ``(forward, inverse)`` callables (bound methods of :class:`AxisOp`).
    """
    return [(op.forward, op.inverse) for op in _axis_ops(spatial_dims, rotations)]


class EmbedSegInferer(Inferer):
    """Whole-image or sliding-window inference with optional EmbedSeg test-time augmentation.

    Args:
        roi_size: window size for MONAI's :class:`~monai.inferers.SlidingWindowInferer`; ``None``: whole image.
        sw_batch_size: windows per network call (sliding window only).
        overlap: window overlap (sliding window only).
        mode: blending of overlapping windows, ``"gaussian"`` or ``"constant"``.
        tta: run the 8 (2D) / 16 (3D) flips and 90 degree rotations and average the corrected raw outputs.
        spacing: pixel size per spatial axis (z, y, x); only used to drop rotations when y and x sizes differ.
        sw_device: device the network runs on (``None``: the input's device).
        device: device of the output (``None``: the input's device for windows, the network's output device else).
        progress: show a progress bar (sliding window only).
        seed_average: ``"probability"`` (default) or ``"logit"``, how TTA averages the seed channel.
        tta_batch_size: most augmented copies of the batch per network/sliding-window call (``None``: on a GPU all
            copies of one spatial shape in one call, on a CPU as many as stay under ``CPU_TTA_VOXELS`` voxels per
            call: large batches run slower there).
        whole_if_fits: run an image that fits in one window (every axis <= ``roi_size``) through the network whole,
            without MONAI's padding up to the window size (the network takes any size): on a 700 x 500 image and a
            1024 x 1024 window that is 3x fewer pixels, and there is no padded border. Likewise the sliding window
            is cut to the image along axes where the image is shorter (a 5-slice volume, a 32-slice window).

    ``__call__(inputs, network)`` takes ``inputs (B, C_in, *spatial)`` and returns the raw prediction
    ``(B, 2D+1, *spatial)`` (or ``D+2`` channels for an isotropic-sigma network), MetaTensor in -> MetaTensor out.

    Memory on whole volumes: with ``roi_size``, MONAI stitches the prediction on ``device`` in the input's dtype
    (so sliding-window inputs must be floating point), i.e. ``C`` maps of the input size plus one weight map; for
    GPU inference of a volume too large for the GPU keep the input on the host and pass ``sw_device="cuda",
    device="cpu"``. With ``tta`` every network/sliding-window call holds ``tta_batch_size`` augmented copies of the
    input and their predictions, so use ``tta_batch_size=1`` for large volumes; the averaging itself adds one
    float32 prediction, one seed map and single-channel temporaries (images and channels are un-flipped one at a
    time), about twice the prediction in all.
    """

    def __init__(
        self,
        roi_size: Sequence[int] | int | None = None,
        sw_batch_size: int = 1,
        overlap: Sequence[float] | float = 0.25,
        mode: str = "gaussian",
        tta: bool = False,
        spacing: Sequence[float] | float | None = None,
        sw_device: torch.device | str | None = None,
        device: torch.device | str | None = None,
        progress: bool = False,
        seed_average: str = "probability",
        tta_batch_size: int | None = None,
        whole_if_fits: bool = True,
    ) -> None:
        super().__init__()
        if seed_average not in ("probability", "logit"):
            raise ValueError(f"seed_average must be 'probability' or 'logit', got {seed_average!r}.")
        if tta_batch_size is not None and tta_batch_size < 1:
            raise ValueError(f"tta_batch_size must be >= 1 or None, got {tta_batch_size}.")
        self.roi_size = roi_size
        self.tta = bool(tta)
        self.spacing = spacing
        self.sw_device = sw_device
        self.device = device
        self.seed_average = seed_average
        self.tta_batch_size = tta_batch_size
        self.whole_if_fits = bool(whole_if_fits)
        self.sliding_window = (
            None
            if roi_size is None
            else SlidingWindowInferer(
                roi_size=roi_size,
                sw_batch_size=sw_batch_size,
                overlap=overlap,
                mode=mode,
                sw_device=sw_device,
                device=device,
                progress=progress,
            )
        )

    def rotations_allowed(self, spatial_dims: int) -> bool:
        """Whether TTA may swap y and x (equal y and x pixel sizes)."""
        sp = resolve_spacing(self.spacing, spatial_dims)
        return abs(sp[-2] - sp[-1]) <= 1e-6 * max(sp[-2], sp[-1])

    def _fits(self, spatial: Sequence[int]) -> bool:
        roi = ensure_tuple_rep(self.roi_size, len(spatial))
        return all(r is None or r <= 0 or s <= r for s, r in zip(spatial, roi))

    def _window(self, spatial: Sequence[int]) -> SlidingWindowInferer:
        """The sliding window for an image of ``spatial`` size: never longer than the image along an axis (MONAI
        would pad the image up to the window: a 5-slice volume and a 32-slice window cost 6x the voxels)."""
        assert self.sliding_window is not None
        if not self.whole_if_fits:
            return self.sliding_window  # MONAI's own behaviour, padding included
        roi = fall_back_tuple(ensure_tuple_rep(self.roi_size, len(spatial)), spatial)
        clipped = tuple(min(int(r), int(s)) for r, s in zip(roi, spatial))
        if clipped == tuple(self.sliding_window.roi_size):
            return self.sliding_window
        window = copy.copy(self.sliding_window)
        window.roi_size = clipped
        window.roi_weight_map = None  # a cached map belongs to the unclipped window
        return window

    def _run(self, x: torch.Tensor, network: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.sliding_window is not None and not (self.whole_if_fits and self._fits(x.shape[2:])):
            out = self._window(x.shape[2:])(x, network, *args, **kwargs)
        else:
            out = network(x.to(self.sw_device) if self.sw_device is not None else x, *args, **kwargs)
            if self.device is not None:
                out = out.to(self.device)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"the network must return one tensor (B, C, *spatial), got {type(out).__name__}.")
        if out.ndim != x.ndim or out.shape[0] != x.shape[0] or out.shape[2:] != x.shape[2:]:
            raise ValueError(
                f"network output {tuple(out.shape)} does not match input {tuple(x.shape)} in batch and spatial size."
            )
        return out.as_tensor() if isinstance(out, MetaTensor) else out

    def _auto_tta_batch(self, x: torch.Tensor, n_ops: int) -> int:
        """All copies per call on a GPU; on a CPU as many as keep a call under ``CPU_TTA_VOXELS`` voxels (measured
        here, bf16, 2 threads: 8 copies of a 1024 x 1024 image in one call 12.4 s, one at a time 4.9 s; 256 x 256:
        2 per call fastest)."""
        device = torch.device(self.sw_device) if self.sw_device is not None else x.device
        if device.type != "cpu":
            return n_ops
        return max(1, min(n_ops, CPU_TTA_VOXELS // (x.shape[0] * math.prod(x.shape[2:]))))

    def _tta(self, x: torch.Tensor, network: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        d, b = x.ndim - 2, x.shape[0]
        ops = _axis_ops(d, rotations=self.rotations_allowed(d))
        groups: dict[tuple[int, ...], list[AxisOp]] = {}
        for op in ops:  # same transformed shape -> one batch
            groups.setdefault(tuple(x.shape[2 + p] for p in op.perm), []).append(op)
        chunk = self.tta_batch_size or self._auto_tta_batch(x, len(ops))
        # float32 sums: offsets and log-sigmas in ``result`` (its seed channel is filled at the end), seeds in ``seed``
        result = seed = None
        dtype = x.dtype
        for group in groups.values():
            for start in range(0, len(group), chunk):
                part = group[start : start + chunk]
                out = self._run(torch.cat([op.forward(x) for op in part], dim=0), network, *args, **kwargs)
                dtype = out.dtype
                if result is None:
                    ops[0].channel_map(out.shape[1])  # validates the channel count
                    result = torch.empty((b, out.shape[1], *x.shape[2:]), dtype=torch.float32, device=out.device)
                    seed = torch.empty((b, 1, *x.shape[2:]), dtype=torch.float32, device=out.device)
                for i, op in enumerate(part):
                    self._accumulate(op, out[i * b : (i + 1) * b], result, seed, first=op is ops[0])
                del out  # before the next network call
        result[:, :-1].div_(len(ops))
        seed.div_(len(ops))
        if self.seed_average == "probability":
            seed = torch.logit(seed, eps=_SEED_EPS)
        result[:, -1:].copy_(seed)
        del seed
        return result.to(dtype)

    def _accumulate(self, op: AxisOp, out: torch.Tensor, result: torch.Tensor, seed: torch.Tensor, first: bool) -> None:
        """Add the prediction ``out (B, C, *spatial')`` made on ``op.forward(image)`` to the running sums.

        One image and one channel at a time, so the temporaries are single-channel maps (on a whole-volume prediction
        the full-size copies made by :meth:`AxisOp.inverse` would double the memory). The values are those of
        ``op.inverse(out).float()``: only signs, channel order and pixel order change.
        """
        index, scale = op.channel_map(out.shape[1])
        last = out.shape[1] - 1
        for bi in range(out.shape[0]):
            for k, (j, sgn) in enumerate(zip(index, scale)):
                y = out[bi : bi + 1, j : j + 1]
                y = op.inverse_image(torch.neg(y) if sgn < 0 else y).float()
                if k == last:
                    y = torch.sigmoid(y) if self.seed_average == "probability" else y
                    dst = seed[bi : bi + 1]
                else:
                    dst = result[bi : bi + 1, k : k + 1]
                if first:
                    dst.copy_(y)
                else:
                    dst.add_(y)
                del y

    def __call__(self, inputs: torch.Tensor, network: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Predict raw EmbedSeg channels.

        Args:
            inputs: ``(B, C_in, *spatial)``, 2 or 3 spatial dims.
            network: callable mapping ``(B', C_in, *spatial')`` to ``(B', C, *spatial')``.
            args, kwargs: passed on to ``network``.

        Returns:
            raw prediction ``(B, C, *spatial)``; with ``tta`` C must be ``2D+1`` or ``D+2``.

        Raises:
            ValueError: inputs not ``(B, C, H, W)`` / ``(B, C, D, H, W)``, or network output of the wrong shape.
            TypeError: integer inputs with ``roi_size`` (the windows would be stitched in integers).
        """
        if not isinstance(inputs, torch.Tensor):
            raise TypeError(f"inputs must be a torch tensor (B, C_in, *spatial), got {type(inputs).__name__}.")
        if inputs.ndim not in (4, 5):
            raise ValueError(f"inputs must be (B, C_in, H, W) or (B, C_in, D, H, W), got shape {tuple(inputs.shape)}.")
        x = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        if self.sliding_window is not None and not torch.is_floating_point(x):
            raise TypeError(
                f"sliding-window inputs must be floating point (MONAI stitches the output in the input's dtype), "
                f"got {x.dtype}."
            )
        out = self._tta(x, network, *args, **kwargs) if self.tta else self._run(x, network, *args, **kwargs)
        if isinstance(inputs, MetaTensor):
            out = convert_to_dst_type(out, inputs, dtype=out.dtype)[0]
        return out
