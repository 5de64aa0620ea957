"""Input and output, one module per format family.

- :mod:`~mrirecon.io.nifti` — NIfTI volumes, B0 direction from the affine, grid checks, JSON sidecars
- :mod:`~mrirecon.io.kspace` — multi-coil k-space: NumPy, BART cfl/hdr, fastMRI HDF5
- :mod:`~mrirecon.io.bids` — BIDS multi-echo GRE discovery, loading and derivatives
- :mod:`~mrirecon.io.atomic` — atomic writes (temporary file + rename) and output checks

The common names are importable from here (``mrirecon.io.load_nifti``,
``mrirecon.io.load_kspace``, ``mrirecon.io.atomic_path``...).
"""

from .atomic import atomic_path, check_output_dir, check_writable
from .kspace import KSPACE_SUFFIXES, load_kspace, read_cfl, write_cfl
from .nifti import (
    Volume,
    b0_direction_from_affine,
    check_same_grid,
    load_nifti,
    save_nifti,
    sidecar_path,
    write_json,
)

__all__ = [
    "KSPACE_SUFFIXES",
    "Volume",
    "atomic_path",
    "b0_direction_from_affine",
    "check_same_grid",
    "check_output_dir",
    "check_writable",
    "load_kspace",
    "load_nifti",
    "read_cfl",
    "save_nifti",
    "sidecar_path",
    "write_cfl",
    "write_json",
]
