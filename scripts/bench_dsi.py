#!/usr/bin/env python
"""DSI benchmark: closed-form PCA-L2 against L1-wavelet FISTA and zero filling on the phantom slice.

Same as ``mrirecon bench dsi``; the logic and what is measured: mrirecon/bench/dsi.py.
``python scripts/bench_dsi.py --help`` lists the options.
"""

import sys

from mrirecon.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "dsi", *sys.argv[1:]]))
