#!/usr/bin/env python
"""Pipeline variants benchmark: where the pipeline's χ figures stop holding (oblique B0, anisotropic voxels, 7 T, low SNR, unequal echoes, shim, anatomy).

Same as ``mrirecon bench pipeline-variants``; the logic and what is measured:
mrirecon/bench/pipeline_variants.py. ``python scripts/bench_pipeline_variants.py --help`` lists the options.
"""

import sys

from mrirecon.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "pipeline-variants", *sys.argv[1:]]))
