#!/usr/bin/env python
"""SENSE benchmark: closed-form unfold (+ ACS lines) against CG-SENSE, L1-wavelet, SigPy SenseRecon
and BART pics -l2 (when installed: pip install sigpy; apt-get install bart).

    python scripts/bench_sense.py                      # 256², 16 and 32 coils, R=4 + 24 ACS
    python scripts/bench_sense.py --size 128 --coils 8 --out /tmp/bs
"""

import argparse

from mrirecon.bench_sense import run

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--coils", type=int, nargs="+", default=[16, 32])
    p.add_argument("--accel", type=int, default=4)
    p.add_argument("--acs", type=int, default=24)
    p.add_argument("--slices", type=int, default=8, help="slices of the multi-slice volume timing")
    p.add_argument("--out", default="bench_out/sense")
    a = p.parse_args()
    run(size=a.size, n_coils=tuple(a.coils), accel=a.accel, acs=a.acs, slices=a.slices, out=a.out)
