#!/usr/bin/env python
"""QSM benchmark: closed-form L2 and TKD against CG-L2, TV-ADMM and TV-NLCG on the head phantom.

Same as ``mrirecon bench qsm``; the logic and what is measured: mrirecon/bench/qsm.py.
``python scripts/bench_qsm.py --help`` lists the options.
"""

import sys

from mrirecon.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "qsm", *sys.argv[1:]]))
