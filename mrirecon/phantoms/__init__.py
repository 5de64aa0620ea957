"""Numerical phantoms, one module per phantom.

- :mod:`~mrirecon.phantoms.head` — the QSM head phantom from the definitions in the
  top-level ``phantoms/`` folder (:func:`head_phantom`, :func:`load_definition`) and
  its field (:func:`simulate_field`)
- :mod:`~mrirecon.phantoms.megre` — multi-echo GRE acquisitions of it (:func:`simulate_megre`)
- :mod:`~mrirecon.phantoms.brain_slice` — a complex 2-D slice for parallel imaging (:func:`brain_slice`)
"""

from .brain_slice import brain_slice
from .head import HeadPhantom, head_phantom, load_definition, simulate_field
from .megre import MEGREData, simulate_megre

__all__ = [
    "HeadPhantom",
    "MEGREData",
    "brain_slice",
    "head_phantom",
    "load_definition",
    "simulate_field",
    "simulate_megre",
]
