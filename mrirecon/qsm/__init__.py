"""Quantitative susceptibility mapping: dipole inversion and λ selection."""

from . import background, masking, phase
from .inversion import closed_form_l2, l2_kernel, tkd, tkd_kernel
from .iterative import cg_l2, tv_admm, tv_nlcg
from .lcurve import LCurve, default_lams, lcurve
from .pipeline import DEFAULT_BACKGROUND, PipelineResult, pipeline
from .units import GAMMA_BAR_MHZ_PER_T, field_to_ppm

__all__ = [
    "DEFAULT_BACKGROUND",
    "GAMMA_BAR_MHZ_PER_T",
    "LCurve",
    "PipelineResult",
    "background",
    "cg_l2",
    "closed_form_l2",
    "default_lams",
    "field_to_ppm",
    "l2_kernel",
    "lcurve",
    "masking",
    "phase",
    "pipeline",
    "tkd",
    "tkd_kernel",
    "tv_admm",
    "tv_nlcg",
]
