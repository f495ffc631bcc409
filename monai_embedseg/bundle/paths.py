"""Locating bundles and their default folders."""

from __future__ import annotations

from pathlib import Path

__all__ = ["bundle_path"]


def bundle_path(name: str) -> str:
    """Folder of the bundle ``name`` shipped in this repository (``<repo>/bundles/<name>``).

    Falls back to ``./bundles/<name>`` (relative to the working directory) when the package is installed without the
    repository; pass ``--bundle_root DIR`` to a bundle run to use a copied bundle instead.
    """
    repo_bundle = Path(__file__).resolve().parents[2] / "bundles" / name
    if (repo_bundle / "configs").is_dir():
        return str(repo_bundle)
    return str(Path("bundles") / name)
