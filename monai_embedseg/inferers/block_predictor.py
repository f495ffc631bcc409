"""The network side of block-wise segmentation: :class:`BlockPredictor` runs a bundle's network (or any network) on
one block, loaded once per process (Dask worker)."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from monai_embedseg.constants import NORMALIZE_PERCENTILES

__all__ = ["BlockPredictor"]


def _load_bundle_network(bundle: str, checkpoint: str) -> torch.nn.Module:
    """The bundle's ``network_def`` with the checkpoint's weights, in eval mode, on the CPU."""
    from monai.bundle import ConfigParser

    from monai_embedseg.utils import load_weights

    parser = ConfigParser()
    parser.read_config(os.path.join(bundle, "configs", "inference.json"))
    parser["bundle_root"] = bundle
    return load_weights(parser.get_parsed_content("network_def"), checkpoint, map_location="cpu").eval()


def _module_digest(module: torch.nn.Module) -> str:
    h = hashlib.sha1()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class BlockPredictor:
    """Raw EmbedSeg prediction of one image block, picklable, with the network built once per process.

    Args:
        network: a network ``(B, C_in, *spatial) -> (B, C, *spatial)`` (``nn.Module`` or any callable; pickled with
            the task graph, so one copy per Dask worker).
        network_factory: instead of ``network``, a picklable function returning it, called once per process (e.g.
            ``functools.partial`` loading a checkpoint: workers read the weights themselves).
        roi_size: sliding-window size inside a block (``None``: the whole block in one network call).
        overlap, sw_batch_size: sliding-window settings; tta: the 8 (2D) / 16 (3D) fold test-time augmentation.
        spacing: voxel size (z, y, x), for TTA (rotations only when y and x sizes are equal).
        device: where the network runs (``None``: CUDA when available, else CPU); the output is on the CPU.
        precision: ``FastForward`` precision for ``nn.Module`` networks (``"float32"``, ``"bfloat16"``, ``"auto"``;
            ``None``: call the network as it is).
        percentiles: the per-image intensity normalisation (low, high percentile mapped to 0, 1; ``None``: feed the
            image as float32 unchanged). The values are computed once over the whole volume by
            :func:`segment_blockwise` and passed to every call.
        threads: torch CPU threads in the calling process (``None``: leave as is).
        fingerprint: a string identifying the network for resuming (default: a digest of the weights, or the
            factory's arguments).

    ``__call__(image (C_in, *spatial) numpy, intensity_range (C_in, 2) | None) -> (C, *spatial)`` float32 CPU tensor.
    """

    def __init__(
        self,
        network: Callable | None = None,
        network_factory: Callable[[], Callable] | None = None,
        roi_size: Sequence[int] | None = None,
        overlap: float = 0.25,
        sw_batch_size: int = 1,
        tta: bool = False,
        spacing: Sequence[float] | None = None,
        device: str | None = None,
        precision: str | None = "float32",
        percentiles: Sequence[float] | None = NORMALIZE_PERCENTILES,
        threads: int | None = None,
        fingerprint: str | None = None,
    ) -> None:
        if (network is None) == (network_factory is None):
            raise ValueError("pass exactly one of network and network_factory.")
        self._network = network
        self.network_factory = network_factory
        self.roi_size = None if roi_size is None else [int(r) for r in roi_size]
        self.overlap = float(overlap)
        self.sw_batch_size = int(sw_batch_size)
        self.tta = bool(tta)
        self.spacing = None if spacing is None else [float(s) for s in spacing]
        self.device = device
        self.precision = precision
        self.percentiles = None if percentiles is None else [float(p) for p in percentiles]
        self.threads = threads
        self._fingerprint = fingerprint
        self._runner: Any = None

    @classmethod
    def from_bundle(cls, bundle: str, checkpoint: str | None = None, **kwargs: Any) -> BlockPredictor:
        """A predictor running ``bundle``'s network with ``checkpoint`` (default ``<bundle>/models/model.pt``).

        Every process (Dask worker) loads the checkpoint once. ``kwargs`` go to :class:`BlockPredictor`.
        """
        bundle = os.path.abspath(bundle)
        checkpoint = os.path.abspath(checkpoint or os.path.join(bundle, "models", "model.pt"))
        st = os.stat(checkpoint)
        kwargs.setdefault("fingerprint", f"{checkpoint}:{st.st_size}:{int(st.st_mtime)}")
        return cls(network_factory=functools.partial(_load_bundle_network, bundle, checkpoint), **kwargs)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_runner"] = None  # built again in each process
        return state

    def fingerprint(self) -> str:
        """What identifies this predictor when a run is resumed (network weights and inference settings)."""
        if self._fingerprint is None:
            if isinstance(self._network, torch.nn.Module):
                net = f"{type(self._network).__name__}:{_module_digest(self._network)}"
            elif self._network is not None:
                net = getattr(self._network, "fingerprint", None) or type(self._network).__qualname__
            else:
                net = repr(self.network_factory)
            self._fingerprint = str(net)
        settings = [self.roi_size, self.overlap, self.tta, self.precision, self.percentiles]
        return f"{self._fingerprint}|{json.dumps(settings)}"

    def runner(self) -> Callable:
        """The network as called (built on first use in this process, moved to the device, ``FastForward``)."""
        if self._runner is None:
            from monai_embedseg.networks.nets import FastForward

            net = self._network if self._network is not None else self.network_factory()
            if isinstance(net, torch.nn.Module):
                net = net.to(self._device()).eval()
                if self.precision is not None:
                    net = FastForward(net, precision=self.precision).eval()
            self._runner = net
        return self._runner

    def _device(self) -> torch.device:
        return torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def normalise(self, image: np.ndarray, intensity_range: np.ndarray | None) -> torch.Tensor:
        """``image (C, *spatial)`` -> float32 tensor, each channel scaled as MONAI's ``ScaleIntensityRange`` does."""
        from monai.transforms import ScaleIntensityRange

        x = torch.as_tensor(np.asarray(image, dtype=np.float32))
        if intensity_range is None:
            return x
        rng = np.asarray(intensity_range, dtype=np.float32).reshape(x.shape[0], 2)
        out = torch.empty_like(x)
        for c in range(x.shape[0]):
            lo, hi = (torch.tensor(v, dtype=torch.float32) for v in rng[c])
            out[c] = ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=False, dtype=np.float32)(x[c])
        return out

    def __call__(self, image: np.ndarray, intensity_range: np.ndarray | None = None) -> torch.Tensor:
        """Raw prediction ``(C, *spatial)`` (float32, CPU) of ``image (C_in, *spatial)``."""
        from monai_embedseg.inferers import EmbedSegInferer

        if self.threads:
            torch.set_num_threads(int(self.threads))
        device = self._device()
        inferer = EmbedSegInferer(
            roi_size=self.roi_size,
            sw_batch_size=self.sw_batch_size,
            overlap=self.overlap,
            tta=self.tta,
            spacing=self.spacing,
            sw_device=device,
            device="cpu",
            tta_batch_size=1,
        )
        x = self.normalise(image, intensity_range)[None]
        with torch.inference_mode():
            pred = inferer(x, self.runner())[0]
        return pred.float().cpu()


# ------------------------------------------------------------------------------------------------------ block tasks
