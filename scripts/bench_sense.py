#!/usr/bin/env python
"""SENSE benchmark: closed-form unfold (+ ACS lines) against CG-SENSE, L1-wavelet, SigPy SenseRecon and BART pics -l2 (when installed: pip install sigpy; apt-get install bart).

Same as ``mrirecon bench sense``; the logic and what is measured: mrirecon/bench/sense.py.
``python scripts/bench_sense.py --help`` lists the options.
"""

import sys

from mrirecon.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "sense", *sys.argv[1:]]))
