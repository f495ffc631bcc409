"""Turn a training run's output folder into a registered model's folder: ``python -m monai_embedseg.pretrained.publish
RUN DEST [--half]`` copies the weights (bare state dict, half precision with ``--half``), ``dataset_properties.json``
and ``thresholds.json``, and prints the SHA-256 to put in :data:`~monai_embedseg.pretrained.registry.MODELS`."""

from __future__ import annotations

import argparse
import io
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["publish", "main"]


def publish(run_dir: str | Path, dest: str | Path, half: bool = False) -> str:
    """Copy a run's ``model.pt`` (as a bare state dict; floating tensors in float16 when ``half``), properties and
    tuned thresholds (less the path of the run's checkpoint) into ``dest``.

    Returns:
        the SHA-256 of the written ``model.pt``.

    Raises:
        FileNotFoundError: the run lacks one of the three files.
        FileExistsError: ``dest/model.pt`` exists.
    """
    from monai_embedseg.constants import PROPERTIES_FILE, THRESHOLDS_FILE
    from monai_embedseg.pretrained.registry import sha256_of
    from monai_embedseg.utils.files import atomic_output

    run_dir, dest = Path(run_dir), Path(dest)
    for name in ("model.pt", PROPERTIES_FILE, THRESHOLDS_FILE):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir / name} does not exist: publish a finished training run.")
    state = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True)
    state = state.get("model", state)
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    dest.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()  # not the temporary file: torch names the archive's records after the file
    torch.save(state, buffer)
    with atomic_output(dest / "model.pt") as tmp:
        Path(tmp).write_bytes(buffer.getvalue())
    shutil.copyfile(run_dir / PROPERTIES_FILE, dest / PROPERTIES_FILE)
    thresholds = json.loads((run_dir / THRESHOLDS_FILE).read_text())
    thresholds.pop("checkpoint", None)  # a path on the machine that trained it
    (dest / THRESHOLDS_FILE).write_text(json.dumps(thresholds, indent=2) + "\n")
    return sha256_of(dest / "model.pt")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of :func:`publish`; prints the checksum."""
    parser = argparse.ArgumentParser(prog="python -m monai_embedseg.pretrained.publish", description=__doc__)
    parser.add_argument("run_dir", help="training output folder (model.pt, dataset_properties.json, thresholds.json)")
    parser.add_argument("dest", help="the model's folder")
    parser.add_argument("--half", action="store_true", help="store the weights in float16")
    args = parser.parse_args(argv)
    print(f"sha256 {publish(args.run_dir, args.dest, args.half)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
