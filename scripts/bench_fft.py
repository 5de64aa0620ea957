#!/usr/bin/env python
"""FFT-core benchmark: the closed form against its bare FFT pair, memory/arithmetic floors, scipy.fft and naive NumPy (CPU; --device gpu adds cuFFT).

Same as ``mrirecon bench fft``; the logic and what is measured: mrirecon/bench/fft.py.
``python scripts/bench_fft.py --help`` lists the options.
"""

import sys

from mrirecon.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "fft", *sys.argv[1:]]))
