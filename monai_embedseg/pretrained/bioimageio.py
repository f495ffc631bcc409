"""bioimage.io model packages (spec 0.5) of EmbedSeg networks: export, and unpacking one of ours to run it here.

A package holds the network (state-dict weights with their architecture as one self-contained source file that
needs only torch and MONAI, TorchScript and ONNX weights), the 1 / 99.8 percentile ``scale_range`` preprocessing,
one output tensor whose channels are named (offsets, bandwidths, seed: raw, see :mod:`monai_embedseg.embedding`)
with a halo from the measured effective receptive field, test tensors, documentation, a cover, the citation and
the licence. The clustering is not a bioimage.io operation: its settings (the bundle, dataset properties, tuned
thresholds) travel under ``config.monai_embedseg``, so ``monai-embedseg segment --model package.zip`` runs a
package of ours end to end. Exporting needs the ``bioimageio`` extra (``bioimageio.core``); unpacking does not.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from monai_embedseg.constants import NORMALIZE_PERCENTILES

__all__ = ["CONFIG_KEY", "architecture_source", "channel_names", "export_bioimageio", "unpack_package"]

#: key under the package's ``config`` holding what the clustering needs
CONFIG_KEY = "monai_embedseg"
_ARCH_FILE = "branched_erfnet.py"
_EPS = 1e-6  # scale_range's default epsilon: (x - lo) / (hi - lo + eps)
_PAPER = (
    "Lalit, M., Tomancak, P., Jug, F. Embedding-based Instance Segmentation in Microscopy. MIDL 2021.",
    "https://proceedings.mlr.press/v143/lalit21a.html",
)


def architecture_source() -> str:
    """Python source of :class:`~monai_embedseg.networks.nets.BranchedERFNet` and its blocks in one file that
    imports only torch and MONAI, for the state-dict weights of a package (``callable: BranchedERFNet``).

    Made from the package's own modules when exporting, so it cannot drift from the network that was trained.
    """
    from monai_embedseg import embedding
    from monai_embedseg.networks.blocks import erfnet
    from monai_embedseg.networks.nets import branched_erfnet

    body = []
    for module in (erfnet, branched_erfnet):
        for line in inspect.getsource(module).splitlines():
            if line.startswith(("from __future__", "from monai_embedseg", "import monai_embedseg", "__all__")):
                continue
            body.append(line)
        if module is erfnet:
            body += ["", "", inspect.getsource(embedding.n_sigma_of)]
    source = "\n".join(
        [
            '"""EmbedSeg\'s branched ERF-Net (2D/3D), generated from monai_embedseg for a bioimage.io package.',
            "",
            "Needs torch and MONAI only. Apache-2.0, like monai_embedseg.",
            '"""',
            "",
            "from __future__ import annotations",
            *body,
            "",
        ]
    )
    imported = {
        alias.name if isinstance(node, ast.Import) else node.module
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in (node.names if isinstance(node, ast.Import) else [None])
    }
    if any(str(m).split(".")[0] == "monai_embedseg" for m in imported):
        raise RuntimeError("the network's modules import more of monai_embedseg than the architecture file holds.")
    return source


def channel_names(spatial_dims: int, num_channels: int) -> list[str]:
    """Names of the raw prediction's channels: ``offset_z, offset_y, offset_x, sigma_z, ..., seed`` (``sigma`` alone
    for an isotropic bandwidth)."""
    axes = "zyx"[3 - spatial_dims :]
    n_sigma = num_channels - spatial_dims - 1
    sigmas = [f"sigma_{a}" for a in axes] if n_sigma == spatial_dims else ["sigma"]
    return [f"offset_{a}" for a in axes] + sigmas + ["seed"]


def _normalise(image: np.ndarray) -> np.ndarray:
    """``scale_range`` over the spatial axes, per channel, as bioimage.io applies it: ``(B, C, *spatial)``."""
    axes = tuple(range(2, image.ndim))
    lo, hi = (np.percentile(image, p, axis=axes, keepdims=True) for p in NORMALIZE_PERCENTILES)
    return ((image - lo) / (hi - lo + _EPS)).astype(np.float32)


def _cover(image: np.ndarray, labels: np.ndarray, path: Path) -> None:
    """A 2:1 PNG: the normalised image (first channel; middle slice in 3D) beside its instance labels."""
    from PIL import Image

    img, lab = image[0, 0], labels
    if img.ndim == 3:
        img, lab = img[img.shape[0] // 2], lab[lab.shape[0] // 2]
    lo, hi = np.percentile(img, (1, 99.8))
    gray = (np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
    colors = np.random.default_rng(0).integers(60, 256, size=(int(lab.max()) + 1, 3), dtype=np.uint8)
    colors[0] = 0
    left = Image.fromarray(np.stack([gray] * 3, -1)).resize((256, 256), Image.NEAREST)
    right = Image.fromarray(colors[lab]).resize((256, 256), Image.NEAREST)
    cover = Image.new("RGB", (512, 256))
    cover.paste(left, (0, 0))
    cover.paste(right, (256, 0))
    cover.save(path)


def _documentation(name: str, card: str | None, config: dict) -> str:
    dims = config["network"]["kwargs"]["spatial_dims"]
    return "\n".join(
        [
            f"# {name}",
            "",
            card.strip() if card else f"An EmbedSeg {dims}D instance segmentation network trained with monai_embedseg.",
            "",
            "## Running it",
            "",
            "The network maps an image normalised with the 1 / 99.8 percentiles (per channel, no clipping) to one "
            "tensor whose channels are raw: offsets (in units of `offset_scale` per pixel), log-bandwidths and the "
            "seed logit, named in the output's channel axis. The instances come from EmbedSeg's clustering of that "
            "output, which is not a bioimage.io operation: `monai-embedseg segment IMAGES --model this.zip --output "
            "OUT` runs the whole method with the settings stored under `config.monai_embedseg` (bundle, dataset "
            "properties, thresholds tuned on a validation split).",
            "",
            "## Citation",
            "",
            f"{_PAPER[0]} {_PAPER[1]}",
            "",
        ]
    )


def export_bioimageio(
    network: torch.nn.Module,
    output: str | os.PathLike,
    bundle: str,
    properties: dict,
    thresholds: dict | None = None,
    test_image: np.ndarray | None = None,
    name: str | None = None,
    model_card: str | None = None,
    authors: tuple[str, ...] = ("monai_embedseg",),
    license: str = "Apache-2.0",
    overwrite: bool = False,
) -> Path:
    """Write ``network`` as a bioimage.io model package (``.zip``, spec 0.5) with three weight formats.

    Args:
        network: a trained :class:`~monai_embedseg.networks.nets.BranchedERFNet` (moved to the CPU here).
        output: the ``.zip`` to write (atomically).
        bundle: name of the shipped bundle whose ``inference.json`` runs it (``segment --model`` needs it).
        properties: its ``dataset_properties.json`` content (spacing, minimum object size, ...).
        thresholds: its ``thresholds.json`` content (tuned ``seed_thresh``, ``fg_thresh``, ``min_object_size``,
            ``exclude_border``).
        test_image: raw image ``(*spatial)`` or ``(C, *spatial)`` for the test tensors and cover, each spatial size
            a multiple of 8 (cropped to one otherwise); default a generated nuclei image.
        name: the package's name (default: ``EmbedSeg <bundle>``).
        model_card: Markdown put at the top of the documentation (training data, command, figures).
        authors: author names.
        license: SPDX licence id of the weights.
        overwrite: replace an existing ``output``.

    Returns:
        the written path.

    Raises:
        ImportError: ``bioimageio.core`` is not installed (``pip install monai_embedseg[bioimageio]``).
        FileExistsError: ``output`` exists and ``overwrite`` is False.
        ValueError: ``network`` is not a BranchedERFNet, or the test image does not fit it.
    """
    from monai_embedseg.engines.threshold_search import tuned_thresholds
    from monai_embedseg.networks.nets import BranchedERFNet, export_onnx
    from monai_embedseg.networks.receptive_field import effective_receptive_field
    from monai_embedseg.transforms import EmbedSegCluster
    from monai_embedseg.utils.files import atomic_output

    try:
        import onnx
        from bioimageio.spec import save_bioimageio_package
        from bioimageio.spec.model import v0_5 as bio
    except ImportError as e:
        raise ImportError(
            f"bioimage.io export needs bioimageio.core and onnx ({e}); pip install 'monai_embedseg[bioimageio]'."
        ) from None
    if not isinstance(network, BranchedERFNet):
        raise ValueError(f"bioimage.io export supports BranchedERFNet networks, got {type(network).__name__}.")
    if not overwrite and Path(output).exists():
        raise FileExistsError(f"{output} exists; pass --overwrite to replace it.")
    network = network.cpu().eval()
    d, c_in = network.spatial_dims, network.in_channels
    kwargs = {
        "spatial_dims": d,
        "in_channels": c_in,
        "out_channels": list(network.out_channels),
        "padding_mode": network.padding_mode,
    }
    if test_image is None:
        from monai_embedseg.data.synthetic import synthetic_cells_3d, synthetic_nuclei_2d

        test_image = synthetic_nuclei_2d((256, 256))[0] if d == 2 else synthetic_cells_3d((32, 96, 96))[0]
        test_image = np.repeat(test_image[None], c_in, axis=0)
    raw = np.asarray(test_image, dtype=np.float32)
    raw = raw[None, None] if raw.ndim == d else raw[None]
    if raw.shape[1] != c_in or raw.ndim != d + 2:
        raise ValueError(
            f"test image of shape {tuple(test_image.shape)} does not fit a {d}D network of {c_in} channel(s)."
        )
    raw = raw[(slice(None), slice(None), *(slice(0, s - s % 8) for s in raw.shape[2:]))]
    if min(raw.shape[2:]) < 8:
        raise ValueError(f"test image of shape {tuple(test_image.shape)}: each spatial axis needs at least 8 pixels.")
    normalised = torch.from_numpy(_normalise(raw))
    with torch.no_grad():
        prediction = network(normalised)
    names = channel_names(d, prediction.shape[1])
    measured = effective_receptive_field(network, normalised)
    # the spec wants every input larger than twice the halo: capped where the test image is smaller
    halo = [max(1, min(int(h), (int(s) - 8) // 2)) for h, s in zip(measured, raw.shape[2:])]
    clustering = tuned_thresholds(thresholds or None, properties.get("min_object_size", 0))
    labels = EmbedSegCluster(spacing=properties.get("spacing"), **clustering)(prediction[0])[0].numpy()
    from monai_embedseg import __version__

    config = {
        "package_version": __version__,
        "bundle": bundle,
        "network": {"class": "BranchedERFNet", "kwargs": kwargs},
        "dataset_properties": properties,
        "thresholds": thresholds or None,
        "normalize_percentiles": list(NORMALIZE_PERCENTILES),
        "channels": names,
        "halo": halo,
        "effective_receptive_field": list(measured),
    }
    axis_ids = [bio.AxisId(a) for a in "zyx"[3 - d :]]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.save(tmp / "test_input.npy", raw)
        np.save(tmp / "test_output.npy", prediction.numpy())
        torch.save(network.state_dict(), tmp / "weights.pt")
        (tmp / _ARCH_FILE).write_text(architecture_source())
        torch.jit.script(network).save(str(tmp / "weights_torchscript.pt"))
        with warnings.catch_warnings():  # the tracer's notes on shape checks, which the export handles
            warnings.simplefilter("ignore")
            export_onnx(network, str(tmp / "weights.onnx"), d, c_in)
        opset = max(o.version for o in onnx.load(str(tmp / "weights.onnx")).opset_import if o.domain in ("", "ai.onnx"))
        _cover(raw, labels, tmp / "cover.png")
        (tmp / "README.md").write_text(_documentation(name or f"EmbedSeg {bundle}", model_card, config))
        input_axes = [
            bio.BatchAxis(),
            bio.ChannelAxis(channel_names=[bio.Identifier(f"channel{i}") for i in range(c_in)]),
            *(
                bio.SpaceInputAxis(id=a, size=bio.ParameterizedSize(min=8 * (2 * h // 8 + 1), step=8))
                for a, h in zip(axis_ids, halo)
            ),
        ]
        output_axes = [
            bio.BatchAxis(),
            bio.ChannelAxis(channel_names=[bio.Identifier(n) for n in names]),
            *(
                bio.SpaceOutputAxisWithHalo(
                    id=a, size=bio.SizeReference(tensor_id=bio.TensorId("image"), axis_id=a), halo=h
                )
                for a, h in zip(axis_ids, halo)
            ),
        ]
        torch_version = bio.Version(torch.__version__.split("+")[0])
        descr = bio.ModelDescr(
            name=name or f"EmbedSeg {bundle}",
            description=f"EmbedSeg {d}D instance segmentation network (monai_embedseg, bundle {bundle}): offsets, "
            "bandwidths and seed; instances by EmbedSeg's clustering (monai-embedseg segment --model).",
            authors=[bio.Author(name=a) for a in authors],
            cite=[bio.CiteEntry(text=_PAPER[0], url=bio.HttpUrl(_PAPER[1]))],
            license=bio.LicenseId(license),
            documentation=bio.FileDescr(source=tmp / "README.md"),
            covers=[bio.FileDescr(source=tmp / "cover.png")],
            tags=["embedseg", "instance-segmentation", f"{d}d", "monai", "nuclei" if "nuclei" in bundle else bundle],
            inputs=[
                bio.InputTensorDescr(
                    id=bio.TensorId("image"),
                    axes=input_axes,
                    test_tensor=bio.FileDescr(source=tmp / "test_input.npy"),
                    preprocessing=[
                        bio.ScaleRangeDescr(
                            kwargs=bio.ScaleRangeKwargs(
                                axes=axis_ids,
                                min_percentile=NORMALIZE_PERCENTILES[0],
                                max_percentile=NORMALIZE_PERCENTILES[1],
                                eps=_EPS,
                            )
                        )
                    ],
                )
            ],
            outputs=[
                bio.OutputTensorDescr(
                    id=bio.TensorId("prediction"),
                    axes=output_axes,
                    test_tensor=bio.FileDescr(source=tmp / "test_output.npy"),
                )
            ],
            weights=bio.WeightsDescr(
                pytorch_state_dict=bio.PytorchStateDictWeightsDescr(
                    source=tmp / "weights.pt",
                    architecture=bio.ArchitectureFromFileDescr(
                        source=tmp / _ARCH_FILE, callable=bio.Identifier("BranchedERFNet"), kwargs=kwargs
                    ),
                    pytorch_version=torch_version,
                ),
                torchscript=bio.TorchscriptWeightsDescr(
                    source=tmp / "weights_torchscript.pt", pytorch_version=torch_version, parent="pytorch_state_dict"
                ),
                onnx=bio.OnnxWeightsDescr(
                    source=tmp / "weights.onnx", opset_version=opset, parent="pytorch_state_dict"
                ),
            ),
            config=bio.Config(**{CONFIG_KEY: config}),
        )
        with atomic_output(output, overwrite=overwrite) as part:
            save_bioimageio_package(descr, output_path=Path(part).with_suffix(".zip"))
            os.replace(Path(part).with_suffix(".zip"), part)
    return Path(output)


def _rdf(archive: zipfile.ZipFile, path: str | os.PathLike) -> dict:
    import yaml

    name = next((n for n in archive.namelist() if n == "rdf.yaml" or n.endswith(".bioimageio.yaml")), None)
    if name is None:
        raise ValueError(f"{path} is not a bioimage.io model package (no rdf.yaml in the zip).")
    return yaml.safe_load(archive.read(name))


def unpack_package(path: str | os.PathLike) -> tuple[Path, str]:
    """Unpack a package made by :func:`export_bioimageio` into a trained output folder (``model.pt``,
    ``dataset_properties.json``, ``thresholds.json``), cached by the package's checksum.

    Returns:
        ``(folder, bundle name)``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a zip, not a bioimage.io model package, or one without ``config.monai_embedseg`` (a package
            made elsewhere: its network's output has no EmbedSeg clustering settings).
    """
    from monai_embedseg.constants import PROPERTIES_FILE, THRESHOLDS_FILE
    from monai_embedseg.pretrained.registry import CACHE_DIR, sha256_of

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model package {path} does not exist.")
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ValueError(f"{path} is not a zip file (a bioimage.io model package is one).") from None
    with archive:
        rdf = _rdf(archive, path)
        config = (rdf.get("config") or {}).get(CONFIG_KEY)
        if not isinstance(config, dict) or "bundle" not in config:
            raise ValueError(
                f"{path}: a bioimage.io package not exported by monai_embedseg (no config.{CONFIG_KEY}); its "
                "network's output has no EmbedSeg clustering settings."
            )
        weights = ((rdf.get("weights") or {}).get("pytorch_state_dict") or {}).get("source")
        if not weights or weights not in archive.namelist():
            raise ValueError(f"{path}: the package has no pytorch_state_dict weights file.")
        folder = CACHE_DIR.parent / "packages" / sha256_of(path)[:24]
        if not (folder / "model.pt").is_file():
            folder.parent.mkdir(parents=True, exist_ok=True)
            part = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
            with archive.open(weights) as src, open(part / "model.pt", "wb") as dst:
                shutil.copyfileobj(src, dst)
            (part / PROPERTIES_FILE).write_text(json.dumps(config["dataset_properties"], indent=2))
            if config.get("thresholds"):
                (part / THRESHOLDS_FILE).write_text(json.dumps(config["thresholds"], indent=2))
            try:
                os.replace(part, folder)
            except OSError:  # another process unpacked it first
                shutil.rmtree(part, ignore_errors=True)
    return folder, str(config["bundle"])
