#!/usr/bin/env python
"""Pipeline benchmark: per-step times of the closed-form QSM pipeline on a simulated 3-echo head,
and the NRMSE of every background-removal × inversion pair.

    python scripts/bench_pipeline.py                 # 192^3 (1 mm), a few minutes
    python scripts/bench_pipeline.py --size 96 --out /tmp/bp
"""

import argparse

from mrirecon.bench_pipeline import run

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=192, help="grid edge (default 192: 1 mm voxels)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of the closed-form pipeline")
    p.add_argument("--out", default="bench_out/pipeline", help="output directory")
    a = p.parse_args()
    run(size=a.size, repeats=a.repeats, out=a.out)
