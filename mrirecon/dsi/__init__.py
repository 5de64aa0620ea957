"""Diffusion spectrum imaging from undersampled q-space: closed-form PCA–Tikhonov completion.

- :mod:`~mrirecon.dsi.lattice` — the Cartesian q-lattice (515 points within radius 5) and its
  identification from b-values and b-vectors
- :mod:`~mrirecon.dsi.basis` — multi-tensor signals, PCA bases (simulation-trained default, or from data)
- :mod:`~mrirecon.dsi.recon` — :func:`reconstruct`: PCA-L2 closed form (GCV λ), zero filling, L1-wavelet FISTA
- :mod:`~mrirecon.dsi.pdf` — the propagator by 3-D FFT, the ODF and GFA (dipy's conventions)
"""

from .basis import Basis, basis_from_data, default_basis, multi_tensor_signal, pca_basis
from .lattice import Lattice, as_bvecs, identify, q_lattice
from .pdf import gfa, hemisphere, odf, odf_matrix, pdf
from .recon import METHODS, Completion, DSIReconstruction, completion_operator, gcv, l1_wavelet, reconstruct

__all__ = [
    "METHODS",
    "Basis",
    "Completion",
    "DSIReconstruction",
    "Lattice",
    "as_bvecs",
    "basis_from_data",
    "completion_operator",
    "default_basis",
    "gcv",
    "gfa",
    "hemisphere",
    "identify",
    "l1_wavelet",
    "multi_tensor_signal",
    "odf",
    "odf_matrix",
    "pca_basis",
    "pdf",
    "q_lattice",
    "reconstruct",
]
