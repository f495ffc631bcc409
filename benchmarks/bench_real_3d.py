"""Train and evaluate a 3D bundle on the real 3D nuclei set (``cho3d``) with the fast profile, and print the table.

``cho3d`` (CHO nuclei, 5 x 443 x 512 voxels of 1.0 x 0.202 x 0.202 um, frames 0-13 train, 14-16 val, 17-19 test)
trains with ``bundles/synthetic_3d`` as a user would train their own volumes with it: ``--dataset_dir`` pointing at
the data, nothing hand-set (crop size, spacing, minimum object size and foreground weight come from the masks, the
thresholds from the validation split). See ``real_sets.py`` for what is measured.

Usage::

    python benchmarks/bench_real_3d.py --profile fast --minutes 5 10 20  # test AP after 5 / 10 / 20 min, step split
    python benchmarks/bench_real_3d.py --profile fast --no-tta           # without the 16-fold TTA at test time
    python benchmarks/bench_real_3d.py --sets cho3d --bundle platynereis_nuclei_cbg --profile fast
"""

import sys

from real_sets import main

#: set -> (bundle, paper AP@0.5: none, the set is not in the paper)
SETS = {"cho3d": ("synthetic_3d", None)}

if __name__ == "__main__":
    if "--bundle" in sys.argv:  # train with another 3D bundle's configs
        i = sys.argv.index("--bundle")
        bundle = sys.argv[i + 1]
        del sys.argv[i : i + 2]
        SETS = {name: (bundle, ap) for name, (_, ap) in SETS.items()}
    main(__doc__.split("\n\n")[0], SETS, "bench_real_3d", tta_folds=16)
