#!/usr/bin/env python
"""QSM benchmark: closed-form L2 and TKD against CG-L2, TV-ADMM and TV-NLCG on the head phantom.

    python scripts/bench_qsm.py                      # 128^3 and 192^3 (1 mm), minutes
    python scripts/bench_qsm.py --sizes 64 --out /tmp/bq

Same as ``mrirecon bench qsm``; see mrirecon/bench_qsm.py for what is measured.
"""

import sys

from mrirecon.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "qsm", *sys.argv[1:]]))
