"""Command line: ``monai-embedseg {demo,segment,evaluate,train,export,properties}`` (``python -m monai_embedseg``).

One module per command (:mod:`.segment_command`, :mod:`.evaluate_command`, :mod:`.train_command` with ``demo``,
:mod:`.export_command`, :mod:`.blockwise` for Zarr volumes), the parser in :mod:`.main`; each command's module is
imported only when it runs, so help and argument errors answer before torch and MONAI load. The functions are
importable here too (``from monai_embedseg.cli import segment``).
"""

from monai_embedseg._lazy import lazy_exports
from monai_embedseg.cli.main import main

_EXPORTS = {
    "segment": "segment_command",
    "evaluate": "evaluate_command",
    "train": "train_command",
    "demo": "train_command",
    "export": "export_command",
}
__all__ = ["main", *_EXPORTS]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
