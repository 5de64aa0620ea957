"""Test settings: cheap FFTW planning and a private wisdom cache.

FFTW_MEASURE costs seconds per new shape on a 2-core machine; the tests use
FFTW_ESTIMATE and a temporary cache directory, so no test depends on wisdom
left behind by an earlier run (the wisdom round trip has its own test).
"""

import os
import tempfile

os.environ.setdefault("MRIRECON_FFTW_PLANNER", "FFTW_ESTIMATE")
os.environ["MRIRECON_CACHE_DIR"] = tempfile.mkdtemp(prefix="mrirecon-test-cache-")
os.environ.setdefault("MPLBACKEND", "Agg")
