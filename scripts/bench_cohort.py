#!/usr/bin/env python
"""Cohort benchmark: mrirecon run over a simulated cohort in process and on a local Dask cluster
(1 and 2 workers), scheduling overhead per series; a 4-D series' time per volume.

Same as ``mrirecon bench cohort``; the logic and what is measured: mrirecon/bench/cohort.py.
``python scripts/bench_cohort.py --help`` lists the options.
"""

import sys

from mrirecon.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "cohort", *sys.argv[1:]]))
