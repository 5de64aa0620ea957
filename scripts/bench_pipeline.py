#!/usr/bin/env python
"""Pipeline benchmark: per-step times of the closed-form QSM pipeline on a simulated 3-echo head, and the NRMSE of every background-removal x inversion pair.

Same as ``mrirecon bench pipeline``; the logic and what is measured: mrirecon/bench/pipeline.py.
``python scripts/bench_pipeline.py --help`` lists the options.
"""

import sys

from mrirecon.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "pipeline", *sys.argv[1:]]))
