"""Train and evaluate the real 2D bundles (DSB 2018, BBBC010, Usiigaci) as shipped, and print a results table.

Each set trains with its own bundle; see ``real_sets.py`` for what is measured (wall times, peak GPU memory, AP_dsb
pooled and by image, the step split, test AP at ``--minutes`` marks).

Usage::

    python benchmarks/bench_real_2d.py --profile fast --minutes 5 10 20 # time to accuracy on this machine
    python benchmarks/bench_real_2d.py                                   # the paper's schedule (GPU: hours)
    python benchmarks/bench_real_2d.py --epochs 30 --samples-per-epoch 256 --accumulation-steps 1 \\
        --learning-rate 1e-3 --sets usiigaci                             # a reduced budget
    python benchmarks/bench_real_2d.py --epochs 1 --samples-per-epoch 2 --val-interval 1 --no-tta \\
        --sets dsb2018 --max-test-images 1                               # smoke check
"""

from real_sets import main

#: set -> (bundle, the paper's test AP_dsb@0.5 (Lalit et al. 2021, Table 1) on its own splits)
SETS = {"dsb2018": ("dsb2018", 0.887), "bbbc010": ("bbbc010", 0.965), "usiigaci": ("usiigaci", 0.704)}

if __name__ == "__main__":
    main(__doc__.split("\n\n")[0], SETS, "bench_real_2d", tta_folds=8)
