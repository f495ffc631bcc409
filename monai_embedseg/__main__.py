"""``python -m monai_embedseg`` runs the ``monai-embedseg`` command line."""

import sys

from monai_embedseg.cli import main

sys.exit(main())
