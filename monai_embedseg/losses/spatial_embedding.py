"""EmbedSeg spatial embedding loss (Neven et al. 2019; Lalit et al. 2021), vectorised over all objects of a batch.

Written from the method description. For every object ``k`` of image ``b`` (mask ``M_k``):

* center ``C_k``: physical coordinate of the object's center pixel (the True pixel of the ``center`` target inside
  ``M_k``; when several lie inside ``M_k`` -- overlapping one-hot objects -- the one closest, in physical units, to
  the mean coordinate of ``M_k``; ties go to the first in C order; center pixels in no object are ignored);
* bandwidth ``sigma_k = exp(mean_{i in M_k} log sigma_i)`` (per axis; the geometric mean, i.e. the mean of the
  network's raw log-bandwidth channel);
* score ``phi_k(e_i) = exp(-sum_d (e_id - C_kd)^2 / (2 sigma_kd^2))`` for every pixel ``i`` of the image;
* instance term: Lovasz hinge of ``2 phi_k - 1`` against ``M_k``, averaged over the objects of the image (hinge
  errors below ``2e-7`` are treated as 0, which changes the term by at most ``2e-7``; see ``_MIN_ERROR``);
* variance term: ``mean_k mean_{i in M_k} sum_d (log sigma_id - log sigma_kd.detach())^2`` (sum over the axes, mean
  over the pixels of the object, mean over the objects). It is computed on the raw log-bandwidth, as the paper's
  variance loss is on the raw sigma channel, so it does not depend on the physical units of the data;
* seed term: ``(w_fg * sum_k sum_{i in M_k} (seed_i - phi_k(e_i).detach())^2 + w_bg * sum_{i in bg} seed_i^2) / P``
  with ``P`` the number of pixels of the image and ``bg`` the pixels in no object (a pixel covered by two
  overlapping objects contributes once per object).

Per image, ``total = w_inst * instance + w_var * variance + w_seed * seed``; an image without objects has
``instance = variance = 0``. The per-image values are then reduced over the batch (mean by default).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from monai_embedseg.embedding import (
    OFFSET_SCALE,
    SIGMA_SCALE,
    decode_prediction,
    n_sigma_of,
    pixel_coordinates,
    resolve_spacing,
)
from monai_embedseg.losses.lovasz import lovasz_order, lovasz_sorted

__all__ = ["SpatialEmbeddingLoss"]

#: exponents of phi are clamped here (phi >= 2e-35): exp is very slow on CPU where its result is denormal
_MAX_EXPONENT = 80.0
#: Lovasz hinge errors 2 phi (background) and 2 (1 - phi) (object) below 2 * _MIN_ERROR count as 0 (the float32
#: logit 2 phi - 1 cannot resolve them anyway). The Lovasz weights are >= 0 and sum to at most 1, so this changes
#: each object's instance term by at most 2e-7, and lets the hinge skip most background pixels (topk, not sort).
_MIN_ERROR = 1e-7
#: the dense (objects, D, pixels) pass runs over chunks of objects of at most this many elements
_CHUNK_ELEMENTS = 2**25


def _plain(x: torch.Tensor) -> torch.Tensor:
    """Drop a MetaTensor subclass (keeps autograd)."""
    return x.as_subclass(torch.Tensor) if type(x) is not torch.Tensor else x


class SpatialEmbeddingLoss(_Loss):
    """EmbedSeg loss: Lovasz hinge on the Gaussian instance scores + bandwidth variance + seed regression.

    Default weights ``w_inst=1, w_var=10, w_seed=1`` follow the EmbedSeg paper (Lalit et al. 2021, Appendix A).
    ``foreground_weight`` multiplies the seed error inside objects (the EmbedSeg bundles use 10 in 2D and the
    background/foreground voxel ratio in 3D).

    The computation is batched over all objects of the batch (one ``(N_objects, P)`` score matrix, one batched
    Lovasz hinge; split into chunks of objects only when that matrix gets large), runs in float32 (float64 if the
    input is float64) with autocast disabled, so it is AMP-safe.

    After each call ``self.terms`` holds the detached, batch-reduced terms ``"instance"``, ``"variance"``, ``"seed"``
    (unweighted) and ``"total"`` (weighted sum), for logging.

    Args:
        spacing: physical pixel size per spatial axis (z, y, x order), ``None`` = 1.
        w_inst: weight of the instance (Lovasz) term.
        w_var: weight of the bandwidth variance term.
        w_seed: weight of the seed term.
        foreground_weight: weight of the seed error on object pixels.
        background_weight: weight of the seed error on background pixels.
        offset_scale: see :func:`monai_embedseg.embedding.decode_prediction`.
        sigma_scale: see :func:`monai_embedseg.embedding.decode_prediction`.
        reduction: ``"mean"`` or ``"sum"`` over the batch, or ``"none"`` for a ``(B,)`` tensor.
        validate: check the values of the input (NaN/inf) and of the labels (integer, non-negative, binary one-hot)
            on every call. Each check waits for the device (a host synchronisation); a trainer whose data pipeline
            already validated the labels (``ValidateInstanceLabelsd``) passes ``False``. Shapes are always checked
            (free: no synchronisation).
    """

    def __init__(
        self,
        spacing: Sequence[float] | float | None = None,
        w_inst: float = 1.0,
        w_var: float = 10.0,
        w_seed: float = 1.0,
        foreground_weight: float = 1.0,
        background_weight: float = 1.0,
        offset_scale: float = OFFSET_SCALE,
        sigma_scale: float = SIGMA_SCALE,
        reduction: LossReduction | str = LossReduction.MEAN,
        validate: bool = True,
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        self.validate = bool(validate)
        if spacing is not None and not isinstance(spacing, (int, float)):
            spacing = tuple(float(s) for s in spacing)
            if len(spacing) not in (2, 3):
                raise ValueError(f"spacing must have 2 or 3 values (one per spatial axis), got {spacing}.")
            resolve_spacing(spacing, len(spacing))
        self.spacing = spacing
        weights = {
            "w_inst": w_inst,
            "w_var": w_var,
            "w_seed": w_seed,
            "foreground_weight": foreground_weight,
            "background_weight": background_weight,
        }
        for name, value in weights.items():
            if not float(value) >= 0:
                raise ValueError(f"{name} must be a non-negative number, got {value}.")
        self.w_inst, self.w_var, self.w_seed = float(w_inst), float(w_var), float(w_seed)
        self.foreground_weight, self.background_weight = float(foreground_weight), float(background_weight)
        if not (offset_scale > 0 and sigma_scale > 0):
            raise ValueError(f"offset_scale and sigma_scale must be positive, got {offset_scale}, {sigma_scale}.")
        self.offset_scale, self.sigma_scale = float(offset_scale), float(sigma_scale)
        self.terms: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ input checks
    @staticmethod
    def _split_target(target) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(target, Mapping):
            missing = [k for k in ("instance", "center") if k not in target]
            if missing:
                raise ValueError(f"target dict misses key(s) {missing}; expected 'instance' and 'center'.")
            instance, center = target["instance"], target["center"]
        elif isinstance(target, (tuple, list)) and len(target) == 2:
            instance, center = target
        else:
            raise TypeError(
                "target must be a dict {'instance': ..., 'center': ...} or a tuple (instance, center), "
                f"got {type(target).__name__}."
            )
        for name, t in (("instance", instance), ("center", center)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"target '{name}' must be a torch.Tensor, got {type(t).__name__}.")
        return _plain(instance), _plain(center)

    @staticmethod
    def _check_instance_values(instance: torch.Tensor) -> None:
        """Integer, non-negative labels; binary when one-hot (``(B, N > 1, P)``). Synchronises with the device."""
        if instance.is_floating_point():
            if not torch.isfinite(instance).all():
                raise ValueError("target 'instance' contains NaN or inf.")
            if not torch.equal(instance, instance.round()):
                raise ValueError("target 'instance' must hold integer labels, found non-integer values.")
        if (instance < 0).any():
            raise ValueError("target 'instance' has negative labels; 0 is background and ids are >= 1.")
        if instance.shape[1] > 1 and ((instance != 0) & (instance != 1)).any():
            raise ValueError(
                f"a target 'instance' with {instance.shape[1]} channels is read as a one-hot stack and must be "
                "binary (0/1); pass a label map as (B, 1, *spatial)."
            )

    def _object_pairs(self, instance: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Flat list of the objects of the batch (grouped by image, in image order).

        Args:
            instance: ``(B, 1, P)`` label map or ``(B, N, P)`` one-hot stack.

        Returns:
            the object count ``K``, ``image_of (K,)`` (the batch index of each object; objects are grouped by image)
            and the membership pairs ``pair_obj, pair_pix (n_pairs,)``, sorted by (object, pixel).
        """
        if instance.dtype == torch.bool:
            instance = instance.to(torch.uint8)
        batch, n_ch, n_pix = instance.shape
        if n_ch == 1:  # label map
            labels = instance[:, 0].long()
            fg_img, pair_pix = torch.nonzero(labels, as_tuple=True)
            stride = int(labels.max()) + 1
            ids, pair_obj = torch.unique(fg_img * stride + labels[fg_img, pair_pix], return_inverse=True)
            image_of = torch.div(ids, stride, rounding_mode="floor")
            order = torch.argsort(pair_obj * n_pix + pair_pix)
            pair_obj, pair_pix = pair_obj[order], pair_pix[order]
        else:
            fg_img, fg_ch, pair_pix = torch.nonzero(instance, as_tuple=True)
            present = torch.zeros(batch * n_ch, dtype=torch.bool, device=instance.device)
            present[fg_img * n_ch + fg_ch] = True  # non-empty channels, in (image, channel) order
            slot = torch.cumsum(present, 0) - 1
            pair_obj = slot[fg_img * n_ch + fg_ch]
            image_of = torch.div(torch.nonzero(present)[:, 0], n_ch, rounding_mode="floor")
        return image_of.shape[0], image_of, pair_obj, pair_pix

    # ------------------------------------------------------------------ forward
    def forward(self, input: torch.Tensor, target) -> torch.Tensor:  # noqa: A002 (torch loss signature)
        """Compute the loss.

        Args:
            input: raw prediction ``(B, C, *spatial)``, ``C = 2D + 1`` or ``D + 2`` (see ``decode_prediction``).
            target: ``{"instance": (B, 1, *spatial) int label map or (B, N, *spatial) binary one-hot,
                "center": (B, 1, *spatial) bool}`` or the tuple ``(instance, center)``.

        Returns:
            0-dim tensor (``(B,)`` with ``reduction="none"``), float32 (float64 for a float64 input).

        Raises:
            ValueError: wrong shapes or channel count, NaN/inf in the input, bad labels, an object without center.
            TypeError: wrong target container or tensor types.
        """
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}.")
        input = _plain(input)
        if input.ndim not in (4, 5):
            raise ValueError(
                f"input must be (B, C, *spatial) with 2 or 3 spatial dims, got shape {tuple(input.shape)}."
            )
        spatial_dims = input.ndim - 2
        n_sigma_of(input.shape[1], spatial_dims)
        if not input.is_floating_point():
            raise TypeError(f"input must be floating point, got {input.dtype}.")
        instance, center = self._split_target(target)
        batch, spatial = input.shape[0], tuple(input.shape[2:])
        if instance.ndim != input.ndim or instance.shape[0] != batch or tuple(instance.shape[2:]) != spatial:
            raise ValueError(
                f"target 'instance' must be (B, 1 or N, *spatial) = ({batch}, N, {', '.join(map(str, spatial))}), "
                f"got {tuple(instance.shape)}."
            )
        if tuple(center.shape) != (batch, 1, *spatial):
            raise ValueError(f"target 'center' must have shape {(batch, 1, *spatial)}, got {tuple(center.shape)}.")
        if instance.is_complex():
            raise TypeError("target 'instance' must be an integer label map or a binary one-hot stack.")
        if self.validate:
            if not torch.isfinite(input).all():
                raise ValueError("input contains NaN or inf.")
            self._check_instance_values(instance)
        spacing = resolve_spacing(self.spacing, spatial_dims)
        device = input.device
        dtype = torch.float64 if input.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=device.type, enabled=False):
            per_image, terms = self._compute(
                input.to(dtype),
                instance.to(device).reshape(batch, instance.shape[1], -1),
                center.to(device).reshape(batch, -1) != 0,
                spacing,
            )
        if self.reduction == LossReduction.MEAN.value:
            out, reduce = per_image.mean(), (lambda t: t.mean())
        elif self.reduction == LossReduction.SUM.value:
            out, reduce = per_image.sum(), (lambda t: t.sum())
        else:
            out, reduce = per_image, (lambda t: t)
        self.terms = {k: reduce(v).detach() for k, v in terms.items()}
        self.terms["total"] = out.detach()
        return out

    def _compute(
        self, pred: torch.Tensor, instance: torch.Tensor, center: torch.Tensor, spacing: tuple[float, ...]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-image losses.

        Args:
            pred: ``(B, C, *spatial)`` raw prediction.
            instance: ``(B, 1 or N, P)`` flattened target.
            center: ``(B, P)`` bool.

        Returns:
            ``(B,)`` weighted per-image totals and the ``(B,)`` unweighted terms.
        """
        batch, n_dims = pred.shape[0], pred.ndim - 2
        dtype, device = pred.dtype, pred.device
        emb, sigma, seed = decode_prediction(pred, spacing, self.offset_scale, self.sigma_scale)
        emb, sigma, seed = emb.flatten(2), sigma.flatten(2), seed.flatten(1)  # (B, D, P), (B, D, P), (B, P)
        n_pix = seed.shape[1]
        coords = pixel_coordinates(pred.shape[2:], spacing, device=device, dtype=dtype).flatten(1)  # (D, P)

        # the objects of the batch as (object, pixel) membership pairs sorted by object, and the image of each object
        n_obj, image_of, pair_obj, pair_pix = self._object_pairs(instance)
        obj_per_image = torch.bincount(image_of, minlength=batch).to(dtype)
        pair_img = image_of[pair_obj]
        size_long = torch.bincount(pair_obj, minlength=n_obj)
        size = size_long.to(dtype)  # (K,) >= 1

        fg_any = torch.zeros(batch, n_pix, dtype=torch.bool, device=device)
        fg_any[pair_img, pair_pix] = True
        seed_bg = self.background_weight * (seed.square() * ~fg_any).sum(-1)  # (B,)
        if n_obj == 0:
            zero = seed_bg * 0.0
            seed_term = seed_bg / n_pix
            terms = {"instance": zero, "variance": zero, "seed": seed_term}
            return self.w_seed * seed_term, terms

        center = self._centers(n_obj, pair_obj, pair_pix, pair_img, center, coords, size)  # (K, D)
        log_sigma_pairs = torch.log(sigma[pair_img, :, pair_pix])  # (n_pairs, D)
        log_sigma_k = torch.zeros(n_obj, n_dims, device=device, dtype=dtype).index_add(0, pair_obj, log_sigma_pairs)
        log_sigma_k = log_sigma_k / size[:, None]
        scale = torch.exp(-log_sigma_k) * 0.5**0.5  # (K, D): phi = exp(-sum_d ((e_d - C_d) * scale_d)^2)
        with torch.no_grad():  # phi inside the objects, the detached seed target
            diff = (emb[pair_img, :, pair_pix] - center[pair_obj]) * scale[pair_obj]
            phi_pairs = torch.exp(-diff.square().sum(-1).clamp(max=_MAX_EXPONENT))

        # instance term, over chunks of objects to bound the memory of the dense (objects, D, pixels) pass
        pair_start = [0] + torch.cumsum(size_long, 0).tolist()
        rows = max(1, _CHUNK_ELEMENTS // (n_dims * n_pix))
        lovasz = []
        for start in range(0, n_obj, rows):
            stop = min(start + rows, n_obj)
            sl = slice(pair_start[start], pair_start[stop])
            lovasz.append(
                self._instance_chunk(
                    emb,
                    image_of[start:stop],
                    center[start:stop],
                    scale[start:stop],
                    size[start:stop],
                    pair_obj[sl] - start,
                    pair_pix[sl],
                    phi_pairs[sl],
                )
            )
        lovasz = torch.cat(lovasz)

        def per_image_mean(values: torch.Tensor) -> torch.Tensor:
            total = torch.zeros(batch, device=device, dtype=dtype).index_add(0, image_of, values)
            return total / obj_per_image.clamp(min=1)

        instance_term = per_image_mean(lovasz)
        var_pairs = (log_sigma_pairs - log_sigma_k.detach()[pair_obj]).square().sum(-1)  # (n_pairs,)
        var_obj = torch.zeros(n_obj, device=device, dtype=dtype).index_add(0, pair_obj, var_pairs) / size
        variance_term = per_image_mean(var_obj)
        seed_fg_pairs = (seed[pair_img, pair_pix] - phi_pairs).square()
        seed_fg = torch.zeros(batch, device=device, dtype=dtype).index_add(0, pair_img, seed_fg_pairs)
        seed_term = (self.foreground_weight * seed_fg + seed_bg) / n_pix

        total = self.w_inst * instance_term + self.w_var * variance_term + self.w_seed * seed_term
        return total, {"instance": instance_term, "variance": variance_term, "seed": seed_term}

    @staticmethod
    def _instance_chunk(
        emb: torch.Tensor,
        image_of: torch.Tensor,
        center: torch.Tensor,
        scale: torch.Tensor,
        size: torch.Tensor,
        pair_obj: torch.Tensor,
        pair_pix: torch.Tensor,
        phi_pairs: torch.Tensor,
    ) -> torch.Tensor:
        """Lovasz hinge ``(k,)`` of ``2 phi - 1`` against the masks of ``k`` objects.

        phi over every pixel of the image is computed without autograd and in place, only to order the hinge
        errors; the hinge is then evaluated with autograd on the selected pixels (the positive errors), since the
        gradient is zero elsewhere anyway.

        Args:
            emb: ``(B, D, P)`` embeddings.
            image_of, center, scale, size: ``(k,)``, ``(k, D)``, ``(k, D)``, ``(k,)`` per object.
            pair_obj, pair_pix, phi_pairs: the chunk's membership pairs (object index local to the chunk) and the
                detached phi at them.
        """
        n_obj, n_pix = image_of.shape[0], emb.shape[-1]
        with torch.no_grad():
            scaled = emb.detach()[image_of]  # (k, D, P) (index_select is much slower on CPU)
            scaled.mul_(scale[..., None]).sub_((center * scale)[..., None])
            errors = scaled.square_().sum(1).clamp_(max=_MAX_EXPONENT).neg_().exp_()  # (k, P) = phi
            del scaled
            # hinge errors of the logits 2 phi - 1 are 2 (1 - phi) inside the object and 2 phi outside (all >= 0);
            # the Lovasz extension is positively homogeneous: order by the halved errors, double the loss below
            errors[pair_obj, pair_pix] = 1.0 - phi_pairs
            F.threshold(errors, _MIN_ERROR, 0.0, inplace=True)
            perm = lovasz_order(errors, nonnegative=True)  # (k, L)
            del errors
            masks = torch.zeros(n_obj, n_pix, dtype=torch.bool, device=emb.device)
            masks[pair_obj, pair_pix] = True
            gt_sorted = masks.gather(-1, perm)
        emb_sel = emb[image_of[:, None], :, perm]  # (k, L, D)
        exponent = ((emb_sel - center[:, None]) * scale[:, None]).square().sum(-1).clamp(max=_MAX_EXPONENT)
        phi_sel = torch.exp(-exponent)
        half_errors = F.threshold(torch.where(gt_sorted, 1.0 - phi_sel, phi_sel), _MIN_ERROR, 0.0)
        return 2.0 * lovasz_sorted(half_errors, gt_sorted, size)

    @staticmethod
    def _centers(
        n_obj: int,
        pair_obj: torch.Tensor,
        pair_pix: torch.Tensor,
        pair_img: torch.Tensor,
        center: torch.Tensor,
        coords: torch.Tensor,
        size: torch.Tensor,
    ) -> torch.Tensor:
        """Physical center ``(K, D)`` of every object: its center-image pixel closest to the object's mean.

        Args:
            pair_obj, pair_pix, pair_img: membership pairs sorted by (object, pixel).
            center: ``(B, P)`` bool.
            coords: ``(D, P)`` physical pixel coordinates.
            size: ``(K,)`` pixel count of each object.

        Raises:
            ValueError: an object has no True ``center`` pixel inside its mask.
        """
        n_dims = coords.shape[0]
        mean = (
            torch.zeros(n_obj, n_dims, device=coords.device, dtype=coords.dtype).index_add_(
                0, pair_obj, coords[:, pair_pix].T
            )
            / size[:, None]
        )
        cand = torch.nonzero(center[pair_img, pair_pix])[:, 0]  # pairs on a center pixel, in (object, pixel) order
        cand_obj, cand_pix = pair_obj[cand], pair_pix[cand]
        dist = (coords[:, cand_pix].T - mean[cand_obj]).square().sum(-1)
        # closest first within each object (stable sorts: ties keep the pixel order)
        order = torch.sort(dist, stable=True).indices
        order = order[torch.sort(cand_obj[order], stable=True).indices]
        objs, counts = torch.unique_consecutive(cand_obj[order], return_counts=True)
        if objs.shape[0] != n_obj:
            has_center = torch.zeros(n_obj, dtype=torch.bool, device=coords.device)
            has_center[objs] = True
            bad = int(torch.nonzero(~has_center)[0, 0])
            raise ValueError(
                f"{n_obj - objs.shape[0]} object(s) have no True pixel of target 'center' inside their mask "
                f"(first: object {bad} of image {int(pair_img[pair_obj == bad][0])} in the batch)."
            )
        first = torch.cumsum(counts, 0) - counts
        return coords[:, cand_pix[order[first]]].T
