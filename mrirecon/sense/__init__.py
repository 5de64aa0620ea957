"""Parallel imaging (SENSE): sampling, coil sensitivities, closed-form unfolding, iterative baselines.

- :func:`sense` — the default: closed-form Tikhonov unfold plus a few CG
  iterations that put the calibration lines back;
- :func:`unfold`, :class:`SenseUnfolder`, :func:`gfactor`,
  :func:`gfactor_pseudo_replica` — the closed form and its noise amplification;
- :func:`cg_sense`, :func:`l1_wavelet`, :func:`tv` — iterative baselines;
- :mod:`~mrirecon.sense.sampling`, :mod:`~mrirecon.sense.coils` — masks and pattern
  detection; simulated, ESPIRiT and ratio coil maps, prewhitening, coil compression.
"""

from . import coils, sampling
from .iterative import cg_sense, l1_wavelet, tv
from .operator import SenseOp
from .recon import sense
from .unfold import SenseUnfolder, gfactor, gfactor_pseudo_replica, unfold

__all__ = [
    "SenseOp",
    "SenseUnfolder",
    "cg_sense",
    "coils",
    "gfactor",
    "gfactor_pseudo_replica",
    "l1_wavelet",
    "sampling",
    "sense",
    "tv",
    "unfold",
]
