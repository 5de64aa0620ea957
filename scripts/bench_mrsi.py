#!/usr/bin/env python
"""MRSI benchmark: closed-form L2 lipid suppression against FISTA-L1, and auto β against a sweep.

Same as ``mrirecon bench mrsi``; the logic and what is measured: mrirecon/bench/mrsi.py.
``python scripts/bench_mrsi.py --help`` lists the options.
"""

import sys

from mrirecon.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "mrsi", *sys.argv[1:]]))
